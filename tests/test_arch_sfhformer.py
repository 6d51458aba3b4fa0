"""SFHformer (scripts/archs/sfhformer.py) against the official implementation's outputs.

The fixtures hold tiny random-weight checkpoints in the official layout and the output the official
``Backbone_new`` of deng-ai-lab/SFHformer gave for them (see tests/fixtures/README.md).
"""
import os

import numpy as np
import pytest
import torch

from restorekit.scripts.inference import zoo
from restorekit.scripts.archs import sfhformer as sfh
from restorekit.scripts.inference.files import ModelFileError, load_state_dict
from restorekit.scripts.inference.runner import run_model

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def _fixture(name):
    return load_state_dict(os.path.join(FIX, name))


def _input():
    return torch.from_numpy(np.load(os.path.join(FIX, "model_input_32x48.npy")))


@pytest.mark.parametrize("ckpt, fft_bn, expected", [
    ("sfhformer_haze_tiny.safetensors", True, "sfhformer_haze_tiny_expected.npy"),
    ("sfhformer_haze_tiny.safetensors", False, "sfhformer_haze_tiny_nobn_expected.npy"),
    ("sfhformer_lol_tiny.safetensors", True, "sfhformer_lol_tiny_expected.npy"),
])
def test_matches_official_output(ckpt, fft_bn, expected):
    net, cfg = sfh.build_from_state_dict(_fixture(ckpt), fft_bn=fft_bn)
    with torch.no_grad():
        y = net(_input()).numpy()
    ref = np.load(os.path.join(FIX, expected))
    assert np.abs(ref).max() > 0.5  # the fixture is not trivial
    np.testing.assert_allclose(y, ref, atol=2e-5, rtol=0)


def test_fourier_batchnorm_switch_matters():
    """ITS (no Fourier BN) and OTS (with it) differ: the switch is not a no-op."""
    a = np.load(os.path.join(FIX, "sfhformer_haze_tiny_expected.npy"))
    b = np.load(os.path.join(FIX, "sfhformer_haze_tiny_nobn_expected.npy"))
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("variant", ["dehaze-outdoor", "lowlight-s", "lowlight-m"])
def test_released_sizes_round_trip_strictly(variant):
    """A released-size network saved in the official layout is recognised and loads strictly."""
    cfg = sfh.VARIANTS[variant]
    net = sfh.SFHformer(cfg)
    ck = sfh.official_layout(net)
    assert all(k.startswith("module.") for k in ck["state_dict"])
    got = sfh.config_from_state_dict(sfh.prepare_state_dict(ck), fft_bn=cfg.fft_bn)
    assert got == cfg and sfh.variant_name(got) == variant
    sfh.SFHformer(got).load_state_dict(sfh.prepare_state_dict(ck), strict=True)


def test_official_pth_through_zoo_and_runner(tmp_path):
    """torch.save({'state_dict': {'module.*'}}) -> model_zoo -> runner; pads to 8 and crops back."""
    net, _ = sfh.build_from_state_dict(_fixture("sfhformer_lol_tiny.safetensors"))
    path = tmp_path / "sfhformer_tiny_lolv2s.pth"
    torch.save(sfh.official_layout(net), path)
    handle, variant = zoo.load_sfhformer(str(path))
    assert handle.arch == "SFHformer" and handle.size_multiple == 8 and variant == "custom"
    x = _input()
    img = x.permute(0, 2, 3, 1)
    out, rep = run_model(handle, img, device="cpu", tile=0, progress=False)
    with torch.no_grad():
        ref = net(x).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)  # 32x48 is a multiple of 8: no padding
    odd = img[:, :30, :45]  # not a multiple of 8: padded then cropped
    out2, _ = run_model(handle, odd, device="cpu", tile=0, progress=False)
    assert out2.shape == odd.shape and torch.isfinite(out2).all()


def test_its_name_turns_fourier_bn_off(tmp_path):
    sd = _fixture("sfhformer_haze_tiny.safetensors")
    for name, bn in (("sfhformer_haze_its.pth", False), ("sfhformer_haze_ots.pth", True)):
        torch.save({"state_dict": sd}, tmp_path / name)
        handle, _ = zoo.load_sfhformer(str(tmp_path / name))
        assert handle.extra["fft_bn"] is bn
    handle, _ = zoo.load_sfhformer(str(tmp_path / "sfhformer_haze_its.pth"), task="dehaze-outdoor")
    assert handle.extra["fft_bn"] is True


def test_wrong_task_and_missing_key_refused(tmp_path):
    sd = dict(_fixture("sfhformer_lol_tiny.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "lol.pth")
    with pytest.raises(ModelFileError, match="lol.pth.*not the 'dehaze-indoor' task"):
        zoo.load_sfhformer(str(tmp_path / "lol.pth"), task="dehaze-indoor")
    sd.pop("module.layer2.blocks.0.mixer.ca.1.weight")
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")
    with pytest.raises(ModelFileError, match="broken.pth.*SFHformer checkpoint"):
        zoo.load_sfhformer(str(tmp_path / "broken.pth"))


def test_size_not_multiple_of_4_rejected():
    net, _ = sfh.build_from_state_dict(_fixture("sfhformer_haze_tiny.safetensors"))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 3, 30, 32))

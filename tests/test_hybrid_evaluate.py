"""The retoucher baselines (hybrid/baselines.py) and the evaluation's target checks (hybrid/tools/evaluate.py)."""
import numpy as np
import pytest

from restorekit.hybrid import baselines
from restorekit.hybrid.tools import damage, evaluate
from restorekit.scripts.metrics import psnr


@pytest.fixture(scope="module")
def photo():
    return damage.load_source("astronaut", 96)


def test_autolevels_maps_each_channels_percentiles_to_0_and_1(photo):
    faded = (0.2 + 0.5 * photo).astype(np.float32)
    out = baselines.autolevels(faded)
    for c in range(3):
        lo, hi = np.percentile(out[..., c], [0.5, 99.5])
        assert lo == pytest.approx(0.0, abs=0.01) and hi == pytest.approx(1.0, abs=0.01)
    assert psnr(out, photo) > psnr(faded, photo) + 5
    grey = faded[..., :1]
    assert baselines.autolevels(grey).shape == grey.shape
    assert baselines.autolevels_unsharp(grey[..., 0]).shape == grey.shape[:2]


def test_baselines_denoise_and_sharpen_as_documented(photo, rng):
    noisy = np.clip(photo + rng.normal(0, 0.05, photo.shape).astype(np.float32), 0, 1)
    den = baselines.nlm_autolevels(noisy)
    # NLM removes noise: the result is much smoother than the input in the residual sense
    assert np.std(den - baselines.autolevels(photo)) < np.std(baselines.autolevels(noisy) - baselines.autolevels(photo))
    sharp = baselines.unsharp(photo)
    blurred = damage.blur(photo, 1.0)
    assert np.abs(np.diff(sharp, axis=1)).mean() > np.abs(np.diff(photo, axis=1)).mean()
    assert psnr(baselines.unsharp(blurred), photo) > psnr(blurred, photo)
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.run("magic", photo)


def _rows(level, gains_auto, gains_base):
    rows = []
    for i, (ga, gb) in enumerate(zip(gains_auto, gains_base)):
        img = f"{level}{i}"
        rows += [{"image": img, "level": level, "method": "input", "psnr": 20.0},
                 {"image": img, "level": level, "method": "auto", "psnr": 20.0 + ga},
                 {"image": img, "level": level, "method": "nlm_autolevels", "psnr": 20.0 + gb},
                 {"image": img, "level": level, "method": "autolevels_unsharp", "psnr": 20.0 + gb - 1}]
    return rows


def test_targets_follow_the_issue():
    t = evaluate.targets(_rows("light", [0.0, -0.1, 0.2], [-3, -3, -3]))
    assert t["light_pass"] and t["light_worst_gain_db"] == pytest.approx(-0.1)
    assert not evaluate.targets(_rows("light", [0.5, 0.5, -1.2], [0, 0, 0]))["light_pass"]  # one image > 1 dB worse
    assert not evaluate.targets(_rows("light", [-0.3, -0.3, -0.3], [0, 0, 0]))["light_pass"]  # mean below -0.2
    t = evaluate.targets(_rows("severe", [4.0, 4.0], [2.0, 2.0]))
    assert t["severe_pass"] and t["severe_best_baseline_gain_db"] == pytest.approx(2.0)
    assert not evaluate.targets(_rows("moderate", [4.0, 4.0], [3.0, 3.0]))["moderate_pass"]  # < baseline + 1.5
    assert not evaluate.targets(_rows("moderate", [2.9, 2.9], [0.0, 0.0]))["moderate_pass"]  # < input + 3


def test_summary_and_table_cover_every_method_present():
    rows = _rows("severe", [4.0], [2.0])
    for r in rows:
        r.update(routed_to=r["method"], unchanged=False, ssim=0.5)
    s = evaluate.summarise(rows)
    assert set(s["by_level"]["severe"]) == {"input", "auto", "nlm_autolevels", "autolevels_unsharp"}
    table = evaluate.format_table(s)
    assert "nlm_autolevels" in table and "| severe |" in table


def test_a_blended_auto_run_is_not_reported_as_the_method_it_was_routed_to():
    """auto's output is reused for the method it routed to only when it is that method's own output:
    after the output blend (hybrid/blend.py) the method runs by itself."""
    from types import SimpleNamespace

    from restorekit.hybrid.tools.evaluate import evaluate

    clean = np.full((16, 16, 3), 0.5, np.float32)
    dam = clean + 0.1

    class Stub:
        thresholds = SimpleNamespace()
        calls = []

        def restore(self, x, m):
            self.calls.append(m)
            info = {"method": "ml_guided", "stages": ["tone"], "unchanged": False, "severity": "moderate",
                    "parameters": {"blend": {"weight": 0.5}} if m == "auto" else {}}
            return (x - 0.05 if m == "auto" else x - 0.1), info

    stub = Stub()
    res = evaluate(stub, pairs=[{"clean": clean, "damaged": dam, "source": "s", "level": "moderate", "seed": 0}],
                   methods=("auto", "ml_guided"), log=lambda s: None)
    by = {r["method"]: r["psnr"] for r in res["rows"]}
    assert stub.calls == ["auto", "ml_guided"] and by["ml_guided"] > by["auto"]

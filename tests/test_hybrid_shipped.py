"""The shipped hybrid models load (hash-checked) and beat the identity on held-out test images.

The shipped U-Net was retrained on damage recipe v2 (the source registry's training split), so these
checks use it (``RECIPE``); the predictor (now only the quality estimate) was trained on v1.
"""
import numpy as np
import pytest

from restorekit.hybrid import analysis, engine, unet
from restorekit.hybrid.tools import damage
from restorekit.hybrid.predictor import Predictor
from restorekit.scripts.metrics import psnr


pytestmark = pytest.mark.usefixtures("one_torch_thread")
RECIPE = "v2"  # the damage recipe the shipped U-Net was trained on


@pytest.fixture(scope="module")
def held_out():
    # "rocket" is in the test split: never seen by either model in training
    assert "rocket" in damage.SPLITS["test"]
    clean = damage.load_source("rocket", 128)
    return {lv: (clean, damage.damage_image(clean, lv, 2024 + i, recipe=RECIPE)[0])
            for i, lv in enumerate(damage.LEVEL_NAMES)}


def test_shipped_unet_beats_identity_on_held_out_damage():
    """The U-Net is the severe-damage method: on held-out severe images it must gain PSNR."""
    h = unet.load_shipped()
    assert h.arch == "RestoreKit-UNet"
    gains = []
    for src, seed in (("rocket", 31), ("chelsea", 32), ("rocket", 33), ("chelsea", 34)):
        clean = damage.load_source(src, 128)
        dam, _ = damage.damage_image(clean, "severe", seed, recipe=RECIPE)
        out, _ = unet.run(h, dam, device="cpu")
        gains.append(psnr(out, clean) - psnr(dam, clean))
    # measured with the shipped U-Net (recipe v2, 181 sources, two phases): +2.57 dB mean (+1.82, +2.66,
    # +3.83, +1.98); after its first phase +3.01; the recipe-v1 U-Net gained about +0.4 dB on recipe-v2 damage
    assert sum(gains) / len(gains) > 2.5, gains
    assert min(gains) > 0.5, gains


def test_shipped_predictor_orders_quality_and_picks_a_grid_combination(held_out):
    p = Predictor.load()
    q = {lv: p.quality_db(analysis.analyze(held_out[lv][1])) for lv in damage.LEVEL_NAMES}
    assert q["light"] > q["severe"]
    choice = p.predict(analysis.analyze(held_out["moderate"][1]))
    if choice["no_change"]:  # nothing predicted to gain: the image is left as it is
        # the predictor's own rule: no change when the best combination's predicted gain is within its margin
        assert choice["strength"] == 0.0 and choice["predicted_gain_db"] <= p.no_change_below_db
    else:
        assert choice["sigma"] in (0.5, 1.0, 1.5, 2.0) and choice["strength"] in (0.5, 1.0, 1.5, 2.0, 2.5)
        assert choice["predicted_gain_db"] > 0.0


def test_auto_with_shipped_models_beats_identity_on_severe(held_out):
    clean, dam = held_out["severe"]
    # the severity route without the ml_guided forests: the U-Net residual as the quality estimate
    r = engine.HybridRestorer(thresholds=engine.Thresholds.calibrated("unet"), device="cpu", guide=False)
    out, info = r.restore(dam, "auto")
    assert info.analysis.quality_source.startswith("U-Net residual")
    assert info.method == "deep_learning"
    # +2.97 dB with this version's U-Net (over +3 with the previous one; the four severe pairs above: +2.57
    # mean against +3.01, while the validation split gained 0.63 dB)
    assert psnr(out, clean) > psnr(dam, clean) + 2.5
    # the default route (the route forest: measurements, the forests' predicted gains and the U-Net's
    # residual on a ≤ 256 px copy) never loses on it
    out, info = engine.HybridRestorer(device="cpu").restore(dam, "auto")
    assert info.analysis.quality_source == "random-forest predictor" and info.parameters["route"]["by"] == "route forest"
    assert psnr(out, clean) >= psnr(dam, clean) - 0.2


def test_auto_with_shipped_models_leaves_held_out_light_damage_alone():
    """Light damage is routed away from the U-Net, which would cost more than it gains there, and auto
    meets the issue's light-damage targets on these held-out pairs: on average no worse than the input
    − 0.2 dB, no image more than 1 dB worse.  (With the output blend, ``chelsea`` seed 43 loses 0.57 dB:
    its plan −0.09, the U-Net −3.8 dB, mixed in at 0.196; the four gain on average.)"""
    r = engine.HybridRestorer(device="cpu")
    gains = []
    for src, seed in (("chelsea", 41), ("rocket", 42), ("chelsea", 43), ("rocket", 44)):
        clean = damage.load_source(src, 128)
        dam, _ = damage.damage_image(clean, "light", seed, recipe=RECIPE)
        out, info = r.restore(dam, "auto")
        assert info.method != "deep_learning", (src, seed, info.analysis.quality_db)
        gains.append(psnr(out, clean) - psnr(dam, clean))
    assert min(gains) >= -1.0 and np.mean(gains) >= -0.2, gains

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
    # measured with the shipped U-Net (recipe v2, 181 sources, three phases): +2.92 dB mean (+2.33, +2.04,
    # +4.17, +3.12); after two phases +2.57, after the first +3.01; the recipe-v1 U-Net gained about +0.4 dB
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
    # +3.24 dB with the three-phase U-Net (+2.97 after two phases)
    assert psnr(out, clean) > psnr(dam, clean) + 2.5
    # the default route (the route and level forests: measurements, the forests' predicted gains and
    # the U-Net's residual on a ≤ 256 px copy): the level forest finds severe damage (P(light or none)
    # 0.02) and takes the U-Net path, +3.24 dB (the route forest alone kept the plan: no loss, no gain)
    out, info = engine.HybridRestorer(device="cpu").restore(dam, "auto")
    route = info.parameters["route"]
    assert info.analysis.quality_source == "random-forest predictor" and route["by"] == "level forest"
    assert info.method == "deep_learning" and route["light_probability"] < route["route_level_threshold"]
    assert psnr(out, clean) > psnr(dam, clean) + 2.5


def test_auto_with_shipped_models_leaves_held_out_light_damage_alone():
    """Light damage is routed away from the U-Net, which would cost more than it gains there, and auto
    meets the issue's light-damage targets on these held-out pairs: on average no worse than the input
    − 0.2 dB, no image more than 1 dB worse.  (With the output blend, ``chelsea`` seed 43 loses 0.72 dB:
    its plan deblurs, the U-Net's weight 0.31; the others: 0, 0, +0.43 dB.)"""
    r = engine.HybridRestorer(device="cpu")
    gains = []
    for src, seed in (("chelsea", 41), ("rocket", 42), ("chelsea", 43), ("rocket", 44)):
        clean = damage.load_source(src, 128)
        dam, _ = damage.damage_image(clean, "light", seed, recipe=RECIPE)
        out, info = r.restore(dam, "auto")
        assert info.method != "deep_learning", (src, seed, info.analysis.quality_db)
        gains.append(psnr(out, clean) - psnr(dam, clean))
    assert min(gains) >= -1.0 and np.mean(gains) >= -0.2, gains


@pytest.mark.parametrize("fname", ["hybrid_chelsea_light.png", "hybrid_rocket_moderate.png",
                                   "hybrid_chelsea_severe.png", "hybrid_rocket_severe.png"])
def test_auto_restores_the_shipped_hybrid_examples_against_their_clean_sources(fname):
    """The README's main job on the shipped damaged examples, scored against the clean sources they were
    made from (hybrid.tools.damage.EXAMPLES): no harm on the light one (a route chosen on too few light
    validation images once sent it to the U-Net: −11.4 dB), and a real gain on the heavier ones
    (measured with the DFT Wiener denoiser: +2.97, +1.96, +2.07 dB)."""
    import os

    from restorekit.scripts import image_io

    src, level, _seed, _only = damage.EXAMPLES[fname]
    img = image_io.read_image(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                           "examples", "images", fname)).pixels
    clean = damage.load_source(src, 384)
    out, info = engine.HybridRestorer(device="cpu", denoiser="wiener").restore(img, "auto")
    gain = psnr(out, clean) - psnr(img, clean)
    if level == "light":
        assert gain >= -0.2 and info.method != "deep_learning", (gain, info.method)
    else:
        assert gain > 1.5, (gain, info.method, info.stages)

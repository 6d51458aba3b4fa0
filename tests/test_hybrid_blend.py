"""``auto``'s output blend (hybrid/blend.py): the weight map, the average, its calibration, the engine."""
import numpy as np
import pytest

import _repo

_repo.load_pack()
from restorekit.hybrid import blend  # noqa: E402


def test_the_average_of_two_estimates_with_independent_errors_halves_the_error():
    # the property the blend rests on: two unbiased estimates with independent errors of equal
    # variance; their mean has half the mean squared error of either
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.8, (128, 128, 3)).astype(np.float32)
    a = truth + rng.normal(0, 0.03, truth.shape).astype(np.float32)
    b = truth + rng.normal(0, 0.03, truth.shape).astype(np.float32)
    m = blend.blend(a, b, 0.5)
    mse = lambda x: float(np.mean((x - truth) ** 2))  # noqa: E731
    assert mse(m) == pytest.approx(0.5 * mse(a), rel=0.05)


def test_blend_is_the_weighted_mean_and_changes_neither_input():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (9, 7, 3)).astype(np.float32)
    b = rng.uniform(0, 1, (9, 7, 3)).astype(np.float32)
    a0, b0 = a.copy(), b.copy()
    for w in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(blend.blend(a, b, w), w * b + (1 - w) * a, atol=1e-6)
    assert np.array_equal(blend.blend(a, b, 0.0), a)
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_the_plans_pixels_are_kept_in_and_around_the_inpainted_mask():
    mask = np.zeros((40, 40), bool)
    mask[:, 20] = True  # a one-pixel scratch
    wm = blend.weight_map(0.5, (40, 40, 3), mask)[..., 0]
    assert wm.shape == (40, 40)
    # zero on the scratch and within the guard band, the full weight far from it, never above it
    assert (wm[:, 20 - blend.MASK_GUARD_PX:20 + blend.MASK_GUARD_PX + 1] == 0).all()
    assert (wm[:, :20 - blend.MASK_GUARD_PX - blend.MASK_FEATHER_PX - 1] == pytest.approx(0.5))
    assert wm.max() <= 0.5 + 1e-7
    a = np.zeros((40, 40, 3), np.float32)
    b = np.ones((40, 40, 3), np.float32)
    out = blend.blend(a, b, 0.5, mask)
    assert (out[:, 20] == 0).all() and out[:, 0].min() == pytest.approx(0.5)


@pytest.mark.parametrize("w", [-0.1, 1.5])
def test_a_weight_outside_0_1_is_refused(w):
    with pytest.raises(ValueError, match="blend weight"):
        blend.weight_map(w, (4, 4, 3))


def test_shapes_that_differ_are_refused():
    with pytest.raises(ValueError, match="differ"):
        blend.blend(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), 0.5)
    with pytest.raises(ValueError, match="does not match"):
        blend.weight_map(0.5, (4, 4, 3), np.ones((5, 4), bool))


def test_weight_for_is_the_inverse_mse_weight_at_its_defaults():
    # two estimates with uncorrelated errors: the best weight of the second is m1 / (m1 + m2)
    for m_plan, m_unet in ((1.0, 1.0), (4.0, 1.0), (1.0, 3.0)):
        adv = 10 * np.log10(m_plan / m_unet)
        assert blend.weight_for(adv, 1.0) == pytest.approx(m_plan / (m_plan + m_unet))
    ws = [blend.weight_for(a, 0.7, 1.0, 3.0) for a in (-20, -3, 0, 1, 3, 20)]
    assert ws == sorted(ws) and ws[0] < 1e-3 and ws[-1] == pytest.approx(0.7, abs=1e-3)
    assert blend.weight_for(1.0, 0.7, 1.0, 3.0) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="scale"):
        blend.weight_for(0.0, 0.5, 0.0, 0.0)


def test_mse_terms_give_the_exact_error_of_every_weight():
    from restorekit.scripts.metrics import mse

    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, (33, 21, 3)).astype(np.float32)
    a = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    b = np.clip(clean * 0.8 + 0.1 + rng.normal(0, 0.03, clean.shape), 0, 1).astype(np.float32)
    mask = np.zeros((33, 21), bool)
    mask[10:12, :] = True
    A, B, C = blend.mse_terms(clean, a, b, mask)
    for w in (0.0, 0.35, 0.9):
        assert A + 2 * w * B + w * w * C == pytest.approx(mse(clean, blend.blend(a, b, w, mask)), rel=1e-5)


def _row(level, input_db, plan_db, terms, adv):
    return {"level": level, "input_mse": 10 ** (-input_db / 10), "advantage_db": adv,
            "mse_terms": terms if terms is not None else (10 ** (-plan_db / 10), 0.0, 0.0)}


def test_choose_blend_takes_a_helpful_blend_and_refuses_one_that_harms_a_light_image():
    from restorekit.hybrid.tools.train_guided import choose_blend

    # a heavy row the plan does not improve where half-and-half halves the error (independent errors of
    # equal size: B = −A, C = 2A) and the U-Net is predicted to win; a light row where any sizeable
    # U-Net weight hurts badly (the U-Net's error is large) and the U-Net is predicted to lose
    a = 10 ** -1.5
    heavy = _row("severe", 15.0, 15.0, (a, -a, 2 * a), 3.0)
    light_bad = _row("light", 30.0, 30.0, (1e-3, 0.0, 0.2), -3.0)
    res = choose_blend([heavy, light_bad, _row("light", 30.0, 30.0, None, 0.0)])
    assert res["blend"]["max_weight"] > 0 and res["chosen"]["by_level"]["severe"] > 1.5
    # the light row stays within 1 dB of its input: its weight is small enough (a low centre would not be)
    assert res["chosen"]["light_worst_db"] >= -1.0
    assert not res["by_setting"]["0.9/0.0/3.0"]["light_ok"]
    # nothing to gain: the blend stays off
    assert choose_blend([light_bad])["blend"]["max_weight"] == 0.0


def _restorer(max_weight, unet_fn):
    from test_hybrid_guided import toy_guide
    from restorekit.hybrid import unet
    from restorekit.hybrid.engine import HybridRestorer

    guide = toy_guide({"sharpen": [0.2, 1.0]}, deep=-5.0)
    guide.blend = {"max_weight": max_weight, "centre_db": 0.0, "scale_db": 10.0}
    r = HybridRestorer(unet=unet.handle_from_module(unet.RestoreUNet(base=4)), guide=guide, detect_damage=False)
    r._unet_run = unet_fn
    return r


def test_auto_blends_the_plans_result_with_the_unets_and_says_so():
    from restorekit.hybrid.tools import damage

    img = damage.load_source("astronaut", 96)
    grey = lambda x: (np.full_like(x, 0.5), {"model": "grey", "runner": None})  # noqa: E731
    ref, info0 = _restorer(0.0, grey).restore(img, "auto")
    assert "blend" not in info0.parameters and not info0.unchanged  # the sharpen stage ran
    out, info = _restorer(0.6, grey).restore(img, "auto")
    b = info.parameters["blend"]
    # the old route: the deep forest predicts −5 dB, the plan +1 dB (its sharpen step): weight_for(−6, 0.6)
    assert b["weight"] == pytest.approx(round(blend.weight_for(-6.0, 0.6), 3))
    np.testing.assert_allclose(out, ref + b["weight"] * (0.5 - ref), atol=1e-6)
    assert info.stages[-1] == f"U-Net blend ({b['weight']:g})" and "mixed with the U-Net" in b["why"]
    assert "U-Net blend" in info.info_fields()["stages"]
    # the CLI line and restore_report.json list it as a step with its weight
    from restorekit.hybrid.tools.batch import restore_steps, step_text

    steps = restore_steps(info)["steps"]
    assert steps[-1]["stage"] == "U-Net blend" and steps[-1]["params"]["weight"] == b["weight"]
    assert step_text(steps[-1]).startswith(f"U-Net blend(weight={b['weight']:g}")


def test_an_image_the_plan_leaves_unchanged_is_not_blended():
    # a smooth clean gradient: neither the forests (every stage predicts a loss) nor the rules act
    yy, xx = np.mgrid[0:96, 0:80].astype(np.float32)
    img = np.stack([0.2 + 0.6 * xx / 80, 0.3 + 0.4 * yy / 96, np.full_like(xx, 0.5)], -1).astype(np.float32)
    calls = []

    def unet_fn(x):
        calls.append(x.shape)
        return np.full_like(x, 0.5), {"model": "grey", "runner": None}

    from test_hybrid_guided import toy_guide

    r = _restorer(0.9, unet_fn)
    r._guide = toy_guide()
    r._guide.blend = {"max_weight": 0.9, "centre_db": 0.0, "scale_db": 10.0}
    out, info = r.restore(img, "auto")
    assert info.unchanged and np.array_equal(out, img) and "blend" not in info.parameters and not calls

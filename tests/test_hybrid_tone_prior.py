"""The learned tone prior (hybrid/tone_prior.py) and the tone stage's percentile match (hybrid/plan.py):
the matching curve is monotone and bounded, matching a faded photo to its original's percentiles
restores it, the prior's gate skips small predicted changes, it replaces the plan's tone and colour
stages, grey works, and the shipped prior leaves a clean photo alone."""
import numpy as np
import pytest

from restorekit.hybrid import defects, plan, tone_prior
from restorekit.hybrid.tools import damage
from restorekit.scripts.metrics import psnr


class ConstModel:
    """A stand-in forest: the same predicted percentile change for every image."""

    def __init__(self, values):
        self.values = np.asarray(values, np.float64).ravel()

    def predict(self, X):
        return np.tile(self.values, (len(X), 1))


def toy_prior(delta, strength=1.0, min_change=0.04):
    k = len(tone_prior.PERCENTILES)
    d = np.broadcast_to(np.asarray(delta, np.float64), (3, k))
    return tone_prior.TonePrior({"forest": ConstModel(d), "percentiles": list(tone_prior.PERCENTILES),
                                 "strength": strength, "min_change": min_change})


@pytest.fixture(scope="module")
def photo():
    return damage.load_source("chelsea", 160)  # a held-out (test) source


def test_match_curve_is_monotone_slope_bounded_and_keeps_the_middle_knot(rng):
    for _ in range(50):
        x = np.sort(rng.uniform(0, 1, 11))
        y = rng.uniform(-0.2, 1.2, 11)  # deliberately not monotone
        xs, ys = plan.match_curve(x, y)
        assert np.all(np.diff(xs) > 0)
        slopes = np.diff(ys) / np.diff(xs)
        assert np.all(slopes >= -1e-12) and np.all(slopes <= plan.MATCH_MAX_SLOPE + 1e-9)
        assert ys[5] == pytest.approx(y[5])


def test_matching_a_faded_photo_to_its_original_percentiles_restores_it(photo):
    faded = damage.tone_curve(photo, 0.18, 0.78, 1.25)  # black point up, white point down, gamma
    faded = damage.oklab_cast(faded, 0.02, 0.04)  # and yellowed
    faded = np.clip(faded, 0, 1).astype(np.float32)
    targets = defects.measure(photo).tone.percentiles
    out, res = plan.STAGES["tone"](faded, {"ops": [("match", {"percentiles": list(defects.PERCENTILES),
                                                               "targets": targets})]})
    assert res["ops"][0]["op"] == "match" and out.shape == faded.shape and out.dtype == np.float32
    assert psnr(faded, photo) < 21 and psnr(out, photo) > psnr(faded, photo) + 8


def test_matching_to_the_current_percentiles_is_almost_the_identity(photo):
    q = {"percentiles": list(defects.PERCENTILES), "targets": defects.measure(photo).tone.percentiles}
    out, _ = plan.STAGES["tone"](photo, {"ops": [("match", q)]})
    assert np.abs(out - photo).max() < 0.03 and psnr(out, photo) > 40


def test_the_prior_skips_a_small_predicted_change_and_says_so(photo):
    rep = defects.measure(photo)
    params, why = toy_prior(0.01).decide(rep)
    assert params is None and "close to undamaged" in why and "0.010 < 0.040" in why
    params, why = toy_prior(0.1).decide(rep)
    assert params is not None and "≥ 0.040" in why
    cur = np.asarray(rep.tone.percentiles)
    assert np.allclose(np.asarray(params["targets"]) - cur, 0.1)
    # the strength scales the change
    params, _ = toy_prior(0.1, strength=0.5).decide(rep)
    assert np.allclose(np.asarray(params["targets"]) - cur, 0.05)


def test_amend_replaces_the_plans_tone_and_colour_stages(photo):
    rep = defects.measure(photo)
    rules = plan.Rules(black_max=0.0, cast_min=0.0, cast_spread_max=100.0)  # force tone and colour on
    p = plan.plan_from_rules(rep, None, rules, denoiser="wiener")
    assert {"tone", "colour"} <= {s.stage for s in p.steps}
    q = tone_prior.amend(p, rep, toy_prior(-0.05))
    tone = [s for s in q.steps if s.stage == "tone"]
    assert len(tone) == 1 and tone[0].params["ops"][0][0] == "match"
    assert "colour" not in {s.stage for s in q.steps}
    assert [s.stage for s in q.steps] == [s for s in plan.ORDER if s in {x.stage for x in q.steps}]
    q2 = tone_prior.amend(p, rep, toy_prior(0.0))
    assert not {"tone", "colour"} & {s.stage for s in q2.steps}
    assert any(s.stage == "tone" and "close to undamaged" in s.why for s in q2.skipped)
    assert tone_prior.amend(p, rep, None) is p


def test_grey_images_get_one_target_row_and_stay_grey(photo):
    grey = photo.mean(axis=-1, keepdims=True)
    rep = defects.measure(grey)
    params, _ = toy_prior(-0.08).decide(rep)
    assert np.asarray(params["targets"]).shape == (1, len(defects.PERCENTILES))
    out, _ = plan.STAGES["tone"](grey, {"ops": [("match", params)]})
    assert out.shape == grey.shape and np.isfinite(out).all()


def test_percentiles_are_measured_per_channel():
    rep = defects.measure(damage.load_source("astronaut", 128))
    p = np.asarray(rep.tone.percentiles)
    assert p.shape == (3, len(defects.PERCENTILES)) and np.all(np.diff(p, axis=1) >= 0)
    assert np.allclose(p[:, 0], rep.tone.channel_low) and np.allclose(p[:, -1], rep.tone.channel_high)


def test_shipped_prior_loads_hash_checked_and_leaves_a_clean_photo_alone(photo):
    prior = tone_prior.TonePrior.load()
    assert 0 < prior.strength <= 1 and prior.min_change > 0
    params, why = prior.decide(defects.measure(photo))
    assert params is None, why


def test_shipped_prior_gains_on_held_out_severe_damage():
    """Held-out (test) sources the prior never saw, the generator's severe mix (fading, casts, stains,
    noise, marks): where the prior acts, its match of the damaged image gains on average, and it acts
    on most of them."""
    prior = tone_prior.TonePrior.load()
    gains = []
    for name in ("chelsea", "rocket"):
        clean = damage.load_source(name, 160)
        for i in range(4):
            d, _ = damage.damage_image(clean, "severe", damage.pair_seed(name, "severe", i, 5))
            params, _ = prior.decide(defects.measure(d))
            if params is not None:
                out, _ = plan.STAGES["tone"](d, {"ops": [("match", params)]})
                gains.append(psnr(out, clean) - psnr(d, clean))
    assert len(gains) >= 4 and np.mean(gains) > 0.3, gains

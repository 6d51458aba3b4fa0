"""The ml_guided plan (hybrid/guided.py), the deep_learning path and auto's routing with the forests,
and the shipped forests against the two baselines on held-out sources."""

import os
import shutil

import numpy as np
import pytest

from restorekit.hybrid import guided, unet
from restorekit.hybrid.engine import HybridRestorer
from restorekit.hybrid.tools import damage
from restorekit.scripts.metrics import psnr


class ConstModel:
    """A stand-in forest: the same prediction for every feature vector."""

    def __init__(self, values):
        self.values = np.atleast_1d(np.asarray(values, np.float64))

    def predict(self, X):
        out = np.tile(self.values, (len(X), 1))
        return out[:, 0] if out.shape[1] == 1 else out


def toy_guide(gains=None, deep=-5.0, margins=None, route_margin=0.0):
    """A Guide whose forests predict fixed gains (dB): ``gains[stage]`` per candidate (default −1 for
    every candidate of every stage), ``deep`` for the U-Net path."""
    gains = gains or {}
    forests = {s: ConstModel(gains.get(s, [-1.0] * len(c))) for s, c in guided.CANDIDATES.items()}
    forests["deep"] = ConstModel([deep])
    return guided.Guide({"forests": forests, "feature_names": list(guided.FEATURE_NAMES),
                         "candidates": {k: list(v) for k, v in guided.CANDIDATES.items()},
                         "margins": margins or {}, "route_margin_db": route_margin})


@pytest.fixture(scope="module")
def identity_unet():
    return unet.handle_from_module(unet.RestoreUNet(base=4))  # zero-initialised head: identity


@pytest.fixture(scope="module")
def shipped():
    return HybridRestorer(device="cpu")


def test_feature_vector_has_its_names_and_reads_the_measurements():
    from restorekit.hybrid import defects

    img = damage.load_source("astronaut", 128)
    rep = defects.measure(img)
    x = guided.feature_vector(rep, 0.25, ["denoise"])
    assert x.shape == (len(guided.FEATURE_NAMES),) and np.isfinite(x).all()
    named = dict(zip(guided.FEATURE_NAMES, x))
    assert named["noise_sigma"] == pytest.approx(rep.noise.sigma)
    assert named["mask_fraction"] == 0.25 and named["ran_denoise"] == 1.0 and named["ran_deblur"] == 0.0
    assert named["black_point"] == pytest.approx(rep.tone.black_point)


def test_a_stage_runs_only_above_its_margin_with_the_predicted_best_candidate(identity_unet):
    img = damage.load_source("astronaut", 128)
    g = {"sharpen": [0.3, 0.9]}
    r = HybridRestorer(unet=identity_unet, guide=toy_guide(g, margins={"sharpen": 0.5}))
    out, info = r.restore(img, "ml_guided")
    assert info.stages == ["sharpen"]
    step = info.parameters["plan"]["steps"][0]
    assert "predicted gain +0.90 dB > margin 0.50" in step["why"]
    assert step["params"]["amount"] == pytest.approx(1.2 * max(info.analysis.defects["blur"]["excess"], 0.5))
    r = HybridRestorer(unet=identity_unet, guide=toy_guide(g, margins={"sharpen": 1.0}))
    out, info = r.restore(img, "ml_guided")
    assert info.unchanged and np.array_equal(out, img)
    assert "not above the margin 1.00 dB" in info.reason


def test_auto_routes_by_the_predicted_gains(identity_unet):
    img = damage.load_source("astronaut", 128)
    r = HybridRestorer(unet=identity_unet, guide=toy_guide({"sharpen": [0.2, 1.0]}, deep=2.0, route_margin=0.5))
    _, info = r.restore(img, "auto")
    assert info.method == "deep_learning" and info.parameters["route"]["chosen"] == "deep_learning"
    r = HybridRestorer(unet=identity_unet, guide=toy_guide({"sharpen": [0.2, 1.0]}, deep=1.2, route_margin=0.5))
    _, info = r.restore(img, "auto")
    assert info.method == "ml_guided" and info.stages == ["sharpen"]


def test_deep_learning_inpaints_a_given_mask_before_the_unet(identity_unet):
    img = damage.load_source("chelsea", 128)
    mask = np.zeros(img.shape[:2], bool)
    mask[20:110, 60:62] = True
    scratched = img.copy()
    scratched[mask] = 1.0
    r = HybridRestorer(unet=identity_unet, guide=toy_guide(), detect_damage=False)
    out, info = r.restore(scratched, "deep_learning", mask=mask)
    assert info.stages == ["inpaint", "U-Net"]
    # the CLI line and restore_report.json list both steps, the U-Net last (it was left out once)
    from restorekit.hybrid.tools.batch import restore_steps

    assert [s["stage"] for s in restore_steps(info)["steps"]] == ["inpaint", "U-Net"]
    assert psnr(out, img) > psnr(scratched, img) + 5.0
    assert np.abs(out[mask] - img[mask]).mean() < 0.1  # the scratch is gone, not passed to the U-Net
    out, info = r.restore(scratched, "deep_learning")  # no mask: the U-Net (identity here) alone
    assert info.stages == ["U-Net"] and np.allclose(out, scratched, atol=1e-5)
    assert [s["stage"] for s in restore_steps(info)["steps"]] == ["U-Net"]


# --- the shipped forests -----------------------------------------------------------------------------------
def test_the_bundle_loads_only_through_its_sha256_check(tmp_path):
    from restorekit.scripts.shipped_models import MODELS_DIR, ShippedModelError

    g = guided.Guide.load()
    assert set(g.margins) == set(guided.STAGES) and "deep" in g.bundle["forests"]
    d = tmp_path / "hybrid"
    d.mkdir()
    for name in ("guided.joblib", "guided.joblib.sha256"):
        shutil.copy(os.path.join(MODELS_DIR, "hybrid", name), d / name)
    guided.Guide.load(models_dir=str(tmp_path))
    with open(d / "guided.joblib", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ShippedModelError, match="hash"):
        guided.Guide.load(models_dir=str(tmp_path))


def test_shipped_ml_guided_leaves_a_clean_photo_bit_identical(shipped):
    img = damage.load_source("chelsea", 128)  # a held-out (test) source
    out, info = shipped.restore(img, "ml_guided")
    assert info.unchanged and np.array_equal(out, img) and info.stages == []
    assert "denoise" in info.reason and "tone" in info.reason


@pytest.mark.parametrize("sigma", [0.03, 0.06])
def test_shipped_ml_guided_turns_on_the_stage_of_a_single_defect(shipped, sigma):
    # a smooth held-out photograph: on fine texture (astronaut, chelsea's fur) the forest is more timid,
    # since clean textures measure as noise too (models/hybrid/MODEL_CARD.md, limitations)
    img = damage.load_source("rocket", 128)
    bad = np.clip(img + np.random.default_rng(3).normal(0, sigma, img.shape), 0, 1).astype(np.float32)
    out, info = shipped.restore(bad, "ml_guided")
    assert info.stages == ["denoise"]  # white noise alone: only the denoiser runs
    assert psnr(out, img) > psnr(bad, img) + 2.0


def test_shipped_models_beat_both_baselines_on_held_out_sources(shipped):
    from restorekit.hybrid import baselines

    scores = {"auto": [], **{b: [] for b in baselines.BASELINES}}
    for name in ("chelsea", "rocket"):  # skimage test sources, in CI too
        clean = damage.load_source(name, 128)
        for level in ("moderate", "severe"):
            for i in range(2):
                d, _ = damage.damage_image(clean, level, damage.pair_seed(name, level, i, 7))
                scores["auto"].append(psnr(shipped.restore(d, "auto")[0], clean))
                for b in baselines.BASELINES:
                    scores[b].append(psnr(baselines.run(b, d), clean))
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    for b in baselines.BASELINES:
        assert means["auto"] > means[b], means


def test_auto_lets_the_rules_decide_when_the_forests_plan_is_empty():
    """The shipped Gaussian-blur example (512 px, one clean-cut defect, unlike the forests' training mix):
    the forests predict no gain anywhere, so auto runs the rule plan — the same output as ``classical``,
    then mixed with the U-Net's by the shipped blend (hybrid/blend.py) — and the route says so; the
    forests alone would have returned it unchanged."""
    from restorekit.hybrid.blend import blend
    from restorekit.scripts import image_io

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "images",
                        "camera_gauss_blur.png")
    img = image_io.read_image(path).pixels
    r = HybridRestorer(denoiser="wiener")
    _, ml = r.restore(img, "ml_guided")
    assert ml.unchanged
    out, rep = r.restore(img, "auto")
    ref, cl = r.restore(img, "classical")
    assert rep.method == "classical" and rep.parameters["route"]["chosen"] == "classical"
    assert "deblur" in rep.stages and not rep.unchanged
    b = rep.parameters.get("blend")
    if b is None:
        assert np.array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, blend(ref, r._unet_run(img)[0], b["weight"]), atol=1e-6)


def test_auto_routes_to_the_unet_when_it_changes_the_image_a_lot(identity_unet):
    """The residual route: the U-Net's change to the ≤ ROUTE_SIDE copy decides when the forests do not."""
    img = damage.load_source("astronaut", 128)
    guide = toy_guide({"sharpen": [0.2, 1.0]}, deep=-5.0)
    guide.route_residual_db = 20.0
    r = HybridRestorer(unet=identity_unet, guide=guide)
    _, info = r.restore(img, "auto")  # the identity U-Net changes nothing: residual capped at 60 dB
    assert info.method == "ml_guided" and info.parameters["route"]["unet_residual_db"] == 60.0
    calls = []

    def darkening_unet(x):
        calls.append(x.shape)
        return x * 0.5, {"model": "halves the image"}

    r._unet_run = darkening_unet
    out, info = r.restore(img, "auto")
    route = info.parameters["route"]
    assert info.method == "deep_learning" and route["by"] == "U-Net residual"
    assert route["unet_residual_db"] < 20.0 and "below 20 dB" in route["because"]
    assert len(calls) == 1 and np.allclose(out, np.clip(img * 0.5, 0, 1))  # the routing run is reused
    # a large image: the residual is measured on its ≤ 256 px copy, then the U-Net runs on the image
    big = np.ascontiguousarray(np.tile(img, (3, 3, 1)))
    calls.clear()
    out, info = r.restore(big, "auto")
    assert info.method == "deep_learning" and calls[0] == (guided.ROUTE_SIDE, guided.ROUTE_SIDE, 3)
    assert calls[-1] == big.shape and out.shape == big.shape
    # without the threshold (bundles from before it) nothing changes and no U-Net runs to decide
    guide.route_residual_db = float("-inf")
    calls.clear()
    _, info = r.restore(img, "auto")
    assert info.method == "ml_guided" and calls == [] and "unet_residual_db" not in info.parameters["route"]


def test_route_calibration_keeps_light_and_clean_images_off_the_unet():
    """choose_route on synthetic rows: heavy damage has a low U-Net residual and gains on the U-Net; a
    light image and an undamaged one with a lowish residual lose there.  The chosen threshold takes the
    heavy rows and neither of the others."""
    from restorekit.hybrid.tools.train_guided import choose_route

    def row(level, resid, inp, deep, ml):
        return {"level": level, "input": inp, "deep_learning": deep, "ml_guided": ml, "classical": ml,
                "pred_plan": 0.0, "pred_deep": -10.0, "pred_deep_std": 0.0, "unet_residual_db": resid}

    rows = [row("severe", 17.5, 14.0, 17.0, 14.5), row("moderate", 19.5, 18.0, 20.0, 18.5),
            row("light", 21.2, 27.0, 24.0, 27.0), row("light", 28.0, 28.0, 27.0, 28.2),
            row("clean", 22.3, float("inf"), float("inf"), float("inf"))]
    res = choose_route(rows)
    # the threshold stays 1 dB below the harmed light image's residual (21.2) and the undamaged one's (22.3)
    assert res["residual_cap_db"] == pytest.approx(21.2 - 1.0)
    assert 19.5 < res["route_residual_db"] <= 20.2
    chosen = res["by_margin"][f"{res['route_risk']}/{res['route_margin_db']}/{res['route_residual_db']}"]
    assert chosen["light_ok"] and chosen["clean_ok"] and chosen["deep_fraction"] == 0.5
    # the undamaged image with the lowest residual bounds the threshold even when light rows allow more
    rows[2] = row("light", 21.2, 27.0, 27.5, 27.0)
    rows[4]["unet_residual_db"] = 19.8
    res = choose_route(rows)
    assert res["residual_cap_db"] == pytest.approx(19.8 - 1.0)
    assert 17.5 < res["route_residual_db"] <= 18.8  # the severe row only
    assert res["by_margin"][f"{res['route_risk']}/{res['route_margin_db']}/{res['route_residual_db']}"]["clean_ok"]


def _route_row(level, inp, deep, ml, resid=30.0, x=None):
    return {"level": level, "input": inp, "deep_learning": deep, "ml_guided": ml, "pred_plan": 0.0,
            "pred_deep": 0.0, "pred_deep_std": 0.0, "unet_residual_db": resid, "unet_fine_db": resid + 3.0,
            "x": np.zeros(len(guided.FEATURE_NAMES)) if x is None else x}


class ResidualModel:
    """A stand-in route forest: predicts the U-Net path's advantage as 25 − the coarse residual (dB)."""

    def predict(self, X):
        return 25.0 - np.asarray(X)[:, len(guided.FEATURE_NAMES) + 3]


def test_route_forest_advantage_and_calibration_keep_light_and_clean_images_off_the_unet():
    from restorekit.hybrid.tools.train_guided import choose_route_forest, route_xy

    rows = [_route_row("severe", 14.0, 17.0, 14.5, resid=18.0), _route_row("moderate", 18.0, 20.0, 18.5, resid=21.0),
            _route_row("light", 27.0, 24.0, 27.0, resid=23.5), _route_row("light", 28.0, 27.0, 28.2, resid=28.0),
            _route_row("clean", np.inf, 40.0, np.inf, resid=24.5)]
    X, y = route_xy(rows)
    assert X.shape == (5, len(guided.FEATURE_NAMES) + len(guided.ROUTE_EXTRA_FEATURES))
    # the advantage: U-Net path minus ml_guided, PSNRs capped at 60 dB, clipped to the gain range
    assert y[0] == pytest.approx(2.5) and y[2] == pytest.approx(-3.0) and y[4] == pytest.approx(-6.0)
    res = choose_route_forest(ResidualModel(), rows)
    # predicted advantages +7, +4, +1.5, -3, +0.5: the margin must keep the light row (+1.5) and the
    # undamaged one (+0.5) off the U-Net while taking both heavy rows
    assert 1.5 <= res["route_forest_margin_db"] < 4.0
    assert res["chosen"]["light_ok"] and res["chosen"]["clean_ok"] and res["chosen"]["deep_fraction"] == 0.5
    # the floor: the lowest (deep forest's gain − plan's gain) of the routed validation rows, less 0.5 dB
    rows[0]["pred_deep"], rows[1]["pred_deep"], rows[1]["pred_plan"] = 1.0, 0.5, 2.5
    from restorekit.hybrid.tools.train_guided import ROUTE_FOREST_FLOOR_SAFETY_DB

    res = choose_route_forest(ResidualModel(), rows)
    assert res["route_forest_floor_db"] == pytest.approx(-2.0 - ROUTE_FOREST_FLOOR_SAFETY_DB)


def test_the_route_forest_is_not_followed_outside_its_floor(identity_unet):
    """Where the deep forest predicts the U-Net path far below the plan — further than on any validation
    image the route forest sent to the U-Net — the route forest is extrapolating: the plan runs."""
    img = damage.load_source("astronaut", 128)
    guide = toy_guide({"sharpen": [0.2, 1.0]}, deep=-3.0)  # deep forest: −3 dB, the plan: +1 dB
    guide.route_forest = ConstModel([2.0])
    guide.route_forest_margin = 1.0
    r = HybridRestorer(unet=identity_unet, guide=guide)
    guide.route_forest_floor = -5.0  # −4 dB is within the floor: the forest decides
    _, info = r.restore(img, "auto")
    assert info.method == "deep_learning"
    guide.route_forest_floor = -3.5  # −4 dB is below it
    _, info = r.restore(img, "auto")
    route = info.parameters["route"]
    assert info.method == "ml_guided" and route["route_forest_floor_db"] == -3.5
    assert "outside its domain" in route["because"] and "-4.00 dB against the plan" in route["because"]


def test_auto_follows_the_route_forest_when_the_bundle_has_one(identity_unet):
    img = damage.load_source("astronaut", 128)
    guide = toy_guide({"sharpen": [0.2, 1.0]}, deep=5.0, route_margin=0.0)  # the old route would say U-Net
    guide.route_forest = ConstModel([-2.0])
    r = HybridRestorer(unet=identity_unet, guide=guide)
    _, info = r.restore(img, "auto")
    route = info.parameters["route"]
    assert info.method == "ml_guided" and route["by"] == "route forest"
    assert route["predicted_advantage_db"] == -2.0 and route["unet_residual_db"] == 60.0
    guide.route_forest = ConstModel([2.0])
    guide.route_forest_margin = 1.0
    _, info = r.restore(img, "auto")
    assert info.method == "deep_learning" and "+2.00 dB over the plan" in info.parameters["route"]["because"]


class LevelModel:
    """A stand-in level forest: probability of light-or-no damage ``p`` from a function of the route
    vector, split evenly between ``clean`` and ``light`` (the rest on ``severe``)."""

    classes_ = np.array(["clean", "light", "moderate", "severe"])

    def __init__(self, p_light):
        self.p_light = p_light

    def predict_proba(self, X):
        p = np.clip(np.asarray([self.p_light(x) for x in np.asarray(X)], np.float64), 0.0, 1.0)
        return np.stack([p / 2, p / 2, np.zeros_like(p), 1.0 - p], axis=1)


def test_light_probability_sums_clean_and_light_of_a_real_classifier():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.where(X[:, 0] > 0.5, "severe", np.where(X[:, 0] > -0.5, "light", "moderate"))  # no "clean"
    m = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    proba = m.predict_proba(X)
    p = guided.light_probability(m, X)
    assert np.allclose(p, proba[:, list(m.classes_).index("light")])  # an unseen class counts 0
    assert guided.Guide({**toy_guide().bundle}).light_probability(X[0]) == 1.0  # no level forest: never routes


def test_level_threshold_takes_heavy_damage_and_keeps_light_and_clean_images_off_the_unet():
    from restorekit.hybrid.tools.train_guided import choose_level_threshold

    rows = [_route_row("severe", 14.0, 17.0, 14.5, resid=17.0), _route_row("moderate", 18.0, 20.0, 18.5, resid=19.0),
            _route_row("light", 27.0, 24.0, 27.0, resid=20.5), _route_row("light", 28.0, 28.5, 28.2, resid=28.0),
            _route_row("clean", np.inf, 40.0, np.inf, resid=24.5)]
    col = len(guided.FEATURE_NAMES) + 3  # the coarse residual: light-or-none likelier the higher it is
    level = LevelModel(lambda x: (x[col] - 16.0) / 10.0)  # 0.1, 0.3, 0.45, 1.0, 0.85
    bundle = {"route_forest": ConstModel([-3.0]), "route_forest_risk": 0.0, "route_forest_margin_db": 0.0}
    res = choose_level_threshold(level, bundle, rows)
    # 0.15 … 0.3 take the severe row, 0.4 the moderate one too, 0.5 also the light row that loses 3 dB
    assert res["route_level_threshold"] == 0.4 and res["chosen"]["light_ok"] and not res["by_threshold"]["0.5"]["light_ok"]
    assert res["chosen"]["clean_ok"] and res["chosen"]["deep_fraction"] == 0.5
    assert res["by_threshold"]["0.0"]["deep_fraction"] == 0.0  # the route forest alone sends none
    assert res["chosen"]["psnr_db"] > res["off"]["psnr_db"]
    # where the route forest already takes every damaged row the threshold adds nothing: the lowest wins
    bundle["route_forest"] = ConstModel([5.0])
    rows[-1]["pred_deep"] = -10.0  # ... and its floor keeps the undamaged row off the U-Net
    bundle["route_forest_floor_db"] = -5.0
    rows[2]["pred_deep"] = rows[3]["pred_deep"] = -10.0  # and the light rows
    res = choose_level_threshold(level, bundle, rows)
    assert res["route_level_threshold"] == 0.0 and res["chosen"]["deep_fraction"] == 0.5


def test_auto_takes_the_unet_path_when_the_level_forest_finds_heavy_damage(identity_unet):
    img = damage.load_source("astronaut", 128)
    guide = toy_guide({"sharpen": [0.2, 1.0]}, deep=5.0)
    guide.route_forest = ConstModel([-2.0])  # the route forest alone: the plan
    guide.route_level_threshold = 0.2
    r = HybridRestorer(unet=identity_unet, guide=guide)
    guide.level_forest = LevelModel(lambda x: 0.5)
    _, info = r.restore(img, "auto")
    route = info.parameters["route"]
    assert info.method == "ml_guided" and route["by"] == "route forest" and route["light_probability"] == 0.5
    guide.level_forest = LevelModel(lambda x: 0.1)
    _, info = r.restore(img, "auto")
    route = info.parameters["route"]
    assert info.method == "deep_learning" and route["by"] == "level forest" and route["light_probability"] == 0.1
    assert "light damage or none unlikely (10%, below 20%)" in route["because"]

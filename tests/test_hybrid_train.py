"""Training runs end to end on a tiny data set (hybrid/tools/train.py, hybrid/predictor.py, the CLI)."""
import json
import os

import numpy as np
import pytest
import torch

from restorekit.hybrid import classical, predictor, unet
from restorekit.scripts import metrics
from restorekit.hybrid.tools import damage, train
from restorekit.scripts.shipped_models import ShippedModelError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ssim_torch_matches_skimage(rng):
    from skimage.metrics import structural_similarity

    a = rng.random((40, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None]  # noqa: E731
    # skimage crops the same 5-px border before averaging as our 'valid' convolution
    assert float(train.ssim_torch(t(a), t(b))) == pytest.approx(ref, abs=2e-3)


def test_grid_has_forty_documented_combinations():
    assert len(classical.GRID) == 40
    assert {g[0] for g in classical.GRID} == {False, True}
    assert min(g[1] for g in classical.GRID) == 0.5 and max(g[1] for g in classical.GRID) == 2.0
    assert min(g[2] for g in classical.GRID) == 0.5 and max(g[2] for g in classical.GRID) == 2.5


def test_grid_scores_agree_with_direct_application():
    clean = damage.load_source("coffee", 64)
    dam, _ = damage.damage_image(clean, "moderate", 3)
    s = predictor.grid_scores(dam, clean)
    i = 17
    c, sg, st = classical.GRID[i]
    assert s[i] == pytest.approx(metrics.psnr(classical.apply(dam, c, sg, st), clean), abs=1e-9)


def test_tiny_training_end_to_end(tmp_path, capsys):
    """`restorekit retrain --quick` (predictor, damage mask, inpaint gate, U-Net, threshold calibration,
    ml_guided forests) into a scratch models dir."""
    from restorekit.hybrid.tools import cli

    md = str(tmp_path / "models")
    assert cli.main(["retrain", "--quick", "--models-dir", md, "--no-lbclahe"]) == 0
    pred = predictor.Predictor.load(models_dir=md)
    from restorekit.hybrid import analysis

    out = pred.predict(analysis.analyze(damage.load_source("moon", 64)))
    if out["no_change"]:
        assert out["strength"] == 0.0 and out["predicted_gain_db"] <= 0.0
    else:
        assert tuple([out["colour_correction"], out["sigma"], out["strength"]]) in classical.GRID
    h = unet.load_shipped(models_dir=md)
    assert h.arch == "RestoreKit-UNet" and h.size_multiple == 16
    with open(os.path.join(md, "hybrid", "unet_training.json")) as f:
        assert json.load(f)["config"]["base"] == train.QUICK_UNET["base"]
    from restorekit.hybrid import damage_mask

    from restorekit.hybrid.tools import train_damage_mask
    from restorekit.scripts.shipped_models import load_torch_weights

    net, meta = damage_mask.net_from_state(load_torch_weights(damage_mask.WEIGHTS_RELPATH, models_dir=md))
    assert 0 < meta["threshold"] < 1 and net.widths == tuple(train_damage_mask.QUICK["widths"])
    from restorekit.hybrid import guided

    g = guided.Guide.load(models_dir=md)  # the ml_guided forests, margins chosen on validation rows
    assert set(g.margins) == set(guided.STAGES) and np.isfinite(g.route_margin)
    assert "denoise" in g.bundle["forests"] and "deep" in g.bundle["forests"]
    # the route forest: fitted on training rows, its risk and margin chosen on validation rows
    assert g.route_forest is not None and g.route_forest.n_features_in_ == (
        len(guided.FEATURE_NAMES) + len(guided.ROUTE_EXTRA_FEATURES))
    assert g.route_forest_risk in (0.0, 0.5, 1.0, 1.5, 2.0) and np.isfinite(g.route_forest_margin)
    assert "route_forest_floor_db" in g.bundle  # −inf only when no validation image was routed
    # the level forest: a classifier of the generator's levels on the same inputs, its threshold on validation
    from restorekit.hybrid.tools.train_guided import LEVEL_THRESHOLD_GRID

    assert g.level_forest is not None and g.level_forest.n_features_in_ == g.route_forest.n_features_in_
    assert g.route_level_threshold in LEVEL_THRESHOLD_GRID and "level_route_validation" in g.bundle
    # the output blend, chosen last on validation rows (hybrid/blend.py): a setting of its grid
    from restorekit.hybrid import blend

    assert g.blend["max_weight"] in blend.MAX_WEIGHT_GRID and "blend_validation" in g.bundle
    from restorekit.hybrid import inpaint_gate
    from restorekit.scripts.shipped_models import model_path, sha256_file

    gate = inpaint_gate.InpaintGate.load(models_dir=md)  # trained on the detector trained just before it
    assert gate.detector_sha256 == sha256_file(model_path(damage_mask.WEIGHTS_RELPATH, models_dir=md))
    # a tampered file is refused by the hash check
    p = os.path.join(md, "hybrid", "predictor.joblib")
    with open(p, "ab") as f:
        f.write(b"x")
    with pytest.raises(ShippedModelError, match="hash"):
        predictor.Predictor.load(models_dir=md)


def test_unet_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    m = unet.RestoreUNet(base=4)
    clean = damage.load_source("astronaut", 64)[:48, :48]
    dam = damage.blur(clean, 1.5) * 0.8 + 0.1
    x = torch.from_numpy(np.ascontiguousarray(dam)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(m(x), y)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.75 * first


def test_choose_thresholds_recovers_the_bands_where_each_method_wins():
    """Each method is best in its own band of the quality estimate: the chosen thresholds must
    put the band edges where the winners change, and the routed mean must be the oracle's."""
    q = np.linspace(10, 34, 97)
    scores = np.zeros((q.size, 3))
    scores[:, 0] = np.where(q >= 27, 30.0, 10.0)                  # classical wins at q >= 27
    scores[:, 1] = np.where((q >= 19) & (q < 27), 25.0, 12.0)     # ML-guided in between
    scores[:, 2] = np.where(q < 19, 20.0, 15.0)                   # U-Net below 19
    levels = np.where(q >= 27, 0, np.where(q < 19, 2, 1))
    hi, lo, mean, acc = train.choose_thresholds(q, scores, levels, step_db=0.25)
    assert 26.75 < hi <= 27.0 and 18.75 < lo <= 19.0
    assert mean == pytest.approx(scores.max(axis=1).mean())
    assert acc == pytest.approx(1.0)


def test_choose_thresholds_prefers_fewer_unet_runs_on_ties():
    q = np.array([15.0, 20.0, 25.0])
    scores = np.full((3, 3), 22.0)  # every method equally good: nothing should go to the U-Net
    hi, lo, mean, _ = train.choose_thresholds(q, scores)
    assert not np.any(q < lo)


def test_cli_calibrate_on_quick_models(tmp_path, capsys):
    from restorekit.hybrid.tools import cli

    md = str(tmp_path / "models")
    train.train_predictor(models_dir=md, log=lambda s: None, **train.QUICK_PREDICTOR)
    train.train_unet(models_dir=md, log=lambda s: None, **train.QUICK_UNET)
    capsys.readouterr()
    assert cli.main(["calibrate", "--models-dir", md, "--per-level", "1"]) == 0
    text = capsys.readouterr().out
    res = json.loads(text[text.index("\n{") + 1: text.rindex("}") + 1])
    assert res["severe_max_db"] <= res["light_min_db"] and res["n"] == 6
    best_single = max(res["method_psnr_db"].values())
    assert res["auto_psnr_db"] >= best_single - 1e-9  # routing can always send everything one way

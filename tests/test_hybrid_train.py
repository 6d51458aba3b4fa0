"""Training runs end to end on a tiny data set (hybrid/train.py, hybrid/predictor.py, the CLI)."""
import json
import os

import numpy as np
import pytest
import torch

from restorekit.hybrid import classical, damage, predictor, train, unet
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
    assert s[i] == pytest.approx(predictor.psnr(classical.apply(dam, c, sg, st), clean), abs=1e-9)


def test_tiny_training_end_to_end(tmp_path, capsys):
    """`restorekit retrain --quick` (predictor, threshold calibration, U-Net) into a scratch models dir."""
    from restorekit.hybrid import cli

    md = str(tmp_path / "models")
    assert cli.main(["retrain", "--quick", "--models-dir", md, "--no-lbclahe"]) == 0
    pred = predictor.Predictor.load(models_dir=md)
    from restorekit.hybrid import analysis

    out = pred.predict(analysis.analyze(damage.load_source("moon", 64)))
    assert tuple([out["colour_correction"], out["sigma"], out["strength"]]) in classical.GRID
    h = unet.load_shipped(models_dir=md)
    assert h.arch == "RestoreKit-UNet" and h.size_multiple == 16
    with open(os.path.join(md, "hybrid", "unet_training.json")) as f:
        assert json.load(f)["config"]["base"] == train.QUICK_UNET["base"]
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
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.75 * first

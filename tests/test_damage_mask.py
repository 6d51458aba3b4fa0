"""The damage-mask detector (hybrid/damage_mask.py): finds drawn scratches and dust, leaves thin lines of
the scene alone, any size and channel count, the shipped weights' precision / recall on held-out images."""
import os

import numpy as np
import torch
import pytest

from restorekit.hybrid import damage_mask
from restorekit.hybrid.tools import damage, damage_marks, sources
from restorekit.hybrid.tools.train_damage_mask import precision_recall, tolerant_counts
from restorekit.scripts import shipped_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _line_layer(shape, p0, p1, width, soft=0.0):
    import cv2

    layer = np.zeros(shape[:2], np.float32)
    cv2.line(layer, tuple(int(v * 16) for v in p0), tuple(int(v * 16) for v in p1), 1.0, width, cv2.LINE_AA, 4)
    if soft:
        layer = cv2.GaussianBlur(layer, (0, 0), soft)
    return layer


@pytest.fixture(scope="module")
def scene():
    # chelsea is a held-out test source: the detector never saw it in training
    assert "chelsea" in sources.split_names("test", installed_only=False)
    return sources.load("chelsea", 256)


def test_shipped_weights_are_hash_checked_and_load():
    shipped_models.verify(damage_mask.WEIGHTS_RELPATH)
    net, meta = damage_mask.load_shipped()
    assert 0 < meta["threshold"] < 1
    # the operating point of detect(): balanced on validation, above the plain mask's threshold
    assert meta["threshold"] <= meta["mask_threshold"] < 1
    assert damage_mask.operating_threshold(meta) == meta["mask_threshold"]
    assert sum(p.numel() for p in net.parameters()) < 500_000


def test_operating_threshold_falls_back_to_the_plain_threshold_of_older_files():
    assert damage_mask.operating_threshold({"threshold": 0.3}) == 0.3
    assert damage_mask.operating_threshold({"threshold": 0.3, "mask_threshold": 0.45}) == 0.45


def test_the_plain_mask_is_cut_at_the_plain_threshold(scene):
    _, meta = damage_mask.load_shipped()
    plain, rep = damage_mask.detect(scene, plain=True)
    assert rep.threshold == pytest.approx(meta["threshold"])
    assert np.array_equal(plain, damage_mask.detect(scene, threshold=meta["threshold"])[0])
    assert damage_mask.detect(scene)[1].threshold == pytest.approx(meta["mask_threshold"])


def test_balanced_threshold_maximises_the_smaller_of_precision_and_recall():
    from restorekit.hybrid.tools.train_damage_mask import balanced_threshold

    def row(p, r):
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r)}

    # 0.3 meets precision 0.8 exactly with the most recall (the old rule's pick); 0.4 balances them
    table = {0.2: row(0.74, 0.92), 0.3: row(0.80, 0.89), 0.4: row(0.86, 0.86), 0.5: row(0.90, 0.82)}
    assert balanced_threshold(table) == 0.4
    assert balanced_threshold({0.3: row(0.5, 0.5), 0.6: row(0.5, 0.5)}) == 0.6  # ties: the higher one


def test_finds_a_drawn_scratch(scene):
    h, w = scene.shape[:2]
    for value in (0.95, 0.08):  # bright (emulsion scratched off) and dark
        layer = _line_layer(scene.shape, (0.3 * w, -5), (0.42 * w, h + 5), 2)
        img = scene * (1 - 0.85 * layer[..., None]) + value * 0.85 * layer[..., None]
        truth = (layer >= 0.5) & (np.abs(img - scene).max(-1) >= damage.VISIBLE_CHANGE)
        mask, rep = damage_mask.detect(img)
        pr = precision_recall(tolerant_counts(mask, truth))
        # measured with the shipped weights: recall 1.0, precision 0.58 (bright) — the mask is a little
        # wider than the 2 px line, and its halo reaches past the 2 px tolerance
        assert pr["recall"] >= 0.8, (value, pr)
        assert pr["precision"] >= 0.45, (value, pr)
        assert rep.lines >= 1 and rep.method == "cnn"


def test_ignores_a_thin_natural_line_of_the_same_width(scene):
    """A dark wire 2 px wide that belongs to the scene (softened by the optics like everything the
    camera saw — Gaussian σ 1.2 px — in the scene's own dark tone) is not damage; the same line drawn
    crisp on top of the picture, as a scratch is, is found.  Sharpness is the cue the detector learnt:
    a scene line as crisp as a scratch (σ < 1 px) is flagged (model card, limitations)."""
    h, w = scene.shape[:2]
    wire = _line_layer(scene.shape, (-5, 0.2 * h), (w + 5, 0.32 * h), 2, soft=1.2)
    dark = scene[np.unravel_index(np.argmin(scene.mean(-1)), scene.shape[:2])]
    img = scene * (1 - 0.9 * wire[..., None]) + dark * 0.9 * wire[..., None]
    on_wire = wire >= 0.5 * wire.max()
    mask, _ = damage_mask.detect(img)
    assert mask[on_wire].mean() <= 0.3, mask[on_wire].mean()  # measured 0.22
    # the same line drawn crisp on top of the picture is found
    scratch = _line_layer(scene.shape, (-5, 0.2 * h), (w + 5, 0.32 * h), 2)
    img2 = scene * (1 - 0.9 * scratch[..., None]) + 0.05 * 0.9 * scratch[..., None]
    mask2, _ = damage_mask.detect(img2)
    assert mask2[scratch >= 0.5].mean() >= 0.9


def test_finds_dust_and_a_loss(scene):
    rng = np.random.default_rng(5)
    img, cov = damage_marks.dust(scene, rng, 25)
    img, cov2 = damage_marks.patches(img, rng, 1, (0.004, 0.006))
    img = np.clip(img, 0, 1)
    truth = (np.maximum(cov, cov2) >= 0.5) & (np.abs(img - scene).max(-1) >= damage.VISIBLE_CHANGE)
    mask, rep = damage_mask.detect(img)
    pr = precision_recall(tolerant_counts(mask, truth))
    assert pr["recall"] >= 0.8 and pr["precision"] >= 0.45, pr  # measured 0.96 / 0.60
    assert rep.spots + rep.patches >= 3


def test_clean_image_gives_an_almost_empty_mask(scene):
    mask, rep = damage_mask.detect(scene)
    assert rep.fraction < 0.015, rep  # measured 0.8 %


def test_held_out_precision_and_recall_with_shipped_weights():
    """Held-out test photos (skimage chelsea and rocket, so it runs without the data wheels), recipe v2
    damage: measured precision 0.84, recall 0.95 at the detector's operating point (0.79 / 0.97 at the
    plain mask's threshold 0.3).  (The third skimage test source, the brick texture,
    is the detector's known weak spot: its mortar joints are flagged — precision 0.24; model card.)"""
    pairs = sources.make_pairs("test", per_level=2, max_side=192, families=["skimage"], base_seed=21)
    pairs = [p for p in pairs if p["source"] in ("chelsea", "rocket")]
    counts = sum(tolerant_counts(damage_mask.detect(p["damaged"])[0], p["params"]["mask"]) for p in pairs)
    pr = precision_recall(counts)
    assert pr["true_px"] > 0
    assert pr["recall"] >= 0.8 and pr["precision"] >= 0.7, pr
    # and the classical baseline is clearly worse on the same images
    cl = precision_recall(sum(tolerant_counts(damage_mask.detect(p["damaged"], method="classical")[0],
                                              p["params"]["mask"]) for p in pairs))
    assert cl["f1"] < pr["f1"] - 0.1, (cl, pr)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (7, 13, 1), (37, 53, 3), (64, 48, 4), (101, 67)])
def test_any_size_and_channel_count(shape):
    rng = np.random.default_rng(0)
    img = rng.uniform(0.3, 0.7, shape).astype(np.float32)
    before = img.copy()
    for method in ("cnn", "classical"):
        mask, rep = damage_mask.detect(img, method=method)
        assert mask.shape == shape[:2] and mask.dtype == bool
        assert 0 <= rep.fraction <= 1 and rep.method == method
    assert np.array_equal(img, before)


def test_greyscale_is_the_same_as_replicated(scene):
    grey = scene.mean(-1)
    rng = np.random.default_rng(1)
    g3, _ = damage_marks.scratches(np.repeat(grey[..., None], 3, -1), rng, 3)
    g3 = np.clip(g3, 0, 1)
    m1, _ = damage_mask.detect(g3[..., 0])
    m2, _ = damage_mask.detect(g3)
    m3, _ = damage_mask.detect(g3[..., :1])
    assert np.array_equal(m1, m2) and np.array_equal(m1, m3) and m1.any()


def test_uint8_is_scaled_not_clipped(scene):
    u8 = np.round(scene * 255).astype(np.uint8)
    m8, _ = damage_mask.detect(u8)
    mf, _ = damage_mask.detect(u8.astype(np.float32) / 255)
    assert np.array_equal(m8, mf)


def test_tiles_agree_with_the_whole_image(scene):
    net, meta = damage_mask.load_shipped()
    img, _ = damage.damage_image(scene, "severe", 3, only=("scratches", "dust"))
    whole = damage_mask.cnn_probability(img, net, tile=4096)
    tiled = damage_mask.cnn_probability(img, net, tile=200, overlap=damage_mask.OVERLAP)  # 2 tiles across
    t = meta["threshold"]
    assert np.mean((whole > t) == (tiled > t)) > 0.995


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        damage_mask.detect(np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="channels"):
        damage_mask.detect(np.zeros((8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="method"):
        damage_mask.detect(np.zeros((8, 8, 3), np.float32), method="magic")
    with pytest.raises(ValueError, match="probability"):
        damage_mask.detect(np.zeros((8, 8, 3), np.float32), threshold=1.5)


def test_falls_back_to_classical_without_weights(monkeypatch):
    def missing(*a, **k):
        raise shipped_models.ShippedModelError("shipped model 'hybrid/damage_mask.safetensors' is missing")

    monkeypatch.setattr(damage_mask, "load_shipped", missing)
    img = np.full((64, 64, 3), 0.4, np.float32)
    img[:, 30:32] = 0.95  # a bright vertical scratch on a flat field
    mask, rep = damage_mask.detect(img)
    assert rep.method == "classical" and "missing" in rep.note
    assert mask[:, 30:32].mean() > 0.9 and mask[:, :25].sum() == 0
    with pytest.raises(shipped_models.ShippedModelError):
        damage_mask.detect(img, method="cnn")


def test_components_are_classified_by_shape():
    m = np.zeros((100, 100), bool)
    m[10, 5:60] = True          # a line
    m[40:43, 40:43] = True      # a speck
    m[60:80, 60:85] = True      # a loss
    c = damage_mask.classify_components(m)
    assert (c["lines"], c["spots"], c["patches"]) == (1, 1, 1)
    assert c["line_px"] == 55 and c["spot_px"] == 9 and c["patch_px"] == 500


def test_the_mask_for_inpainting_is_confident_and_grown(scene):
    """The plan's mask (hysteresis: seeds > 0.95 grown into > 0.5): a clean held-out photo gets none at
    all, with the reason; two drawn scratches are found whole (as the 0.5 mask), and the mask is a
    subset of the 0.5 mask by construction."""
    clean, rep = damage_mask.detect_for_inpainting(scene)
    assert not clean.any() and "not inpainted" in rep.note and rep.extra["seed_fraction"] < 0.005
    h, w = scene.shape[:2]
    layer = np.maximum(_line_layer(scene.shape, (0.3 * w, -5), (0.42 * w, h + 5), 2),
                       _line_layer(scene.shape, (0.7 * w, -5), (0.6 * w, h + 5), 2))
    img = scene * (1 - 0.85 * layer[..., None]) + 0.95 * 0.85 * layer[..., None]
    mask, rep = damage_mask.detect_for_inpainting(img)
    net, _ = damage_mask.load_shipped()
    prob = damage_mask.cnn_probability(damage_mask.as_rgb(img), net)
    assert not (mask & ~(prob > 0.5)).any()
    assert mask[layer >= 0.5].mean() >= 0.9 and rep.lines >= 2 and rep.note == ""
    with pytest.raises(ValueError, match="grow"):
        damage_mask.detect_for_inpainting(img, seed=0.5, grow=0.9)


def test_rechoosing_the_operating_point_keeps_the_weights_and_the_plain_threshold(tmp_path):
    import shutil

    from restorekit.hybrid.tools import train_damage_mask as tdm

    md = str(tmp_path)
    os.makedirs(os.path.join(md, "hybrid"))
    for ext in ("", ".sha256"):
        shutil.copy(shipped_models.model_path(damage_mask.WEIGHTS_RELPATH) + ext,
                    os.path.join(md, damage_mask.WEIGHTS_RELPATH + ext))
    before = shipped_models.load_torch_weights(damage_mask.WEIGHTS_RELPATH, models_dir=md)
    before["meta.mask_threshold"][0] = 0.9  # a stale operating point, to be chosen again
    tdm._save(before, float(before["meta.threshold"]), damage_mask.WEIGHTS_RELPATH, md, 0.9)
    res = tdm.rechoose_mask_threshold(models_dir=md, log=lambda s: None, tests=False)
    after = shipped_models.load_torch_weights(damage_mask.WEIGHTS_RELPATH, models_dir=md)  # hash-checked
    assert res["mask_threshold"] == tdm.balanced_threshold(res["val_table"]) != 0.9
    assert float(after["meta.mask_threshold"]) == pytest.approx(res["mask_threshold"])
    assert float(after["meta.threshold"]) == float(before["meta.threshold"])
    for k, v in before.items():
        if not k.startswith("meta."):
            assert torch.equal(v, after[k]), k
    damage_mask.load_shipped.cache_clear()

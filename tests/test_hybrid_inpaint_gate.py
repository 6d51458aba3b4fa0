"""The inpainting gate (hybrid/inpaint_gate.py): candidate masks nest, the gate picks the candidate with
the best predicted gain above its margin or skips with the reason, a given mask is always inpainted,
the plan's inpaint stage is set by the choice, a gate trained with another detector is not used, and
the shipped gate inpaints drawn scratches on a held-out photo but leaves the clean photo alone."""
import numpy as np
import pytest

from restorekit.hybrid import defects, inpaint_gate, plan
from restorekit.hybrid.engine import HybridRestorer
from restorekit.hybrid.tools import damage
from restorekit.scripts.metrics import psnr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ConstModel:
    def __init__(self, values):
        self.values = np.asarray(values, np.float64)

    def predict(self, X):
        return np.tile(self.values, (len(X), 1))


def toy_gate(gains, margin=0.5):
    return inpaint_gate.InpaintGate({"forest": ConstModel(gains), "candidates": list(inpaint_gate.CANDIDATES),
                                     "margin_db": margin, "detector_sha256": "toy"})


@pytest.fixture(scope="module")
def photo():
    return damage.load_source("chelsea", 192)  # a held-out (test) source


@pytest.fixture(scope="module")
def prob(photo):
    h, w = photo.shape[:2]
    p = np.full((h, w), 0.05, np.float32)
    p[40:150, 50:53] = 0.99   # a confident line
    p[40:150, 53:55] = 0.6    # its uncertain rim
    p[100:110, 120:130] = 0.4  # merely plausible
    return p


def test_candidate_masks_nest(prob):
    m = inpaint_gate.candidate_masks(prob, 0.3)
    assert set(m) == set(inpaint_gate.CANDIDATES)
    assert np.all(m["confident"] <= m["hysteresis"]) and np.all(m["hysteresis"] <= m["plain"])
    assert m["plain"][105, 125] and not m["hysteresis"][105, 125]
    assert m["hysteresis"][60, 54] and not m["confident"][60, 54]


def test_the_gate_picks_the_best_candidate_above_its_margin_or_skips(photo, prob):
    rep = defects.measure(photo)
    mask, why, gains = toy_gate([-1.0, 2.0, 0.7]).decide(prob, 0.3, rep)
    assert gains["hysteresis"] == 2.0 and "'hysteresis'" in why
    assert np.array_equal(mask, inpaint_gate.candidate_masks(prob, 0.3)["hysteresis"])
    mask, why, _ = toy_gate([0.1, 0.2, 0.3]).decide(prob, 0.3, rep)
    assert mask is None and "not above the margin 0.50 dB" in why
    mask, why, _ = toy_gate([5.0, 5.0, 5.0]).decide(np.zeros_like(prob), 0.3, rep)
    assert mask is None and "found nothing" in why
    x = inpaint_gate.features(prob, inpaint_gate.candidate_masks(prob, 0.3), rep)
    assert x.ndim == 1 and np.isfinite(x).all()


def test_a_given_mask_is_always_inpainted_and_detection_can_be_off(photo):
    rep = defects.measure(photo)
    given = np.zeros(photo.shape[:2], bool)
    given[10:20, 10:12] = True
    c = inpaint_gate.choose_masks(photo, rep, toy_gate([-9, -9, -9]), given=given)
    assert c.inpaint is not None and np.array_equal(c.inpaint, given) and not c.detected
    c = inpaint_gate.choose_masks(photo, rep, None, detect=False)
    assert c.inpaint is None and c.plain is None and "off" in c.why


def test_amend_sets_the_plans_inpaint_stage(photo):
    rep = defects.measure(photo)
    m = np.zeros(photo.shape[:2], bool)
    m[5:9, 5:40] = True
    p = plan.plan_from_rules(rep, m, denoiser="wiener")
    assert p.steps[0].stage == "inpaint"
    q = inpaint_gate.amend(p, inpaint_gate.MaskChoice(m, None, "detector", True, "inpaint gate: no"))
    assert "inpaint" not in {s.stage for s in q.steps}
    assert any(s.stage == "inpaint" and s.why == "inpaint gate: no" for s in q.skipped)
    m2 = np.zeros_like(m)
    m2[50:60, 50:52] = True
    q = inpaint_gate.amend(p, inpaint_gate.MaskChoice(m, m2, "detector", True, "inpaint gate: yes"))
    assert q.steps[0].stage == "inpaint" and np.array_equal(q.steps[0].params["mask"], m2)


def test_a_gate_trained_with_another_detector_is_not_used(monkeypatch):
    monkeypatch.setattr(inpaint_gate.InpaintGate, "load", classmethod(lambda cls, *a, **k: toy_gate([1, 1, 1])))
    r = HybridRestorer(device="cpu")
    assert r.inpaint_gate is None
    assert any("another damage-mask detector" in n for n in r.notes)


def test_the_shipped_gate_is_tied_to_the_detectors_weights_and_plain_threshold_not_its_operating_point(tmp_path):
    """The gate and the forests read masks cut at the plain threshold: choosing the detector's operating
    point again (damage_mask meta.mask_threshold) must not disable the gate, while other weights or another
    plain threshold must."""
    import torch

    from restorekit.hybrid import damage_mask
    from restorekit.hybrid.tools import train_damage_mask as tdm
    from restorekit.scripts import shipped_models

    r = HybridRestorer(device="cpu")
    assert r.inpaint_gate is not None, r.notes
    gate = r.inpaint_gate
    assert gate.detector_fingerprint == damage_mask.shipped_fingerprint()
    sd = shipped_models.load_torch_weights(damage_mask.WEIGHTS_RELPATH)
    md = str(tmp_path)
    rel = damage_mask.WEIGHTS_RELPATH
    thr = float(sd["meta.threshold"])
    tdm._save(sd, thr, rel, md, 0.77)  # another operating point: same detector for the gate
    assert gate.matches_detector(models_dir=md)
    tdm._save(sd, thr + 0.1, rel, md, 0.77)  # another plain threshold
    damage_mask.shipped_fingerprint.cache_clear()
    assert not gate.matches_detector(models_dir=md)
    w = dict(sd)
    w["e1.0.weight"] = w["e1.0.weight"] + 1e-3 * torch.ones_like(w["e1.0.weight"])  # other weights
    tdm._save(w, thr, rel, md, 0.77)
    damage_mask.shipped_fingerprint.cache_clear()
    assert not gate.matches_detector(models_dir=md)
    # a bundle from before fingerprints: the detector file's own sha256 decides
    old = inpaint_gate.InpaintGate({**gate.bundle, "detector_fingerprint": ""})
    assert old.matches_detector(models_dir=md) == (old.detector_sha256 == shipped_models.sha256_file(
        shipped_models.model_path(rel, models_dir=md)))
    damage_mask.shipped_fingerprint.cache_clear()


def _scratched(photo):
    import cv2

    dam = photo.copy()
    layer = np.zeros(photo.shape[:2], np.float32)
    for (x0, y0, x1, y1) in ((30, 10, 60, 180), (120, 20, 150, 170), (10, 90, 180, 110)):
        cv2.line(layer, (x0, y0), (x1, y1), 1.0, 2, cv2.LINE_AA)
    dam = dam * (1 - layer[..., None]) + 0.95 * layer[..., None]
    return dam.astype(np.float32), layer > 0.03


def test_shipped_gate_inpaints_drawn_scratches_and_leaves_the_clean_photo_alone(photo):
    gate = inpaint_gate.InpaintGate.load()
    dam, true = _scratched(photo)
    c = inpaint_gate.choose_masks(dam, defects.measure(dam), gate)
    assert c.inpaint is not None, c.why
    assert c.inpaint[true].mean() > 0.6  # most of the scratch is inpainted
    out, _ = plan.STAGES["inpaint"](dam, {"mask": c.inpaint, "method": "telea", "radius": 3.0, "dilate": 1})
    assert psnr(out, photo) > psnr(dam, photo) + 3
    c = inpaint_gate.choose_masks(photo, defects.measure(photo), gate)
    assert c.inpaint is None, c.why

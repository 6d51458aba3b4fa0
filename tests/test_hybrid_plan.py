"""The restoration plan (hybrid/plan.py): stages run only on measured defects, clean images come back
bit-identical with the reason, the plan is data that any builder can fill, and each stage restores."""
import dataclasses

import numpy as np
import pytest

from restorekit.hybrid import defects, plan
from restorekit.hybrid.tools import damage
from restorekit.scripts import kernels
from restorekit.scripts.metrics import psnr


@pytest.fixture(scope="module")
def photo():
    return damage.load_source("astronaut", 192)


def _plan(img, mask=None, rules=plan.RULES):
    return plan.plan_from_rules(defects.measure(img), mask, rules, denoiser="wiener")


def test_clean_photo_is_unchanged_bit_identical_with_the_reason(photo):
    p = _plan(photo)
    assert p.unchanged and p.steps == []
    assert {s.stage for s in p.skipped} == set(plan.ORDER)  # every stage skipped, each with its reason
    assert "noise σ" in p.reason() and "blur" in p.reason()
    out, ex = plan.execute(photo, p)
    assert ex.unchanged and ex.reason == p.reason() and ex.summary().startswith("unchanged")
    assert out.dtype == photo.dtype and np.array_equal(out, photo) and out is not photo


def test_a_faded_photo_left_alone_points_to_the_tone_nodes(photo):
    """The rules leave tone alone, but an image as faded as few undamaged photographs are (0.45·x + 0.3:
    black point ≈ 0.32, contrast ≈ 0.4) is told where a deliberate contrast fix is; a normal one is not."""
    faded = (0.45 * photo + 0.3).astype(np.float32)
    tone = next(s for s in _plan(faded).skipped if s.stage == "tone")
    assert "looks faded" in tone.why and "LB-CLAHE" in tone.why
    assert "looks faded" not in next(s for s in _plan(photo).skipped if s.stage == "tone").why
    assert plan.faded_hint(0.05, 0.9) == "" and plan.faded_hint(0.3, 0.9) and plan.faded_hint(0.1, 0.5)


def test_grey_clean_photo_is_unchanged_and_stays_grey(photo):
    grey = photo.mean(axis=-1, keepdims=True)
    out, info = plan.restore(grey, detect=False)
    assert info["plan"].unchanged and out.shape == grey.shape and np.array_equal(out, grey)
    out2, _ = plan.restore(grey[..., 0], detect=False)  # [H, W] in, [H, W] out
    assert out2.shape == grey.shape[:2]


@pytest.mark.parametrize("defect, stage", [("noise", "denoise"), ("blur", "deblur"), ("motion", "deblur"),
                                           ("mask", "inpaint")])
def test_only_the_stage_of_the_measured_defect_runs_and_it_gains(photo, rng, defect, stage):
    import cv2

    mask = None
    if defect == "noise":
        dam = np.clip(photo + rng.normal(0, 0.04, photo.shape).astype(np.float32), 0, 1)
    elif defect == "blur":
        dam = damage.blur(photo, 1.8)
    elif defect == "motion":
        k = kernels.motion_kernel(9.0, 30.0).astype(np.float32)
        dam = cv2.filter2D(photo, -1, k, borderType=cv2.BORDER_REFLECT)
    else:
        dam = photo.copy()
        mask = np.zeros(photo.shape[:2], bool)
        mask[20:170, 60:62] = True  # a 2-px vertical scratch
        dam[mask] = 0.95
    p = _plan(dam, mask)
    assert [s.stage for s in p.steps] == [stage], p.to_dict()
    out, ex = plan.execute(dam, p)
    assert psnr(out, photo) > psnr(dam, photo) + 1.0
    assert ex.stages[0].stage == stage and ex.stages[0].seconds >= 0 and ex.stages[0].change_rms > 0
    if defect == "mask":  # pixels outside the (dilated) mask are untouched, bit for bit
        import cv2 as _cv2

        grown = _cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert np.array_equal(out[~grown], dam[~grown])


def test_texture_without_a_noise_floor_is_not_denoised():
    """A clean micrograph whose fine texture reads like σ ≈ 0.03 noise, but without the floor noise
    lays under every block: the denoiser is skipped, and says why."""
    img = damage.load_source("immunohistochemistry", 256)
    r = defects.measure(img)
    assert r.noise.sigma >= plan.RULES.noise_min and r.noise.floor < plan.RULES.noise_floor_min
    p = plan.plan_from_rules(r, None, plan.RULES, "wiener")
    assert "denoise" not in [s.stage for s in p.steps]
    assert any(s.stage == "denoise" and "texture" in s.why for s in p.skipped)


def test_the_plan_is_data_any_builder_can_fill(photo):
    """ml_guided will build the same structure from predictions: a hand-made plan runs as given."""
    faded = (0.3 + 0.6 * photo).astype(np.float32)
    steps = [plan.Step("tone", {"ops": [("levels", {"black_in": 0.3, "white_in": 0.9, "black_out": 0.0,
                                                    "white_out": 1.0})]}, "predicted"),
             plan.Step("sharpen", {"amount": 0.3, "radius": 1.0, "noise_sigma": 0.0}, "predicted")]
    p = plan.Plan(steps, [], source="test predictor")
    out, ex = plan.execute(faded, p)
    assert not ex.unchanged and [s.stage for s in ex.stages] == ["tone", "sharpen"]
    assert psnr(out, photo) > psnr(faded, photo) + 10
    d = p.to_dict()
    assert d["source"] == "test predictor" and d["steps"][0]["params"]["ops"][0][0] == "levels"
    with pytest.raises(ValueError, match="unknown plan stage"):
        plan.execute(photo, plan.Plan([plan.Step("magic", {}, "")], []))


def test_every_stage_runs_on_grey_and_colour(photo, rng):
    noisy = np.clip(damage.blur(photo, 1.5) + rng.normal(0, 0.03, photo.shape).astype(np.float32), 0, 1)
    mask = np.zeros(photo.shape[:2], bool)
    mask[50:52, 10:150] = True
    rules = dataclasses.replace(plan.RULES, black_max=0.0, cast_min=0.0, cast_spread_max=1e9)
    for img in (noisy, noisy.mean(axis=-1, keepdims=True)):
        p = plan.plan_from_rules(defects.measure(img), mask, rules, "wiener")
        names = [s.stage for s in p.steps]
        assert names[:3] == ["inpaint", "denoise", "deblur"] and "tone" in names
        assert ("colour" in names) == (img.shape[-1] == 3)
        out, ex = plan.execute(img, p)
        assert out.shape == img.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert 0.0 <= out.min() and out.max() <= 1.0
    # sharpen and the other tone operations on demand
    for op in ("flatfield", "lbclahe", "retinex"):
        q = {"surface": np.zeros((8, 8))} if op == "flatfield" else {}
        out, ex = plan.execute(photo, plan.Plan([plan.Step("tone", {"ops": [(op, q)]}, "")], []))
        assert out.shape == photo.shape
    out, _ = plan.execute(photo, plan.Plan([plan.Step("sharpen", {"amount": 1.0, "radius": 1.0}, "")], []))
    assert not np.array_equal(out, photo)


def test_progress_hook_sees_every_stage_and_can_abort(photo, rng):
    noisy = np.clip(damage.blur(photo, 2.0) + rng.normal(0, 0.03, photo.shape).astype(np.float32), 0, 1)
    p = _plan(noisy)
    seen = []
    plan.execute(noisy, p, progress=lambda i, n, name: seen.append((i, n, name)))
    assert [x[2] for x in seen] == [s.stage for s in p.steps] + ["done"]

    class Interrupted(Exception):
        pass

    def stop(i, n, name):
        if i == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        plan.execute(noisy, p, progress=stop)


def test_denoiser_choices(photo, rng):
    noisy = np.clip(photo + rng.normal(0, 0.03, photo.shape).astype(np.float32), 0, 1)
    r = defects.measure(noisy)
    with pytest.raises(ValueError, match="unknown denoiser"):
        plan.plan_from_rules(r, None, plan.RULES, "magic")
    p = plan.plan_from_rules(r, None, plan.RULES, "wiener")
    out, ex = plan.execute(noisy, p)
    assert "DFT Wiener" in ex.stages[0].result["backend"]
    from restorekit.scripts.bm3d_denoise import bm3d_available

    if bm3d_available():
        small = noisy[:64, :64]
        p = plan.plan_from_rules(defects.measure(small), None, plan.RULES, "bm3d")
        out, ex = plan.execute(small, p)
        assert ex.stages[0].result["backend"].startswith("bm3d")


def test_a_detected_mask_must_cover_enough_of_the_image_a_given_one_is_always_used(photo):
    r = defects.measure(photo)
    small = np.zeros(photo.shape[:2], bool)
    small[10:30, 10:12] = True  # 40 px: far under a 1 % minimum
    rules = plan.Rules(mask_min_fraction=0.01)
    p = plan.plan_from_rules(r, small, rules, "wiener", mask_source="damage-mask detector", mask_detected=True)
    assert p.unchanged and any(s.stage == "inpaint" and "too little" in s.why for s in p.skipped)
    p = plan.plan_from_rules(r, small, rules, "wiener", mask_source="given mask")
    assert [s.stage for s in p.steps] == ["inpaint"]
    tiny = photo[:100, :100]
    mask, why = plan.detect_mask(tiny)
    assert mask is None and "under" in why

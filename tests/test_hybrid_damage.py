"""The paired-data generator (hybrid/tools/damage.py): determinism, split by source, level ordering,
and recipe v2's ``info``: every defect's true parameter and the true damage mask."""
import numpy as np
import pytest

from restorekit.hybrid.tools import damage
from restorekit.scripts.colour import srgb_to_oklab
from restorekit.scripts.metrics import psnr


def _same_info(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k == "mask":
            assert np.array_equal(a[k], b[k])
        elif k == "mask_kinds":
            assert all(np.array_equal(a[k][m], b[k][m]) for m in a[k])
        else:
            assert a[k] == b[k], k


def test_split_is_by_source_and_disjoint():
    s = damage.SPLITS
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])


def test_damage_is_deterministic_in_the_seed():
    img = damage.load_source("coffee", 96)
    a, pa = damage.damage_image(img, "severe", 42)
    b, pb = damage.damage_image(img, "severe", 42)
    c, _ = damage.damage_image(img, "severe", 43)
    assert np.array_equal(a, b)
    _same_info(pa, pb)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert damage.pair_seed("coffee", "light", 0) == damage.pair_seed("coffee", "light", 0)


def test_input_is_not_modified():
    img = damage.load_source("coffee", 64)
    before = img.copy()
    for lv in damage.LEVEL_NAMES:
        damage.damage_image(img, lv, 5)
    assert np.array_equal(img, before)


def test_recipe_v1_is_unchanged():
    """The shipped models were trained on recipe v1: it must stay bit-for-bit what it was."""
    img = damage.load_source("coffee", 96)
    a, pa = damage.damage_image(img, "severe", 42, recipe="v1")
    # measured with the generator as it was before recipe v2 (main at 07fa2e8)
    assert float(a.astype(np.float64).sum()) == pytest.approx(8674.972753109876, abs=1e-3)
    assert pa["jpeg_quality"] == 33 and pa["cracks"] == 16 and pa["scratches"] == 8
    assert pa["blur_sigma"] == pytest.approx(1.9150920960645317)


def test_levels_are_ordered_by_damage():
    clean = damage.load_source("chelsea", 128)
    mean_psnr = {lv: np.mean([psnr(damage.damage_image(clean, lv, s)[0], clean) for s in range(8)])
                 for lv in damage.LEVEL_NAMES}
    assert mean_psnr["light"] > mean_psnr["moderate"] > mean_psnr["severe"]


def test_info_has_every_field_with_neutral_values_for_absent_defects():
    img = damage.load_source("coffee", 64)
    _, info = damage.damage_image(img, "moderate", 3, only=("noise",))
    assert set(damage.INFO_FIELDS) == set(info)
    assert info["defects"] == ["noise"]
    assert info["blur_kind"] == "none" and info["blur_sigma"] == 0
    assert (info["black_point"], info["white_point"], info["gamma"]) == (0.0, 1.0, 1.0)
    assert (info["cast_a"], info["cast_b"]) == (0.0, 0.0) and info["jpeg_quality"] is None
    assert info["illumination_min"] == info["illumination_max"] == 1.0
    assert info["mask"].shape == img.shape[:2] and info["mask"].dtype == bool and not info["mask"].any()


def test_every_kind_of_defect_occurs_over_seeds():
    img = damage.load_source("coffee", 64)
    seen = {"noise": set(), "blur": set(), "defects": set(), "cracks": set(), "illumination": set()}
    for s in range(60):
        _, info = damage.damage_image(img, "severe", s)
        seen["noise"].add(info["noise_kind"])
        seen["blur"].add(info["blur_kind"])
        seen["cracks"].add(info["crack_kind"])
        seen["illumination"].add(info["illumination_kind"])
        seen["defects"].update(info["defects"])
    assert seen["noise"] >= set(damage.NOISE_KINDS)
    assert seen["blur"] >= set(damage.BLUR_KINDS)
    assert seen["cracks"] >= {"walk", "craquelure"}
    assert seen["illumination"] >= {"vignette", "gradient"}
    assert seen["defects"] == set(damage.DEFECTS)


@pytest.mark.parametrize("kind", damage.NOISE_KINDS)
def test_noise_sigma_and_spectrum_are_the_truth(kind):
    flat = np.full((160, 160, 3), 0.5, np.float32)
    for s in range(40):
        d, info = damage.damage_image(flat, "severe", s, only=("noise",))
        if info["noise_kind"] == kind:
            break
    else:
        pytest.fail(f"no {kind} noise in 40 seeds")
    n = d - flat
    assert n.std() == pytest.approx(info["noise_sigma"], rel=0.05)
    lag1 = np.corrcoef(n[:, :-1, 0].ravel(), n[:, 1:, 0].ravel())[0, 1]
    rgb = np.corrcoef(n[..., 0].ravel(), n[..., 2].ravel())[0, 1]
    if kind == "white":
        assert abs(lag1) < 0.05 and abs(rgb) < 0.05 and info["grain_size"] == 0
    elif kind == "luminance":
        assert abs(lag1) < 0.05 and rgb > 0.99
    elif kind == "chroma":
        assert lag1 > 0.3 and abs(rgb) < 0.1 and info["grain_size"] > 0
    else:  # film grain: monochrome, low-pass
        assert lag1 > 0.3 and rgb > 0.99 and info["grain_size"] > 0


def test_blur_fade_and_illumination_are_the_truth():
    img = damage.load_source("astronaut", 96)
    kinds = set()
    for s in range(30):
        d, info = damage.damage_image(img, "moderate", s, only=("blur",))
        k = info["blur_kind"]
        size = {"gaussian": info["blur_sigma"], "disk": info["blur_radius"], "motion": info["motion_length"]}[k]
        ref = np.clip(damage.psf_blur(img, k, size, info["motion_angle"]), 0, 1)
        assert np.abs(d - ref).max() < 1e-6
        if k == "disk":
            assert info["blur_sigma"] == pytest.approx(info["blur_radius"] / 2)
        kinds.add(k)
    assert kinds == set(damage.BLUR_KINDS)
    d, info = damage.damage_image(img, "severe", 1, only=("fade",))
    ref = damage.tone_curve(img, info["black_point"], info["white_point"], info["gamma"])
    assert np.abs(d - np.clip(ref, 0, 1)).max() < 1e-6
    assert 0.12 <= info["black_point"] <= 0.3 and 0.65 <= info["white_point"] <= 0.88
    flat = np.full((64, 96, 3), 0.6, np.float32)
    d, info = damage.damage_image(flat, "severe", 2, only=("illumination",))
    gain = d[..., 0] / 0.6
    assert gain.min() == pytest.approx(info["illumination_min"], abs=1e-5)
    assert gain.max() == pytest.approx(info["illumination_max"], abs=1e-5)
    assert info["illumination_kind"] in ("vignette", "gradient")


def test_cast_is_the_oklab_shift():
    grey = np.full((32, 32, 3), 0.55, np.float32)
    for s in range(10):
        d, info = damage.damage_image(grey, "severe", s, only=("cast",))
        shift = np.asarray(srgb_to_oklab(d)).mean(axis=(0, 1)) - np.asarray(srgb_to_oklab(grey)).mean(axis=(0, 1))
        assert shift[1] == pytest.approx(info["cast_a"], abs=1e-4)
        assert shift[2] == pytest.approx(info["cast_b"], abs=1e-4)
        assert abs(shift[0]) < 1e-4
        if info["cast_kind"] == "yellowing":
            assert info["cast_b"] > 0


@pytest.mark.parametrize("kind", damage.MARK_KINDS)
def test_mask_is_exactly_where_marks_changed_the_image(kind):
    import cv2

    img = damage.load_source("coffee", 128)
    for s in range(20):
        d, info = damage.damage_image(img, "severe", s, only=(kind,))
        if info["mask"].any():
            break
    m = info["mask"]
    assert np.array_equal(m, info["mask_kinds"][kind]) and info[kind] > 0
    change = np.abs(d - img).max(-1)
    # every masked pixel is visibly changed; nothing far from the mask changed at all
    assert change[m].min() >= damage.VISIBLE_CHANGE - 1e-6
    near = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert change[~near].max() < damage.VISIBLE_CHANGE + 1e-6
    assert info["mask_fraction"] == pytest.approx(m.mean())


def test_only_rejects_unknown_defects_and_recipes():
    img = np.zeros((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="unknown defect"):
        damage.damage_image(img, "light", 0, only=("smudge",))
    with pytest.raises(ValueError, match="recipe"):
        damage.damage_image(img, "light", 0, recipe="v9")
    with pytest.raises(ValueError, match="level"):
        damage.damage_image(img, "medium", 0)

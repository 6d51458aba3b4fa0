"""The paired-data generator (hybrid/tools/damage.py): determinism, split by source, level ordering."""
import numpy as np

from restorekit.hybrid.tools import damage
from restorekit.scripts.metrics import psnr


def test_split_is_by_source_and_disjoint():
    s = damage.SPLITS
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])


def test_damage_is_deterministic_in_the_seed():
    img = damage.load_source("coffee", 96)
    a, pa = damage.damage_image(img, "severe", 42)
    b, pb = damage.damage_image(img, "severe", 42)
    c, _ = damage.damage_image(img, "severe", 43)
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert damage.pair_seed("coffee", "light", 0) == damage.pair_seed("coffee", "light", 0)


def test_levels_are_ordered_by_damage():
    clean = damage.load_source("chelsea", 128)
    mean_psnr = {lv: np.mean([psnr(damage.damage_image(clean, lv, s)[0], clean) for s in range(6)])
                 for lv in damage.LEVEL_NAMES}
    assert mean_psnr["light"] > mean_psnr["moderate"] > mean_psnr["severe"]

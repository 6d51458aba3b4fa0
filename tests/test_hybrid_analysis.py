"""Damage analysis features (hybrid/analysis.py) on synthetic cases with known answers."""
import numpy as np
import pytest

from restorekit.hybrid import analysis
from restorekit.hybrid.tools import damage


@pytest.fixture(scope="module")
def sharp():
    return damage.load_source("astronaut", 256)


def test_fourteen_features_in_documented_order(sharp):
    f = analysis.analyze(sharp)
    assert len(analysis.FEATURE_NAMES) == 14
    v = analysis.feature_vector(f)
    assert v.shape == (14,) and np.all(np.isfinite(v))
    assert 0 <= f["low_energy"] <= 1 and 0 <= f["high_energy"] <= 1
    assert f["low_energy"] + f["high_energy"] <= 1 + 1e-9
    assert f["high_low_ratio"] == pytest.approx(f["high_energy"] / f["low_energy"], rel=1e-6)


def test_blur_lowers_high_frequency_energy_and_raises_sharpening_need(sharp):
    f0 = analysis.analyze(sharp)
    f1 = analysis.analyze(damage.blur(sharp, 1.0))
    f2 = analysis.analyze(damage.blur(sharp, 2.0))
    assert f1["high_energy"] < 0.2 * f0["high_energy"]
    assert f2["high_energy"] < f1["high_energy"]
    assert f0["sharpening_need"] < 0.15
    assert f1["sharpening_need"] > f0["sharpening_need"] + 0.2
    assert f2["sharpening_need"] >= f1["sharpening_need"]
    assert f1["radial_0.40"] < f0["radial_0.40"]  # high radial sample drops


def test_colour_cast_raises_colour_balance_need():
    grey = damage.load_source("camera", 256)  # grey: perfectly balanced
    f0 = analysis.analyze(grey)
    assert f0["colour_balance_need"] < 1e-3
    cast = np.clip(grey * np.array([1.15, 1.0, 0.8], np.float32), 0, 1)
    assert analysis.analyze(cast)["colour_balance_need"] > 0.2
    colour = damage.load_source("astronaut", 256)
    yellowed = damage.yellow(colour, 0.25)
    assert analysis.analyze(yellowed)["colour_balance_need"] > analysis.analyze(colour)["colour_balance_need"]


def test_noise_flattens_spectrum_and_does_not_ask_for_sharpening(sharp, rng):
    noisy = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1)
    f0, f1 = analysis.analyze(sharp), analysis.analyze(noisy)
    assert f1["high_energy"] > f0["high_energy"]
    assert f1["alpha_high"] > f0["alpha_high"]  # flatter high band
    assert f1["sharpening_need"] <= f0["sharpening_need"] + 1e-9


def test_welch_spectrum_peaks_at_a_sinusoid_frequency():
    # property: a pure horizontal cosine of 0.125 cycles/px puts the power at |f| = 0.125
    x = np.arange(256)
    y = np.tile(0.5 + 0.4 * np.cos(2 * np.pi * 0.125 * x), (256, 1)).astype(np.float32)
    p, f = analysis.welch_spectrum(y)
    assert f.ravel()[np.argmax(p)] == pytest.approx(0.125, abs=1 / 256)


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((8, 8, 3), np.float32), "at least 16"),
    (np.zeros((32, 32, 2), np.float32), "channels"),
    (np.full((32, 32, 3), np.nan, np.float32), "NaN"),
])
def test_bad_input_is_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        analysis.analyze(bad)

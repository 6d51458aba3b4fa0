"""Noise-level estimation: the standard deviation σ of additive white noise, from the image alone.

* :func:`mad_sigma` — Donoho & Johnstone's robust median estimator on the finest diagonal Haar
  band, ``σ = median(|HH₁|) / 0.6745`` (Biometrika 81, 1994), for one 2-D channel (numpy or torch,
  any device; computed in float64, median as numpy defines it).
* :func:`estimate_noise_sigma` — σ of an image averaged over its channels: ``"skimage"``
  (``skimage.restoration.estimate_sigma``, the same estimator on Daubechies-1 wavelets) or
  ``"mad"`` (:func:`mad_sigma`).

σ is in the image's own units (0..1 images give σ in 0..1 units).  Textured images at low noise are
overestimated (REFERENCES: within ~5 % for σ ≥ 10/255).  Correlated noise (film grain) has a power
spectrum rather than one σ: see :mod:`.grain`.
"""
from __future__ import annotations

import numpy as np

ESTIMATORS = ("skimage", "mad")
#: median(|N(0,1)|), the MAD of a unit Gaussian
MAD_TO_SIGMA = 0.6745


def mad_sigma(channel) -> float:
    """Robust σ of white noise in a 2-D array (numpy or torch): median(|HH₁|)/0.6745 on the
    orthonormal Haar diagonal band.  Returns 0 for images smaller than 2×2."""
    if hasattr(channel, "detach"):  # a torch tensor, possibly on a GPU
        channel = channel.detach().to("cpu").double().numpy()
    c = np.asarray(channel, dtype=np.float64)
    h, w = (c.shape[0] // 2) * 2, (c.shape[1] // 2) * 2
    if h < 2 or w < 2:
        return 0.0
    c = c[:h, :w]
    hh = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / MAD_TO_SIGMA)


def estimate_noise_sigma(image: np.ndarray, method: str = "skimage") -> float:
    """Noise σ of an image ``[H, W]`` or ``[H, W, C]`` averaged over channels (:data:`ESTIMATORS`).

    Images under 4 px per side always use ``"mad"`` (skimage's wavelet needs more)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if method not in ESTIMATORS:
        raise ValueError(f"unknown noise estimator '{method}' ({', '.join(ESTIMATORS)})")
    if method == "mad" or min(x.shape[:2]) < 4:
        return float(np.mean([mad_sigma(x[..., c]) for c in range(x.shape[2])]))
    return float(np.mean([_skimage_sigma(x[..., c]) for c in range(x.shape[2])]))


def _skimage_sigma(channel: np.ndarray) -> float:
    """skimage's ``estimate_sigma`` of one 2-D channel (Donoho & Johnstone, Biometrika 81, 1994,
    sec. 4.2), 0 for a channel without fine detail.

    σ = median(|d|) / Φ⁻¹(0.75) over the nonzero diagonal detail coefficients ``d`` of a one-level
    db2 wavelet transform (skimage leaves out coefficients that are exactly 0).  A flat (e.g.
    all-black) or piecewise-constant channel has none left -- skimage then takes the median of an
    empty set and returns NaN; there is no noise to measure, so σ = 0 by construction here.
    skimage's averaged multi-channel call equals the mean of these per-channel values
    (``tests/test_fuzz_regressions.py`` compares the two).
    """
    import pywt

    d = pywt.dwtn(np.asarray(channel, dtype=np.float64), wavelet="db2")["dd"]
    d = np.abs(d[d != 0])
    if d.size == 0:
        return 0.0
    return float(np.median(d) / _PHI_INV_075)


#: Φ⁻¹(0.75), the 75th percentile of the standard normal (scipy.stats.norm.ppf(0.75))
_PHI_INV_075 = 0.6744897501960817

"""Full-reference image quality: PSNR and SSIM, one implementation each for the whole pack.

Images are float arrays in ``0..data_range`` (the pack uses 0..1), ``[H, W]`` or ``[H, W, C]``.

Cap policy (PSNR): the mean squared error is floored at :data:`MSE_FLOOR` (relative to
``data_range**2``), so identical images score :data:`PSNR_CAP_DB` = 100 dB instead of infinity.
Averages over image sets therefore stay finite, and 100 dB is far above anything a restoration
reaches (8-bit quantisation alone limits an exact 8-bit copy to about 59 dB when it is off by one level
everywhere).
"""
from __future__ import annotations

import math

import numpy as np

#: mean squared error floor, as a fraction of ``data_range**2``: identical images score 100 dB
MSE_FLOOR = 1e-10
PSNR_CAP_DB = -10.0 * math.log10(MSE_FLOOR)


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error, computed in float64."""
    a = np.asarray(reference, np.float64)
    b = np.asarray(test, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    d = a - b
    return float(np.mean(d * d))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range² / MSE)``, capped at
    :data:`PSNR_CAP_DB` (see the module docstring)."""
    peak2 = float(data_range) ** 2
    return 10.0 * math.log10(peak2 / max(mse(reference, test), MSE_FLOOR * peak2))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli, IEEE TIP 2004).

    Gaussian window σ 1.5 (11 taps), K1 = 0.01, K2 = 0.03, population covariances, symmetric
    borders, the 5-px border left out of the mean; for ``[H, W, C]`` the mean over channels.  The
    same numbers as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)`` (tested), computed with OpenCV blurs.
    """
    import cv2

    x = np.asarray(reference, dtype=np.float32)
    y = np.asarray(test, dtype=np.float32)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    if x.ndim == 3:
        return float(np.mean([ssim(x[..., c], y[..., c], data_range) for c in range(x.shape[-1])]))
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(t):
        return cv2.GaussianBlur(t, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    pad = 5
    if s.shape[0] > 2 * pad and s.shape[1] > 2 * pad:
        s = s[pad:-pad, pad:-pad]
    return float(s.astype(np.float64).mean())

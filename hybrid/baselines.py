"""Two things any retoucher would try first — the baselines the hybrid restorer must beat (issue #15).

* :func:`nlm_autolevels`: non-local means (Buades, Coll, Morel, CVPR 2005; scikit-image, ``h = 0.8 σ``
  with σ estimated by the wavelet MAD of :func:`scripts.noise.estimate_noise_sigma`), then
  :func:`autolevels`.
* :func:`autolevels_unsharp`: :func:`autolevels`, then an unsharp mask of radius σ = 1 px and amount
  0.5 (``x + 0.5 (x − G₁ * x)``, the common "radius 1, 50 %" setting), clipped to 0..1.

:func:`autolevels` is the per-channel 0.5–99.5 % percentile stretch (Photoshop's "Enhance Per Channel
Contrast" auto levels with 0.5 % clipping at each end): each channel's 0.5th / 99.5th percentile is
mapped to 0 / 1.  Nothing here is tuned: the settings are the usual defaults, fixed before any
evaluation.

Images: float ``[H, W, C]`` (C = 1 or 3) or ``[H, W]`` in 0..1; results have the input's shape, float32.
"""
from __future__ import annotations

import numpy as np

AUTOLEVELS_CLIP_PERCENT = 0.5
UNSHARP_SIGMA = 1.0
UNSHARP_AMOUNT = 0.5

BASELINES = ("nlm_autolevels", "autolevels_unsharp")


def _hwc(image) -> np.ndarray:
    x = np.asarray(image, np.float32)
    return x[..., None] if x.ndim == 2 else x


def autolevels(image, clip_percent: float = AUTOLEVELS_CLIP_PERCENT) -> np.ndarray:
    """Per-channel percentile stretch: ``clip_percent`` / ``100 − clip_percent`` → 0 / 1."""
    from .classical import colour_correct

    x = _hwc(image)
    return colour_correct(x, clip_percent, 100.0 - clip_percent).reshape(np.shape(image))


def unsharp(image, sigma: float = UNSHARP_SIGMA, amount: float = UNSHARP_AMOUNT) -> np.ndarray:
    """Unsharp mask ``x + amount (x − G_σ * x)``, clipped to 0..1."""
    from .classical import sharpen

    x = _hwc(image)
    if x.shape[-1] == 1:  # OpenCV drops a single channel axis: sharpen the plane
        return sharpen(x[..., 0], sigma, amount).reshape(np.shape(image))
    return sharpen(x, sigma, amount).reshape(np.shape(image))


def nlm_autolevels(image) -> np.ndarray:
    """Non-local means at the estimated noise σ, then :func:`autolevels`."""
    from ..scripts.denoise import denoise

    x = _hwc(image)
    den, _report = denoise(x, "nlm", sigma=None)
    return autolevels(np.asarray(den, np.float32)).reshape(np.shape(image))


def autolevels_unsharp(image) -> np.ndarray:
    """:func:`autolevels`, then :func:`unsharp`."""
    return unsharp(autolevels(image))


def run(name: str, image) -> np.ndarray:
    """Run the baseline ``name`` (one of :data:`BASELINES`)."""
    if name == "nlm_autolevels":
        return nlm_autolevels(image)
    if name == "autolevels_unsharp":
        return autolevels_unsharp(image)
    raise ValueError(f"unknown baseline '{name}' (expected one of {', '.join(BASELINES)})")

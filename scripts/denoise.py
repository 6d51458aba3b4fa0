"""Classical denoisers with automatic noise level: non-local means, bilateral, wavelet, total variation.

Images: float ``[H, W]`` or ``[H, W, C]`` in 0..1 (C = 1 or 3).  Noise ``sigma`` is the standard
deviation of additive white Gaussian noise in the same 0..1 units.

- Noise estimate (when σ is not given): :mod:`.noise` (Donoho & Johnstone's robust median
  estimator, via ``skimage.restoration.estimate_sigma`` or our own Haar version).
- Non-local means: Buades, Coll, Morel, CVPR 2005 (skimage, with the σ² bias correction).
- Bilateral: Tomasi & Manduchi, ICCV 1998 (OpenCV).
- Wavelet: BayesShrink (Chang, Yu, Vetterli, IEEE TIP 9, 2000) soft thresholding (skimage).
- Total variation: Chambolle, JMIV 20, 2004 (skimage).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .finite import check_finite
from .noise import estimate_noise_sigma

METHODS = ("nlm", "bilateral", "wavelet", "tv")


@dataclass
class DenoiseReport:
    """The method, the noise σ it was given (0..1 units) and where σ came from."""

    method: str
    sigma: float
    sigma_source: str
    strength: float

    def info_fields(self) -> dict:
        return {"method": self.method, "noise sigma": f"{self.sigma:.4f} ({self.sigma_source})",
                "strength": self.strength}


def _as_hwc(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"denoise: expected [H,W], [H,W,1] or [H,W,3], got shape {np.shape(image)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"denoise: empty image {np.shape(image)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("denoise: the image contains NaN or infinite values")
    return x


def denoise_nlm(x: np.ndarray, sigma: float, strength: float = 1.0, patch_size: int = 5,
                patch_distance: int = 6) -> np.ndarray:
    """Non-local means, filtering parameter h = 0.8·σ·strength (skimage's recommendation)."""
    from skimage.restoration import denoise_nl_means

    if sigma <= 0:
        return x.copy()
    out = denoise_nl_means(x, h=0.8 * sigma * strength, sigma=sigma, fast_mode=True,
                           patch_size=patch_size, patch_distance=patch_distance, channel_axis=-1)
    return np.asarray(out).reshape(x.shape)


def denoise_bilateral(x: np.ndarray, sigma: float, strength: float = 1.0,
                      sigma_space: float = 3.0) -> np.ndarray:
    """Bilateral filter: range σ_r = 2.5·σ·strength (0..1 units), spatial σ_s = ``sigma_space`` px,
    applied 2 times for σ > 0.05 (one pass leaves much noise at high σ)."""
    import cv2

    if sigma <= 0:
        return x.copy()
    out = x.astype(np.float32)
    passes = 2 if sigma > 0.05 else 1
    for _ in range(passes):
        y = cv2.bilateralFilter(np.ascontiguousarray(out), d=-1, sigmaColor=float(2.5 * sigma * strength),
                                sigmaSpace=float(sigma_space), borderType=cv2.BORDER_REFLECT)
        out = y.reshape(x.shape)
    return out.astype(np.float64)


def denoise_wavelet(x: np.ndarray, sigma: float, strength: float = 1.0) -> np.ndarray:
    """BayesShrink soft thresholding (db1... skimage default wavelet db1, levels auto); the
    threshold scales with ``strength``; RGB handled in YCbCr as skimage recommends."""
    from skimage.restoration import denoise_wavelet as _dw

    if sigma <= 0:
        return x.copy()
    rgb = x.shape[2] == 3
    out = _dw(x, sigma=sigma * strength, method="BayesShrink", mode="soft", wavelet="db2",
              channel_axis=-1, convert2ycbcr=rgb, rescale_sigma=True)
    return np.asarray(out).reshape(x.shape)


def denoise_tv(x: np.ndarray, sigma: float, strength: float = 1.0) -> np.ndarray:
    """Chambolle total variation, weight = 1.0·σ·strength (larger weight = smoother)."""
    from skimage.restoration import denoise_tv_chambolle

    if sigma <= 0:
        return x.copy()
    out = denoise_tv_chambolle(x, weight=1.0 * sigma * strength, channel_axis=-1)
    return np.asarray(out).reshape(x.shape)


def denoise(image: np.ndarray, method: str = "nlm", sigma: Optional[float] = None,
            strength: float = 1.0, sigma_method: str = "skimage"):
    """Denoise ``image`` with ``method`` in :data:`METHODS`.

    ``sigma`` None or ≤ 0 means estimate it (:func:`estimate_noise_sigma`).  Returns
    ``(out, DenoiseReport)`` with ``out`` shaped like the input, clipped to 0..1 only if the input
    was inside 0..1.
    """
    if method not in METHODS:
        raise ValueError(f"unknown denoise method '{method}'; use one of {METHODS}")
    x = _as_hwc(image)
    if sigma is None or sigma <= 0:
        sigma = estimate_noise_sigma(x, sigma_method)
        source = f"estimated ({sigma_method})"
    else:
        source = "given"
    sigma = float(sigma)
    if sigma <= 0:
        source += "; no noise measured: output unchanged"
    if min(x.shape[:2]) < 3:
        out = x.copy()
        source += "; image under 3 px: returned unchanged"
    else:
        fn = {"nlm": denoise_nlm, "bilateral": denoise_bilateral, "wavelet": denoise_wavelet,
              "tv": denoise_tv}[method]
        out = fn(x, sigma, strength)
        check_finite(out, "Classical Denoise", f"{method} denoising")
    if x.min() >= 0 and x.max() <= 1:
        out = np.clip(out, 0.0, 1.0)
    if np.ndim(image) == 2:
        out = out[:, :, 0]
    return out, DenoiseReport(method, sigma, source, float(strength))

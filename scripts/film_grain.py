"""Film-grain denoising of one image: measure the noise, then BM3D (or its permissive fallback).

:func:`denoise_film_grain` is the Film Grain Denoise node's library call.  In grain mode the grain's
power spectrum is estimated on the image's flattest blocks, or on a mask of noise-only areas
(:func:`.grain.estimate_grain_psd`), scaled by ``strength`` and removed as correlated noise
(:func:`.bm3d_denoise.denoise`, Mäkinen, Azzari & Foi 2020).  In white-noise mode σ is given or
estimated (:func:`.noise.estimate_noise_sigma`, wavelet MAD) and scaled by √strength.  A grey picture
stored as RGB (three equal channels) is denoised as one channel: a third of the work, and the right
noise model.  Images under 8 px per side are returned unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import bm3d_denoise, grain
from .noise import estimate_noise_sigma

#: the node's noise-model choices
NOISE_MODELS = ("grain spectrum (estimated)", "white noise (sigma)")
BM3D_LICENCE = "bm3d package: non-commercial use only (Tampere University)"


@dataclass
class FilmGrainReport:
    """What :func:`denoise_film_grain` did.

    ``denoiser``: "bm3d" (the package), "fallback" (the permissive Wiener filter) or "none" (nothing
    to remove); ``path``: its full description.  ``sigma``: the noise σ per channel (0..1 units) that
    was given or measured; ``sigma_source``: "given", "estimated (wavelet MAD)", "flat blocks" or
    "mask"; ``blocks``: periodogram blocks averaged (grain mode).  ``grey_rgb``: three equal channels
    were denoised as one.
    """

    denoiser: str
    path: str
    noise_model: str
    sigma: List[float]
    sigma_source: str
    strength: float
    profile: str
    blocks: int = 0
    block: int = 0
    grey_rgb: bool = False
    notes: List[str] = field(default_factory=list)

    def info_fields(self) -> dict:
        if self.denoiser == "none" and not self.sigma:
            noise = "image too small to denoise: returned unchanged"
        elif self.blocks:
            noise = (f"grain σ {', '.join(f'{s:.4f}' for s in self.sigma)} from {self.blocks} {self.block}px "
                     f"{self.sigma_source}")
        else:
            noise = f"σ {self.sigma[0]:.4f} {self.sigma_source}"
        noise = "; ".join([noise] + self.notes + (["grey image in RGB: denoised as one channel"] if self.grey_rgb else []))
        return {"path": self.path, "noise model": self.noise_model, "noise": noise, "strength": self.strength,
                "profile": self.profile, "licence": BM3D_LICENCE if self.denoiser == "bm3d" else None}


def denoise_film_grain(image: np.ndarray, noise_model: str = NOISE_MODELS[0], sigma: float = 0.0,
                       strength: float = 1.0, block: int = 32, method: str = "auto", profile: str = "np",
                       mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, FilmGrainReport]:
    """Remove film grain (or white noise) from ``image`` ``[H, W, C]`` (C = 1 or 3, float 0..1).

    ``noise_model``: :data:`NOISE_MODELS`.  ``sigma``: white-noise σ in 0..1 units (0 = estimate).
    ``strength``: multiplies the noise power.  ``block``: grain-mode block side (px).  ``method``,
    ``profile``: :func:`.bm3d_denoise.denoise`.  ``mask``: ``[H, W]``, nonzero = noise-only area.
    Returns ``(float64 [H, W, C], FilmGrainReport)``.
    """
    if noise_model not in NOISE_MODELS:
        raise ValueError(f"noise model must be one of {NOISE_MODELS}, got {noise_model!r}")
    x = np.asarray(image, dtype=np.float64)
    h, w, c = x.shape
    z = x if c == 3 else x[:, :, 0]
    grey_rgb = c == 3 and np.array_equal(z[..., 0], z[..., 1]) and np.array_equal(z[..., 0], z[..., 2])
    if grey_rgb:
        z = z[..., 0]
    report = FilmGrainReport("none", "", noise_model, [], "", float(strength), profile, grey_rgb=grey_rgb)
    if min(h, w) < 8:
        res = bm3d_denoise.DenoiseResult(z.copy(), "none (image smaller than 8 px)")
    elif noise_model == NOISE_MODELS[0]:
        est = grain.estimate_grain_psd(z, mask=mask, block=block)
        res = bm3d_denoise.denoise(z, psd=est.psd * strength, method=method, profile=profile)
        report.sigma, report.sigma_source = [float(s) for s in est.sigma], est.source
        report.blocks, report.block, report.notes = est.blocks, est.block, list(est.notes)
    else:
        s, how = float(sigma), "given"
        if s <= 0:
            s, how = estimate_noise_sigma(z, "skimage"), "estimated (wavelet MAD)"
        res = bm3d_denoise.denoise(z, sigma=s * np.sqrt(strength), method=method, profile=profile)
        report.sigma, report.sigma_source = [s], how
    out = res.image
    if grey_rgb:
        out = np.repeat(out[:, :, None], 3, axis=2)
    report.path = res.path + (f" ({res.detail})" if res.detail else "")
    report.denoiser = "bm3d" if res.path == "bm3d package" else ("fallback" if res.path.startswith("fallback") else "none")
    return (out if out.ndim == 3 else out[:, :, None]), report

"""Artifact-aware unsharp masking ("smart sharpen").

Unsharp masking adds ``amount × (L − G_r ⊛ L)`` to the lightness ``L``.  Its three classic
artifacts are handled as follows:

- **Halos** (overshoot at edges): the result is clamped to the local minimum/maximum of a lightly
  smoothed input in a window of radius ``ceil(2·radius)`` (the min/max-clamp of ImageMagick-style
  "adaptive" sharpeners; see also Polesel, Ramponi, Mathews, IEEE TIP 9, 2000, adaptive USM).
  ``halo`` > 0 lets a fraction of the local range through.
- **Noise boost**: the detail layer is soft-cored, ``d·d²/(d² + t²)`` with ``t = threshold ×
  σ_d`` where ``σ_d`` is the noise standard deviation the detail layer would carry (darktable's
  sharpen threshold, made relative to the estimated noise).
- **Edge-adaptive gain**: the gain is scaled by ``w = g²/(g² + (k σ_g)²)`` where ``g`` is the local
  gradient magnitude at 1 px scale and ``σ_g`` its noise-only standard deviation, so flat noisy
  areas get almost no gain and edges the full amount (Polesel et al. 2000 use a local-variance
  control signal for the same purpose).

Automatic amount: the edge blur σ is estimated with the gradient-ratio method (Zhuo & Sim,
Pattern Recognition 44, 2011): re-blurring an edge of blur σ by σ_r lowers its gradient maximum by
``R = sqrt(σ² + σ_r²)/σ``, so σ = σ_r / sqrt(R² − 1) at strong edges (median).  The radius then
follows the blur (≈ 1.2 σ) and the amount grows with it.

Images are float ``[H, W]``/``[H, W, 1]`` (grey) or ``[H, W, 3]`` sRGB in 0..1.  Colour images are
sharpened on Oklab lightness by default (``space="oklab"``; :mod:`.colour`), so hue and chroma are
kept; ``"luma"`` uses Rec.601 Y, ``"rgb"`` each channel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SPACES = ("oklab", "luma", "rgb")


@dataclass
class SharpenReport:
    amount: float
    radius: float
    noise_sigma: float
    blur_sigma: Optional[float]
    space: str
    notes: list = field(default_factory=list)

    def info_fields(self) -> dict:
        return {
            "space": self.space,
            "amount": round(self.amount, 3),
            "radius px": round(self.radius, 3),
            "edge blur σ px": "not measured" if self.blur_sigma is None else round(self.blur_sigma, 3),
            "noise σ": round(self.noise_sigma, 5),
            "why": "; ".join(self.notes) or "all parameters given",
        }


def _gauss(x: np.ndarray, s: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, s, mode="reflect", truncate=3.5) if s > 0 else x


def _grad_mag(x: np.ndarray, s: float) -> np.ndarray:
    from scipy.ndimage import gaussian_gradient_magnitude

    return gaussian_gradient_magnitude(x, s, mode="reflect", truncate=3.5)


def _noise_gain(fn, shape=(64, 64)) -> float:
    """Standard deviation that ``fn`` gives to unit white noise (measured on a delta, exact)."""
    d = np.zeros(shape)
    d[shape[0] // 2, shape[1] // 2] = 1.0
    return float(np.sqrt(np.sum(fn(d) ** 2)))


#: the strongest edges' median gradient must be at least this multiple of the image's median gradient:
#: smooth shading (ramps, vignettes, skies, also after 8-bit quantisation) reads 1.0–1.15, photographs
#: 4–26 and stationary textures (grass, gravel) 2.5–2.8, sharp or blurred by σ 2.5 px
EDGE_CONTRAST_MIN = 1.5


def estimate_blur_sigma(lum: np.ndarray, noise_sigma: float = 0.0, reblur: float = 1.0,
                        base: float = 1.0) -> Optional[float]:
    """Edge blur σ (px) of a 2-D image by the gradient-ratio method (Zhuo & Sim 2011).

    Gradients are taken at scale ``base`` (noise control) and ``sqrt(base² + reblur²)``; at the
    strongest edges (top 2 % of gradient, and above 8× the gradient noise) the ratio gives
    σ_total, and σ = sqrt(σ_total² − base²).  None when there are no usable edges: too few, or none
    standing out from the shading (:data:`EDGE_CONTRAST_MIN`).
    """
    x = np.asarray(lum, dtype=np.float64)
    if min(x.shape) < 8:
        return None
    g1 = _grad_mag(x, base)
    s2 = float(np.hypot(base, reblur))
    g2 = _grad_mag(x, s2)
    g_noise = noise_sigma * _noise_gain(_grad_mag_lin)
    # local maxima of g1 along the gradient are approximated by a 3x3 maximum
    from scipy.ndimage import maximum_filter

    peak = (g1 >= maximum_filter(g1, size=3)) & (g1 > max(8.0 * g_noise, 1e-4))
    if peak.sum() < 5:
        return None
    cut = np.percentile(g1[peak], 80)
    sel = peak & (g1 >= cut)
    if np.median(g1[sel]) < EDGE_CONTRAST_MIN * np.median(g1):
        return None  # no edge stands out from the shading (a ramp, a vignette, their 8-bit steps)
    r = g1[sel] / np.maximum(g2[sel], 1e-12)
    r = r[r > 1.0 + 1e-6]
    if r.size < 3:
        return None
    total = reblur / np.sqrt(np.median(r) ** 2 - 1.0)
    return float(np.sqrt(max(total ** 2 - base ** 2, 0.0)))


def auto_parameters(blur_sigma: Optional[float]) -> tuple:
    """(amount, radius) for an edge blur σ: radius = clip(1.2σ, 0.8, 6) px, amount =
    clip(0.5 + 0.9σ, 0.5, 3).  Unknown blur -> (1.0, 1.5)."""
    if blur_sigma is None:
        return 1.0, 1.5
    radius = float(np.clip(1.2 * blur_sigma, 0.8, 6.0))
    amount = float(np.clip(0.5 + 0.9 * blur_sigma, 0.5, 3.0))
    return amount, radius


def sharpen_channel(lum: np.ndarray, amount: float, radius: float, noise_sigma: float,
                    threshold: float = 1.0, edge_adaptive: bool = True, edge_k: float = 3.0,
                    halo: float = 0.0) -> np.ndarray:
    """Sharpen one 2-D channel; see the module docstring.  ``threshold`` in units of the detail
    layer's noise σ (0 = off), ``halo`` the fraction of local range allowed as overshoot (0 = none,
    negative = no clamp)."""
    x = np.asarray(lum, dtype=np.float64)
    if min(x.shape) < 2 or amount == 0:
        return x.copy()
    detail = x - _gauss(x, radius)
    if noise_sigma > 0 and threshold > 0:
        sd = noise_sigma * _noise_gain(lambda d: d - _gauss(d, radius))
        t2 = (threshold * sd) ** 2
        # soft coring d·d²/(d² + t²); a radius under ~0.15 px blurs nothing (the Gaussian truncates
        # to one tap), so sd = 0 and the coring is the identity -- never 0/0
        if t2 > 0:
            d2 = detail * detail
            detail = detail * d2 / (d2 + t2)
    gain = np.full_like(x, float(amount))
    if edge_adaptive and noise_sigma > 0:
        g = _grad_mag(x, 1.0)
        sg = noise_sigma * _noise_gain(lambda d: _grad_mag_lin(d))
        w = g * g / (g * g + (edge_k * sg) ** 2)
        gain = gain * w
    out = x + gain * detail
    if halo >= 0:
        from scipy.ndimage import maximum_filter, minimum_filter

        ref = _gauss(x, 1.0)
        size = 2 * int(np.ceil(2 * radius)) + 1
        # the window extremes of a noisy reference sit ~2 of its noise σ outside the true values
        margin = 2.0 * noise_sigma * _noise_gain(lambda d: _gauss(d, 1.0))
        hi = maximum_filter(ref, size=size, mode="reflect") - margin
        lo = minimum_filter(ref, size=size, mode="reflect") + margin
        hi, lo = np.maximum(hi, lo), np.minimum(hi, lo)
        span = hi - lo
        # the clamp limits added detail only: it never moves a pixel past its input value
        out = np.clip(out, np.minimum(lo - halo * span, x), np.maximum(hi + halo * span, x))
    return out


def _grad_mag_lin(d: np.ndarray) -> np.ndarray:
    """One Gaussian-derivative component at 1 px (linear; its noise gain ≈ that of each gradient
    component, so σ_g of the magnitude is ≈ √2 × this for isotropic noise)."""
    from scipy.ndimage import gaussian_filter

    return np.sqrt(2.0) * gaussian_filter(d, 1.0, order=(0, 1), mode="reflect", truncate=3.5)


def sharpen(image: np.ndarray, amount: Optional[float] = None, radius: Optional[float] = None,
            noise_sigma: Optional[float] = None, threshold: float = 1.0, edge_adaptive: bool = True,
            halo: float = 0.0, space: str = "oklab"):
    """Smart-sharpen ``image`` (grey ``[H,W]``/``[H,W,1]`` or sRGB ``[H,W,3]``, 0..1).

    ``amount``/``radius`` None = automatic from the estimated blur; ``noise_sigma`` None = estimated
    (robust MAD, :func:`.noise.mad_sigma`, on the channel that is sharpened).
    Returns ``(out, SharpenReport)``; ``out`` has the input's shape, not clipped.
    """
    from .finite import check_finite
    from .noise import mad_sigma

    x = np.asarray(image, dtype=np.float64)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3):
        raise ValueError(f"sharpen: expected [H,W], [H,W,1] or [H,W,3], got shape {np.shape(image)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("sharpen: the image contains NaN or infinite values")
    if space not in SPACES:
        raise ValueError(f"sharpen: unknown space '{space}' ({', '.join(SPACES)})")
    notes = []
    grey = x.shape[2] == 1
    used_space = "grey" if grey else space
    if grey:
        chans = [x[:, :, 0]]
    elif space == "oklab":
        from .colour import oklab_to_srgb, srgb_to_oklab

        lab = np.asarray(srgb_to_oklab(x), dtype=np.float64)
        chans = [lab[:, :, 0]]
    elif space == "luma":
        yw = np.array([0.299, 0.587, 0.114])
        y = x @ yw
        chans = [y]
    else:
        chans = [x[:, :, c] for c in range(3)]

    ref = chans[0] if len(chans) == 1 else x.mean(axis=2)
    if noise_sigma is None:
        noise_sigma = mad_sigma(ref)
        notes.append("noise σ estimated (Haar MAD)")
    blur = None
    if amount is None or radius is None:
        blur = estimate_blur_sigma(ref, noise_sigma)
        a_auto, r_auto = auto_parameters(blur)
        if amount is None:
            amount = a_auto
        if radius is None:
            radius = r_auto
        notes.append("no edges found: default amount/radius" if blur is None
                     else f"amount/radius from edge blur σ≈{blur:.2f} px")
    outs = [sharpen_channel(c, amount, radius, noise_sigma, threshold, edge_adaptive, halo=halo)
            for c in chans]
    if grey:
        out = outs[0][:, :, None]
    elif space == "oklab":
        lab = lab.copy()
        lab[:, :, 0] = outs[0]
        out = np.asarray(oklab_to_srgb(lab), dtype=np.float64)
    elif space == "luma":
        out = x + (outs[0] - chans[0])[:, :, None]
    else:
        out = np.stack(outs, axis=-1)
    check_finite(out, "Smart Sharpen", f"{used_space} sharpening")
    if float(np.max(np.abs(out - x), initial=0.0)) < 1e-6:
        notes.append(f"radius {radius:g} px blurs less than a pixel: nothing to sharpen, output unchanged"
                     if radius < 0.3 else "no detail above the noise threshold: output unchanged")
    if squeeze:
        out = out[:, :, 0]
    return out, SharpenReport(float(amount), float(radius), float(noise_sigma), blur, used_space, notes)


def unsharp_mask(image: np.ndarray, sigma: float, strength: float) -> np.ndarray:
    """Plain unsharp mask on every channel: ``x + strength·(x − G_σ ⊛ x)``, ``sigma`` in px (OpenCV
    Gaussian, reflected borders), float32 clipped to 0..1; ``strength`` or ``sigma`` ≤ 0 returns a
    copy.  ``image``: ``[H, W]`` or ``[H, W, C]`` in 0..1."""
    import cv2

    x = np.asarray(image, np.float32)
    if strength <= 0 or sigma <= 0:
        return x.copy()
    blurred = cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT)
    return np.clip(x + float(strength) * (x - blurred.reshape(x.shape)), 0.0, 1.0)

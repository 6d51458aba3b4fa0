"""Frequency-domain enhancement in torch (CPU or GPU): high-boost, homomorphic filtering, and
frequency separation into low/high layers with exact recombination.

Tensors are ``[..., H, W]`` float (any leading batch/channel dims), values in image units.
Frequencies are in cycles per pixel; a Gaussian of standard deviation ``sigma`` px has the
frequency response ``exp(-2π²σ²f²)``, i.e. a Gaussian low-pass of cutoff ``f0 = 1/(2πσ)``.
Filters are zero-phase and applied with FFTs on a reflect-padded copy (``pad="reflect"``, no
wrap-around at the borders) or on the image as is (``pad="circular"``, exact for periodic images).

- High-boost (unsharp masking in frequency, Gonzalez & Woods, Digital Image Processing, 4th ed.,
  §4.9): ``H(f) = 1 + boost·(1 − exp(−2π²σ²f²))``; DC gain 1, so flat areas and the mean are kept.
- Homomorphic filtering (Oppenheim, Schafer, Stockham 1968; Gonzalez & Woods §4.9.6): on
  ``log(x + eps)``, ``H(f) = γ_L + (γ_H − γ_L)(1 − exp(−2π²σ²f²))``; illumination (low
  frequencies) is scaled by γ_L < 1 in log terms, reflectance detail by γ_H > 1.  The DC term is
  kept at 1 so the mean log-brightness is unchanged.
- Frequency separation: ``low = G_σ ⊛ x`` (spatial Gaussian, reflect borders), ``high = x − low``;
  as an image ``high_img = 0.5 + scale·(x − low)`` (``scale = 0.5`` fits any 0..1 input into
  0..1 without clipping).  ``combine(low, high_img, scale) = low + (high_img − 0.5)/scale``
  reconstructs ``x`` to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .report import shown


def _pad_amount(sigma: float, h: int, w: int):
    p = int(math.ceil(3.0 * sigma)) + 1
    return min(p, h - 1), min(p, w - 1)


def _as4d(x: torch.Tensor):
    shape = x.shape
    return x.reshape(-1, 1, shape[-2], shape[-1]), shape


#: bytes of convolution work buffer per strip: torch's CPU convolution unfolds its input (one copy
#: per kernel tap), which for a 33-tap kernel on a 4K RGB image would be 3.3 GB at once
CONV_STRIP_BYTES = 64 << 20


def _conv_strips(x4: torch.Tensor, kern: torch.Tensor, halo: int) -> torch.Tensor:
    """``F.conv2d(x4, kern)`` in row strips; ``halo`` = rows the kernel reaches above/below
    (the input is already padded by it), so the strips' results are exactly the whole result."""
    n, _, hp, wp = x4.shape
    h_out, w_out = hp - 2 * halo, wp - kern.shape[-1] + 1
    rows = max(1, CONV_STRIP_BYTES // max(1, kern.numel() * w_out * x4.element_size() * n))
    if rows >= h_out:
        return F.conv2d(x4, kern)
    out = x4.new_empty((n, 1, h_out, w_out))
    for y in range(0, h_out, rows):
        y1 = min(h_out, y + rows)
        out[:, :, y:y1] = F.conv2d(x4[:, :, y:y1 + 2 * halo], kern)
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (σ in px, kernel to ±4σ) with reflect borders (replicate when the
    image is too small to reflect).  ``x``: ``[..., H, W]``.  Convolved in row strips
    (:data:`CONV_STRIP_BYTES`), so the working memory stays near two copies of the image."""
    if sigma <= 0:
        return x.clone()
    x4, shape = _as4d(x)
    h, w = shape[-2], shape[-1]
    r = max(1, int(math.ceil(4.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    k = k / k.sum()
    out = x4
    for dim, size in ((3, w), (2, h)):
        pad = [r, r, 0, 0] if dim == 3 else [0, 0, r, r]
        mode = "reflect" if r < size else "replicate"
        out = F.pad(out, pad, mode=mode)
        kern = k.view(1, 1, 1, -1) if dim == 3 else k.view(1, 1, -1, 1)
        out = _conv_strips(out, kern, 0 if dim == 3 else r)
    return out.reshape(shape)


def _freq_grid(h: int, w: int, device, dtype):
    fy = torch.fft.fftfreq(h, device=device, dtype=dtype)
    fx = torch.fft.rfftfreq(w, device=device, dtype=dtype)
    return fy[:, None] ** 2 + fx[None, :] ** 2  # f² in cycles²/px²


def _apply_filter(x: torch.Tensor, response, sigma: float, pad: str) -> torch.Tensor:
    """Apply a radial response ``response(f²)`` with rfft2 over the last two dims."""
    x4, shape = _as4d(x)
    h, w = shape[-2], shape[-1]
    work = x4.to(torch.float64) if x4.dtype == torch.float64 else x4.to(torch.float32)
    if pad == "reflect":
        ph, pw = _pad_amount(sigma, h, w)
        if ph > 0 or pw > 0:
            work = F.pad(work, [pw, pw, ph, ph], mode="reflect" if (ph < h and pw < w) else "replicate")
    elif pad != "circular":
        raise ValueError(f"pad must be 'reflect' or 'circular', got '{pad}'")
    else:
        ph = pw = 0
    hh, ww = work.shape[-2], work.shape[-1]
    spec = torch.fft.rfft2(work)
    hf = response(_freq_grid(hh, ww, work.device, work.dtype))
    out = torch.fft.irfft2(spec * hf, s=(hh, ww))
    out = out[..., ph:ph + h, pw:pw + w]
    return out.reshape(shape).to(x.dtype)


def high_boost_response(f2: torch.Tensor, sigma: float, boost: float) -> torch.Tensor:
    """``1 + boost·(1 − exp(−2π²σ²f²))`` for squared frequency ``f2`` (cycles²/px²)."""
    return 1.0 + boost * (1.0 - torch.exp(-2.0 * math.pi ** 2 * sigma ** 2 * f2))


def high_boost(x: torch.Tensor, sigma: float = 2.0, boost: float = 1.0, pad: str = "reflect") -> torch.Tensor:
    """FFT high-boost filter; ``sigma`` (px) sets the Gaussian low-pass whose complement is boosted
    by ``boost`` (0 = identity).  Not clipped."""
    if sigma <= 0 or boost == 0:
        return x.clone()
    return _apply_filter(x, lambda f2: high_boost_response(f2, sigma, boost), sigma, pad)


def homomorphic_response(f2: torch.Tensor, sigma: float, gamma_low: float, gamma_high: float) -> torch.Tensor:
    hp = 1.0 - torch.exp(-2.0 * math.pi ** 2 * sigma ** 2 * f2)
    r = gamma_low + (gamma_high - gamma_low) * hp
    r = r.clone()
    r[..., 0, 0] = 1.0  # keep the mean log-brightness
    return r


def homomorphic(x: torch.Tensor, sigma: float = 30.0, gamma_low: float = 0.5, gamma_high: float = 1.5,
                eps: float = 1e-3, pad: str = "reflect") -> torch.Tensor:
    """Homomorphic filter on ``x`` ≥ 0 (values below 0 are treated as 0).

    ``sigma`` (px): the scale separating illumination from reflectance; ``gamma_low``: gain on
    log-illumination (< 1 compresses lighting differences); ``gamma_high``: gain on log-detail.
    Returns ``exp(filtered log(x + eps)) − eps``, not clipped.
    """
    lx = torch.log(x.clamp_min(0.0) + eps)
    out = _apply_filter(lx, lambda f2: homomorphic_response(f2, sigma, gamma_low, gamma_high), sigma, pad)
    return torch.exp(out) - eps


def separate(x: torch.Tensor, sigma: float = 4.0, scale: float = 0.5):
    """Split ``x`` into ``(low, high_img)``: Gaussian low-pass and the offset, scaled residual
    ``0.5 + scale·(x − low)``.  ``scale`` 0.5 keeps any 0..1 input inside 0..1."""
    if scale <= 0:
        raise ValueError(f"frequency separation scale must be > 0, got {scale}")
    low = gaussian_blur(x, sigma)
    high = 0.5 + scale * (x - low)
    return low, high


def combine(low: torch.Tensor, high_img: torch.Tensor, scale: float = 0.5, detail: float = 1.0) -> torch.Tensor:
    """Recombine: ``low + detail·(high_img − 0.5)/scale`` (``detail`` 1 reconstructs exactly)."""
    if scale <= 0:
        raise ValueError(f"frequency separation scale must be > 0, got {scale}")
    return low + detail * (high_img - 0.5) / scale


# --- images ------------------------------------------------------------------------------------------
#: the Frequency Enhance node's modes and working spaces
MODES = ("high_boost", "homomorphic")
SPACES = ("oklab", "rgb")


def _to_planes(rgb: torch.Tensor, space: str):
    """``[B,H,W,C]`` -> (planes ``[B,P,H,W]`` to filter, state to rebuild): Oklab L of a colour image
    in ``space="oklab"``, else every channel."""
    if rgb.shape[-1] == 1 or space == "rgb":
        return rgb.permute(0, 3, 1, 2), None
    from .colour import srgb_to_oklab

    lab = srgb_to_oklab(rgb)
    return lab[..., 0:1].permute(0, 3, 1, 2), lab


def _from_planes(planes: torch.Tensor, state) -> torch.Tensor:
    out = planes.permute(0, 2, 3, 1)
    if state is None:
        return out
    from .colour import oklab_to_srgb

    return oklab_to_srgb(torch.cat([out, state[..., 1:]], dim=-1))


@dataclass
class EnhanceReport:
    """The filter that ran (σ in px; the cutoff of the high-boost filter in cycles/px)."""

    mode: str = shown("mode")
    sigma: float = shown("sigma px")
    boost: Optional[float] = shown("boost", default=None)
    cutoff: Optional[float] = shown("cutoff cycles/px", default=None)
    gamma_low: Optional[float] = shown("gamma_low", default=None)
    gamma_high: Optional[float] = shown("gamma_high", default=None)
    space: str = shown("space", default="oklab")


def enhance_image(rgb: torch.Tensor, mode: str = "high_boost", sigma: float = 2.0, boost: float = 1.0,
                  gamma_low: float = 0.5, gamma_high: float = 1.5, space: str = "oklab", device=None):
    """High-boost or homomorphic filtering of an image batch ``[B,H,W,C]`` (C = 1 or 3) on ``device``
    (default: the tensor's); colour images on Oklab lightness (``space="oklab"``) or per channel.
    Returns ``(image [B,H,W,C], EnhanceReport)``."""
    if mode not in MODES:
        raise ValueError(f"mode must be high_boost or homomorphic, got '{mode}'")
    planes, state = _to_planes(rgb.to(device) if device is not None else rgb, space)
    report = EnhanceReport(mode, float(sigma), space="grey" if rgb.shape[-1] == 1 else space)
    if mode == "high_boost":
        res = high_boost(planes, sigma=sigma, boost=boost)
        report.boost, report.cutoff = float(boost), 1.0 / (2 * math.pi * sigma)
    else:
        res = homomorphic(planes, sigma=sigma, gamma_low=gamma_low, gamma_high=gamma_high)
        report.gamma_low, report.gamma_high = float(gamma_low), float(gamma_high)
    return _from_planes(res, state), report


@dataclass
class SeparateReport:
    """Frequency separation settings and the share of high-layer values outside 0..1 (clipped)."""

    sigma: float = shown("sigma px")
    scale: float = shown("scale")
    clipped: float = shown("high layer clipped", fmt=lambda f: f"{100 * f:.3f} % of values" + (
        " (round trip exact)" if f == 0 else " (lower scale for an exact round trip)"))


def separate_image(rgb: torch.Tensor, sigma: float = 4.0, scale: float = 0.5, device=None):
    """Low and high layers of an image batch ``[B,H,W,C]``: ``((low, high), SeparateReport)``."""
    planes = (rgb.to(device) if device is not None else rgb).permute(0, 3, 1, 2)
    low, high = separate(planes, sigma=sigma, scale=scale)
    clipped = float(((high < 0) | (high > 1)).float().mean())
    return (low.permute(0, 2, 3, 1), high.permute(0, 2, 3, 1)), SeparateReport(float(sigma), float(scale), clipped)


@dataclass
class CombineReport:
    scale: float = shown("scale")
    detail: float = shown("detail")


def combine_images(low: torch.Tensor, high: torch.Tensor, scale: float = 0.5, detail: float = 1.0, device=None):
    """Recombine layer batches ``[B,H,W,C]`` from :func:`separate_image`.  A grey layer is used for
    every channel of a colour one, a batch of one for every image of the other; sizes must match.
    Returns ``(image, CombineReport)``."""
    if low.shape[1:3] != high.shape[1:3]:
        raise ValueError(f"low {tuple(low.shape[1:3])} and high {tuple(high.shape[1:3])} images differ in size")
    if low.shape[-1] != high.shape[-1]:
        if high.shape[-1] == 1:
            high = high.expand(*high.shape[:-1], low.shape[-1])
        elif low.shape[-1] == 1:
            low = low.expand(*low.shape[:-1], high.shape[-1])
    bl, bh = low.shape[0], high.shape[0]
    if bl != bh:
        if bl != 1 and bh != 1:
            raise ValueError(f"batch sizes differ: low {bl}, high {bh}")
        n = max(bl, bh)
        low, high = low.expand(n, *low.shape[1:]), high.expand(n, *high.shape[1:])
    if device is not None:
        low, high = low.to(device), high.to(device)
    return combine(low, high, scale=scale, detail=detail), CombineReport(float(scale), float(detail))

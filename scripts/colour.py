"""Colour conversions: sRGB <-> linear sRGB <-> Oklab (Ottosson 2020).

Arrays are channel-last ``[..., 3]`` and may be numpy arrays or torch tensors (CPU or GPU); the
result has the input's type, device and floating dtype.  sRGB values are display-referred 0..1.
Oklab: L in 0..1 for sRGB colours, a and b roughly -0.4..0.4.

The forward matrices are Ottosson's published ones (linear sRGB -> LMS, LMS' -> Lab); the inverse
matrices are their exact float64 inverses, so round trips are clean to float rounding.
"""
from __future__ import annotations

import numpy as np

try:  # torch is optional for the numpy path
    import torch
except Exception:  # pragma: no cover
    torch = None

# Ottosson 2020, "A perceptual color space for image processing"
M1_LINEAR_SRGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
M2_LMS_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
M1_INV = np.linalg.inv(M1_LINEAR_SRGB_TO_LMS)
M2_INV = np.linalg.inv(M2_LMS_TO_OKLAB)


def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _matmul(x, m: np.ndarray):
    """``x[..., 3] @ m.T`` keeping x's type, device and dtype."""
    if _is_torch(x):
        mt = torch.as_tensor(m.T, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
        return x @ mt
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return (x.astype(dtype, copy=False) @ m.T.astype(dtype)).astype(dtype, copy=False)


def _cbrt(x):
    """Sign-preserving cube root."""
    if _is_torch(x):
        return torch.sign(x) * torch.abs(x).pow(1.0 / 3.0)
    return np.cbrt(x)


def srgb_to_linear(x):
    """IEC 61966-2-1 sRGB decoding (0..1 -> linear 0..1); values outside 0..1 are extended oddly."""
    if _is_torch(x):
        a = torch.abs(x)
        lin = torch.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)
        return torch.sign(x) * lin
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    a = np.abs(x)
    return np.sign(x) * np.where(a <= 0.04045, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """IEC 61966-2-1 sRGB encoding (linear -> 0..1), odd extension for negative values."""
    if _is_torch(x):
        a = torch.abs(x)
        enc = torch.where(a <= 0.0031308, a * 12.92, 1.055 * a.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
        return torch.sign(x) * enc
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    a = np.abs(x)
    return np.sign(x) * np.where(a <= 0.0031308, a * 12.92, 1.055 * np.maximum(a, 1e-12) ** (1 / 2.4) - 0.055)


def linear_srgb_to_oklab(rgb):
    return _matmul(_cbrt(_matmul(rgb, M1_LINEAR_SRGB_TO_LMS)), M2_LMS_TO_OKLAB)


def oklab_to_linear_srgb(lab):
    lms_ = _matmul(lab, M2_INV)
    return _matmul(lms_ * lms_ * lms_, M1_INV)


def srgb_to_oklab(rgb):
    """sRGB (0..1, channel-last) -> Oklab (L, a, b)."""
    return linear_srgb_to_oklab(srgb_to_linear(rgb))


def oklab_to_srgb(lab):
    """Oklab -> sRGB (not clipped: out-of-gamut colours leave 0..1; see gamut mapping)."""
    return linear_to_srgb(oklab_to_linear_srgb(lab))

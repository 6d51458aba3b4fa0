"""Jzazbz and JzCzhz (Safdar, Cui, Kim, Luo, Optics Express 25(13):15131, 2017).

Jzazbz is an absolute space: it takes CIE XYZ (D65) in cd/m², so the same relative colour is
lighter (higher Jz) on a brighter display.  The sRGB helpers here take a ``white_luminance``
(cd/m² of sRGB white; default 203, the HDR reference white of ITU-R BT.2408) and scale the relative
XYZ of :mod:`.colour` by it.

Ranges: sRGB white at 203 cd/m² has Jz 0.2221 (black 0); az, bz of sRGB colours at 203 cd/m² lie
within about -0.11..0.13.  JzCzhz: Cz = hypot(az, bz), hz = atan2(bz, az) in degrees 0..360.

Formulas (Safdar 2017, eqs. 8-13 and their inverses):
  X' = b X - (b-1) Z,  Y' = g Y - (g-1) X                       b = 1.15, g = 0.66
  LMS = M (X', Y', Z)
  LMS' = PQ(LMS / 10000): ((c1 + c2 t^n) / (1 + c3 t^n))^p   (SMPTE ST 2084 with p = 1.7·2523/2^5)
  (Iz, az, bz) = M_I LMS'
  Jz = (1 + d) Iz / (1 + d Iz) - d0                              d = -0.56, d0 = 1.6295499532821566e-11
PQ is extended to negative cone responses (out-of-gamut inputs) as an odd function, and every
inverse matrix is the exact float64 inverse, so round trips are clean to float rounding.
Inputs: numpy arrays or torch tensors, channel-last ``[..., 3]``, any batch shape, CPU or GPU.
"""
from __future__ import annotations

import numpy as np

from .colour import (
    _is_torch,
    _pow,
    pixelwise,
    _matmul,
    _stack,
    as_float,
    lab_to_lch,
    lch_to_lab,
    linear_srgb_to_xyz,
    srgb_to_linear,
    linear_to_srgb,
    xyz_to_linear_srgb,
)

try:
    import torch
except Exception:  # pragma: no cover
    torch = None

#: default reference-white luminance (cd/m²) for sRGB content (ITU-R BT.2408 HDR reference white)
DEFAULT_WHITE_LUMINANCE = 203.0

B = 1.15
G = 0.66
D = -0.56
D0 = 1.6295499532821566e-11
# SMPTE ST 2084 constants; P is the power re-optimised by Safdar et al.
C1 = 3424.0 / 4096.0
C2 = 2413.0 / 128.0
C3 = 2392.0 / 128.0
N = 2610.0 / 16384.0
P = 1.7 * 2523.0 / 32.0
PEAK = 10000.0

#: Safdar 2017 XYZ' -> LMS
M_XYZP_TO_LMS = np.array(
    [
        [0.41478972, 0.579999, 0.0146480],
        [-0.2015100, 1.120649, 0.0531008],
        [-0.0166008, 0.264800, 0.6684799],
    ]
)
M_LMS_TO_XYZP = np.linalg.inv(M_XYZP_TO_LMS)
#: Safdar 2017 LMS' -> Iz az bz
M_LMSP_TO_IAB = np.array(
    [
        [0.5, 0.5, 0.0],
        [3.524000, -4.066708, 0.542708],
        [0.199076, 1.096799, -1.295875],
    ]
)
M_IAB_TO_LMSP = np.linalg.inv(M_LMSP_TO_IAB)
# X' Y' Z <- X Y Z as one matrix, and its exact inverse
M_XYZ_TO_XYZP = np.array([[B, 0.0, -(B - 1.0)], [-(G - 1.0), G, 0.0], [0.0, 0.0, 1.0]])
M_XYZ_TO_LMS = M_XYZP_TO_LMS @ M_XYZ_TO_XYZP
M_LMS_TO_XYZ = np.linalg.inv(M_XYZ_TO_LMS)


def _pq_encode(lms):
    """Absolute cd/m² -> PQ code values (Jzazbz variant of ST 2084).

    Extended to negative inputs as an odd function (-x -> -PQ(x)).  A plain sign-preserving power
    inside the PQ fraction has a pole at about -1e-4 cd/m², so tiny negative cone responses from
    out-of-gamut colours would blow up; the odd extension has no pole and stays invertible.

    Precision: the PQ fraction q is close to 1 and raised to p = 134, so ``q ** p`` loses ~100x
    precision in float32.  We compute ``1 - q = ((1 - c1) - (c2 - c3) t) / (1 + c3 t)`` directly and
    ``q ** p = exp(p * log1p(-(1 - q)))``, which keeps float32 results within ~1e-6 relative.
    """
    t = _pow(_abs(lms) * (1.0 / PEAK), N)
    one_minus_q = ((1.0 - C1) - (C2 - C3) * t) / (1.0 + C3 * t)
    return _copysign(_exp(P * _log1p(-one_minus_q)), lms)


def _pq_decode(v):
    """Inverse of :func:`_pq_encode` (PQ code values -> cd/m²), odd, codes limited to |v| <= 1.

    With ``e = v ** (1/p) - 1`` computed as ``expm1(log(v) / p)`` (small, negative) the fraction is
    ``((1 - c1) + e) / ((c2 - c3) - c3 e)``: no cancellation between numbers near 1.
    """
    a = _clip(_abs(v), 1e-30, 1.0)
    e = _expm1(_log(a) / P)
    ratio = _clip(((1.0 - C1) + e) / ((C2 - C3) - C3 * e), 0.0, None)
    return _copysign(PEAK * _pow(ratio, 1.0 / N), v)


def _exp(x):
    return torch.exp(x) if _is_torch(x) else np.exp(x)


def _log(x):
    return torch.log(x) if _is_torch(x) else np.log(x)


def _log1p(x):
    return torch.log1p(x) if _is_torch(x) else np.log1p(x)


def _expm1(x):
    return torch.expm1(x) if _is_torch(x) else np.expm1(x)


def _abs(x):
    return torch.abs(x) if _is_torch(x) else np.abs(x)


def _copysign(x, s):
    return torch.copysign(x, s) if _is_torch(x) else np.copysign(x, s)


def _clip(x, lo, hi):
    return torch.clamp(x, lo, hi) if _is_torch(x) else np.clip(x, lo, hi)


@pixelwise
def xyz_to_jzazbz(xyz_abs):
    """Absolute CIE XYZ (D65, cd/m²) -> Jzazbz (Safdar 2017)."""
    lms_p = _pq_encode(_matmul(xyz_abs, M_XYZ_TO_LMS))
    iab = _matmul(lms_p, M_LMSP_TO_IAB)
    iz = iab[..., 0]
    jz = (1.0 + D) * iz / (1.0 + D * iz) - D0
    return _stack(jz, iab[..., 1], iab[..., 2], iab)


@pixelwise
def jzazbz_to_xyz(jab):
    """Jzazbz -> absolute CIE XYZ (D65, cd/m²); exact inverse of :func:`xyz_to_jzazbz`."""
    jab = as_float(jab)
    jz = jab[..., 0] + D0
    iz = jz / (1.0 + D - D * jz)
    lms_p = _matmul(_stack(iz, jab[..., 1], jab[..., 2], jab), M_IAB_TO_LMSP)
    return _matmul(_pq_decode(lms_p), M_LMS_TO_XYZ)


def _check_luminance(white_luminance: float) -> float:
    w = float(white_luminance)
    if not (0.0 < w <= PEAK) or w != w:
        raise ValueError(f"white_luminance must be in (0, 10000] cd/m², got {white_luminance}")
    return w


@pixelwise
def linear_srgb_to_jzazbz(rgb, white_luminance: float = DEFAULT_WHITE_LUMINANCE):
    """Linear sRGB (white = 1) shown with white at ``white_luminance`` cd/m² -> Jzazbz."""
    w = _check_luminance(white_luminance)
    return xyz_to_jzazbz(linear_srgb_to_xyz(rgb) * w)


@pixelwise
def jzazbz_to_linear_srgb(jab, white_luminance: float = DEFAULT_WHITE_LUMINANCE):
    """Jzazbz -> linear sRGB (white = 1) for white at ``white_luminance`` cd/m² (not clipped)."""
    w = _check_luminance(white_luminance)
    return xyz_to_linear_srgb(jzazbz_to_xyz(jab)) * (1.0 / w)


@pixelwise
def srgb_to_jzazbz(rgb, white_luminance: float = DEFAULT_WHITE_LUMINANCE):
    """sRGB (0..1) -> Jzazbz, sRGB white displayed at ``white_luminance`` cd/m² (default 203)."""
    return linear_srgb_to_jzazbz(srgb_to_linear(rgb), white_luminance)


@pixelwise
def jzazbz_to_srgb(jab, white_luminance: float = DEFAULT_WHITE_LUMINANCE):
    """Jzazbz -> sRGB (not clipped; see :mod:`.gamut`)."""
    return linear_to_srgb(jzazbz_to_linear_srgb(jab, white_luminance))


def jzazbz_to_jzczhz(jab):
    """Jzazbz -> JzCzhz (Cz = hypot(az, bz), hz degrees 0..360)."""
    return lab_to_lch(jab)


def jzczhz_to_jzazbz(jch):
    """JzCzhz (hz degrees) -> Jzazbz."""
    return lch_to_lab(jch)


def white_jz(white_luminance: float = DEFAULT_WHITE_LUMINANCE) -> float:
    """Jz of sRGB white at ``white_luminance`` cd/m² (0.2221 at 203)."""
    return float(srgb_to_jzazbz(np.ones(3), white_luminance)[0])

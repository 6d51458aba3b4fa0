"""Colour conversions: sRGB <-> linear sRGB <-> CIE XYZ (D65) <-> Oklab <-> OkLCh.

Arrays are channel-last ``[..., 3]`` and may be numpy arrays or torch tensors (any batch shape,
CPU or GPU); the result has the input's type, device and floating dtype (integer numpy input is
computed in float32).  Nothing is clipped: out-of-gamut colours stay out of gamut (see
:mod:`.gamut` to map them back).

Units and ranges
----------------
* sRGB: display-referred, 0..1 (IEC 61966-2-1).  Linear sRGB: 0..1, white = (1, 1, 1).
* XYZ: relative CIE 1931 XYZ under D65, Y of sRGB white = 1 (multiply by a luminance in cd/m² to
  get the absolute values Jzazbz wants, see :mod:`.jzazbz`).
* Oklab (Ottosson 2020, "A perceptual color space for image processing"): L 0..1 for sRGB
  colours (white = 1), a and b roughly -0.32..0.28.
* OkLCh: L, chroma C = hypot(a, b) >= 0, hue h in degrees 0..360 (atan2(b, a), like CIE LCh).

Matrices
--------
* ``M_SRGB_TO_XYZ`` is the matrix printed in IEC 61966-2-1 (4 decimals, the one colour-science
  uses); ``M_XYZ_TO_SRGB`` is its exact float64 inverse (the standard's printed inverse is rounded,
  which makes its round trip off by ~3e-4).
* Oklab from XYZ uses Ottosson's XYZ -> LMS matrix ``M1_XYZ_TO_LMS`` and ``M2_LMS_TO_OKLAB``.
* Oklab from linear sRGB has two variants, chosen with ``matrix=``:

  - ``"ottosson"`` (default): Ottosson's published linear-sRGB -> LMS matrix.  Its rows sum to 1,
    so greys get a = b = 0 exactly (a neutral grey axis: hue edits and gamut mapping rely on it),
    and sRGB red gives Ottosson's published (0.627955, 0.224863, 0.125846).
  - ``"xyz"``: ``M1_XYZ_TO_LMS @ M_SRGB_TO_XYZ``, i.e. exactly sRGB -> XYZ -> Oklab, which is what
    colour-science computes (agreement ~1e-15).  The two variants differ by up to 1.1e-4; in the
    "xyz" variant white has a, b = (-2.6e-4, -1.1e-4) because Ottosson's matrices are float32 fits.

  Every inverse matrix is the exact float64 inverse of its forward matrix, so round trips are clean
  to float rounding (~1e-15 in float64, ~1e-6 in float32).
"""
from __future__ import annotations

import math

import numpy as np

try:  # torch is optional for the numpy path
    import torch
except Exception:  # pragma: no cover
    torch = None

# --- matrices -----------------------------------------------------------------------------------
#: IEC 61966-2-1 linear sRGB -> CIE XYZ (D65), as printed in the standard
M_SRGB_TO_XYZ = np.array(
    [
        [0.4124, 0.3576, 0.1805],
        [0.2126, 0.7152, 0.0722],
        [0.0193, 0.1192, 0.9505],
    ]
)
M_XYZ_TO_SRGB = np.linalg.inv(M_SRGB_TO_XYZ)

#: Ottosson 2020: CIE XYZ (D65) -> LMS (the definition of Oklab)
M1_XYZ_TO_LMS = np.array(
    [
        [0.8189330101, 0.3618667424, -0.1288597137],
        [0.0329845436, 0.9293118715, 0.0361456387],
        [0.0482003018, 0.2643662691, 0.6338517070],
    ]
)
M1_XYZ_INV = np.linalg.inv(M1_XYZ_TO_LMS)

#: Ottosson 2020: linear sRGB -> LMS (published convenience matrix; rows sum to 1)
M1_LINEAR_SRGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
#: linear sRGB -> LMS through XYZ (IEC sRGB matrix then Ottosson's XYZ M1): colour-science's path
M1_LINEAR_SRGB_TO_LMS_VIA_XYZ = M1_XYZ_TO_LMS @ M_SRGB_TO_XYZ

#: Ottosson 2020: LMS' (cube roots) -> Oklab
M2_LMS_TO_OKLAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
M1_INV = np.linalg.inv(M1_LINEAR_SRGB_TO_LMS)
M1_INV_VIA_XYZ = np.linalg.inv(M1_LINEAR_SRGB_TO_LMS_VIA_XYZ)
M2_INV = np.linalg.inv(M2_LMS_TO_OKLAB)

_SRGB_M1 = {"ottosson": (M1_LINEAR_SRGB_TO_LMS, M1_INV), "xyz": (M1_LINEAR_SRGB_TO_LMS_VIA_XYZ, M1_INV_VIA_XYZ)}
OKLAB_SRGB_MATRICES = tuple(_SRGB_M1)


# --- array helpers ----------------------------------------------------------------------------
def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def as_float(x):
    """numpy/torch array as floating point (integers -> float32), torch kept on its device."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def check_channels(x, name: str = "colour array"):
    """Raise ValueError unless the last axis has 3 channels."""
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected channel-last [..., 3] values, got shape {tuple(x.shape)}")


def _matmul(x, m: np.ndarray):
    """``x[..., 3] @ m.T`` keeping x's type, device and floating dtype."""
    x = as_float(x)
    if _is_torch(x):
        mt = torch.as_tensor(m.T, dtype=x.dtype, device=x.device)
        return x @ mt
    return x @ m.T.astype(x.dtype)


def _pow(a, e: float):
    """``a ** e`` for a >= 0 (0 -> 0).  In torch as exp(e·log a): faster on CPU than ``Tensor.pow``
    with a float exponent (``benchmarks/bench_colour.py``), same accuracy to float rounding."""
    if _is_torch(a):
        return torch.exp(torch.log(a) * e)
    return a ** e


def _cbrt(x):
    """Sign-preserving cube root."""
    if _is_torch(x):
        return torch.copysign(_pow(torch.abs(x), 1.0 / 3.0), x)
    return np.cbrt(x)


def _split(x):
    return x[..., 0], x[..., 1], x[..., 2]


def _stack(a, b, c, like):
    if _is_torch(like):
        return torch.stack([a, b, c], dim=-1)
    return np.stack([a, b, c], axis=-1)


#: pixels per chunk when a large CPU tensor is converted piecewise (keeps temporaries in cache)
CHUNK_PIXELS = 1 << 15


def pixelwise(fn):
    """Decorator: run ``fn(x[..., 3], *args)`` chunk by chunk on large CPU torch tensors.

    Per-pixel conversions create ~10 temporaries; on the CPU, chunks of 32k pixels keep them in the
    cache (``benchmarks/bench_colour.py`` times 4K conversions).  The chunks run with one intra-op
    thread: on chunks this small, OpenMP hand-offs (and worker threads spinning after each op) cost
    more than they gain, most on a busy machine; the previous thread count is restored afterwards.
    GPU tensors and numpy arrays pass straight through.
    """

    def wrapper(x, *args, **kwargs):
        if not (_is_torch(x) and x.device.type == "cpu" and x.ndim >= 1 and x.shape[-1] == 3
                and x.numel() > 8 * CHUNK_PIXELS * 3):
            return fn(x, *args, **kwargs)
        flat = as_float(x).reshape(-1, 3)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            first = fn(flat[:CHUNK_PIXELS], *args, **kwargs)
            out = torch.empty((flat.shape[0], 3), dtype=first.dtype)
            out[:CHUNK_PIXELS] = first
            for start in range(CHUNK_PIXELS, flat.shape[0], CHUNK_PIXELS):
                out[start:start + CHUNK_PIXELS] = fn(flat[start:start + CHUNK_PIXELS], *args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        return out.reshape(x.shape)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


# --- sRGB transfer function ---------------------------------------------------------------------
_DEC_T = 0.04045
_ENC_T = 0.0031308


def _step(a, t: float):
    """0 where a <= t, 1 where a > t, built from clamps (``torch.where`` and comparisons are slow on
    the CPU).  Exact: a positive a - t is at least one ulp of t, and times ``big`` it saturates."""
    big = {torch.float64: 1e300, torch.float16: 6e4}.get(a.dtype, 1e30)
    return ((a - t) * big).clamp_(0.0, 1.0)


def srgb_to_linear(x):
    """IEC 61966-2-1 sRGB decoding (0..1 -> linear 0..1); negative values mirror (odd extension)."""
    if _is_torch(x):
        x = as_float(x)
        a = torch.abs(x)
        lin = a * (1.0 / 12.92)
        pw = _pow((a.clamp(min=_DEC_T) + 0.055) * (1.0 / 1.055), 2.4)
        lin += _step(a, _DEC_T) * (pw - lin)
        return torch.copysign(lin, x)
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    a = np.abs(x)
    return np.sign(x) * np.where(a <= _DEC_T, a / 12.92, ((a + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """IEC 61966-2-1 sRGB encoding (linear -> 0..1), odd extension for negative values."""
    if _is_torch(x):
        x = as_float(x)
        a = torch.abs(x)
        enc = a * 12.92
        pw = 1.055 * _pow(a.clamp(min=_ENC_T), 1.0 / 2.4) - 0.055
        enc += _step(a, _ENC_T) * (pw - enc)
        return torch.copysign(enc, x)
    x = np.asarray(x, dtype=np.result_type(x, np.float32))
    a = np.abs(x)
    return np.sign(x) * np.where(a <= _ENC_T, a * 12.92, 1.055 * np.maximum(a, 1e-12) ** (1 / 2.4) - 0.055)


# --- XYZ ----------------------------------------------------------------------------------------
@pixelwise
def linear_srgb_to_xyz(rgb):
    """Linear sRGB -> relative CIE XYZ (D65, white Y = 1), IEC 61966-2-1 matrix."""
    return _matmul(rgb, M_SRGB_TO_XYZ)


@pixelwise
def xyz_to_linear_srgb(xyz):
    """Relative CIE XYZ (D65) -> linear sRGB with the exact inverse of the IEC matrix."""
    return _matmul(xyz, M_XYZ_TO_SRGB)


@pixelwise
def srgb_to_xyz(rgb):
    """sRGB (0..1) -> relative CIE XYZ (D65)."""
    return linear_srgb_to_xyz(srgb_to_linear(rgb))


@pixelwise
def xyz_to_srgb(xyz):
    """Relative CIE XYZ (D65) -> sRGB (not clipped)."""
    return linear_to_srgb(xyz_to_linear_srgb(xyz))


# --- Oklab --------------------------------------------------------------------------------------
def _lms_to_oklab(lms):
    return _matmul(_cbrt(lms), M2_LMS_TO_OKLAB)


def _oklab_to_lms(lab):
    lms_ = _matmul(lab, M2_INV)
    return lms_ * lms_ * lms_


@pixelwise
def xyz_to_oklab(xyz):
    """Relative CIE XYZ (D65) -> Oklab (Ottosson 2020: M1, sign-preserving cube root, M2)."""
    return _lms_to_oklab(_matmul(xyz, M1_XYZ_TO_LMS))


@pixelwise
def oklab_to_xyz(lab):
    """Oklab -> relative CIE XYZ (D65), exact inverse of :func:`xyz_to_oklab`."""
    return _matmul(_oklab_to_lms(lab), M1_XYZ_INV)


def _srgb_m1(matrix: str):
    try:
        return _SRGB_M1[matrix]
    except KeyError:
        raise ValueError(f"unknown Oklab sRGB matrix {matrix!r}; expected one of {OKLAB_SRGB_MATRICES}") from None


@pixelwise
def linear_srgb_to_oklab(rgb, matrix: str = "ottosson"):
    """Linear sRGB -> Oklab.  ``matrix``: "ottosson" (published sRGB M1, neutral greys) or "xyz"."""
    return _lms_to_oklab(_matmul(rgb, _srgb_m1(matrix)[0]))


@pixelwise
def oklab_to_linear_srgb(lab, matrix: str = "ottosson"):
    """Oklab -> linear sRGB (exact inverse of :func:`linear_srgb_to_oklab`, not clipped)."""
    return _matmul(_oklab_to_lms(lab), _srgb_m1(matrix)[1])


@pixelwise
def srgb_to_oklab(rgb, matrix: str = "ottosson"):
    """sRGB (0..1, channel-last) -> Oklab (L, a, b)."""
    return linear_srgb_to_oklab(srgb_to_linear(rgb), matrix)


@pixelwise
def oklab_to_srgb(lab, matrix: str = "ottosson"):
    """Oklab -> sRGB (not clipped: out-of-gamut colours leave 0..1; see :mod:`.gamut`)."""
    return linear_to_srgb(oklab_to_linear_srgb(lab, matrix))


# --- cylindrical forms ----------------------------------------------------------------------------
def lab_to_lch(lab):
    """(L, a, b) -> (L, C, h): C = hypot(a, b), h = atan2(b, a) in degrees 0..360.

    Works for Oklab -> OkLCh and Jzazbz -> JzCzhz alike.
    """
    lab = as_float(lab)
    L, a, b = _split(lab)
    if _is_torch(lab):
        c = torch.hypot(a, b)
        h = torch.remainder(torch.rad2deg(torch.atan2(b, a)), 360.0)
    else:
        c = np.hypot(a, b)
        h = np.remainder(np.degrees(np.arctan2(b, a)), 360.0)
    return _stack(L, c, h, lab)


def lch_to_lab(lch):
    """(L, C, h in degrees) -> (L, a, b); inverse of :func:`lab_to_lch`."""
    lch = as_float(lch)
    L, c, h = _split(lch)
    if _is_torch(lch):
        hr = h * (math.pi / 180.0)
        return _stack(L, c * torch.cos(hr), c * torch.sin(hr), lch)
    hr = np.radians(h)
    return _stack(L, c * np.cos(hr), c * np.sin(hr), lch)


def oklab_to_oklch(lab):
    """Oklab -> OkLCh (L, C, h degrees)."""
    return lab_to_lch(lab)


def oklch_to_oklab(lch):
    """OkLCh (L, C, h degrees) -> Oklab."""
    return lch_to_lab(lch)


def srgb_to_oklch(rgb, matrix: str = "ottosson"):
    return oklab_to_oklch(srgb_to_oklab(rgb, matrix))


def oklch_to_srgb(lch, matrix: str = "ottosson"):
    return oklab_to_srgb(oklch_to_oklab(lch), matrix)

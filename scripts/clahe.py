"""Contrast Limited Adaptive Histogram Equalisation (CLAHE) on a chosen channel.

CLAHE (Zuiderveld, "Contrast Limited Adaptive Histogram Equalization", Graphics Gems IV, 1994):
the image is split into ``grid x grid`` tiles, each tile's histogram is clipped at a limit and
equalised, and the per-tile mappings are interpolated bilinearly.  The work is done by OpenCV's
``cv2.createCLAHE`` on an 8-bit version of the channel.

Clip-limit convention (OpenCV's, used everywhere in RestoreKit)
    ``clip_limit`` is a multiple of the mean histogram bin height: a tile of N pixels and 256 bins
    has its bins clipped at ``clip_limit * N / 256`` counts.  1.0 leaves an (almost) identity
    mapping, 2-4 is moderate, 40 is nearly plain adaptive equalisation.  scikit-image's
    ``equalize_adapthist(clip_limit=c_sk)`` clips at ``c_sk * N`` counts (with ``nbins=256``), so
    ``c_sk = clip_limit / 256``: skimage's default 0.01 is OpenCV 2.56.  The clip counts are then
    identical, but the two redistribute the clipped excess differently, so outputs agree to a few
    percent, not exactly.  (skimage also stretches its input to the full range first and its
    output afterwards; OpenCV does neither.)

Channels (``channel`` argument)
    ``"oklab"``  Oklab lightness L (Ottosson 2020), a and b kept: the default, hue-preserving.
    ``"lab"``    CIE L*a*b* L* (D65, via OpenCV's float conversion), a*, b* kept.
    ``"ycbcr"``  Y of full-range BT.601 YCbCr (JPEG), Cb and Cr kept.
    ``"rgb"``    each of R, G, B separately (may shift colours).
Grayscale inputs (``[H,W]`` or ``[H,W,1]``) are processed directly whatever ``channel`` says.

All images are float arrays in 0..1, channel-last; outputs are float32 in 0..1.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

CHANNELS = ("oklab", "lab", "ycbcr", "rgb")
#: how the nodes name each channel (display name -> CHANNELS entry)
CHANNEL_NAMES = {"Oklab L": "oklab", "Lab L": "lab", "YCbCr Y": "ycbcr", "RGB per channel": "rgb"}
DEFAULT_CLIP = 2.0
DEFAULT_GRID = 8
MAX_GRID = 64

# BT.601 full range (JPEG / JFIF) luma weights
_YR, _YG, _YB = 0.299, 0.587, 0.114


def as_unit_float(image, name: str = "image") -> np.ndarray:
    """``image`` as float32 in 0..1; ValueError for NaN/inf or an empty array; clips to 0..1.
    A float32 array already in range is returned as is (not copied): callers never write to it."""
    a = np.asarray(image)
    if a.size == 0:
        raise ValueError(f"{name}: the image is empty (shape {a.shape})")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    a = a.astype(np.float32, copy=False)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} pixel value(s) are NaN or infinite")
    return a if 0.0 <= lo and hi <= 1.0 else np.clip(a, 0.0, 1.0)  # no copy when already in range


def to_u8(channel: np.ndarray) -> np.ndarray:
    """Float channel 0..1 -> uint8 0..255 with rounding (values outside 0..1 are clipped)."""
    import cv2

    return cv2.convertScaleAbs(np.clip(channel, 0.0, 1.0).astype(np.float32, copy=False), alpha=255.0)


def check_params(clip_limit: float, grid: int, shape: Tuple[int, int]) -> Tuple[float, int]:
    """Validate (clip, grid) and shrink the grid so that every tile has at least 2 px per side."""
    clip_limit = float(clip_limit)
    if not np.isfinite(clip_limit) or clip_limit <= 0:
        raise ValueError(f"clip_limit must be a positive number (OpenCV convention), got {clip_limit}")
    grid = int(grid)
    if grid < 1 or grid > MAX_GRID:
        raise ValueError(f"grid must be between 1 and {MAX_GRID} tiles per side, got {grid}")
    h, w = shape
    grid = max(1, min(grid, h // 2, w // 2))
    return clip_limit, grid


def clahe_u8(channel_u8: np.ndarray, clip_limit: float = DEFAULT_CLIP, grid: int = DEFAULT_GRID) -> np.ndarray:
    """OpenCV CLAHE on one uint8 channel ``[H,W]``; images under 2 px per side are returned as is."""
    import cv2

    h, w = channel_u8.shape[:2]
    if h < 2 or w < 2:
        return channel_u8.copy()
    clip_limit, grid = check_params(clip_limit, grid, (h, w))
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))
    return op.apply(np.ascontiguousarray(channel_u8))


def clahe_channel(channel: np.ndarray, clip_limit: float = DEFAULT_CLIP, grid: int = DEFAULT_GRID) -> np.ndarray:
    """CLAHE on one float channel in 0..1 (quantised to 8 bits for OpenCV), float32 0..1 out.

    A plane under 2 px per side, or flat to within one 8-bit level, has nothing to equalise and is
    returned unchanged (OpenCV would move a flat plane towards mid-grey).
    """
    channel = np.asarray(channel, dtype=np.float32)
    if min(channel.shape[:2]) < 2 or float(channel.max() - channel.min()) < 1.0 / 255.0:
        check_params(clip_limit, grid, (2, 2))
        return channel.copy()
    out = clahe_u8(to_u8(channel), clip_limit, grid)
    return out.astype(np.float32) * np.float32(1.0 / 255.0)


# --- fast Oklab (Ottosson 2020) for whole images ----------------------------------------------------
_LUT_SIZE = 65536
_LUTS = {}


def _srgb_luts():
    """sRGB decode/encode tables on a 16-bit grid (IEC 61966-2-1, the formulas of scripts/colour.py).

    Quantising to 1/65535 keeps the decoded value within 2e-5 and the encoded one within 1.2e-4 of
    the exact formula -- far below one 8-bit level -- at a fraction of the cost of float powers.
    """
    if not _LUTS:
        from .colour import linear_to_srgb, srgb_to_linear

        x = np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float64)
        _LUTS["dec"] = np.asarray(srgb_to_linear(x), dtype=np.float32)
        _LUTS["enc"] = np.asarray(linear_to_srgb(x), dtype=np.float32)
    return _LUTS["dec"], _LUTS["enc"]


def _lut_apply(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    q = np.clip(x, 0.0, 1.0) * np.float32(_LUT_SIZE - 1)
    q += np.float32(0.5)
    return lut[q.astype(np.uint16)]


def srgb_to_oklab_fast(rgb: np.ndarray) -> np.ndarray:
    """sRGB ``[H,W,3]`` float 0..1 -> Oklab (L, a, b) float32; within 1e-4 of
    ``scripts.colour.srgb_to_oklab`` (tables for the sRGB curve, OpenCV for the 3x3 matrices)."""
    import cv2

    from .colour import M1_LINEAR_SRGB_TO_LMS, M2_LMS_TO_OKLAB

    dec, _ = _srgb_luts()
    lin = _lut_apply(rgb, dec)
    lms = cv2.transform(lin, M1_LINEAR_SRGB_TO_LMS.astype(np.float32))
    np.cbrt(lms, out=lms)
    return cv2.transform(lms, M2_LMS_TO_OKLAB.astype(np.float32))


def oklab_to_srgb_fast(lab: np.ndarray) -> np.ndarray:
    """Oklab ``[H,W,3]`` -> sRGB float32 clipped to 0..1 (out-of-gamut colours clip per channel)."""
    import cv2

    from .colour import M1_INV, M2_INV

    _, enc = _srgb_luts()
    lms = cv2.transform(np.ascontiguousarray(lab, dtype=np.float32), M2_INV.astype(np.float32))
    lms = lms * lms * lms
    lin = cv2.transform(lms, M1_INV.astype(np.float32))
    return _lut_apply(lin, enc)


# --- channel split / merge ------------------------------------------------------------------------
#: working memory per colour-conversion strip (bytes); the conversions run in row strips so that an
#: 8K image needs little more than its input, its output and two planes (scripts/memory_guard.py)
STRIP_BYTES = 32 << 20


def _rows(image: np.ndarray):
    """Row strips of ``image`` for the per-pixel conversions (~ :data:`STRIP_BYTES` of temporaries:
    about six float32 copies of a strip)."""
    from .memory_guard import strips

    return strips(image.shape[0], image.shape[1] * image.shape[-1] * 4 * 6, STRIP_BYTES)


def split_channel(image: np.ndarray, channel: str = "oklab"):
    """Return ``(planes, rest)``: the 2-D float32 planes CLAHE works on (list) and what merge needs.

    ``image`` is ``[H,W,3]`` float 0..1.  For "rgb" the planes are R, G, B.  The conversions run in
    row strips; ``rest`` is None for every channel but "lab" (merge recomputes a and b of Oklab
    from ``image``, strip by strip, instead of keeping a full Lab copy).
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    if channel == "rgb":
        return [image[..., i] for i in range(3)], None
    plane = np.empty(image.shape[:2], dtype=np.float32)
    if channel == "lab":
        import cv2

        lab = np.empty(image.shape[:2] + (3,), dtype=np.float32)
        for sl in _rows(image):
            lab[sl] = cv2.cvtColor(np.ascontiguousarray(image[sl], dtype=np.float32), cv2.COLOR_RGB2Lab)
        np.multiply(lab[..., 0], np.float32(0.01), out=plane)
        return [plane], lab
    for sl in _rows(image):
        part = np.asarray(image[sl], dtype=np.float32)
        if channel == "oklab":
            plane[sl] = np.clip(srgb_to_oklab_fast(np.ascontiguousarray(part))[..., 0], 0.0, 1.0)
        else:  # ycbcr
            plane[sl] = _YR * part[..., 0] + _YG * part[..., 1] + _YB * part[..., 2]
    return [plane], None


def merge_channel(planes, rest, channel: str, image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_channel` (row strips); result float32 clipped to 0..1 (out-of-gamut
    colours clip)."""
    if channel == "rgb":
        out = np.stack(planes, axis=-1).astype(np.float32, copy=False)
        return np.clip(out, 0.0, 1.0, out=out)
    out = np.empty(image.shape[:2] + (3,), dtype=np.float32)
    for sl in _rows(image):
        part = np.asarray(image[sl], dtype=np.float32)
        if channel == "oklab":  # the sRGB table clips to 0..1 and cannot make NaN
            lab = srgb_to_oklab_fast(np.ascontiguousarray(part))
            lab[..., 0] = planes[0][sl]
            out[sl] = oklab_to_srgb_fast(lab)
            continue
        if channel == "lab":
            import cv2

            lab = rest[sl].copy()
            lab[..., 0] = planes[0][sl] * 100.0
            out[sl] = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        else:  # ycbcr: adding the luma change to R, G and B keeps Cb and Cr exactly
            y_old = _YR * part[..., 0] + _YG * part[..., 1] + _YB * part[..., 2]
            out[sl] = part + (planes[0][sl] - y_old)[..., None]
        np.clip(out[sl], 0.0, 1.0, out=out[sl])
    return out


def clahe(image, clip_limit: float = DEFAULT_CLIP, grid: int = DEFAULT_GRID, channel: str = "oklab") -> np.ndarray:
    """CLAHE of an image ``[H,W]``, ``[H,W,1]`` or ``[H,W,3]`` (float 0..1) on ``channel``.

    ``clip_limit`` in OpenCV's convention (see module docstring), ``grid`` tiles per side (the
    grid is shrunk for images smaller than 2 px per tile).  Returns float32 0..1, same shape.
    """
    img = as_unit_float(image)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1):
        out = clahe_channel(img.reshape(img.shape[:2]), clip_limit, grid)
        return out.reshape(img.shape)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an image [H,W], [H,W,1] or [H,W,3], got shape {img.shape}")
    planes, rest = split_channel(img, channel)
    planes = [clahe_channel(p, clip_limit, grid) for p in planes]
    return merge_channel(planes, rest, channel, img)


def working_channel(image: np.ndarray, channel: str = "oklab") -> np.ndarray:
    """The 2-D plane (float 0..1) CLAHE would work on; for "rgb" the BT.601 luma stands in."""
    img = as_unit_float(image)
    if img.ndim == 2 or img.shape[-1] == 1:
        return img.reshape(img.shape[:2])
    if channel == "rgb":
        channel = "ycbcr"
    return split_channel(img, channel)[0][0]

"""Multi-scale Retinex: MSR, MSRCR (colour restoration) and MSR on intensity (MSRCP).

References
    D. J. Jobson, Z. Rahman, G. A. Woodell, "A multiscale retinex for bridging the gap between
    color images and the human observation of scenes", IEEE TIP 6(7), 1997 (MSR, MSRCR).
    A. B. Petro, C. Sbert, J.-M. Morel, "Multiscale Retinex", IPOL 4 (2014) 71-88 (the defaults
    used here, MSRCP on intensity, and the simplest colour balance as the final stretch).
    N. Limare, J.-L. Lisani, J.-M. Morel, A. B. Petro, C. Sbert, "Simplest Color Balance",
    IPOL 1 (2011) (clip s1 % at the bottom and s2 % at the top of each channel, stretch linearly).

Formulas (images are float 0..1 here; Retinex works on ``v = 255 * I``, as IPOL does)
    MSR_i     = sum_n w_n [ log(v_i + 1) - log(G_sigma_n * v_i + 1) ],  w_n = 1/N
    MSRCR_i   = C_i * MSR_i,  C_i = beta * [ log(alpha * (v_i + 1)) - log(sum_j (v_j + 1)) ]
                (alpha = 125, beta = 46; the gain/offset of Jobson 1997 and beta itself vanish in
                the per-channel affine stretch of the simplest colour balance)
    MSRCP     = MSR on the intensity I = (R + G + B) / 3, balanced, then each pixel's RGB scaled
                by A = min(1 / max(R,G,B), I_out / I) so hue and saturation are kept (IPOL 2014).
A constant image gives MSR = 0 exactly.  Channels with nothing to stretch (constant after Retinex)
are returned unchanged.

Scale convention (sigma vs c)
    ``sigmas`` are standard deviations of the Gaussian surround G(r) ~ exp(-r^2 / (2 sigma^2)),
    in pixels, as in the IPOL implementation (defaults 15, 80, 250).  Jobson et al. write the
    surround as exp(-r^2 / c^2); their scale c corresponds to sigma = c / sqrt(2)
    (:func:`jobson_c_to_sigma`).

Borders are symmetric (half-sample mirror, ``d c b a | a b c d``): zero padding would darken the
borders at sigma 250.  Large-sigma blurs run on a downsampled image (:func:`gaussian_blur_fast`),
checked against the exact DCT-domain blur (:func:`gaussian_blur_exact`) to well within 1/255.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence, Tuple

import numpy as np

from .finite import all_finite

DEFAULT_SIGMAS: Tuple[float, ...] = (15.0, 80.0, 250.0)
DEFAULT_CLIP_PERCENT = 1.0
ALPHA = 125.0
BETA = 46.0
#: Retinex variants (the first is the nodes' default)
MODES = ("MSRCR", "MSR", "MSR-intensity")
#: surround blurs: "fast" on a downsampled image, "exact" full-size DCT blurs
BLURS = ("fast", "exact")

# the fast blur works on an image downsampled so that sigma becomes about this many (small) pixels
_SMALL_SIGMA = 4.0
_MIN_SMALL_SIDE = 32
# colour balance quantiles of images bigger than this many pixels come from a random sample
_QUANTILE_SAMPLE = 1 << 18


def jobson_c_to_sigma(c: float) -> float:
    """Jobson's surround scale c (exp(-r^2/c^2)) -> Gaussian standard deviation sigma = c/sqrt(2)."""
    return float(c) / math.sqrt(2.0)


# --- Gaussian blurs with symmetric borders ----------------------------------------------------------
def _dct_gain(n: int, sigma: float, dtype=np.float64) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)
    return np.exp(-0.5 * (sigma * math.pi * k / n) ** 2).astype(dtype)


def gaussian_blur_exact(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D array (or each channel of ``[H,W,C]``) with symmetric borders.

    Multiplying the DCT-II coefficients by exp(-sigma^2 (pi k / N)^2 / 2) convolves the
    half-sample-symmetric periodic extension with the (untruncated) Gaussian, exactly the blur with
    symmetric borders for any sigma, even larger than the image.  sigma in pixels; 0 = identity.
    """
    from scipy import fft

    a = np.asarray(x, dtype=np.float64)
    if sigma <= 0:
        return a.copy()
    h, w = a.shape[:2]
    coef = fft.dctn(a, type=2, axes=(0, 1), norm="ortho")
    gy = _dct_gain(h, sigma)
    gx = _dct_gain(w, sigma)
    shape = (h, w) + (1,) * (a.ndim - 2)
    coef *= (gy[:, None] * gx[None, :]).reshape(shape)
    return fft.idctn(coef, type=2, axes=(0, 1), norm="ortho")


def _blur_small(a: np.ndarray, sigma: float) -> np.ndarray:
    """Exact-enough blur of a small float32 array with symmetric borders: OpenCV's separable
    Gaussian (BORDER_REFLECT, kernel +-4 sigma) when the kernel fits, the DCT blur otherwise."""
    import cv2

    radius = int(math.ceil(4.0 * sigma))
    if 2 * radius + 1 <= min(a.shape[:2]):
        return cv2.GaussianBlur(a, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, sigmaY=sigma,
                                borderType=cv2.BORDER_REFLECT)
    return gaussian_blur_exact(a, sigma).astype(np.float32)


def _factor(sigma: float, h: int, w: int) -> int:
    """Downsampling factor: sigma becomes ~_SMALL_SIGMA px, the short side keeps >= _MIN_SMALL_SIDE px."""
    f = max(1, int(round(sigma / _SMALL_SIGMA)))
    return max(1, min(f, min(h, w) // _MIN_SMALL_SIDE))


def _down(a: np.ndarray, f: int):
    """Area-downsample by about ``f``; returns (small, fy, fx) with the exact factors used."""
    import cv2

    h, w = a.shape[:2]
    if f <= 1:
        return a, 1.0, 1.0
    sh, sw = max(1, int(math.ceil(h / f))), max(1, int(math.ceil(w / f)))
    return cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA), h / sh, w / sw


def _up(a: np.ndarray, shape) -> np.ndarray:
    import cv2

    h, w = shape[:2]
    if a.shape[:2] == (h, w):
        return a
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)


def _small_sigma(sigma: float, scale2: float, extra_var: float) -> float:
    """sigma (full-res px) on a grid ``scale2 = fy*fx`` coarser, minus resampling variance."""
    return math.sqrt(max(sigma * sigma - extra_var, 0.25 * scale2)) / math.sqrt(scale2)


def gaussian_blur_fast(x: np.ndarray, sigma: float) -> np.ndarray:
    """Fast Gaussian blur (symmetric borders) of a float32 ``[H,W]`` array, any sigma in pixels.

    The image is area-downsampled by f ~ sigma / 4 (keeping >= 32 px on the short side), blurred at sigma_s with
    f^2 sigma_s^2 = sigma^2 - f^2/12 - f^2/6 (the box of the area reduction and the triangle of
    the bilinear upsampling add variance f^2/12 and f^2/6) with symmetric borders, and bilinearly
    upsampled.  Error against :func:`gaussian_blur_exact` is far below 1/255 on 0..1 images at
    sigma 15, 80 and 250 (see tests/test_retinex.py).
    """
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"gaussian_blur_fast expects a 2-D array, got shape {a.shape}")
    if sigma <= 0:
        return a.copy()
    f = _factor(sigma, *a.shape)
    small, fy, fx = _down(a, f)
    extra = (fy * fx) * (1.0 / 12.0 + 1.0 / 6.0) if f > 1 else 0.0
    return _up(_blur_small(small, _small_sigma(sigma, fy * fx, extra)), a.shape)


def mean_log_surround(v: np.ndarray, sigmas: Sequence[float], method: str = "fast") -> np.ndarray:
    """(1/N) sum_n log(G_sigma_n * v + 1) at full resolution, float32 ``[H,W]``.

    "exact": each blur is the full-size DCT blur.  "fast": ``v`` is area-downsampled once for the
    smallest sigma (grid g0), each sigma is blurred on its own coarser grid taken from g0, its log
    is brought back to g0 and averaged there, and the average is upsampled once.  The logs of
    surrounds this smooth are themselves smooth, so interpolating the log instead of the blur
    changes the result by far less than 1/255 (tests compare with "exact").
    """
    sigmas = _check_sigmas(sigmas)
    v = np.asarray(v, dtype=np.float32)
    if method == "exact":
        acc = np.zeros(v.shape, np.float64)
        for s in sigmas:
            acc += np.log1p(np.maximum(gaussian_blur_exact(v, s), 0.0))
        return (acc / len(sigmas)).astype(np.float32)
    if method != "fast":
        raise ValueError(f"blur method must be 'fast' or 'exact', got {method!r}")
    h, w = v.shape
    f0 = _factor(min(sigmas), h, w)
    g0, fy0, fx0 = _down(v, f0)
    return _up(_log_surround_grid(g0, sigmas, (h, w), f0, fy0 * fx0), v.shape)


def _log_surround_grid(g0: np.ndarray, sigmas: Sequence[float], full_shape, f0: int, s0: float) -> np.ndarray:
    """Mean log-surround on the grid ``g0`` (the full plane area-downsampled by ``f0``, pixel area
    ``s0`` full-res px): each sigma is blurred on its own coarser grid taken from g0."""
    h, w = full_shape
    acc = np.zeros(g0.shape, np.float32)
    for s in sigmas:
        r = max(1, _factor(s, h, w) // f0)
        small, fy, fx = _down(g0, r)
        scale2 = s0 * fy * fx
        extra = (scale2 + (s0 if f0 > 1 and r > 1 else 0.0)) * (1.0 / 12.0 + 1.0 / 6.0) if f0 * r > 1 else 0.0
        blurred = _blur_small(small, _small_sigma(s, scale2, extra))
        acc += _up(np.log1p(np.maximum(blurred, 0.0)), g0.shape)
    acc *= np.float32(1.0 / len(sigmas))
    return acc


class _RowUpsampler:
    """Bilinear upsampling of a small grid to ``(H, W)``, a strip of rows at a time, with the same
    sample positions as ``cv2.resize(INTER_LINEAR)``: src = (dst + 0.5) * n_in / n_out - 0.5,
    clamped to the grid."""

    def __init__(self, small: np.ndarray, shape):
        h, w = shape
        self.i0, self.i1, self.wy = self._weights(h, small.shape[0])
        x0, x1, wx = self._weights(w, small.shape[1])
        self.cols = small[:, x0] * (1.0 - wx) + small[:, x1] * wx  # (h_small, W)

    @staticmethod
    def _weights(n_out: int, n_in: int):
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0.0, n_in - 1)
        i0 = np.floor(x).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (x - i0).astype(np.float32)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        out = self.cols[self.i0[y0:y1]]
        nxt = self.cols[self.i1[y0:y1]]
        nxt -= out
        nxt *= self.wy[y0:y1, None]
        out += nxt
        return out


def gaussian_blur(x: np.ndarray, sigma: float, method: str = "fast") -> np.ndarray:
    """Dispatch: ``method`` "fast" (downsampled, default) or "exact" (full-size DCT)."""
    if method == "exact":
        return gaussian_blur_exact(x, sigma).astype(np.float32)
    if method != "fast":
        raise ValueError(f"blur method must be 'fast' or 'exact', got {method!r}")
    return gaussian_blur_fast(x, sigma)


# --- simplest colour balance ------------------------------------------------------------------------
def balance_bounds(x: np.ndarray, low_percent: float, high_percent: float) -> Tuple[float, float]:
    """Values below which ``low_percent`` % and above which ``high_percent`` % of ``x`` lie."""
    flat = np.asarray(x, dtype=np.float32).ravel()
    if flat.size > _QUANTILE_SAMPLE:
        # a fixed random sample of 2^18 pixels: the clipped fractions are then within about
        # +-0.02 % of the requested ones (binomial standard error at 1 %), at a fraction of the cost
        idx = np.random.default_rng(0).integers(0, flat.size, _QUANTILE_SAMPLE)
        flat = flat[idx]
    n = flat.size
    lo_k = int(min(n - 1, max(0, math.floor(n * low_percent / 100.0))))
    hi_k = int(min(n - 1, max(0, math.ceil(n * (1.0 - high_percent / 100.0)) - 1)))
    hi_k = max(hi_k, lo_k)
    part = np.partition(flat, [lo_k, hi_k])
    return float(part[lo_k]), float(part[hi_k])


def simplest_color_balance(x: np.ndarray, low_percent: float = 1.0, high_percent: float = 1.0):
    """Limare et al. 2011 on one channel: clip the darkest ``low_percent`` % and the brightest
    ``high_percent`` %, stretch the rest linearly to 0..1.  Returns ``(out, ok)``; ``ok`` is False
    when the channel has no spread (then ``out`` is None)."""
    if not (0 <= low_percent < 50 and 0 <= high_percent < 50):
        raise ValueError(f"clip percentages must be in 0..50, got {low_percent}, {high_percent}")
    lo, hi = balance_bounds(x, low_percent, high_percent)
    if not hi - lo > 1e-6 * max(1.0, abs(hi), abs(lo)):
        lo, hi = float(np.min(x)), float(np.max(x))
        if not hi - lo > 1e-6 * max(1.0, abs(hi), abs(lo)):
            return None, False
    out = (np.asarray(x, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out), True


# --- Retinex ---------------------------------------------------------------------------------------
def _check_sigmas(sigmas: Iterable[float]) -> Tuple[float, ...]:
    s = tuple(float(v) for v in sigmas)
    if not s:
        raise ValueError("at least one Retinex scale (sigma) is needed")
    for v in s:
        if not (math.isfinite(v) and 0 < v <= 10000):
            raise ValueError(f"Retinex sigmas must be in (0, 10000] pixels, got {v}")
    return s


def parse_sigmas(text: str) -> Tuple[float, ...]:
    """"15, 80, 250" -> (15.0, 80.0, 250.0) with a clear error for anything else."""
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"sigmas must be numbers separated by commas (e.g. '15, 80, 250'), got {text!r}")
    return _check_sigmas(values)


def msr_channel(v: np.ndarray, sigmas: Sequence[float] = DEFAULT_SIGMAS, method: str = "fast",
                log_v: np.ndarray = None) -> np.ndarray:
    """Multi-scale Retinex of one channel ``v`` (float, >= 0, any scale; 255-scale in IPOL).

    Returns sum_n (1/N) [log(v + 1) - log(G_n * v + 1)] as float32 (0 for a constant channel).
    ``log_v`` may pass a precomputed log(v + 1).
    """
    v = np.asarray(v, dtype=np.float32)
    out = np.log1p(v) if log_v is None else log_v.copy()
    out -= mean_log_surround(v, sigmas, method)
    return out


def _checked_image(image, clip_negative: bool = True) -> np.ndarray:
    """Validate an image and return it as float32 ``[H,W,C]`` (C = 1 or 3), negatives clipped to 0."""
    a = np.asarray(image)
    if a.size == 0:
        raise ValueError(f"image is empty (shape {a.shape})")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image [H,W], [H,W,1] or [H,W,3], got shape {np.shape(image)}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not all_finite(a):
        raise ValueError(f"image has {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    if clip_negative and a.min() < 0:
        a = np.maximum(a, 0.0)
    return a


def _as_planes(image):
    """Validate and split an image into contiguous float32 planes scaled to 0..255 (IPOL's range)."""
    a = _checked_image(image, clip_negative=False)
    import cv2

    planes = [a[..., 0].copy()] if a.shape[-1] == 1 else list(cv2.split(np.ascontiguousarray(a)))
    for p in planes:
        p *= np.float32(255.0)
        np.maximum(p, 0.0, out=p)
    return planes


def _retinex_strips(img: np.ndarray, mode: str, sigmas, low_clip, high_clip, alpha, beta) -> np.ndarray:
    """The "fast" Retinex: surrounds on small grids, then every full-size step done a strip of rows
    at a time (in cache), so the 4K image is read and written only a few times.  Same formulas as
    :func:`_retinex_planes`; ``img`` is ``[H,W,C]`` float32 0..1, finite, C = 1 or 3."""
    import cv2

    h, w, c = img.shape
    strip = max(8, (1 << 20) // max(1, w * 4))  # about 1 MB per float32 strip
    intensity = mode == "MSR-intensity" and c == 3
    f0 = _factor(min(sigmas), h, w)
    g0, fy0, fx0 = _down(img, f0)
    g0 = g0.reshape(g0.shape[0], g0.shape[1], c)
    work = [g0.mean(axis=-1)] if intensity else [g0[..., i] for i in range(c)]
    ups = [_RowUpsampler(_log_surround_grid(np.ascontiguousarray(g) * np.float32(255.0), sigmas, (h, w), f0, fy0 * fx0), (h, w))
           for g in work]
    k = len(work)
    colour_restore = mode == "MSRCR" and c == 3
    log_alpha = np.float32(math.log(alpha))
    r = np.empty((k, h, w), np.float32)
    starts = range(0, h, strip)

    def retinex_rows(y0: int) -> None:
        y1 = min(h, y0 + strip)
        blk = img[y0:y1]
        chans = [blk[..., i] for i in range(c)]
        if colour_restore or intensity:
            total = chans[0] + chans[1]
            total += chans[2]
        if colour_restore:  # T = log(sum_j (v_j + 1)) - log(alpha)
            t = total * np.float32(255.0)
            t += np.float32(3.0)
            cv2.log(t, dst=t)
            t -= log_alpha
        for i in range(k):
            lv = total * np.float32(255.0 / 3.0) if intensity else chans[i] * np.float32(255.0)
            lv += np.float32(1.0)
            cv2.log(lv, dst=lv)  # L = log(v + 1)
            out = r[i, y0:y1]
            np.subtract(lv, ups[i].rows(y0, y1), out=out)  # MSR = L - mean log surround
            if colour_restore:
                lv -= t  # C / beta = L + log(alpha) - log(sum)
                out *= lv
                if beta < 0:
                    np.negative(out, out=out)

    _for_each_strip(retinex_rows, starts)
    bounds = []
    for i in range(k):
        lo, hi = balance_bounds(r[i], low_clip, high_clip)
        if not hi - lo > 1e-6 * max(1.0, abs(hi), abs(lo)):
            lo, hi = float(r[i].min()), float(r[i].max())
        bounds.append((lo, hi) if hi - lo > 1e-6 * max(1.0, abs(hi), abs(lo)) else None)
    if intensity and bounds[0] is None:
        return img.copy()
    res = np.empty_like(img)

    def balance_rows(y0: int) -> None:
        y1 = min(h, y0 + strip)
        balanced = []
        for i in range(k):
            if bounds[i] is None:
                balanced.append(np.array(img[y0:y1, :, i]))
                continue
            lo, hi = bounds[i]
            b = r[i, y0:y1] - np.float32(lo)
            b *= np.float32(1.0 / (hi - lo))
            balanced.append(np.clip(b, 0.0, 1.0, out=b))
        if intensity:  # MSRCP: RGB * min(1 / max(R,G,B), I_out / I)
            blk = img[y0:y1]
            new = balanced[0]
            inten = (blk[..., 0] + blk[..., 1] + blk[..., 2]) * np.float32(1.0 / 3.0)
            peak = np.maximum(np.maximum(blk[..., 0], blk[..., 1]), blk[..., 2])
            gain = new / np.maximum(inten, np.float32(1e-12))
            np.minimum(gain, 1.0 / np.maximum(peak, np.float32(1e-12)), out=gain)
            o = blk * gain[..., None]
            dark = inten <= np.float32(1e-4 / 255.0)
            if dark.any():
                o[dark] = new[dark][:, None]
            res[y0:y1] = np.clip(o, 0.0, 1.0, out=o)
        elif c == 1:
            res[y0:y1, :, 0] = balanced[0]
        else:
            import cv2

            cv2.merge(balanced, dst=res[y0:y1])

    _for_each_strip(balance_rows, starts)
    return res


def _for_each_strip(fn, starts) -> None:
    """Run ``fn(y0)`` for every strip; strips write disjoint rows, so with more than one core they
    run on a small thread pool (numpy and OpenCV release the GIL on arrays this size)."""
    workers = min(4, os.cpu_count() or 1, len(starts))
    if workers <= 1:
        for y0 in starts:
            fn(y0)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(fn, y0) for y0 in starts]:
            f.result()


@dataclass
class RetinexReport:
    """The Retinex variant and settings that ran (sigmas in px, clip percentages)."""

    mode: str
    sigmas: Tuple[float, ...]
    low_clip: float
    high_clip: float
    blur: str
    grey: bool = False

    def info_fields(self) -> dict:
        return {
            "mode": self.mode + (" (grayscale input: plain MSR)" if self.grey and self.mode != "MSR" else ""),
            "sigmas (Gaussian std, px)": ", ".join(f"{s:g}" for s in self.sigmas),
            "weights": f"equal (1/{len(self.sigmas)})",
            "colour balance": f"clip {self.low_clip:g} % dark / {self.high_clip:g} % bright per "
                              f"{'image' if self.mode == 'MSR-intensity' else 'channel'}",
            "colour restoration": ("alpha 125, beta 46 (Jobson 1997)" if self.mode == "MSRCR" and not self.grey
                                   else "none"),
            "blur": ("downsampled Gaussian, symmetric borders" if self.blur == "fast"
                     else "exact DCT Gaussian, symmetric borders"),
        }


def retinex(image, mode: str = "MSRCR", sigmas: Sequence[float] = DEFAULT_SIGMAS,
            low_clip: float = DEFAULT_CLIP_PERCENT, high_clip: float = DEFAULT_CLIP_PERCENT,
            alpha: float = ALPHA, beta: float = BETA, method: str = "fast") -> Tuple[np.ndarray, RetinexReport]:
    """Multi-scale Retinex of an image ``[H,W]``, ``[H,W,1]`` or ``[H,W,3]``, float 0..1.

    mode: "MSR" (each channel), "MSRCR" (with colour restoration) or "MSR-intensity" (MSRCP, keeps
    colours).  Grayscale images run MSR for every mode.  ``low_clip``/``high_clip`` are the
    simplest-colour-balance percentages (IPOL default 1 % each).  ``method`` "fast" (downsampled
    blurs) or "exact" (full-size DCT blurs).  ``sigmas`` may be a sequence or text ("15, 80, 250").
    Returns (float32 0..1 with the input's shape, RetinexReport).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive number, got {alpha}")
    sigmas = parse_sigmas(sigmas) if isinstance(sigmas, str) else _check_sigmas(sigmas)
    simplest_color_balance(np.zeros(1, np.float32) + [0, 1], low_clip, high_clip)  # validates
    if method not in BLURS:
        raise ValueError(f"blur method must be 'fast' or 'exact', got {method!r}")
    grey = np.ndim(image) == 2 or np.shape(image)[-1] == 1
    report = RetinexReport(mode, sigmas, float(low_clip), float(high_clip), method, grey)
    return _retinex(image, mode, sigmas, low_clip, high_clip, alpha, beta, method), report


def _retinex(image, mode, sigmas, low_clip, high_clip, alpha, beta, method) -> np.ndarray:
    if method == "fast":
        img = _checked_image(image)
        return _retinex_strips(img, mode, sigmas, low_clip, high_clip, alpha, beta).reshape(np.shape(image))
    planes = _as_planes(image)
    c = len(planes)
    inv255 = np.float32(1.0 / 255.0)

    def unchanged(v):
        return np.minimum(v * inv255, 1.0)

    outs = []
    if c == 1 or mode == "MSR":
        for v in planes:
            bal, ok = simplest_color_balance(msr_channel(v, sigmas, method), low_clip, high_clip)
            outs.append(bal if ok else unchanged(v))
    elif mode == "MSRCR":
        # C_i = beta [log(alpha (v_i+1)) - log(sum_j (v_j+1))] = beta [L_i + log(alpha) - T]
        # with L_i = log(v_i + 1); a positive beta is a common scale the balance removes.
        total = planes[0] + planes[1]
        total += planes[2]
        total += np.float32(3.0)
        np.log(total, out=total)
        total -= np.float32(math.log(alpha))
        for v in planes:
            log_v = np.log1p(v)
            r = msr_channel(v, sigmas, method, log_v=log_v)
            log_v -= total
            r *= log_v
            if beta < 0:
                r = np.negative(r, out=r)
            bal, ok = simplest_color_balance(r, low_clip, high_clip)
            outs.append(bal if ok else unchanged(v))
    else:  # MSR-intensity (MSRCP, Petro et al. 2014)
        inten = (planes[0] + planes[1] + planes[2]) * np.float32(1.0 / 3.0)
        new, ok = simplest_color_balance(msr_channel(inten, sigmas, method), low_clip, high_clip)
        if not ok:
            outs = [unchanged(v) for v in planes]
        else:
            peak = np.maximum(np.maximum(planes[0], planes[1]), planes[2]) * inv255
            # A = min(1 / max(R,G,B), I_out / I), both in 0..1 units
            gain = new / np.maximum(inten * inv255, np.float32(1e-12))
            np.minimum(gain, 1.0 / np.maximum(peak, np.float32(1e-12)), out=gain)
            dark = inten <= 1e-4
            for v in planes:
                o = v * inv255
                o *= gain
                if dark.any():
                    o[dark] = new[dark]
                outs.append(np.clip(o, 0.0, 1.0, out=o))
    import cv2

    out = outs[0][..., None] if c == 1 else cv2.merge(outs)
    return out.reshape(np.shape(image)).astype(np.float32, copy=False)

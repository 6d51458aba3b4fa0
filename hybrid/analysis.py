"""Damage analysis: 14 features of an image's Fourier power spectrum and colour statistics.

Input: float RGB (or grey) image in 0..1, ``[H, W, 3]`` / ``[H, W]``.  All work is on the Rec. 601
luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` except the colour-balance detection.

Power spectrum (Welch 1967): up to 4 × 4 evenly spaced ``T × T`` tiles (``T = 256``, or the
largest even size that fits), each with its mean removed and a separable Hann window applied; the
periodograms ``|FFT|² / Σw²`` are averaged to ``P(f)``.  ``f = sqrt(fx² + fy²)`` in cycles per pixel
(Nyquist 0.5); only ``0 < f ≤ 0.5`` is used.  The cost is bounded by 16 FFTs of 256²
(``benchmarks/bench_hybrid.py`` measures it per megapixel).

The 14 features (:data:`FEATURE_NAMES`, in order):

==  ======================  =====================================================================
 1  spec_mean               mean of ``L = log10 P(f)`` over the disc
 2  spec_std                standard deviation of ``L``
 3  spec_skewness           skewness of ``L`` (Fisher-Pearson, biased)
 4  spec_kurtosis           excess kurtosis of ``L`` (Fisher, biased)
 5  low_energy              ``Σ P`` over ``f < 0.1`` divided by ``Σ P`` over the disc (0..1)
 6  high_energy             ``Σ P`` over ``0.25 ≤ f ≤ 0.5`` divided by the total (0..1)
 7  high_low_ratio          ``high_energy / low_energy``
 8  radial_0.05 … 12        mean of ``L`` on the annuli ``|f - r| < 0.02`` for r = 0.05, 0.1,
    radial_0.40             0.2, 0.3, 0.4
13  colour_balance_need     grey-world deviation (Buchsbaum 1980): channel means ``μ_c``,
                            ``d = sqrt(mean_c((μ_c / mean(μ) - 1)²))``; need ``= min(1, d / 0.5)``
                            (0 for grey or balanced images, 1 for a ≥ 50 % channel imbalance)
14  sharpening_need         from spectral slopes: natural images have ``P ∝ f^α`` with ``α ≈ -2``
                            at all scales (Field 1987; van der Schaaf & van Hateren 1996); blur
                            steepens the high band.  ``α_mid`` / ``α_high`` are least-squares
                            slopes of the radially averaged ``log10 P`` against ``log10 f`` on
                            ``[0.04, 0.16]`` / ``[0.2, 0.45]``; need
                            ``= clip((α_mid - α_high - 0.5) / 16, 0, 1)`` (≈ 0 sharp, ≈ 0.45 after
                            a Gaussian blur of σ = 1 px, 1 from σ ≈ 2 px); noise flattens the
                            high band and so lowers the need, as it should.
==  ======================  =====================================================================
"""
from __future__ import annotations

import time
from typing import Dict, Tuple

import numpy as np

FEATURE_NAMES: Tuple[str, ...] = (
    "spec_mean", "spec_std", "spec_skewness", "spec_kurtosis", "low_energy", "high_energy",
    "high_low_ratio", "radial_0.05", "radial_0.10", "radial_0.20", "radial_0.30", "radial_0.40",
    "colour_balance_need", "sharpening_need",
)
RADII = (0.05, 0.1, 0.2, 0.3, 0.4)
LOW_CUT, HIGH_CUT = 0.1, 0.25
TILE, MAX_TILES_PER_SIDE = 256, 4
_EPS = 1e-12


def _as_rgb(image, checked: bool = False) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"damage analysis expects an [H, W, C] image with 1, 3 or 4 channels, got shape {a.shape}")
    if min(a.shape[:2]) < 16:
        raise ValueError(f"damage analysis needs an image of at least 16×16 px, got {a.shape[1]}×{a.shape[0]}")
    if not checked and not np.isfinite(a.sum(dtype=np.float64)):
        raise ValueError("damage analysis: the image contains NaN or infinite values")
    a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB 0..1 image."""
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)


def welch_spectrum(y: np.ndarray, tile: int = TILE, max_tiles: int = MAX_TILES_PER_SIDE):
    """Averaged Hann-windowed periodogram of ``y`` (luminance ``[H,W]`` or RGB ``[H,W,3]``).

    Returns ``(P, f)`` on the rfft half plane (``f`` in cycles/px).
    """
    from scipy import fft as sfft

    h, w = y.shape[:2]
    t = min(tile, h, w)
    t -= t % 2
    ny = min(max_tiles, max(1, h // t))
    nx = min(max_tiles, max(1, w // t))
    ys = np.linspace(0, h - t, ny).round().astype(int)
    xs = np.linspace(0, w - t, nx).round().astype(int)
    win1 = np.hanning(t + 2)[1:-1].astype(np.float32)  # strictly positive Hann taps
    win = np.outer(win1, win1)
    norm = float((win ** 2).sum())
    tiles = np.stack([y[a:a + t, b:b + t] for a in ys for b in xs]).astype(np.float32)
    if tiles.ndim == 4:  # RGB tiles: luminance of the tiles only (cheaper than the whole image)
        tiles = luminance(tiles)
    tiles = (tiles - tiles.mean(axis=(1, 2), keepdims=True)) * win
    spec = sfft.rfft2(tiles, axes=(1, 2), workers=1)
    p = (spec.real ** 2 + spec.imag ** 2).mean(axis=0) / norm
    fy = np.fft.fftfreq(t)[:, None]
    fx = np.fft.rfftfreq(t)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    return p.astype(np.float64), f


_GEOMETRY: Dict[int, dict] = {}


def _geometry(t: int) -> dict:
    """Index sets on the rfft half plane of a ``t × t`` tile (cached per tile size)."""
    if t not in _GEOMETRY:
        fy = np.fft.fftfreq(t)[:, None]
        fx = np.fft.rfftfreq(t)[None, :]
        f = np.sqrt(fy ** 2 + fx ** 2).ravel()
        edges = np.linspace(0.02, 0.48, 24)
        sel = np.flatnonzero((f >= edges[0]) & (f < edges[-1]))
        idx = np.clip(np.searchsorted(edges, f[sel], side="right") - 1, 0, len(edges) - 2)
        _GEOMETRY[t] = {
            "disc": np.flatnonzero((f > 0) & (f <= 0.5)),
            "low": np.flatnonzero((f > 0) & (f < LOW_CUT)),
            "high": np.flatnonzero((f >= HIGH_CUT) & (f <= 0.5)),
            "rings": [np.flatnonzero(np.abs(f - r) < 0.02) for r in RADII],
            "bin_sel": sel, "bin_idx": idx, "nbins": len(edges) - 1,
            "bin_counts": np.bincount(idx, minlength=len(edges) - 1),
            "bin_centres": 0.5 * (edges[:-1] + edges[1:]),
        }
    return _GEOMETRY[t]


def _slope(logf: np.ndarray, logp: np.ndarray) -> float:
    if logf.size < 2:
        return -2.0
    a = np.polyfit(logf, logp, 1)
    return float(a[0])


def analyze(image) -> Dict[str, float]:
    """The 14 damage features of ``image`` (see the module docstring) as an ordered dict.

    Also includes ``alpha_mid``, ``alpha_high`` (spectral slopes) and ``seconds`` as extra keys;
    :func:`feature_vector` picks the 14 model inputs in order.
    """
    return analyze_with_spectrum(image)[0]


def analyze_with_spectrum(image, checked: bool = False) -> Tuple[Dict[str, float], np.ndarray]:
    """:func:`analyze` and the Welch power spectrum it was computed from (``[T, T//2 + 1]``, rfft
    half plane of ``T × T`` tiles, DC at ``[0, 0]``), so other measurements (the motion-blur
    anisotropy of :mod:`.defects`) need not compute it again.  ``checked``: the caller has already
    verified that every value is finite (the whole-image pass is skipped)."""
    t0 = time.perf_counter()
    rgb = _as_rgb(image, checked)
    # colour statistics on a strided subsample of ~65k px (means are insensitive to it)
    stride = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 65536)))
    sub = rgb[::stride, ::stride].reshape(-1, 3).astype(np.float64)
    mu = sub.mean(axis=0)
    d = float(np.sqrt(np.mean((mu / max(mu.mean(), 1e-6) - 1.0) ** 2)))
    colour_need = min(1.0, d / 0.5)

    p, f = welch_spectrum(rgb)
    g = _geometry(p.shape[0])
    pf = p.ravel()
    pd = pf[g["disc"]]
    L = np.log10(pd + _EPS)
    total = float(pd.sum()) + _EPS
    low = float(pf[g["low"]].sum()) / total
    high = float(pf[g["high"]].sum()) / total
    m = float(L.mean())
    sd = float(L.std())
    z = (L - m) / max(sd, 1e-12)
    z2 = z * z
    skew = float(np.mean(z2 * z))
    kurt = float(np.mean(z2 * z2) - 3.0)
    logp_all = np.log10(pf + _EPS)
    radial = [float(logp_all[idx].mean()) if idx.size else m for idx in g["rings"]]
    # radially averaged spectrum (23 bins on [0.02, 0.48)) for the slope fits
    sums = np.bincount(g["bin_idx"], weights=pf[g["bin_sel"]], minlength=g["nbins"])
    means = np.log10(sums / np.maximum(g["bin_counts"], 1) + _EPS)
    ok = g["bin_counts"] > 0
    centres = g["bin_centres"]
    mid = ok & (centres >= 0.04) & (centres <= 0.16)
    hi = ok & (centres >= 0.2) & (centres <= 0.45)
    a_mid = _slope(np.log10(centres[mid]), means[mid])
    a_high = _slope(np.log10(centres[hi]), means[hi])
    sharp_need = float(np.clip((a_mid - a_high - 0.5) / 16.0, 0.0, 1.0))

    values = [m, sd, skew, kurt, low, high, high / max(low, 1e-9), *radial, colour_need, sharp_need]
    out = dict(zip(FEATURE_NAMES, (float(v) for v in values)))
    out["alpha_mid"] = a_mid
    out["alpha_high"] = a_high
    out["seconds"] = time.perf_counter() - t0
    return out, p


def feature_vector(features: Dict[str, float]) -> np.ndarray:
    """The 14 model inputs of an :func:`analyze` result, float64, in :data:`FEATURE_NAMES` order."""
    return np.array([features[k] for k in FEATURE_NAMES], dtype=np.float64)

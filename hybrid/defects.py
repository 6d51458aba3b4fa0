"""Defect measurements with units: what is wrong with an image, and how much.

One call, :func:`measure`, returns a :class:`DefectReport` with the 14 FFT features of
:mod:`.analysis` and these measurements (images are float RGB ``[H, W, 3]`` or grey ``[H, W]`` /
``[H, W, 1]`` in 0..1, display-referred sRGB):

==============  ===========================================================  =======================
measurement     method                                                       where it is measured
==============  ===========================================================  =======================
noise           σ of additive noise (0..1 units, RMS over the RGB channels)  full resolution, on at
                from the flattest blocks (Welch/Bartlett periodograms of     most 1024 sampled
                plane-detrended blocks, as :mod:`scripts.grain`), in an      32-px blocks
                orthonormal opponent colour space; ``kind`` white / grain
                from the lag-1 autocorrelation ρ₁ of the noise (white ≈ 0,
                film grain ≳ 0.3); the autocorrelation (lags ±8) gives the
                grain PSD in the bm3d convention (:meth:`NoiseMeasure.psd`)
blur            Gaussian-equivalent edge σ (px) by the gradient ratio of     full resolution, on
                Zhuo & Sim 2011 (:func:`scripts.sharpen.estimate_blur_sigma`) ≤ 0.15 MP of crops
                at the strongest edges; ``excess`` = √(σ² − σ_sharp²) with
                σ_sharp (:data:`SHARP_EDGE_SIGMA`) the edge σ of sharp
                photographs
motion          angular anisotropy of the whitened Welch spectrum (decades); the 14-feature spectrum
                when it exceeds :data:`MOTION_ANISOTROPY_GATE` the cepstrum +  (256² tiles); motion
                log-spectrum fit of :mod:`scripts.motion_blur` (Cannon 1976;  fit on a central 256²
                Oliveira et al. 2014) gives length (px), angle (°) and its    square
                confidence (model correlation)
tone            black / white point: 0.5 / 99.5 % percentiles of Rec. 601   ≤ 256-px area-downscaled
                luma, contrast = their difference, RMS contrast = std        copy (percentiles of
                                                                             smooth areas survive)
colour          cast = median Oklab (a, b) of the near-neutral pixels (the   same copy
                25 % lowest-chroma pixels with 0.2 ≤ L ≤ 0.97); magnitude
                in Oklab units (0.01 ≈ a just visible tint)
illumination    upper envelope (90th percentile of the luma in 8×8 cells),   ≤ 128-px copy
                fitted by a quadratic surface; ``variation`` = range of the
                fitted surface in stops (log2)
jpeg            8×8 blockiness: mean |∇Y| across the strongest grid phase    full resolution, sampled
                over the mean at the other phases, minus 1 (0 for an image   rows/columns
                without a block grid; ≈ 0.1–1 for JPEG quality 80–25)
==============  ===========================================================  =======================

Every measurement says where it was measured; the whole analysis costs well under 50 ms/MP on
large images (the sampled blocks and crops bound it), see ``seconds``.

References: P. D. Welch 1967 (periodograms); Mäkinen, Azzari, Foi, IEEE TIP 29 (2020) (noise PSD
convention); S. Zhuo, T. Sim, Pattern Recognition 44 (2011) (defocus from the gradient ratio);
M. Cannon, IEEE TASSP 24 (1976) and Oliveira, Figueiredo, Bioucas-Dias, IEEE TIP 23 (2014) (motion);
B. Ottosson 2020 (Oklab); Z. Wang, A. Bovik, B. Evans, ICIP 2000 (blockiness at the 8-px grid).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import analysis

# --- constants (chosen on the training sources, see hybrid/tools/calibrate_defects.py) ---------------
#: orthonormal opponent transform (rows): luma-like sum, red−blue, green−(red+blue)/2
OPPONENT = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]])
OPPONENT = OPPONENT / np.sqrt((OPPONENT ** 2).sum(axis=1, keepdims=True))
NOISE_BLOCK = 16
NOISE_MAX_BLOCKS = 1024
NOISE_FRACTION = 0.1
NOISE_MIN_BLOCKS = 8
#: lag-1 autocorrelation of the noise above which it is called grain (spatially correlated)
GRAIN_RHO = 0.3
#: edge σ (px) of sharp photographs: the blur measured on the clean training sources (median)
SHARP_EDGE_SIGMA = 0.5
BLUR_MAX_PIXELS = 150_000
#: Zhuo–Sim edge σ (px) → the Gaussian blur added to the scene: ``excess = √((k σ)² − σ_sharp²)``
#: (k = :data:`BLUR_SCALE`; the gradient ratio reads about 10 % low on synthetic Gaussian blur of
#: 1–2 px, and sharp photographs read ≲ σ_sharp)
BLUR_SCALE = 1.15
#: the motion fit runs only when the whitened spectrum is this anisotropic (decades); clean photographs
#: read 0.15–1.0 (text and line patterns up to 1.8), a 5-px linear motion ≥ 1.4
MOTION_ANISOTROPY_GATE = 1.0
#: the motion estimate is trusted (``motion.present``) from this spectrum-model correlation on
#: (clean photographs ≤ 0.45, linear motion of 5–15 px ≥ 0.6)
MOTION_MIN_CONFIDENCE = 0.5
#: ... and only when the strongest edges are blurred too (Zhuo–Sim σ, px): a motion of ≥ 3 px reads
#: ≥ 0.6 there, while a sharp scene of parallel lines (a rocket on its gantry) can fool the spectrum fit
MOTION_MIN_EDGE_SIGMA = 0.5
MOTION_MIN_LENGTH = 3.0
#: edge σ (px) above which the gradient ratio is not read as blur: smooth shading (a sky, a studio
#: backdrop, a linear ramp) has gradients that barely change with scale and reads as tens of px, while
#: the defocus the plan can undo is a few px (the damage generator's strongest: σ 2.5 px)
BLUR_MAX_SIGMA = 6.0
TONE_SIDE = 256
#: the per-channel percentiles (%) of :attr:`ToneMeasure.percentiles`
PERCENTILES = (0.5, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.5)
ILLUM_SIDE = 128
JPEG_MAX_LINES = 512


def _opponent(rgb: np.ndarray) -> np.ndarray:
    return rgb @ OPPONENT.T.astype(rgb.dtype)


@dataclass
class NoiseMeasure:
    """Additive noise.  ``sigma``: std per RGB channel (RMS over channels), 0..1 units;
    ``sigma_channels``: std in each opponent channel (luma-like first; one value for grey);
    ``rho``: lag-1 autocorrelation (mean of the x and y lags, variance-weighted over channels);
    ``kind``: ``"white"`` or ``"grain"``; ``gaussianity``: robust σ over plain std of the residual
    (1 for Gaussian noise); ``structure``: variance of the chosen blocks at 2×2 binning over what
    the measured noise alone would give there (≈ 1 when the blocks hold only noise, ≫ 1 when image
    texture was taken for noise — then σ is an upper bound); ``floor``: the 2 % over the 20 %
    quantile of the per-block fine-scale σ (Immerkær 1996's 3×3 operator on all sampled blocks):
    noise lays a floor under every block, so the two are close (0.5–0.9 on noisy photographs), while
    noise-free fine texture has no floor (mostly < 0.45); ``chroma_ratio``: RMS σ of the two chroma
    opponent channels over the luma-like one (≈ 1 for noise independent in R, G and B, ≈ 0 for noise
    shared by the channels — monochrome film grain, luminance noise; 0 for grey images); ``acf``: per channel the autocorrelation at lags
    −8..8 (``[C, 17, 17]``, lag 0 at the centre) — :meth:`psd` turns it into a PSD."""

    sigma: float
    sigma_channels: List[float]
    rho: float
    kind: str
    blocks: int
    block: int
    gaussianity: float
    structure: float
    floor: float
    chroma_ratio: float
    where: str
    acf: Optional[np.ndarray] = field(default=None, repr=False)

    def psd(self, shape, channel: int = 0) -> np.ndarray:
        """Noise PSD of opponent ``channel`` at ``shape = (M, N)`` in the bm3d convention
        (``mean(PSD) / (M·N)`` = variance; :mod:`scripts.grain`)."""
        from ..scripts.grain import _psd_from_acf

        return _psd_from_acf(self.acf[channel], shape)


@dataclass
class BlurMeasure:
    """Gaussian-equivalent edge σ (px) and its excess over sharp edges (``excess``); None when no
    usable edges were found."""

    sigma: Optional[float]
    excess: float
    where: str


@dataclass
class MotionMeasure:
    """Linear motion: ``anisotropy`` of the whitened spectrum (decades); when estimated, ``length``
    (px), ``angle`` (°, [0, 180), counter-clockwise from +x, y up) and ``confidence`` (spectrum-model
    correlation, :func:`scripts.motion_blur.estimate_motion`); ``present`` when the confidence and
    length pass :data:`MOTION_MIN_CONFIDENCE` / :data:`MOTION_MIN_LENGTH` and the edges are blurred
    (:data:`MOTION_MIN_EDGE_SIGMA`)."""

    anisotropy: float
    estimated: bool
    length: float = 0.0
    angle: float = 0.0
    confidence: float = 0.0
    present: bool = False
    where: str = ""


@dataclass
class ToneMeasure:
    """Luma (Rec. 601) black point (0.5 %), white point (99.5 %), contrast (their difference),
    RMS contrast (std), mean; per-channel 0.5/99.5 % percentiles ``channel_low`` / ``channel_high``;
    ``percentiles[c][k]``: channel ``c`` at :data:`PERCENTILES` ``[k]`` % (0..1, the tone distribution the
    learned tone prior reads and matches, :mod:`.tone_prior`)."""

    black_point: float
    white_point: float
    contrast: float
    rms_contrast: float
    mean: float
    channel_low: List[float]
    channel_high: List[float]
    where: str
    percentiles: List[List[float]] = field(default_factory=list)


@dataclass
class ColourMeasure:
    """Colour cast: Oklab (a, b) of the near-neutral pixels, its magnitude and hue (°), the median
    chroma of all pixels (``chroma``) and the median distance of the near-neutral pixels from the
    cast (``spread``: small when the image has real neutrals that share one tint, large when the
    "neutrals" are merely the least colourful objects of a colourful scene).  Absent for grey images."""

    cast_a: float
    cast_b: float
    magnitude: float
    hue_deg: float
    chroma: float
    spread: float
    neutral_pixels: int
    where: str


@dataclass
class IlluminationMeasure:
    """Low-frequency lightness variation: range of the fitted upper-envelope surface of the luma, in
    stops (log2 of max/min; a gain applied to the sRGB values reads as its log2); ``surface`` the
    fitted log2 envelope on the 8×8 cell grid."""

    variation_stops: float
    where: str
    surface: Optional[np.ndarray] = field(default=None, repr=False)


@dataclass
class JpegMeasure:
    """8×8 blockiness (0 = none) and the grid phase (column, row) where it was strongest."""

    blockiness: float
    phase: Tuple[int, int]
    where: str


@dataclass
class DefectReport:
    """Everything :func:`measure` found; ``features`` are the 14 inputs of the models
    (:data:`.analysis.FEATURE_NAMES`) plus the spectral slopes."""

    shape: Tuple[int, int]
    channels: int
    noise: NoiseMeasure
    blur: BlurMeasure
    motion: MotionMeasure
    tone: ToneMeasure
    colour: Optional[ColourMeasure]
    illumination: IlluminationMeasure
    jpeg: JpegMeasure
    features: Dict[str, float]
    seconds: Dict[str, float]

    def to_dict(self) -> Dict[str, object]:
        """JSON-friendly dict (arrays left out, floats rounded)."""
        d = asdict(self)
        for k in ("noise", "illumination"):
            d[k].pop("acf", None)
            d[k].pop("surface", None)
        return jsonable(d)

    def summary(self) -> str:
        """One line: the measured defects with units."""
        parts = [f"noise σ {self.noise.sigma:.4f} ({self.noise.kind}, ρ₁ {self.noise.rho:.2f})"]
        parts.append("blur —" if self.blur.sigma is None else
                     f"blur σ {self.blur.sigma:.2f} px (excess {self.blur.excess:.2f})")
        if self.motion.present:
            parts.append(f"motion {self.motion.length:.1f} px at {self.motion.angle:.0f}°")
        t = self.tone
        parts.append(f"black {t.black_point:.3f} white {t.white_point:.3f}")
        if self.colour is not None:
            parts.append(f"cast ({self.colour.cast_a:+.3f}, {self.colour.cast_b:+.3f}) Oklab")
        parts.append(f"illumination {self.illumination.variation_stops:.2f} stops")
        parts.append(f"JPEG blockiness {self.jpeg.blockiness:.2f}")
        return "; ".join(parts)


def jsonable(x):
    """``x`` (dicts, lists, numpy scalars and arrays) for a JSON report: floats rounded to 5 decimals,
    arrays replaced by ``"array[shape]"``."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return f"array{list(x.shape)}"
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return round(float(x), 5)
    if isinstance(x, np.integer):
        return int(x)
    return x


# --- input ------------------------------------------------------------------------------------------
def as_image(image) -> np.ndarray:
    """``image`` as float32 ``[H, W, C]`` (C = 1 or 3; alpha dropped) in 0..1.

    uint8 / uint16 arrays are scaled by 1/255 / 1/65535.  A float image with values outside 0..1
    (beyond a 1e-3 rounding slack) is refused with the range it has, never clipped silently.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 65535.0
    elif a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"expected a numeric image, got dtype {a.dtype}")
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, C] image with 1, 3 or 4 channels, got shape {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if min(a.shape[:2]) < 16:
        raise ValueError(f"the image must be at least 16×16 px, got {a.shape[1]}×{a.shape[0]}")
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("the image contains NaN or infinite values")
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        hint = " (it looks like 0..255 values: pass a uint8 array or divide by 255)" if hi <= 255.5 and hi > 1.5 else ""
        raise ValueError(f"float images must lie in 0..1, this one spans {lo:.4g}..{hi:.4g}{hint}")
    if lo < 0.0 or hi > 1.0:
        a = np.clip(a, 0.0, 1.0)
    return a


def luma(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``[H, W, 3]`` (or the channel of ``[H, W, 1]``), float32."""
    if img.shape[-1] == 1:
        return img[..., 0]
    return analysis.luminance(img)


def downscale(img: np.ndarray, side: int) -> np.ndarray:
    """Area-downscale so the longer side is at most ``side`` px (``img`` itself if it fits).  Very
    large images are first subsampled by an integer stride to twice the target (a view), so the cost
    does not grow with the megapixels."""
    import cv2

    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    k = max(h, w) // (2 * side)
    src = np.ascontiguousarray(img[::k, ::k]) if k >= 2 else img
    hs, ws = src.shape[:2]
    s = side / max(h, w)
    out = cv2.resize(src, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out.reshape(out.shape[:2] + img.shape[2:]) if img.ndim == 3 else out


# --- noise ------------------------------------------------------------------------------------------
def _block_origins(h: int, w: int, b: int, max_blocks: int) -> Tuple[np.ndarray, np.ndarray]:
    ny, nx = h // b, w // b
    sy = max(1, int(np.ceil(np.sqrt(ny * nx / max_blocks))))
    ys = np.arange(0, ny, sy) * b
    xs = np.arange(0, nx, sy) * b
    return ys, xs


#: the noise is taken as what is left after subtracting a Gaussian blur of this σ (px): image structure
#: of flat areas lies below ~0.05 cycles/px, white noise and film grain (correlation ≲ 1.5 px) above
NOISE_HIGHPASS_SIGMA = 3.0
#: share of a white noise's variance that the high-pass keeps (measured once, see _hp_gain)
_HP_GAIN: Dict[float, float] = {}


def _hp_gain(sigma: float, b: int) -> float:
    """Fraction of the variance of white noise kept by ``x − G_σ * x`` (:func:`_highpass`, exact,
    from a delta)."""
    key = (sigma, b)
    if key not in _HP_GAIN:
        m = int(np.ceil(3 * sigma))
        d = np.zeros((1, b + 2 * m, b + 2 * m, 1), np.float32)
        d[0, d.shape[1] // 2, d.shape[2] // 2, 0] = 1.0
        r = _highpass(d, sigma, m)
        _HP_GAIN[key] = float((r ** 2).sum())
    return _HP_GAIN[key]


def _gather(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int, margin: int = 0) -> np.ndarray:
    """Blocks ``[K, size + 2m, size + 2m, C]`` of ``img`` ``[H, W, C]`` at origins ``(ys, xs)``,
    extended by ``margin`` px on every side (indices clamped at the image border)."""
    h, w = img.shape[:2]
    r = np.arange(-margin, size + margin)
    rows = np.clip(ys[:, None] + r[None, :], 0, h - 1)
    cols = np.clip(xs[:, None] + r[None, :], 0, w - 1)
    return img[rows[:, :, None], cols[:, None, :]]


def _highpass(blocks: np.ndarray, sigma: float, margin: int) -> np.ndarray:
    """``x − G_σ * x`` of extended blocks ``[K, S, S, C]``, cropped by ``margin`` → ``[K, s, s, C]``."""
    from scipy.ndimage import gaussian_filter

    x = blocks.astype(np.float32)
    hp = x - gaussian_filter(x, (0, sigma, sigma, 0), mode="nearest", truncate=3.0)
    return hp[:, margin:-margin, margin:-margin].astype(np.float64)


def _acf(blocks: np.ndarray, lmax: int = 8) -> np.ndarray:
    """Unbiased autocorrelation (lags −lmax..lmax, lag 0 at the centre) of zero-mean blocks [K, B, B]."""
    k, b, _ = blocks.shape
    spec = np.fft.rfft2(blocks, s=(2 * b, 2 * b))
    sums = np.fft.irfft2((spec.real ** 2 + spec.imag ** 2).mean(axis=0), s=(2 * b, 2 * b))
    lags = np.arange(-lmax, lmax + 1)
    idx = lags % (2 * b)
    counts = (b - np.abs(lags))[:, None] * (b - np.abs(lags))[None, :]
    return sums[np.ix_(idx, idx)] / counts


def measure_noise(img: np.ndarray) -> NoiseMeasure:
    """Noise σ, kind and autocorrelation of ``img`` (``[H, W, C]`` float 0..1); see the module
    docstring.

    Up to :data:`NOISE_MAX_BLOCKS` blocks of :data:`NOISE_BLOCK` px are sampled on a regular grid over
    the whole image at full resolution.  The flattest :data:`NOISE_FRACTION` (least structure on
    2×2-binned copies) are high-passed (``x − G₃ * x``, :data:`NOISE_HIGHPASS_SIGMA`); σ per channel
    is the robust ``median|r| / 0.6745`` of the residual (Donoho & Johnstone 1994), rescaled by the
    high-pass gain of white noise (film grain of ≲ 1.5 px correlation keeps nearly as much), so edges
    inside a block do not inflate it.  The autocorrelation (lags ±8) comes from the blocks whose
    residual variance is within 2× the robust estimate.  Blocks whose mean is within 2.5 σ of 0 or 1 in
    any channel are left out and σ measured again (clipping removes noise).  ``gaussianity`` is the
    ratio of the robust σ to the plain standard deviation of the residual (1 for Gaussian noise).
    """
    from ..scripts.grain import _detrend

    h, w, c = img.shape
    b = NOISE_BLOCK
    oy, ox = _block_origins(h, w, b, NOISE_MAX_BLOCKS)
    ys = np.repeat(oy, len(ox))
    xs = np.tile(ox, len(oy))
    rgb_blocks = _gather(img, ys, xs, b)                               # [K, b, b, C] float32
    planes = (rgb_blocks @ OPPONENT.T.astype(np.float32) if c == 3 else rgb_blocks).astype(np.float64)
    lum_blocks = planes[..., 0]
    k = lum_blocks.shape[0]
    # flatness on 2×2-binned blocks: the binning averages the noise away, not the image structure
    binned = lum_blocks.reshape(k, b // 2, 2, b // 2, 2).mean(axis=(2, 4))
    score = _detrend(binned).var(axis=(1, 2))
    means = rgb_blocks.mean(axis=(1, 2))
    lo_m, hi_m = means.min(axis=1), means.max(axis=1)
    gain = _hp_gain(NOISE_HIGHPASS_SIGMA, b)
    m = int(np.ceil(3 * NOISE_HIGHPASS_SIGMA))
    margin = 0.002
    for _ in range(2):
        ok = (lo_m > margin) & (hi_m < 1.0 - margin)
        sc = np.where(ok, score, np.inf) if ok.sum() >= NOISE_MIN_BLOCKS else score
        n_ok = int(np.isfinite(sc).sum())
        n = max(1, min(max(NOISE_MIN_BLOCKS, int(round(NOISE_FRACTION * n_ok))), n_ok))
        idx = np.argsort(sc)[:n]
        ext = _gather(img, ys[idx], xs[idx], b, m)
        hp = _highpass(ext, NOISE_HIGHPASS_SIGMA, m)
        if c == 3:
            hp = hp @ OPPONENT.T
        hp = hp - hp.mean(axis=(1, 2), keepdims=True)
        var = [float((np.median(np.abs(hp[..., ch])) / 0.6745) ** 2 / gain) for ch in range(c)]
        sigma = float(np.sqrt(sum(var) / len(var)))
        new_margin = max(0.002, 2.5 * sigma)
        if abs(new_margin - margin) < 0.25 * new_margin:
            break
        margin = new_margin
    acfs, plain = [], []
    for ch in range(c):
        r = hp[..., ch]
        keep = r.var(axis=(1, 2)) / gain <= 2.0 * max(var[ch], 1e-12)
        rr = r[keep] if keep.sum() >= 2 else r
        acf = _acf(rr) / gain
        acfs.append(acf * (var[ch] / acf[8, 8] if acf[8, 8] > 0 else 1.0))
        plain.append(float(r.var() / gain))
    acfs = np.stack(acfs)
    # noise floor: per-block fine-scale σ (Immerkær's 3×3 operator on the luma-like channel); noise puts
    # a sharp floor under it (the 2 % and 20 % quantiles are close), noise-free texture has none
    kern = ((1, -2, 1), (-2, 4, -2), (1, -2, 1))
    fine = sum(kern[i][j] * lum_blocks[:, i:i + b - 2, j:j + b - 2] for i in range(3) for j in range(3))
    fs = np.median(np.abs(fine), axis=(1, 2))
    fs = fs[np.isfinite(sc)] if np.isfinite(sc).sum() >= NOISE_MIN_BLOCKS else fs
    q2, q20 = np.percentile(fs, [2, 20])
    floor = float(q2 / q20) if q20 > 0 else 0.0
    # structure left in the chosen blocks: their binned variance over what the noise alone gives
    a0 = acfs[0]
    binned_noise = (4 * a0[8, 8] + 4 * a0[8, 9] + 4 * a0[9, 8] + 2 * a0[9, 9] + 2 * a0[7, 9]) / 16.0
    structure = float(np.median(score[idx]) / max(binned_noise * (1 - 3.0 / (b * b / 4)), 1e-12))
    lag1 = 0.5 * (acfs[:, 8, 9] + acfs[:, 9, 8])
    total = float(sum(var))
    rho = float(lag1.sum() / total) if total > 0 else 0.0
    gauss = float(np.sqrt(total / max(sum(plain), 1e-20))) if total > 0 else 1.0
    return NoiseMeasure(sigma=sigma, sigma_channels=[float(np.sqrt(v)) for v in var], rho=rho,
                        kind="grain" if rho >= GRAIN_RHO else "white", blocks=int(n), block=int(b),
                        gaussianity=min(gauss, 2.0), structure=min(structure, 1e3), floor=floor,
                        chroma_ratio=float(np.sqrt(np.mean(var[1:]) / var[0])) if c == 3 and var[0] > 0 else 0.0,
                        where=f"full resolution, the {n} flattest of {k} sampled {b}-px blocks", acf=acfs)


# --- blur and motion --------------------------------------------------------------------------------
def _crops(img: np.ndarray, max_pixels: int) -> List[np.ndarray]:
    """The whole image if it has at most ``max_pixels``, else 5 equal squares (centre and the four
    quadrant centres) totalling about ``max_pixels``."""
    h, w = img.shape[:2]
    if h * w <= max_pixels:
        return [img]
    side = int(np.sqrt(max_pixels / 5))
    side = max(64, min(side, h, w))
    pts = [(0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)]
    out = []
    for fy, fx in pts:
        y0 = int(np.clip(fy * h - side / 2, 0, h - side))
        x0 = int(np.clip(fx * w - side / 2, 0, w - side))
        out.append(img[y0:y0 + side, x0:x0 + side])
    return out


def measure_blur(img: np.ndarray, noise_sigma: float) -> BlurMeasure:
    """Edge blur σ (px) of the luma of ``img`` at full resolution (Zhuo & Sim gradient ratio)."""
    from ..scripts.sharpen import estimate_blur_sigma

    crops = _crops(img, BLUR_MAX_PIXELS)
    if len(crops) == 1:
        s = estimate_blur_sigma(luma(crops[0]), noise_sigma)
        where = "full resolution, whole image"
    else:
        vals = [v for v in (estimate_blur_sigma(luma(c), noise_sigma) for c in crops) if v is not None]
        s = float(np.median(vals)) if vals else None
        where = f"full resolution, {len(crops)} crops of {crops[0].shape[0]}² px (median)"
    if s is not None and s > BLUR_MAX_SIGMA:
        where += f"; σ {s:.1f} px > {BLUR_MAX_SIGMA:g} px: smooth shading, not read as blur"
        excess = 0.0
    else:
        excess = 0.0 if s is None else float(np.sqrt(max((BLUR_SCALE * s) ** 2 - SHARP_EDGE_SIGMA ** 2, 0.0)))
    return BlurMeasure(sigma=None if s is None else float(s), excess=excess, where=where)


_ANGLE_GEOMETRY: Dict[int, dict] = {}


def spectrum_anisotropy(p: np.ndarray) -> float:
    """Angular anisotropy (decades) of a Welch spectrum ``p`` (rfft half plane of a square tile):
    the log spectrum is whitened by its radial mean on 0.08 ≤ f ≤ 0.4 and averaged in 12 orientation
    bins of 15°; the result is max − min of those means.  Linear motion blur makes it large."""
    t = p.shape[0]
    if t not in _ANGLE_GEOMETRY:
        fy = np.fft.fftfreq(t)[:, None]
        fx = np.fft.rfftfreq(t)[None, :]
        f = np.sqrt(fy ** 2 + fx ** 2)
        band = (f >= 0.08) & (f <= 0.4)
        ang = (np.degrees(np.arctan2(fy, fx)) % 180.0) * np.ones_like(f)
        ring = np.minimum((f * 40).astype(int), 40)
        _ANGLE_GEOMETRY[t] = {"band": np.flatnonzero(band), "abin": (ang[band] // 15).astype(int) % 12,
                              "ring": ring[band]}
    g = _ANGLE_GEOMETRY[t]
    lp = np.log10(p.ravel()[g["band"]] + 1e-20)
    ring = g["ring"]
    rmean = np.bincount(ring, lp, minlength=41) / np.maximum(np.bincount(ring, minlength=41), 1)
    white = lp - rmean[ring]
    am = np.bincount(g["abin"], white, minlength=12) / np.maximum(np.bincount(g["abin"], minlength=12), 1)
    return float(am.max() - am.min())


def measure_motion(img: np.ndarray, spectrum: np.ndarray, edge_sigma: Optional[float] = None) -> MotionMeasure:
    """Motion blur: anisotropy from the analysis spectrum; the motion fit (on the luma of the central
    256² square) only when it is anisotropic.  ``edge_sigma``: the Zhuo–Sim edge blur (px) of
    :func:`measure_blur`; the motion is ``present`` only when it is at least
    :data:`MOTION_MIN_EDGE_SIGMA` (None: not checked)."""
    aniso = spectrum_anisotropy(spectrum)
    h, w = img.shape[:2]
    if aniso < MOTION_ANISOTROPY_GATE or min(h, w) < 64:
        return MotionMeasure(anisotropy=aniso, estimated=False,
                             where="Welch spectrum (anisotropy below the gate: no motion fit)")
    from ..scripts.motion_blur import estimate_motion

    s = min(256, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    est = estimate_motion(luma(img[y0:y0 + s, x0:x0 + s]), max_length=48.0, analysis_size=256)
    present = est.score >= MOTION_MIN_CONFIDENCE and est.length >= MOTION_MIN_LENGTH
    where = "central 256² square at full resolution (cepstrum + log-spectrum fit)"
    if present and edge_sigma is not None and edge_sigma < MOTION_MIN_EDGE_SIGMA:
        present = False
        where += f"; not trusted: the strongest edges are sharp (σ {edge_sigma:.2f} px)"
    return MotionMeasure(anisotropy=aniso, estimated=True, length=float(est.length),
                         angle=float(est.angle), confidence=float(est.score), present=bool(present),
                         where=where)


# --- tone, colour, illumination ---------------------------------------------------------------------
#: the tone percentiles are read on a copy blurred by this σ (px): noise of σₙ would otherwise push
#: the 0.5 % point ≈ 2.6 σₙ down (and the 99.5 % point up) and hide a lifted black point
TONE_SMOOTH_SIGMA = 1.5


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (px, reflected borders) keeping the ``[H, W, C]`` shape."""
    import cv2

    out = cv2.GaussianBlur(np.ascontiguousarray(img, np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def measure_tone(small: np.ndarray, where: str) -> ToneMeasure:
    """Black / white point and contrast of ``small`` (read on a :data:`TONE_SMOOTH_SIGMA` blur of it)."""
    small = smooth(small, TONE_SMOOTH_SIGMA)
    y = luma(small).ravel()
    lo, hi = np.percentile(y, [0.5, 99.5])
    flat = small.reshape(-1, small.shape[-1])
    pct = np.percentile(flat, PERCENTILES, axis=0)  # [K, C]
    clo, chi = pct[0], pct[-1]
    return ToneMeasure(black_point=float(lo), white_point=float(hi), contrast=float(hi - lo),
                       rms_contrast=float(y.std()), mean=float(y.mean()),
                       channel_low=[float(v) for v in clo], channel_high=[float(v) for v in chi], where=where,
                       percentiles=[[float(v) for v in pct[:, c]] for c in range(pct.shape[1])])


def neutral_axis(lab: np.ndarray, fraction: float = 0.25) -> Tuple[float, float, np.ndarray]:
    """The tint of the neutral pixels of an Oklab ``[N, 3]`` array: ``(a, b, selection)``.

    Among the pixels with 0.2 ≤ L ≤ 0.97 and chroma below 0.12, the densest point of the (a, b)
    histogram (0.004 bins, smoothed) is taken — the greys, whites and blacks of a scene share one tint
    and pile up there, while slightly coloured surfaces spread out — then refined as the median of the
    pixels within 0.015 of it.  Without such a cluster (fewer than 1 % of the pixels in it), the
    median of the ``fraction`` lowest-chroma pixels is used instead.
    """
    from scipy.ndimage import gaussian_filter

    L, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    ok = (L >= 0.2) & (L <= 0.97)
    if ok.sum() < 50:
        ok = np.ones_like(L, dtype=bool)
    cand = ok & (np.hypot(a, b) < 0.12)
    if cand.sum() >= 50:
        edges = np.linspace(-0.12, 0.12, 61)
        hist, _, _ = np.histogram2d(a[cand], b[cand], bins=(edges, edges))
        hist = gaussian_filter(hist, 1.5)
        i, j = np.unravel_index(int(np.argmax(hist)), hist.shape)
        ca, cb = 0.5 * (edges[i] + edges[i + 1]), 0.5 * (edges[j] + edges[j + 1])
        for _ in range(2):
            sel = cand & (np.hypot(a - ca, b - cb) <= 0.015)
            if sel.sum() < max(20, 0.01 * ok.sum()):
                break
            ca, cb = float(np.median(a[sel])), float(np.median(b[sel]))
        else:
            return float(ca), float(cb), sel
    ca, cb = 0.0, 0.0
    sel = ok
    for _ in range(2):
        chroma = np.hypot(a - ca, b - cb)
        cut = np.percentile(chroma[ok], 100 * fraction)
        sel = ok & (chroma <= cut)
        ca, cb = float(np.median(a[sel])), float(np.median(b[sel]))
    return ca, cb, sel


def measure_colour(small: np.ndarray, where: str) -> ColourMeasure:
    from ..scripts.clahe import srgb_to_oklab_fast

    lab = srgb_to_oklab_fast(smooth(small, TONE_SMOOTH_SIGMA)).reshape(-1, 3).astype(np.float64)
    ca, cb, sel = neutral_axis(lab)
    mag = float(np.hypot(ca, cb))
    spread = float(np.median(np.hypot(lab[sel, 1] - ca, lab[sel, 2] - cb)))
    return ColourMeasure(cast_a=ca, cast_b=cb, magnitude=mag, hue_deg=float(np.degrees(np.arctan2(cb, ca)) % 360),
                         chroma=float(np.median(np.hypot(lab[:, 1], lab[:, 2]))), spread=spread,
                         neutral_pixels=int(sel.sum()), where=where)


def _quad_design(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(gx), gx, gy, gx * gx, gx * gy, gy * gy], axis=-1)


def measure_illumination(small_l: np.ndarray, cells: int = 8) -> IlluminationMeasure:
    """Upper envelope of the luma ``small_l`` (2-D, 0..1) on a ``cells²`` grid, quadratic fit in log2:
    a gain field ``g`` applied to the sRGB values reads as ``log2(max g / min g)`` stops."""
    h, w = small_l.shape
    cy, cx = max(1, h // cells), max(1, w // cells)
    ny, nx = h // cy, w // cx
    t = small_l[:ny * cy, :nx * cx].reshape(ny, cy, nx, cx).transpose(0, 2, 1, 3).reshape(ny, nx, -1)
    env = np.log2(np.maximum(np.percentile(t, 90, axis=-1), 1e-3))
    gy, gx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    A = _quad_design(gy.ravel(), gx.ravel())
    coef, *_ = np.linalg.lstsq(A, env.ravel(), rcond=None)
    surf = (A @ coef).reshape(ny, nx)
    return IlluminationMeasure(variation_stops=float(surf.max() - surf.min()),
                               where=f"{w}×{h} px copy, {ny}×{nx} cells, quadratic fit", surface=surf)


# --- JPEG -------------------------------------------------------------------------------------------
def _phase_profile(d: np.ndarray) -> np.ndarray:
    """Per column phase (mod 8) the mean over columns of the median |difference| down each column of a
    2-D difference array (columns = the boundaries): a block grid raises a whole phase, the edges of the
    scene only the rows they cross, which the median ignores."""
    w = d.shape[1] // 8 * 8
    rows = d[::max(1, d.shape[0] // 256), :w]  # ≤ ~256 rows suffice for a column median
    med = np.median(np.abs(rows), axis=0)
    return med.reshape(-1, 8).mean(axis=0)


def measure_jpeg(img: np.ndarray) -> JpegMeasure:
    """8×8 blockiness of the luma of ``img``: for the horizontal and the vertical direction the mean
    absolute difference across the strongest of the 8 grid phases over the median of the others
    (on a central window of at most :data:`JPEG_MAX_LINES` ² px)."""
    h, w = img.shape[:2]
    # a central window of at most JPEG_MAX_LINES² px whose origin keeps the 8-px grid phase
    sh, sw = min(h, JPEG_MAX_LINES), min(w, JPEG_MAX_LINES)
    y0, x0 = (h - sh) // 2 // 8 * 8, (w - sw) // 2 // 8 * 8
    y = luma(img[y0:y0 + sh, x0:x0 + sw])
    dx = np.diff(y, axis=1)
    dy = np.diff(y, axis=0).T
    vals, phase = [], []
    for d in (dx, dy):
        if d.shape[1] < 16:
            vals.append(0.0)
            phase.append(0)
            continue
        prof = _phase_profile(d)
        i = int(np.argmax(prof))
        rest = np.delete(prof, i)
        vals.append(float(prof[i] / max(np.median(rest), 1e-6) - 1.0))
        phase.append(i)
    return JpegMeasure(blockiness=float(np.mean(vals)), phase=(phase[0], phase[1]),
                       where=f"full resolution, central {sw}×{sh} px (grid phase kept)")


# --- all --------------------------------------------------------------------------------------------
def measure(image) -> DefectReport:
    """Measure every defect of ``image`` (see the module docstring); returns a :class:`DefectReport`.

    ``image``: ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` (alpha ignored), float 0..1
    or uint8/uint16 (scaled).  At least 16×16 px.
    """
    t_all = time.perf_counter()
    sec: Dict[str, float] = {}
    img = as_image(image)
    h, w, c = img.shape

    t0 = time.perf_counter()
    feats, spectrum = analysis.analyze_with_spectrum(img, checked=True)
    sec["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    noise = measure_noise(img)
    sec["noise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    blur = measure_blur(img, noise.sigma)
    sec["blur"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    motion = measure_motion(img, spectrum, 0.0 if blur.sigma is None else blur.sigma)
    sec["motion"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    small = downscale(img, TONE_SIDE)
    where = ("whole image" if small is img else
             f"{small.shape[1]}×{small.shape[0]} px area-downscaled copy")
    tone = measure_tone(small, where)
    sec["tone"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    colour = measure_colour(small, where) if c == 3 else None
    sec["colour"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    illum = measure_illumination(np.asarray(luma(downscale(small, ILLUM_SIDE)), np.float64))
    sec["illumination"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jpeg = measure_jpeg(img)
    sec["jpeg"] = time.perf_counter() - t0
    sec["total"] = time.perf_counter() - t_all
    sec["ms_per_mp"] = 1000.0 * sec["total"] / (h * w / 1e6)
    return DefectReport(shape=(h, w), channels=c, noise=noise, blur=blur, motion=motion, tone=tone,
                        colour=colour, illumination=illum, jpeg=jpeg,
                        features={k: float(v) for k, v in feats.items() if k != "seconds"}, seconds=sec)

"""Film-grain (stationary correlated noise) power-spectrum estimation.

The noise power spectral density (PSD) is estimated from noise-only areas: the image's flattest
blocks (or the blocks a user mask marks), each with its best-fit plane removed, averaged as
periodograms (Bartlett/Welch method).  The block PSD is turned into a circular autocorrelation,
tapered, embedded at the target size and transformed back, so it can be given for any image size.

PSD convention: the one of the ``bm3d`` package (Mäkinen, Azzari, Foi, IEEE TIP 29, 2020): for noise
``n = k ⊛ w`` with ``w`` white of unit variance, ``PSD = |FFT2(k, (M, N))|² · M · N``.  White noise
of standard deviation ``σ`` therefore has ``PSD ≡ σ²·M·N`` and ``mean(PSD) / (M·N)`` is the noise
variance.  Pixel values are in the image's own units (0..1 for ComfyUI images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class GrainEstimate:
    """Result of :func:`estimate_grain_psd`.

    ``psd``: ``[M, N]`` (grey) or ``[M, N, C]`` PSD in the bm3d convention; ``sigma``: per-channel
    noise standard deviation (image units); ``blocks``: how many blocks were averaged;
    ``block``: block side (px); ``source``: "flat blocks" or "mask".
    """

    psd: np.ndarray
    sigma: np.ndarray
    blocks: int
    block: int
    source: str
    notes: list = field(default_factory=list)


def white_psd(sigma: float, shape) -> np.ndarray:
    """PSD of white noise of standard deviation ``sigma`` at size ``shape = (M, N)``: σ²·M·N."""
    m, n = int(shape[0]), int(shape[1])
    return np.full((m, n), float(sigma) ** 2 * m * n)


def kernel_psd(kernel: np.ndarray, shape) -> np.ndarray:
    """PSD of ``kernel ⊛ white(1)`` at size ``shape``: ``|FFT2(kernel, shape)|² · M · N``."""
    m, n = int(shape[0]), int(shape[1])
    k = np.zeros((m, n))
    kh, kw = kernel.shape
    k[:kh, :kw] = kernel
    k = np.roll(k, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.abs(np.fft.fft2(k)) ** 2 * m * n


def _block_count(h: int, w: int, block: int) -> int:
    """How many half-overlapping ``block`` px blocks fit in an ``h`` x ``w`` image."""
    if min(h, w) < block:
        return 0
    step = max(1, block // 2)
    return ((h - block) // step + 1) * ((w - block) // step + 1)


def _windows(channel: np.ndarray, block: int, step: int) -> np.ndarray:
    """All ``block``×``block`` windows of a 2-D array at ``step`` px: a ``[ny, nx, block, block]``
    view (no copy; block k in row-major order is ``[k // nx, k % nx]``)."""
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(channel, (block, block))[::step, ::step]


def _blocks(channel: np.ndarray, block: int, step: int, idx=None) -> np.ndarray:
    """Windows of :func:`_windows` as ``[K, block, block]``: all of them, or those numbered ``idx``
    (only those are copied)."""
    win = _windows(channel, block, step)
    if idx is None:
        return win.reshape(-1, block, block)
    iy, ix = np.unravel_index(np.asarray(idx), win.shape[:2])
    return win[iy, ix]


def _per_block(channel: np.ndarray, block: int, step: int, fn) -> np.ndarray:
    """``fn(blocks [n, block, block]) -> [n]`` over every window, one row of windows at a time: the
    half-overlapping windows hold 4x the image, so they are never all copied at once."""
    win = _windows(channel, block, step)
    return np.concatenate([fn(np.ascontiguousarray(win[i])) for i in range(win.shape[0])])


def _detrend(blocks: np.ndarray) -> np.ndarray:
    """Subtract each block's least-squares plane a + b·y + c·x (keeps low-frequency grain mostly)."""
    k, b, _ = blocks.shape
    yy, xx = np.mgrid[0:b, 0:b].astype(np.float64)
    yy -= yy.mean()
    xx -= xx.mean()
    flat = blocks.reshape(k, -1)
    mean = flat.mean(axis=1, keepdims=True)
    gy = (flat @ yy.ravel()) / np.sum(yy * yy)
    gx = (flat @ xx.ravel()) / np.sum(xx * xx)
    plane = mean + gy[:, None] * yy.ravel()[None] + gx[:, None] * xx.ravel()[None]
    return (flat - plane).reshape(k, b, b)


def _acf_from_blocks(blocks: np.ndarray, removed_dof: int) -> np.ndarray:
    """Autocorrelation of stationary noise from detrended blocks ``[K, B, B]``.

    Linear (not circular) lag products come from periodograms zero-padded to 2B; dividing by the
    overlap counts gives the unbiased estimate r̂(τ).  Removing a fitted mean/plane from each block
    lowers every lag by about ``dof · S / B²`` with ``S = Σ_τ r(τ)`` (the noise power at DC); S is
    solved from the lags within ±B/4 and the bias added back.  Returns lags ``-L..L`` (``L = B/4``)
    as a ``[2L+1, 2L+1]`` array with lag 0 in the centre.
    """
    k, b, _ = blocks.shape
    power = np.zeros((2 * b, 2 * b))
    step = max(1, (16 << 20) // (64 * b * b))  # ~16 MB of complex spectra at a time (an 8K image
    for i in range(0, k, step):                 # chooses ~13,000 blocks: 0.8 GB at once)
        power += (np.abs(np.fft.fft2(blocks[i:i + step], s=(2 * b, 2 * b))) ** 2).sum(axis=0)
    sums = np.real(np.fft.ifft2(power / k))  # Σ_t x(t)x(t+τ), block mean
    lmax = max(1, b // 4)
    lags = np.arange(-lmax, lmax + 1)
    idx = lags % (2 * b)
    counts = (b - np.abs(lags))[:, None] * (b - np.abs(lags))[None, :]
    r = sums[np.ix_(idx, idx)] / counts
    n_l = r.size
    frac = removed_dof * n_l / float(b * b)
    s_total = r.sum() / max(1.0 - frac, 0.25)
    return r + removed_dof * s_total / float(b * b)


def _psd_from_acf(acf: np.ndarray, shape) -> np.ndarray:
    """Centred autocorrelation lags -> PSD at ``shape`` (M·N convention), tapered over the
    outer half of the lags (Tukey window) so the spectrum stays smooth."""
    m, n = int(shape[0]), int(shape[1])
    lmax = acf.shape[0] // 2
    lag = np.arange(-lmax, lmax + 1)
    half = lmax / 2.0
    w1 = np.where(np.abs(lag) <= half, 1.0,
                  0.5 * (1.0 + np.cos(np.pi * (np.abs(lag) - half) / (lmax + 1 - half))))
    a = acf * np.outer(w1, w1)
    hm, hn = min(lmax, (m - 1) // 2), min(lmax, (n - 1) // 2)
    sub = a[lmax - hm: lmax + hm + 1, lmax - hn: lmax + hn + 1]
    out = np.zeros((m, n))
    out[np.ix_(np.arange(-hm, hm + 1) % m, np.arange(-hn, hn + 1) % n)] = sub
    psd = np.real(np.fft.fft2(out)) * m * n
    floor = 1e-3 * max(float(psd.mean()), 1e-20)
    return np.maximum(psd, floor)


def estimate_grain_psd(
    image: np.ndarray,
    mask: Optional[np.ndarray] = None,
    block: int = 32,
    fraction: float = 0.1,
    min_blocks: int = 6,
    out_shape=None,
) -> GrainEstimate:
    """Estimate the grain PSD of ``image`` (``[H, W]`` or ``[H, W, C]``, any units, float).

    Blocks of ``block`` px (half-overlapping) are scored by their variance after plane removal;
    the ``fraction`` flattest (at least ``min_blocks``) are taken as noise-only.  With ``mask``
    (``[H, W]``, nonzero = noise-only area, e.g. a flat sky or a film border) only blocks lying
    at least 90 % inside it are used.  The periodograms of the chosen blocks are averaged per
    channel (Welch 1967) and resampled to ``out_shape`` (default: the image size).  ``block`` is
    halved (down to 8 px) until at least ``min_blocks`` blocks fit in the image; ``notes`` says so.

    Flat-block selection biases the estimate low where the image has no flat area (textures are
    never chosen if flatter areas exist); give a mask in that case.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"estimate_grain_psd: expected [H,W] or [H,W,C], got shape {img.shape}")
    h, w, ch = img.shape
    if not np.all(np.isfinite(img)):
        raise ValueError("estimate_grain_psd: the image contains NaN or infinite values")
    notes = []
    block = asked = int(block)
    # fewer than min_blocks blocks would make the image itself the "grain" (a 64x96 image holds two
    # 64 px blocks): halve the block until enough fit, down to 8 px
    while block > 8 and _block_count(h, w, block) < min_blocks:
        block = max(8, block // 2)
    if min(h, w) < block:
        block = max(4, 2 ** int(np.floor(np.log2(max(min(h, w), 4)))))
    if block != asked:
        notes.append(f"block reduced to {block} px for a {w}x{h} image")
    if min(h, w) < 4:
        raise ValueError(f"estimate_grain_psd: the image ({w}x{h}) is too small to estimate grain")
    step = max(1, block // 2)
    out_shape = (h, w) if out_shape is None else tuple(out_shape)

    lum = img.mean(axis=2)
    # score on a smoothed copy: the grain is mostly averaged away there, image structure is not,
    # so the choice depends little on the noise realisation (less downward bias of the estimate)
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(lum, 2.0, mode="reflect")
    score = _per_block(smooth, block, step, lambda bl: _detrend(bl).var(axis=(1, 2)))
    del smooth
    source = "flat blocks"
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != (h, w):
            raise ValueError(f"estimate_grain_psd: mask shape {m.shape} does not match the image {(h, w)}")
        cover = _per_block((m > 0.5).astype(np.float32), block, step, lambda bl: bl.mean(axis=(1, 2)))
        inside = cover >= 0.9
        if inside.sum() >= 1:
            score = np.where(inside, score, np.inf)
            source = "mask"
            chosen_n = int(inside.sum())
        else:
            notes.append("mask holds no whole block; used the flattest blocks instead")
            chosen_n = None
    else:
        chosen_n = None
    # keep edges of brightness range out: clipped (0 or 1) blocks have no grain
    means = _per_block(lum, block, step, lambda bl: bl.mean(axis=(1, 2)))
    lo, hi = np.percentile(lum, 0.5), np.percentile(lum, 99.5)
    clipped = (means <= lo + 1e-6) | (means >= hi - 1e-6)
    if (~clipped).sum() >= min_blocks:
        score = np.where(clipped & np.isfinite(score), np.inf, score)
    k_total = int(np.isfinite(score).sum())
    if chosen_n is None:
        chosen_n = max(int(min_blocks), int(round(fraction * k_total)))
    chosen_n = max(1, min(chosen_n, k_total))
    idx = np.argsort(score)[:chosen_n]

    psds = []
    sig = []
    for c in range(ch):
        bl = _detrend(_blocks(img[:, :, c], block, step, idx))
        psd = _psd_from_acf(_acf_from_blocks(bl, removed_dof=3), out_shape)
        psds.append(psd)
        sig.append(np.sqrt(psd.mean() / (out_shape[0] * out_shape[1])))
    psd = psds[0] if ch == 1 else np.stack(psds, axis=-1)
    return GrainEstimate(psd=psd, sigma=np.array(sig), blocks=int(chosen_n), block=block,
                         source=source, notes=notes)


def synthetic_grain(shape, std: float, grain_sigma: float = 1.0, rng=None) -> tuple:
    """Correlated Gaussian grain: white noise blurred by a Gaussian of ``grain_sigma`` px, scaled to
    standard deviation ``std``.  Returns ``(noise [H,W], psd)`` with the exact PSD (bm3d convention).
    """
    rng = np.random.default_rng() if rng is None else rng
    h, w = int(shape[0]), int(shape[1])
    r = int(np.ceil(4 * grain_sigma))
    ax = np.arange(-r, r + 1)
    g = np.exp(-(ax ** 2) / (2 * grain_sigma ** 2))
    k = np.outer(g, g)
    k /= np.sqrt(np.sum(k ** 2))  # unit-variance output for unit-variance white input
    k *= std
    psd = kernel_psd(k, (h, w))
    white = rng.standard_normal((h, w))
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * np.sqrt(psd / (h * w))))
    return noise, psd

"""Linear motion blur: estimate the motion (angle, length) from the log spectrum, then deconvolve.

A uniform linear motion of ``L`` px along the unit direction ``u`` multiplies the image spectrum by
``H(f) = sinc(L·f·u)`` (``sinc(x) = sin(πx)/(πx)``, f in cycles/px), whose zeros are parallel lines
perpendicular to ``u``, ``1/L`` apart (Cannon, "Blind deconvolution of spatially invariant image
blurs with phase", IEEE TASSP 24:58, 1976).  Two steps:

1. **Cepstrum** ``C = IFFT(log|G|)``: the periodic dips of ``log|H|`` give a negative peak at
   ``±L·u`` (quefrency in px).  The deepest minimum outside a small central disc gives a first
   (angle, length); a few candidates are kept.
2. **Log-spectrum fit** (the parametric form of the Radon/Hough line search of Oliveira, Figueiredo,
   Bioucas-Dias, "Parametric blur estimation for blind restoration of natural images: linear motion
   and out-of-focus", IEEE TIP 23:466, 2014): the azimuthally detrended log spectrum is correlated
   with ``log(|sinc(L·f·u)| + δ)``; a coordinate search refines angle and length to ~0.1° and ~1 %.

Conventions (as in :mod:`scripts.kernels`): angle in degrees in ``[0, 180)``, counter-clockwise
from +x with y up; length in px = extent of the motion path.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .deconvolution import DeconvolveReport

MIN_LENGTH = 3.0
#: below this fit score the motion estimate is unreliable
RELIABLE_SCORE = 0.1


def _gray(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        if a.shape[2] >= 3:
            a = a[..., 0] * 0.2126 + a[..., 1] * 0.7152 + a[..., 2] * 0.0722
        else:
            a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"motion estimate: expected an image [H,W] or [H,W,C], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("motion estimate: the image contains NaN or infinite values")
    return a


def _analysis_square(gray: np.ndarray, side: int) -> np.ndarray:
    """The central ``side × side`` square (smaller images: the largest centred square), mean removed
    and Hann-windowed so the crop edges do not draw lines through the spectrum."""
    h, w = gray.shape
    s = min(side, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    a = gray[y0:y0 + s, x0:x0 + s]
    a = a - a.mean()
    win = np.hanning(s + 2)[1:-1]
    return a * win[:, None] * win[None, :]


def log_spectrum(gray: np.ndarray) -> np.ndarray:
    """``log(|FFT| + ε)`` of a windowed square, not shifted (DC at [0, 0])."""
    mag = np.abs(np.fft.fft2(gray))
    return np.log(mag + 1e-3 * mag.mean() + 1e-12)


def cepstrum_candidates(logspec: np.ndarray, max_length: float, count: int = 3) -> List[Tuple[float, float, float]]:
    """Up to ``count`` (angle°, length px, depth) from the deepest cepstral minima (sub-pixel)."""
    n = logspec.shape[0]
    cep = np.real(np.fft.ifft2(logspec - logspec.mean()))
    cep = np.fft.fftshift(cep)
    c = n // 2
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(yy - c, xx - c)
    region = (r >= MIN_LENGTH - 0.5) & (r <= max_length + 0.5) & (yy <= c)  # half plane (symmetric)
    region &= ~((yy == c) & (xx < c))
    work = np.where(region, cep, np.inf)
    out = []
    for _ in range(count):
        idx = int(np.argmin(work))
        py, px = divmod(idx, n)
        if not np.isfinite(work[py, px]):
            break
        dy, dx = 0.0, 0.0
        if 0 < py < n - 1 and 0 < px < n - 1:  # parabolic sub-pixel refinement
            a, b, d = cep[py - 1, px], cep[py, px], cep[py + 1, px]
            den = a - 2 * b + d
            dy = 0.5 * (a - d) / den if den != 0 else 0.0
            a, d = cep[py, px - 1], cep[py, px + 1]
            den = a - 2 * b + d
            dx = 0.5 * (a - d) / den if den != 0 else 0.0
        vy, vx = (py + np.clip(dy, -0.5, 0.5)) - c, (px + np.clip(dx, -0.5, 0.5)) - c
        angle = math.degrees(math.atan2(-vy, vx)) % 180.0
        out.append((angle, float(math.hypot(vy, vx)), float(cep[py, px])))
        work[max(0, py - 2):py + 3, max(0, px - 2):px + 3] = np.inf  # suppress the neighbourhood
    return out


class _SpectrumFit:
    """Correlation between the detrended log spectrum and a linear-motion model."""

    def __init__(self, logspec: np.ndarray, fmin: float = 0.02, fmax: float = 0.4):
        n = logspec.shape[0]
        f = np.fft.fftfreq(n)
        fy, fx = np.meshgrid(f, f, indexing="ij")
        rad = np.hypot(fx, fy)
        # azimuthal detrend: subtract the mean log magnitude at each radius (isotropic image content)
        ring = np.minimum((rad * n).astype(int), n)
        sums = np.bincount(ring.ravel(), logspec.ravel(), minlength=n + 1)
        cnts = np.bincount(ring.ravel(), minlength=n + 1)
        detr = logspec - (sums / np.maximum(cnts, 1))[ring]
        keep = (rad >= fmin) & (rad <= fmax) & (fy >= 0)  # half plane: the spectrum is symmetric
        self.fx, self.fy = fx[keep], -fy[keep]  # y up
        d = detr[keep]
        self.d = (d - d.mean()) / (d.std() + 1e-12)

    def score(self, angle: float, length: float) -> float:
        t = math.radians(angle)
        proj = self.fx * math.cos(t) + self.fy * math.sin(t)
        m = np.log(np.abs(np.sinc(length * proj)) + 0.05)
        m = m - m.mean()
        return float(np.dot(self.d, m) / (np.linalg.norm(m) * math.sqrt(len(m)) + 1e-12))

    def refine(self, angle: float, length: float, max_length: float) -> Tuple[float, float, float]:
        best = (self.score(angle, length), angle, length)
        for a_span, a_step, l_span in ((4.0, 0.5, 0.15), (1.0, 0.1, 0.05), (0.3, 0.05, 0.02)):
            _, a0, l0 = best
            for a in np.arange(a0 - a_span, a0 + a_span + 1e-9, a_step):
                s = self.score(a % 180.0, l0)
                if s > best[0]:
                    best = (s, a % 180.0, l0)
            _, a0, l0 = best
            for ln in np.linspace(l0 * (1 - l_span), l0 * (1 + l_span), 21):
                if MIN_LENGTH <= ln <= max_length:
                    s = self.score(a0, ln)
                    if s > best[0]:
                        best = (s, a0, float(ln))
        return best


@dataclass
class MotionEstimate:
    """angle (degrees, [0, 180)), length (px), score (spectrum-model correlation, higher is more
    confident; below :data:`RELIABLE_SCORE` the estimate is unreliable), cepstrum (the raw first
    guesses, (angle, length)), seconds."""

    angle: float
    length: float
    score: float
    cepstrum: List[Tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0


def estimate_motion(image: np.ndarray, max_length: float = 64.0, analysis_size: int = 512) -> MotionEstimate:
    """Estimate linear motion blur of ``image`` (float, [H,W] or [H,W,C]; colour is reduced to
    luma).  max_length: longest motion searched (px, ≥ 4; capped at a third of the analysis
    square).  analysis_size: side of the central square analysed (px).
    """
    t0 = time.perf_counter()
    gray = _gray(image)
    if min(gray.shape) < 32:
        raise ValueError(f"motion estimate: the image is too small ({gray.shape[1]}x{gray.shape[0]} px, need 32 px or more)")
    sq = _analysis_square(gray, int(analysis_size))
    max_length = float(min(max(max_length, 4.0), sq.shape[0] / 3.0))
    spec = log_spectrum(sq)
    cands = cepstrum_candidates(spec, max_length)
    fit = _SpectrumFit(spec)
    best = None
    for angle, length, _depth in cands:
        res = fit.refine(angle, max(length, MIN_LENGTH), max_length)
        if best is None or res[0] > best[0]:
            best = res
    if best is None:
        return MotionEstimate(0.0, 0.0, 0.0, [], time.perf_counter() - t0)
    score, angle, length = best
    return MotionEstimate(float(angle % 180.0), float(length), float(score),
                          [(round(a, 2), round(l, 2)) for a, l, _ in cands], time.perf_counter() - t0)


@dataclass
class MotionDeblurReport:
    """The motion of each image (given or estimated) and the deconvolution of the batch."""

    motions: List[str]
    estimates: List[Optional[MotionEstimate]]
    deconvolution: DeconvolveReport

    @property
    def estimated(self) -> bool:
        return any(e is not None for e in self.estimates)

    def info_fields(self) -> dict:
        out = {"motion": self.motions, "angle convention": "degrees counter-clockwise from horizontal, y up"}
        out.update({k: v for k, v in self.deconvolution.info_fields().items() if k != "kernel"})
        return out


def motion_deblur(image, length: Optional[float] = None, angle: Optional[float] = None,
                  max_length: float = 64.0, device: str = "auto", **deconvolve_kwargs):
    """Estimate the motion of each image (unless ``length`` and ``angle`` are both given), build the
    motion kernels and deconvolve (:func:`scripts.deconvolution.deconvolve_images`, memory-safe).

    ``image``: one image (numpy ``[H,W]`` or ``[H,W,C]``) or a batch ``[B,H,W,C]`` (numpy or
    torch), float 0..1.  ``length``/``angle`` override the estimate (None = estimate).  Extra keyword
    arguments go to the deconvolution.  Returns ``(restored, MotionDeblurReport)``; ``restored`` has
    the input's shape (numpy for numpy input).
    """
    import torch

    from .deconvolution import deconvolve_images
    from .kernels import motion_kernel

    single = np.ndim(image) in (2, 3)
    batch = np.asarray(image, np.float32) if single else image
    if single:
        batch = batch.reshape(1, batch.shape[0], batch.shape[1], -1)
    kernels, notes, estimates = [], [], []
    for i in range(batch.shape[0]):
        ln, an, how, est = length, angle, "given", None
        if ln is None or an is None:
            est = estimate_motion(np.asarray(batch[i]), max_length=max_length)
            how = f"estimated (fit score {est.score:.3f}{', low: unreliable' if est.score < RELIABLE_SCORE else ''})"
            ln = est.length if ln is None else ln
            an = est.angle if an is None else an
        kernels.append(motion_kernel(float(ln), float(an)))
        notes.append(f"image {i}: angle {float(an):.2f}°, length {float(ln):.2f} px, {how}")
        estimates.append(est)
    out, rep = deconvolve_images(batch, kernels, device=device, what="Motion Deblur", **deconvolve_kwargs)
    report = MotionDeblurReport(notes, estimates, rep)
    if single:
        return out[0].reshape(np.shape(image)).numpy(), report
    return (out if isinstance(image, torch.Tensor) else out.numpy()), report

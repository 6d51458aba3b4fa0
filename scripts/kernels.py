"""Blur kernels for deconvolution: Gaussian, disk (defocus), linear motion.  All normalised to sum 1.

Every kernel is a float64 numpy array with odd sides, centred on the middle pixel.  Lengths are in
pixels.  Angles are in degrees, counter-clockwise from the +x axis (image columns to the right) with
y pointing **up** (i.e. towards row 0): 0° is a horizontal motion, 90° a vertical one; a motion and
its opposite (θ + 180°) give the same kernel.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

MAX_KERNEL_SIDE = 1025


def _odd(n: float) -> int:
    n = int(math.ceil(n))
    return n if n % 2 == 1 else n + 1


def _check_side(side: int, what: str) -> None:
    if side > MAX_KERNEL_SIDE:
        raise ValueError(f"{what}: kernel would be {side} px wide (limit {MAX_KERNEL_SIDE} px)")


def normalise(kernel: np.ndarray) -> np.ndarray:
    """Clip negatives, divide by the sum; raises ValueError for an empty/zero/non-finite kernel."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise ValueError(f"kernel: expected a non-empty 2D array, got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise ValueError("kernel: contains NaN or infinite values")
    k = np.maximum(k, 0.0)
    total = k.sum()
    if total <= 0:
        raise ValueError("kernel: sums to zero")
    return k / total


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Isotropic Gaussian, standard deviation ``sigma`` px (> 0).

    Sampled at pixel centres, radius ``int(truncate·σ + 0.5)`` (as scipy.ndimage.gaussian_filter).
    """
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"gaussian kernel: sigma must be > 0 px, got {sigma}")
    radius = max(1, int(truncate * sigma + 0.5))
    _check_side(2 * radius + 1, "gaussian kernel")
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return normalise(np.outer(g, g))


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Uniform disk of ``radius`` px (> 0), the geometric-optics defocus blur; edge pixels weighted by
    their covered area (``supersample²`` sub-samples per pixel)."""
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"disk kernel: radius must be > 0 px, got {radius}")
    side = _odd(2 * radius + 1)
    _check_side(side, "disk kernel")
    s = int(supersample)
    c = (side - 1) / 2.0
    sub = (np.arange(side * s) + 0.5) / s - 0.5 - c
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius * radius
    area = inside.reshape(side, s, side, s).mean(axis=(1, 3))
    if area.sum() == 0:
        area[int(c), int(c)] = 1.0
    return normalise(area)


def motion_kernel(length: float, angle: float, supersample: int = 8) -> np.ndarray:
    """Linear (constant-velocity) motion blur: a line segment of ``length`` px at ``angle`` degrees
    (convention in the module docstring), centred, rendered as a 1 px wide bar whose area covering
    each pixel gives its weight (``supersample`` samples per pixel along and across the bar).  An
    axis-aligned integer length gives the exact box; ``length`` <= 1 gives the identity.
    """
    if not np.isfinite(length) or length < 0:
        raise ValueError(f"motion kernel: length must be >= 0 px, got {length}")
    if not np.isfinite(angle):
        raise ValueError(f"motion kernel: angle must be finite, got {angle}")
    if length <= 1.0:
        return np.ones((1, 1))
    t = math.radians(angle)
    dx, dy = math.cos(t), -math.sin(t)  # y up -> rows down
    side = max(_odd(abs(dx) * length + 3), _odd(abs(dy) * length + 3))
    _check_side(side, "motion kernel")
    c = (side - 1) / 2.0
    s = int(supersample)
    n = max(2, int(math.ceil(length * s)))
    along = (np.arange(n) + 0.5) / n * length - length / 2.0  # midpoints of n pieces of [-L/2, L/2]
    across = (np.arange(s) + 0.5) / s - 0.5  # 1 px wide
    a, b = np.meshgrid(along, across, indexing="ij")
    xs = c + a * dx - b * dy
    ys = c + a * dy + b * dx
    ix = np.floor(xs + 0.5).astype(int)  # pixel i covers [i - 0.5, i + 0.5)
    iy = np.floor(ys + 0.5).astype(int)
    ok = (ix >= 0) & (ix < side) & (iy >= 0) & (iy < side)
    k = np.zeros((side, side))
    np.add.at(k, (iy[ok], ix[ok]), 1.0)
    return normalise(k)


#: the blur models Deconvolve can undo ("psf" = a Microscope PSF)
SOURCES = ("gaussian", "disk", "motion", "psf")


def kernel_for(source: str, sigma: float = 1.6, radius: float = 3.0, length: float = 15.0, angle: float = 0.0,
               psf: Optional[dict] = None, psf_plane: str = "in_focus") -> Tuple[np.ndarray, str]:
    """The kernel of blur ``source`` (:data:`SOURCES`) and a description naming it and its size.

    gaussian: σ ``sigma`` px; disk: ``radius`` px; motion: ``length`` px at ``angle`` degrees; psf:
    the data of :func:`scripts.psf.make_psf` (``psf_plane``: :data:`scripts.psf.KERNEL_PLANES`).
    """
    if source == "gaussian":
        k, what = gaussian_kernel(float(sigma)), f"gaussian σ {float(sigma):.4g} px"
    elif source == "disk":
        k, what = disk_kernel(float(radius)), f"disk r {float(radius):.4g} px"
    elif source == "motion":
        k, what = motion_kernel(float(length), float(angle)), f"motion {float(length):.4g} px at {float(angle):.4g}°"
    elif source == "psf":
        if psf is None:
            raise ValueError("Deconvolve: kernel_source is psf but no psf input is connected")
        from .psf import kernel_from_psf

        k, what = kernel_from_psf(psf, psf_plane)
    else:
        raise ValueError(f"Deconvolve: unknown kernel_source {source!r} (expected one of {SOURCES})")
    return k, f"{what}, {k.shape[1]}x{k.shape[0]} px"

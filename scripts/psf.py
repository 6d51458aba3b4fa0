"""Widefield microscope point spread functions: Gibson–Lanni and its matched-index case, Born–Wolf.

Model
-----
Scalar Gibson–Lanni model (S. F. Gibson, F. Lanni, "Experimental test of an analytical model of
aberration in an oil-immersion objective lens used in three-dimensional light microscopy",
JOSA A 8(10):1601–1613, 1991).  The intensity at lateral radius ``r`` for a point source at depth
``pz`` in the sample, with the focal plane at ``z``, is

    PSF(r, z) = | ∫_0^ρmax  J0(k·NA·r·ρ) · exp(i·k·OPD(ρ, z)) · ρ dρ |²

with ``k = 2π/λ`` and the optical path difference (sample + coverslip + immersion layers)

    OPD = pz·√(ns² − NA²ρ²)
        + tg·√(ng² − NA²ρ²) − tg0·√(ng0² − NA²ρ²)
        + ti·√(ni² − NA²ρ²) − ti0·√(ni0² − NA²ρ²),          ti = ti0 − z.

The pupil is cut at ``ρmax = min(NA, ns, ng, ng0, ni, ni0)/NA`` (no super-critical angles), as in
the reference implementations (microscpsf-py, psfmodels).  With every index equal and the actual
thicknesses equal to the design ones the phase reduces to pure defocus in a homogeneous medium:
that is the Born–Wolf PSF (Born & Wolf, Principles of Optics, §8.8), :func:`born_wolf_stack`.

Fast evaluation (Li, Xue, Blu, "Fast and accurate three-dimensional point spread function
computation for fluorescence microscopy", JOSA A 34(6):1029–1034, 2017): the pupil phase
``exp(i·k·OPD(ρ, z))`` is fitted, for all ``z`` at once, by least squares with a series of scaled
Bessel functions ``Σ_m c_m(z)·J0(σ_m ρ)``; every term then integrates in closed form,

    ∫_0^a J0(σρ) J0(βρ) ρ dρ = a·[σ·J1(σa)·J0(βa) − β·J0(σa)·J1(βa)] / (σ² − β²),

so the radial profile is a matrix product.  ``method="quadrature"`` evaluates the integral by
composite Simpson quadrature instead (slower, used to cross-check).

Units and conventions
---------------------
* All lengths are in **micrometres** (µm): wavelength, pixel size, z, particle depth, thicknesses.
* ``z`` is the **nominal focal-plane position above the coverslip/sample interface**, positive into
  the sample (away from the objective).  In a matched-index system the PSF of a particle at depth
  ``pz`` peaks at ``z = pz``.  This is psfmodels' convention; microscpsf-py's ``zv`` is ``−z``
  (it moves the coverslip), so its stacks are mirrored along z.
* Stacks are ``[nz, ny, nx]`` float64, laterally centred on pixel ``(n−1)//2`` of an odd size
  (an even size puts the axis on the corner between the four middle pixels).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[float, Sequence[float], np.ndarray]

#: number of pupil samples along ρ for the Bessel fit and the quadrature
RHO_SAMPLES = 1001
#: default number of Bessel basis functions (Li, Xue, Blu use ~100)
NUM_BASIS = 100
#: largest stack computed (voxels): 512 MiB as float64
MAX_VOXELS = 1 << 26


@dataclass(frozen=True)
class Microscope:
    """Objective and sample description for the Gibson–Lanni model.

    NA: numerical aperture (0 < NA < min of the immersion indices). wavelength: emission wavelength
    in µm. ns: sample index. ng/ng0: coverslip index actual/design. ni/ni0: immersion index
    actual/design. tg/tg0: coverslip thickness actual/design (µm). ti0: working distance = design
    immersion-layer thickness (µm).  Defaults: a 1.4 NA oil objective with a watery sample.
    """

    NA: float = 1.4
    wavelength: float = 0.6
    ns: float = 1.33
    ng: float = 1.515
    ng0: float = 1.515
    ni: float = 1.515
    ni0: float = 1.515
    tg: float = 170.0
    tg0: float = 170.0
    ti0: float = 150.0

    def validate(self) -> "Microscope":
        for name in ("NA", "wavelength", "ns", "ng", "ng0", "ni", "ni0"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"PSF: {name} must be a positive number, got {v}")
        for name in ("tg", "tg0", "ti0"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"PSF: thickness {name} must be >= 0 µm, got {v}")
        if self.NA >= min(self.ni, self.ni0):
            raise ValueError(
                f"PSF: NA {self.NA} must be smaller than the immersion index (ni {self.ni}, ni0 {self.ni0})"
            )
        if not 0.05 <= self.wavelength <= 5.0:
            raise ValueError(f"PSF: wavelength {self.wavelength} µm is outside 0.05..5 µm (units are µm, not nm)")
        return self

    @property
    def rho_max(self) -> float:
        """Pupil cut-off (normalised to NA): min(NA, ns, ng, ng0, ni, ni0)/NA, at most 1."""
        return min(self.NA, self.ns, self.ng, self.ng0, self.ni, self.ni0) / self.NA

    def as_dict(self) -> Dict[str, float]:
        return asdict(self)


def matched(NA: float = 1.4, wavelength: float = 0.6, n: float = 1.515) -> Microscope:
    """A Born–Wolf (aberration-free) system: every index ``n``, design thicknesses."""
    return Microscope(NA=NA, wavelength=wavelength, ns=n, ng=n, ng0=n, ni=n, ni0=n)


def pupil_phase(mic: Microscope, rho: np.ndarray, z: np.ndarray, pz: float = 0.0) -> np.ndarray:
    """Gibson–Lanni pupil phase ``k·OPD`` (radians), shape ``[len(z), len(rho)]``.

    rho: normalised pupil radius (0..rho_max); z: focal-plane positions (µm, see module
    docstring); pz: particle depth above the coverslip (µm, >= 0).
    """
    k = 2.0 * np.pi / mic.wavelength
    s2 = (mic.NA * np.asarray(rho, dtype=np.float64)) ** 2

    def root(n):
        return np.sqrt(np.maximum(n * n - s2, 0.0))

    const = pz * root(mic.ns) + mic.tg * root(mic.ng) - mic.tg0 * root(mic.ng0) - mic.ti0 * root(mic.ni0)
    ti = mic.ti0 - np.asarray(z, dtype=np.float64).reshape(-1, 1)
    return k * (const[None, :] + ti * root(mic.ni)[None, :])


@lru_cache(maxsize=16)
def _bessel_basis(rho_max: float, m_count: int):
    """(σ [M], basis J0(σ_m ρ) [RHO_SAMPLES, M], its pseudo-inverse [M, RHO_SAMPLES]) for the pupil
    grid ``linspace(0, rho_max, RHO_SAMPLES)``.  The basis is real, so one real pseudo-inverse gives
    the least-squares coefficients of every z plane; cached because it depends on ρmax and M only.
    σ_m = (3m − 2)·Δ/3 as in Li, Xue, Blu, with Δ = 0.95·π/ρmax (see :func:`radial_profile`)."""
    from scipy.special import j0

    rho = np.linspace(0.0, rho_max, RHO_SAMPLES)
    step = 0.95 * np.pi / rho_max
    sigma = (3.0 * np.arange(1, m_count + 1) - 2.0) * step / 3.0
    basis = j0(sigma[None, :] * rho[:, None])
    pinv = np.linalg.pinv(basis)
    for arr in (sigma, basis, pinv):
        arr.flags.writeable = False
    return sigma, basis, pinv


def _closed_form(sigma: np.ndarray, beta: np.ndarray, a: float) -> np.ndarray:
    """∫_0^a J0(σρ)J0(βρ)ρ dρ for every (β, σ) pair: shape [len(beta), len(sigma)]."""
    from scipy.special import j0, j1

    s = sigma[None, :]
    b = beta[:, None]
    js0, js1 = j0(s * a), j1(s * a)
    jb0, jb1 = j0(b * a), j1(b * a)
    denom = s * s - b * b
    close = np.abs(denom) < 1e-9 * np.maximum(s * s, 1.0)
    safe = np.where(close, 1.0, denom)
    out = a * (s * js1 * jb0 - b * js0 * jb1) / safe
    if close.any():  # σ = β: a²/2 · (J0² + J1²)
        lim = 0.5 * a * a * (jb0 * jb0 + jb1 * jb1)
        out = np.where(close, np.broadcast_to(lim, out.shape), out)
    return out


def radial_profile(mic: Microscope, r: np.ndarray, z: ArrayLike, pz: float = 0.0,
                   method: str = "bessel", num_basis: Optional[int] = None) -> Tuple[np.ndarray, dict]:
    """Unnormalised intensity ``PSF(r, z)``, shape ``[len(z), len(r)]``, and fit diagnostics.

    r: lateral radii (µm); z: focal-plane positions (µm); pz: particle depth (µm).
    method: ``"bessel"`` (Li–Xue–Blu series) or ``"quadrature"`` (Simpson).
    """
    mic.validate()
    if pz < 0:
        raise ValueError(f"PSF: particle depth pz must be >= 0 µm, got {pz}")
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    r = np.asarray(r, dtype=np.float64)
    a = mic.rho_max
    k = 2.0 * np.pi / mic.wavelength
    beta = k * mic.NA * r  # argument scale of J0 in the integrand
    info: dict = {"method": method}
    if method == "quadrature":
        from scipy.special import j0

        n_q = 4 * RHO_SAMPLES - 3  # finer than the fit grid: used for strongly aberrated pupils
        rho = np.linspace(0.0, a, n_q)
        phase = np.exp(1j * pupil_phase(mic, rho, z, pz))
        w = np.ones(n_q)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        w *= (rho[1] - rho[0]) / 3.0
        kernel = j0(beta[:, None] * rho[None, :]) * (rho * w)[None, :]  # [nr, nrho]
        field = phase @ kernel.T  # [nz, nr]
    elif method == "bessel":
        rho = np.linspace(0.0, a, RHO_SAMPLES)
        phase = np.exp(1j * pupil_phase(mic, rho, z, pz))  # [nz, nrho]
        # Basis J0(σ_m ρ), σ_m = (3m − 2)·Δ/3 as in Li, Xue, Blu, with the spacing tied to the pupil
        # radius, Δ = 0.95·π/ρmax (just under the Fourier–Bessel spacing π/ρmax: measured best
        # conditioned; their fixed Δ = 3·NA·0.436/λ breaks down below λ ≈ 0.55 µm at NA 1.4).  The
        # basis doubles (100 → 400 terms) while the RMS fit error of the pupil function exceeds
        # 1e-3; if it still does, the integral is evaluated by quadrature instead.
        m_count = int(num_basis or NUM_BASIS)
        while True:
            sigma, basis, pinv = _bessel_basis(a, m_count)
            coef = pinv @ phase.T  # [M, nz]
            residual = float(np.sqrt(np.mean(np.abs(basis @ coef - phase.T) ** 2)))
            if residual <= 1e-3 or m_count >= 400:
                break
            m_count = min(2 * m_count, 400)
        info["basis"] = m_count
        info["fit_residual"] = residual
        if residual > 1e-3:
            prof, qinfo = radial_profile(mic, r, z, pz, method="quadrature")
            qinfo["fallback"] = f"Bessel series fit RMS {residual:.2g} > 1e-3 (strong aberration): quadrature"
            return prof, qinfo
        field = (_closed_form(sigma, beta, a) @ coef).T  # [nz, nr]
    else:
        raise ValueError(f"PSF: unknown method {method!r} (bessel or quadrature)")
    return np.abs(field) ** 2, info


def _pixel_radii(nx: int, ny: int, dxy: float, oversample: int) -> np.ndarray:
    """Radii (µm) of every sub-sample of an ``ny × nx`` grid centred as in the module docstring."""
    s = int(oversample)
    off = (np.arange(s) + 0.5) / s - 0.5  # sub-pixel offsets
    xs = ((np.arange(nx) - (nx - 1) / 2.0)[:, None] + off[None, :]).ravel() * dxy
    ys = ((np.arange(ny) - (ny - 1) / 2.0)[:, None] + off[None, :]).ravel() * dxy
    return np.hypot(ys[:, None], xs[None, :])  # [ny*s, nx*s]


def gibson_lanni_stack(mic: Microscope, nx: int, dxy: float, z: ArrayLike, pz: float = 0.0,
                       ny: Optional[int] = None, normalize: str = "peak", oversample: int = 1,
                       method: str = "bessel", return_info: bool = False):
    """3D Gibson–Lanni PSF stack ``[len(z), ny, nx]`` (float64).

    nx, ny: lateral size in pixels (ny defaults to nx; odd sizes put the axis on a pixel centre).
    dxy: pixel size in the sample (µm).  z: focal-plane positions (µm, see module docstring).
    pz: particle depth (µm).  normalize: ``"peak"`` (max 1 over the stack), ``"sum"`` (the whole stack
    sums to 1) or ``"none"``.  oversample: sub-pixel samples per
    side averaged to approximate pixel integration (1 = point sampling).
    """
    ny = nx if ny is None else ny
    if nx < 1 or ny < 1 or nx * ny > 4096 * 4096:
        raise ValueError(f"PSF: lateral size {nx}x{ny} px is out of range (1..4096)")
    if not np.isfinite(dxy) or dxy <= 0:
        raise ValueError(f"PSF: pixel size must be > 0 µm, got {dxy}")
    if oversample < 1 or oversample > 8:
        raise ValueError(f"PSF: oversample must be 1..8, got {oversample}")
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    if z.size == 0 or z.size > 1024 or not np.all(np.isfinite(z)):
        raise ValueError(f"PSF: need 1..1024 finite z planes, got {z.size}")
    if z.size * nx * ny > MAX_VOXELS:
        raise ValueError(f"PSF: {z.size} x {ny} x {nx} voxels is more than the {MAX_VOXELS:,} supported "
                         f"(about {MAX_VOXELS * 8 / 2**30:.1f} GiB as float64); use fewer planes or pixels")
    radii = _pixel_radii(nx, ny, dxy, oversample)
    # radial profile sampled at dxy / (4·oversample), then linear interpolation onto the pixels
    dr = dxy / (4.0 * oversample)
    r = np.arange(0.0, radii.max() + 2 * dr, dr)
    prof, info = radial_profile(mic, r, z, pz, method=method)
    pos = radii.ravel() / dr
    i0 = np.minimum(pos.astype(np.int64), len(r) - 2)
    w = (pos - i0)[None, :]
    s = int(oversample)
    stack = np.empty((len(z), ny, nx))
    chunk = max(1, (1 << 23) // pos.size)  # planes per step: bounded temporary memory
    for j in range(0, len(z), chunk):
        p = prof[j:j + chunk]
        planes = p[:, i0] * (1.0 - w) + p[:, i0 + 1] * w  # [chunk, npix]
        if s == 1:
            stack[j:j + chunk] = planes.reshape(len(p), ny, nx)
        else:
            stack[j:j + chunk] = planes.reshape(len(p), ny, s, nx, s).mean(axis=(2, 4))
    if normalize == "peak":
        stack = stack / max(stack.max(), 1e-300)
    elif normalize == "sum":
        stack = stack / max(stack.sum(), 1e-300)
    elif normalize != "none":
        raise ValueError(f"PSF: normalize must be peak, sum or none, got {normalize!r}")
    return (stack, info) if return_info else stack


def born_wolf_stack(NA: float, wavelength: float, n: float, nx: int, dxy: float, z: ArrayLike,
                    pz: float = 0.0, **kwargs):
    """Born–Wolf PSF: :func:`gibson_lanni_stack` of :func:`matched` (all indices ``n``)."""
    return gibson_lanni_stack(matched(NA, wavelength, n), nx, dxy, z, pz=pz, **kwargs)


def centered_z(nz: int, dz: float, pz: float = 0.0) -> np.ndarray:
    """``nz`` focal positions ``dz`` apart (µm), centred on the particle depth ``pz``."""
    half = (nz - 1) * dz / 2.0
    return np.linspace(pz - half, pz + half, nz)


def fwhm(profile: np.ndarray, spacing: float) -> float:
    """Full width at half maximum of a 1D single-peaked profile (linear interpolation), in the
    units of ``spacing``; ``nan`` when the half maximum is not crossed on both sides."""
    p = np.asarray(profile, dtype=np.float64)
    i = int(np.argmax(p))
    half = p[i] / 2.0
    left = np.nonzero(p[:i] < half)[0]
    right = np.nonzero(p[i:] < half)[0]
    if len(left) == 0 or len(right) == 0:
        return float("nan")
    l0 = left[-1]
    lx = l0 + (half - p[l0]) / (p[l0 + 1] - p[l0])
    r0 = i + right[0]
    rx = r0 - 1 + (p[r0 - 1] - half) / (p[r0 - 1] - p[r0])
    return float((rx - lx) * spacing)


def stack_fwhm(stack: np.ndarray, dxy: float, dz: float) -> Tuple[float, float]:
    """(lateral, axial) FWHM (µm) through the brightest voxel of a ``[nz, ny, nx]`` stack."""
    iz, iy, ix = np.unravel_index(int(np.argmax(stack)), stack.shape)
    return fwhm(stack[iz, iy, :], dxy), fwhm(stack[:, iy, ix], dz)


def in_focus_plane(stack: np.ndarray) -> Tuple[np.ndarray, int]:
    """The plane of a ``[nz, ny, nx]`` stack holding the brightest voxel, and its index."""
    stack = np.asarray(stack)
    if stack.ndim == 2:
        return stack, 0
    iz = int(np.unravel_index(int(np.argmax(stack)), stack.shape)[0])
    return stack[iz], iz


# --- the Microscope PSF node ----------------------------------------------------------------------
#: PSF models, image views and display tones of the Microscope PSF node (the first is the default)
MODELS = ("gibson_lanni", "born_wolf")
VIEWS = ("max_projection", "in_focus_slice", "xz_section")
DISPLAYS = ("gamma", "linear", "log")
#: the plane of a 3D PSF that Deconvolve uses
KERNEL_PLANES = ("in_focus", "axial sum")


@dataclass
class PsfReport:
    """The PSF computed: the model and its parameters, the stack, the FWHM (µm) and the method."""

    model: str
    microscope: Microscope
    pixel_size: float
    stack: str
    z_range: str
    particle_depth: float
    lateral_fwhm: float
    axial_fwhm: Optional[float]
    method: str
    view: str

    def info_fields(self) -> dict:
        m = self.microscope
        out = {"model": "Born–Wolf (matched indices)" if self.model == "born_wolf" else "Gibson–Lanni",
               "NA": m.NA, "wavelength (µm)": m.wavelength,
               "indices ns/ng/ng0/ni/ni0": f"{m.ns}/{m.ng}/{m.ng0}/{m.ni}/{m.ni0}",
               "thickness tg/tg0/ti0 (µm)": f"{m.tg}/{m.tg0}/{m.ti0}",
               "pixel size (µm)": self.pixel_size, "stack": self.stack, "z range (µm)": self.z_range,
               "particle depth (µm)": self.particle_depth,
               "lateral FWHM (µm)": self.lateral_fwhm if np.isfinite(self.lateral_fwhm) else "wider than the PSF frame"}
        if self.axial_fwhm is not None:
            out["axial FWHM (µm)"] = self.axial_fwhm if np.isfinite(self.axial_fwhm) else "wider than the stack"
        out.update({"method": self.method, "view": self.view})
        return out


def make_psf(model: str = "gibson_lanni", NA: float = 1.4, wavelength: float = 0.52, ns: float = 1.33,
             ni: float = 1.515, ni0: float = 1.515, ng: float = 1.515, ng0: float = 1.515, tg: float = 170.0,
             tg0: float = 170.0, ti0: float = 150.0, pixel_size: float = 0.065, size: int = 65, z_planes: int = 1,
             z_step: float = 0.1, particle_depth: float = 0.0, focus_offset: float = 0.0,
             view: str = "max_projection", display: str = "gamma"):
    """A widefield PSF stack and a picture of it, for the Microscope PSF node.

    ``model``: :data:`MODELS` (``born_wolf`` sets every index to ``ni``).  Lengths in µm, ``size`` in
    px (made odd), ``z_planes`` focal planes ``z_step`` apart centred on ``particle_depth +
    focus_offset``.  ``view``: :data:`VIEWS`; ``display``: :data:`DISPLAYS` (gamma 0.3, linear, log
    over 4 decades).  Returns ``((picture [ny, nx] 0..1, psf data for Deconvolve), PsfReport)``; the
    data dict holds ``psf`` (float32 stack), ``pixel_size``, ``z``, ``model``, ``params``,
    ``particle_depth``.
    """
    if model not in MODELS:
        raise ValueError(f"PSF: model must be one of {MODELS}, got {model!r}")
    size = int(size) | 1
    if model == "born_wolf":
        mic = matched(float(NA), float(wavelength), float(ni))
    else:
        mic = Microscope(NA=float(NA), wavelength=float(wavelength), ns=float(ns), ng=float(ng), ng0=float(ng0),
                         ni=float(ni), ni0=float(ni0), tg=float(tg), tg0=float(tg0), ti0=float(ti0))
    mic.validate()
    pz = float(particle_depth)
    z = centered_z(int(z_planes), float(z_step), pz + float(focus_offset))
    stack, fit = gibson_lanni_stack(mic, size, float(pixel_size), z, pz=pz, return_info=True)
    if view == "xz_section":
        pic = stack[:, size // 2, :]
    elif view == "in_focus_slice":
        pic = in_focus_plane(stack)[0]
    else:
        pic = stack.max(axis=0)
    pic = pic / max(pic.max(), 1e-300)
    if display == "gamma":
        pic = pic ** 0.3
    elif display == "log":
        pic = np.clip(1.0 + np.log10(np.maximum(pic, 1e-12)) / 4.0, 0.0, 1.0)
    lat, ax = stack_fwhm(stack, float(pixel_size), float(z_step))
    method = fit["fallback"] if "fallback" in fit else (
        f"Li–Xue–Blu Bessel series, {fit.get('basis')} terms, pupil fit RMS {fit.get('fit_residual', 0):.2g}")
    report = PsfReport(model=model, microscope=mic, pixel_size=float(pixel_size),
                       stack=f"{len(z)} x {size} x {size} (z, y, x)",
                       z_range=f"{z[0]:.3f} .. {z[-1]:.3f} (focal plane above coverslip)", particle_depth=pz,
                       lateral_fwhm=lat, axial_fwhm=ax if len(z) >= 3 else None, method=method,
                       view=f"{view}, {display}")
    data = {"psf": stack.astype(np.float32), "pixel_size": float(pixel_size), "z": z.tolist(),
            "model": model, "params": mic.as_dict(), "particle_depth": pz}
    return (pic, data), report


def kernel_from_psf(psf: dict, plane: str = "in_focus") -> Tuple[np.ndarray, str]:
    """A 2D deconvolution kernel from :func:`make_psf`'s data: the brightest plane (``in_focus``) or
    the axial sum, peak-normalised and trimmed to where it exceeds 1e-4 of its peak.  Returns
    ``(kernel, description)``."""
    if not isinstance(psf, dict) or "psf" not in psf:
        raise ValueError("Deconvolve: the psf input is not a RESTOREKIT_PSF (connect the Microscope PSF node)")
    stack = np.asarray(psf["psf"], dtype=np.float64)
    if plane == "axial sum" and stack.ndim == 3:
        k, note = stack.sum(axis=0), f"sum of {stack.shape[0]} planes"
    else:
        k, iz = in_focus_plane(stack)
        note = f"plane {iz} of {stack.shape[0] if stack.ndim == 3 else 1} (brightest)"
    k = k / k.max()
    rows = np.nonzero(k.max(axis=1) > 1e-4)[0]
    cols = np.nonzero(k.max(axis=0) > 1e-4)[0]
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    ry = max(cy - rows.min(), rows.max() - cy, 1)
    rx = max(cx - cols.min(), cols.max() - cx, 1)
    k = k[max(cy - ry, 0):cy + ry + 1, max(cx - rx, 0):cx + rx + 1]
    return k, (f"microscope PSF ({psf.get('model')}, {note}, pixel {psf.get('pixel_size')} µm)")

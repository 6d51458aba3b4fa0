"""Gamut mapping of Oklab colours into sRGB.

Methods (``METHODS``):

* Björn Ottosson, "sRGB gamut clipping" (bottosson.github.io/posts/gamutclipping, 2021).  An
  out-of-gamut colour (L, C) at hue h is moved along the straight line towards a grey point
  (L0, 0) of the same hue slice until it meets the gamut boundary.  Hue is kept exactly; the
  methods differ only in L0:

  - ``"preserve_lightness"``: L0 = clamp(L, 0, 1) (chroma is reduced at constant lightness);
  - ``"project_to_L0.5"``: L0 = 0.5;
  - ``"project_to_cusp"``: L0 = L_cusp, the lightness of the most saturated colour of that hue;
  - ``"adaptive_L0_0.5"``: L0 moves from L towards 0.5 the further the colour lies outside,
    Ld = L - 0.5, e1 = 0.5 + |Ld| + α C, L0 = 0.5 (1 + sign(Ld) (e1 - sqrt(e1² - 2 |Ld|)));
  - ``"adaptive_L0_cusp"``: the same with L_cusp in place of 0.5:
    Ld = L - Lc, k = 2 (1 - Lc) if Ld > 0 else 2 Lc, e1 = k/2 + |Ld| + α C / k,
    L0 = Lc + sign(Ld) (e1 - sqrt(e1² - 2 k |Ld|)) / 2.

  α (``alpha``, default 0.05) sets how quickly L0 leaves L as chroma grows.

* ``"css_chroma_reduction"``: CSS Color Module Level 4 (§13.2, "binary search gamut mapping"):
  lower OkLCh chroma at constant lightness by bisection until the clipped colour is within
  ΔE_OK 0.02 (JND) of the candidate, then return the clipped colour.  Hue is kept only to within
  that JND, not exactly.

* ``"clip"``: plain per-channel clipping of sRGB (changes hue; for comparison).

Implementation (our own): the cusp of a hue lies on one of the six edges of the linear-RGB cube
that join a primary to a secondary (one channel 1, one channel 0; Ottosson's observation); we
tabulate it once from dense samples of those edges and interpolate.  Along the line towards (L0, 0) each linear-sRGB
channel is a cubic in the line parameter t, and the boundary crossing is found on those cubics
(bisection, then Illinois regula falsi) keeping the accepted point inside, so every result is in
gamut to float rounding (no fitted approximations).  Only out-of-gamut
pixels are processed; pixels outside by float rounding only (:data:`GAMUT_EPS`) count as inside.

Oklab here uses Ottosson's linear-sRGB matrix (neutral grey axis), see :mod:`.colour`.
Inputs are numpy arrays or torch tensors ``[..., 3]``; torch is used internally (CPU or GPU).
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch

from .colour import (
    _step,
    M1_INV,
    M2_INV,
    linear_srgb_to_oklab,
    linear_to_srgb,
    oklab_to_linear_srgb,
)

OTTOSSON_METHODS = (
    "preserve_lightness",
    "project_to_L0.5",
    "project_to_cusp",
    "adaptive_L0_0.5",
    "adaptive_L0_cusp",
)
#: every gamut-mapping method, the default first (the order of the nodes' choice lists)
METHODS = ("adaptive_L0_0.5", "adaptive_L0_cusp", "preserve_lightness", "project_to_L0.5", "project_to_cusp",
           "css_chroma_reduction", "clip")
DEFAULT_METHOD = METHODS[0]

#: default linear-sRGB tolerance of the in-gamut test, per dtype: the float rounding of the Oklab ->
#: linear sRGB conversion (measured on sRGB colours on the cube's surface: <= 5e-15 in float64,
#: <= 2.5e-6 in float32).  Colours within it are left alone, never gamut-mapped: next to the primaries
#: (blue above all) the line towards L0 leaves the gamut before it reaches the colour, so mapping
#: a colour that is outside by rounding alone would move it far (0.19 in sRGB at pure blue).
GAMUT_EPS = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}

# the six cube edges primary -> secondary, in increasing Oklab hue: R, Y, G, C, B, M, (R)
_CORNERS = np.array(
    [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float64
)


def _eps(dtype) -> float:
    return GAMUT_EPS.get(dtype, GAMUT_EPS[torch.float32])


def in_gamut_linear(rgb: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Boolean ``[...]``: all linear-sRGB channels within [-eps, 1 + eps] (default: GAMUT_EPS of the dtype)."""
    eps = _eps(rgb.dtype) if eps is None else eps
    return ((rgb >= -eps) & (rgb <= 1.0 + eps)).all(dim=-1)


def in_gamut(lab: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Boolean ``[...]``: the Oklab colours lie inside the sRGB gamut."""
    return in_gamut_linear(oklab_to_linear_srgb(lab), eps)


_CUSP_BINS = 1024
_CUSP_LUT = {}


def _cusp_table() -> np.ndarray:
    """``[_CUSP_BINS, 2]`` float64 (L_cusp, C_cusp) on a uniform hue grid -pi..pi (endpoint excluded).

    Built once from dense samples of the six primary-secondary cube edges: for each hue, among the
    edge segments whose hue range contains it (hue is not monotonic along the cyan-blue edge, so
    there can be several), the point with the largest chroma.
    """
    if "table" in _CUSP_LUT:
        return _CUSP_LUT["table"]
    n = 1024
    s = np.linspace(0.0, 1.0, n + 1)[:, None]
    grid = -math.pi + 2 * math.pi * np.arange(_CUSP_BINS) / _CUSP_BINS
    best_c = np.full(_CUSP_BINS, -1.0)
    best_l = np.zeros(_CUSP_BINS)
    for k in range(6):
        p = _CORNERS[k] + (_CORNERS[(k + 1) % 6] - _CORNERS[k]) * s
        lab = linear_srgb_to_oklab(p)
        h = np.arctan2(lab[:, 2], lab[:, 1])
        c = np.hypot(lab[:, 1], lab[:, 2])
        h0, h1 = h[:-1], h[:-1] + np.remainder(h[1:] - h[:-1] + math.pi, 2 * math.pi) - math.pi
        # offset of every grid hue from each segment start, wrapped; fraction along the segment
        d = np.remainder(grid[None, :] - h0[:, None] + math.pi, 2 * math.pi) - math.pi
        span = (h1 - h0)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            f = d / span
        ok = (f >= 0) & (f <= 1) & (span != 0)
        ci = c[:-1, None] + f * (c[1:] - c[:-1])[:, None]
        li = lab[:-1, 0, None] + f * (lab[1:, 0] - lab[:-1, 0])[:, None]
        ci = np.where(ok, ci, -1.0)
        j = ci.argmax(axis=0)
        cbest = ci[j, np.arange(_CUSP_BINS)]
        better = cbest > best_c
        best_c = np.where(better, cbest, best_c)
        best_l = np.where(better, li[j, np.arange(_CUSP_BINS)], best_l)
    table = np.stack([best_l, best_c], axis=-1)
    _CUSP_LUT["table"] = table
    return table


def find_cusp(a_: torch.Tensor, b_: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cusp (L_cusp, C_cusp) of the sRGB gamut in Oklab for hue vectors (a_, b_).

    The cusp is the most chromatic sRGB colour of a hue.  It lies on one of the six cube edges from
    a primary to a secondary; we tabulate it once on 1024 hues (see :func:`_cusp_table`) and
    interpolate linearly (error up to ~1e-3 in L next to the kinks at the primaries, far less elsewhere; the cusp
    only steers L0, so this never affects gamut membership or hue).
    """
    key = (a_.dtype, a_.device)
    lut = _CUSP_LUT.get(key)
    if lut is None:
        lut = torch.as_tensor(_cusp_table(), dtype=a_.dtype, device=a_.device)
        _CUSP_LUT[key] = lut
    pos = (torch.atan2(b_, a_) + math.pi) * (_CUSP_BINS / (2 * math.pi))
    i0 = torch.floor(pos)
    w = (pos - i0)[..., None]
    i0 = i0.long() % _CUSP_BINS
    i1 = (i0 + 1) % _CUSP_BINS
    v = lut[i0] * (1 - w) + lut[i1] * w
    return v[..., 0], v[..., 1]


def _line_exit(L0, L1, C1, a_, b_):
    """Largest t in [0, 1] with (L0 + t (L1 - L0), t C1) in gamut; t = 0 is the grey point.

    Along the line the cube-root cone responses LMS' are linear in t, so each linear-sRGB channel is
    a cubic polynomial in t.  We build those cubics once, bracket the first exit from [0, 1]³ with
    a few bisection steps on the margin ``g(t) = min_c min(rgb_c(t), 1 - rgb_c(t))`` and finish with
    the Illinois (modified regula falsi) method, always keeping g(lo) >= 0, and return ``lo``.
    """
    dtype, device = L1.dtype, L1.device
    m2inv = torch.as_tensor(M2_INV, dtype=dtype, device=device)
    m1inv = torch.as_tensor(M1_INV, dtype=dtype, device=device)
    p = L0[:, None] * m2inv[:, 0]  # LMS' at t = 0 (grey, a = b = 0)
    q = torch.stack([L1 - L0, C1 * a_, C1 * b_], dim=-1) @ m2inv.T
    k0 = (p * p * p) @ m1inv.T
    k1 = (3.0 * p * p * q) @ m1inv.T
    k2 = (3.0 * p * q * q) @ m1inv.T
    k3 = (q * q * q) @ m1inv.T

    def margin(t):
        tt = t[:, None]
        f = ((k3 * tt + k2) * tt + k1) * tt + k0
        return torch.minimum(f, 1.0 - f).amin(dim=-1)

    # bracket updates are arithmetic blends with 0/1 factors: comparisons + torch.where are slow
    # on the CPU, and this loop runs ~18 times over every out-of-gamut pixel
    lo = torch.zeros_like(L1)
    hi = torch.ones_like(L1)
    g_lo = margin(lo).clamp_min(0.0)
    g_hi = margin(hi)
    n_bisect, n_falsi = (8, 10) if dtype == torch.float64 else (6, 6)

    def accept(g):
        return 1.0 - _step(-g, 0.0)  # 1 where g >= 0

    def update(t, g, ok):
        nonlocal lo, hi, g_lo, g_hi
        nok = 1.0 - ok
        lo = lo + ok * (t - lo)
        g_lo = g_lo + ok * (g - g_lo)
        hi = hi + nok * (t - hi)
        g_hi = g_hi + nok * (g - g_hi)

    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        g = margin(mid)
        update(mid, g, accept(g))
    last_lo = torch.zeros_like(lo)  # 1 where lo moved last
    for _ in range(n_falsi):
        mid = 0.5 * (lo + hi)
        secant = lo + g_lo * (hi - lo) / (g_lo - g_hi)  # g_lo >= 0 > g_hi
        use_mid = 1.0 - _step(g_lo, 0.0)  # no progress possible from g_lo == 0
        t = secant + use_mid * (mid - secant)
        t = torch.minimum(torch.maximum(t, lo), hi)
        g = margin(t)
        ok = accept(g)
        # Illinois: halve the value kept at the end that did not move twice in a row
        g_hi = g_hi * (1.0 - 0.5 * ok * last_lo)
        g_lo = g_lo * (1.0 - 0.5 * (1.0 - ok) * (1.0 - last_lo))
        update(t, g, ok)
        last_lo = ok
    return lo


def _choose_L0(method: str, L, C, a_, b_, alpha: float):
    if method == "preserve_lightness":
        return L.clamp(0.0, 1.0)
    if method == "project_to_L0.5":
        return torch.full_like(L, 0.5)
    if method == "adaptive_L0_0.5":
        ld = L - 0.5
        e1 = 0.5 + ld.abs() + alpha * C
        return 0.5 * (1.0 + torch.sign(ld) * (e1 - torch.sqrt((e1 * e1 - 2.0 * ld.abs()).clamp_min(0))))
    lc, _cc = find_cusp(a_, b_)
    if method == "project_to_cusp":
        return lc
    if method == "adaptive_L0_cusp":
        ld = L - lc
        k = torch.where(ld > 0, 2.0 * (1.0 - lc), 2.0 * lc)
        e1 = 0.5 * k + ld.abs() + alpha * C / k
        return lc + 0.5 * torch.sign(ld) * (e1 - torch.sqrt((e1 * e1 - 2.0 * k * ld.abs()).clamp_min(0)))
    raise ValueError(f"unknown gamut mapping method {method!r}; expected one of {METHODS}")


def _ottosson(lab: torch.Tensor, method: str, alpha: float) -> torch.Tensor:
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    C = torch.hypot(a, b)
    tiny = C < 1e-12
    a_ = torch.where(tiny, torch.ones_like(a), a / torch.where(tiny, torch.ones_like(C), C))
    b_ = torch.where(tiny, torch.zeros_like(b), b / torch.where(tiny, torch.ones_like(C), C))
    L0 = _choose_L0(method, L, C, a_, b_, alpha).clamp(0.0, 1.0)
    t = _line_exit(L0, L, C, a_, b_)
    Ln = L0 + t * (L - L0)
    Cn = t * C
    return torch.stack([Ln, Cn * a_, Cn * b_], dim=-1)


def _css_chroma_reduction(lab: torch.Tensor, jnd: float = 0.02, epsilon: float = 1e-4) -> torch.Tensor:
    """CSS Color 4 binary-search gamut mapping (local MINDE), vectorised; returns clipped Oklab."""
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    C = torch.hypot(a, b)
    safe = torch.where(C > 0, C, torch.ones_like(C))
    a_, b_ = a / safe, b / safe

    def clip(cur):
        return linear_srgb_to_oklab(oklab_to_linear_srgb(cur).clamp(0.0, 1.0))

    def at(chroma):
        return torch.stack([L, chroma * a_, chroma * b_], dim=-1)

    result = clip(lab)
    done = (torch.linalg.vector_norm(result - lab, dim=-1) < jnd)
    lo = torch.zeros_like(C)
    hi = C.clone()
    lo_in = torch.ones_like(done)
    steps = int(math.ceil(math.log2(max(float(C.max()) if C.numel() else 1.0, epsilon) / epsilon))) + 2
    eps = _eps(lab.dtype)
    for _ in range(max(steps, 1)):
        active = (~done) & (hi - lo > epsilon)
        if not bool(active.any()):
            break
        mid = 0.5 * (lo + hi)
        cur = at(mid)
        inside = in_gamut(cur, eps)
        case_in = active & lo_in & inside
        clipped = clip(cur)
        e = torch.linalg.vector_norm(clipped - cur, dim=-1)
        rest = active & ~case_in
        close = rest & (e < jnd)
        finish = close & (jnd - e < epsilon)
        result = torch.where((rest)[..., None], clipped, result)
        done = done | finish
        lo = torch.where(case_in | (close & ~finish), mid, lo)
        lo_in = lo_in & ~(close & ~finish)
        hi = torch.where(rest & ~close, mid, hi)
    # pixels whose bisection ran out: clip of the last candidate (CSS returns `clipped`)
    return result


def gamut_map_oklab(lab, method: str = DEFAULT_METHOD, alpha: float = 0.05, eps: float | None = None):
    """Map Oklab colours into the sRGB gamut; in-gamut colours are returned unchanged.

    ``lab``: numpy or torch ``[..., 3]``.  Returns the same type.  L outside 0..1 maps to black or
    white for the Ottosson methods (L0 is clamped to 0..1).  ``eps``: linear-sRGB tolerance
    (default :data:`GAMUT_EPS` of the dtype; pass more for values rounded in a coarser dtype than
    the one computed in).  A colour whose linear-sRGB channels all lie within [-eps, 1 + eps] is in
    gamut to rounding: it is returned unchanged, not mapped with ``method`` (:func:`oklab_to_srgb_in_gamut`
    then clips it, moving it by at most ``eps`` in linear sRGB).
    """
    if method not in METHODS:
        raise ValueError(f"unknown gamut mapping method {method!r}; expected one of {', '.join(METHODS)}")
    was_numpy = not isinstance(lab, torch.Tensor)
    x = torch.as_tensor(np.asarray(lab)) if was_numpy else lab
    if not x.is_floating_point():
        x = x.float()
    if x.shape[-1] != 3:
        raise ValueError(f"gamut_map_oklab: expected [..., 3] Oklab values, got shape {tuple(x.shape)}")
    flat = x.reshape(-1, 3)
    lin = oklab_to_linear_srgb(flat)
    outside = ~in_gamut_linear(lin, eps)
    out = flat.clone()
    if bool(outside.any()):
        idx = outside.nonzero(as_tuple=True)[0]
        sub = flat[idx]
        if method == "clip":
            mapped = linear_srgb_to_oklab(oklab_to_linear_srgb(sub).clamp(0.0, 1.0))
        elif method == "css_chroma_reduction":
            mapped = _css_chroma_reduction(sub)
        else:
            mapped = _ottosson(sub, method, float(alpha))
        out[idx] = mapped
    out = out.reshape(x.shape)
    return out.numpy() if was_numpy else out


def oklab_to_srgb_in_gamut(lab, method: str = DEFAULT_METHOD, alpha: float = 0.05, eps: float | None = None):
    """Oklab -> sRGB 0..1 through :func:`gamut_map_oklab` (``eps`` as there; then clamped for float rounding)."""
    was_numpy = not isinstance(lab, torch.Tensor)
    mapped = gamut_map_oklab(torch.as_tensor(np.asarray(lab)) if was_numpy else lab, method, alpha, eps)
    srgb = linear_to_srgb(oklab_to_linear_srgb(mapped).clamp(0.0, 1.0)).clamp(0.0, 1.0)
    return srgb.numpy() if was_numpy else srgb


def linear_srgb_in_gamut(rgb, method: str = DEFAULT_METHOD, alpha: float = 0.05):
    """Linear sRGB (possibly out of 0..1) -> linear sRGB 0..1, mapped in Oklab with ``method``."""
    was_numpy = not isinstance(rgb, torch.Tensor)
    x = torch.as_tensor(np.asarray(rgb)) if was_numpy else rgb
    mapped = gamut_map_oklab(linear_srgb_to_oklab(x), method, alpha)
    out = oklab_to_linear_srgb(mapped).clamp(0.0, 1.0)
    # pixels that were already in gamut keep their exact input values
    keep = in_gamut_linear(x)
    out = torch.where(keep[..., None], x.clamp(0.0, 1.0), out)
    return out.numpy() if was_numpy else out

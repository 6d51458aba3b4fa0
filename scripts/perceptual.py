"""Perceptual colour adjustments in OkLCh or JzCzhz, mapped back into sRGB.

:func:`adjust_srgb` works on sRGB pixels ``[..., 3]`` (torch or numpy, 0..1) and applies, in this
order, in the chosen cylindrical space:

1. lightness (``lightness`` in -1..1): a power curve on normalised lightness ``Ln`` (Oklab L, or
   Jz / Jz(white)): ``Ln' = Ln ** (2 ** -lightness)``.  Black and white stay put; +1 lifts
   mid-grey (Ln 0.5) to 0.71, -1 lowers it to 0.25.
2. white-balance shift (``temperature``, ``tint`` in -1..1): an offset of the opponent axes that is
   proportional to normalised lightness (so black stays neutral):
   ``b += temperature · 0.06 · Ln`` (warmer = yellower) and ``a += tint · 0.06 · Ln``
   (+ = magenta, - = green), in Oklab units; in Jzazbz the offset is scaled by the chroma ratio
   ``k_z = Cz(red) / C_ok(red)`` at the reference white.
3. hue rotation (``hue_shift`` degrees).
4. chroma (multiplier ``chroma`` >= 0).
5. vibrance (-1..1): ``C' = C · (1 + vibrance · max(0, 1 - C / C_ref))`` with C_ref = 0.25 Oklab
   (≈ sRGB red's chroma; scaled by k_z in Jzazbz): dull colours change, saturated ones hardly.

The result goes back to Oklab and through :func:`.gamut.gamut_map_oklab` (Ottosson's methods by
default), so the output is always in [0, 1].  Pixels the adjustment leaves in gamut are not
touched by the gamut mapping.  Identity settings return the input (to float rounding).
JzCzhz uses absolute luminance: ``white_luminance`` cd/m² for sRGB white (default 203).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

from . import colour as ok
from . import gamut, jzazbz

SPACES = ("oklch", "jzczhz")
WB_SCALE = 0.06
VIBRANCE_C_REF = 0.25


def chroma_scale(space: str, white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE) -> float:
    """Chroma of sRGB red in ``space`` divided by its Oklab chroma (1 for OkLCh)."""
    if space == "oklch":
        return 1.0
    red = np.array([1.0, 0.0, 0.0])
    cz = float(np.hypot(*jzazbz.srgb_to_jzazbz(red, white_luminance)[1:]))
    c = float(np.hypot(*ok.srgb_to_oklab(red)[1:]))
    return cz / c


def _to_lab(lin: torch.Tensor, space: str, wl: float) -> Tuple[torch.Tensor, float]:
    """linear sRGB -> (Lab-like values, lightness of white)."""
    if space == "oklch":
        return ok.linear_srgb_to_oklab(lin), 1.0
    return jzazbz.linear_srgb_to_jzazbz(lin, wl), jzazbz.white_jz(wl)


def _from_lab(lab: torch.Tensor, space: str, wl: float) -> torch.Tensor:
    if space == "oklch":
        return ok.oklab_to_linear_srgb(lab)
    return jzazbz.jzazbz_to_linear_srgb(lab, wl)


def is_identity(lightness=0.0, chroma=1.0, hue_shift=0.0, vibrance=0.0, temperature=0.0, tint=0.0) -> bool:
    return lightness == 0 and chroma == 1 and hue_shift % 360 == 0 and vibrance == 0 and temperature == 0 and tint == 0


def adjust_srgb(
    rgb,
    space: str = "oklch",
    lightness: float = 0.0,
    chroma: float = 1.0,
    hue_shift: float = 0.0,
    vibrance: float = 0.0,
    temperature: float = 0.0,
    tint: float = 0.0,
    gamut_method: str = gamut.DEFAULT_METHOD,
    alpha: float = 0.05,
    white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Adjust sRGB pixels ``[..., 3]`` (0..1) perceptually; returns (sRGB in [0, 1], stats).

    ``stats``: ``out_of_gamut`` (fraction of pixels the adjustment pushed outside sRGB and the
    gamut mapping moved back).  Units and formulas: see the module docstring.
    """
    if space not in SPACES:
        raise ValueError(f"unknown colour space {space!r}; expected one of {SPACES}")
    if gamut_method not in gamut.METHODS:
        raise ValueError(f"unknown gamut mapping method {gamut_method!r}; expected one of {gamut.METHODS}")
    if not (chroma >= 0):
        raise ValueError(f"chroma must be >= 0, got {chroma}")
    was_numpy = not isinstance(rgb, torch.Tensor)
    x = torch.as_tensor(np.asarray(rgb)) if was_numpy else rgb
    x = ok.as_float(x)
    ok.check_channels(x, "adjust_srgb")
    lin = ok.srgb_to_linear(x.clamp(0.0, 1.0))
    if is_identity(lightness, chroma, hue_shift, vibrance, temperature, tint):
        out = x.clamp(0.0, 1.0)
        return (out.numpy() if was_numpy else out), {"out_of_gamut": 0.0}

    lab, white = _to_lab(lin, space, white_luminance)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    kz = chroma_scale(space, white_luminance)
    ln = (L / white).clamp_min(0.0)
    if lightness != 0:
        ln = ln.pow(2.0 ** (-float(lightness)))
        L = ln * white
    if temperature != 0 or tint != 0:
        b = b + float(temperature) * WB_SCALE * kz * ln
        a = a + float(tint) * WB_SCALE * kz * ln
    C = torch.hypot(a, b)
    h = torch.atan2(b, a) + math.radians(float(hue_shift))
    C = C * float(chroma)
    if vibrance != 0:
        C = C * (1.0 + float(vibrance) * (1.0 - C / (VIBRANCE_C_REF * kz)).clamp_min(0.0))
    C = C.clamp_min(0.0)
    lab = torch.stack([L, C * torch.cos(h), C * torch.sin(h)], dim=-1)

    lin_new = _from_lab(lab, space, white_luminance)
    outside = ~gamut.in_gamut_linear(lin_new)
    frac = float(outside.float().mean()) if outside.numel() else 0.0
    if space == "oklch":
        oklab = lab
    else:
        oklab = ok.linear_srgb_to_oklab(lin_new)
    out = gamut.oklab_to_srgb_in_gamut(oklab, gamut_method, alpha)
    return (out.numpy() if was_numpy else out), {"out_of_gamut": frac}


# --- channel split / join -------------------------------------------------------------------------
#: channel names per split space
CHANNELS = {"oklab": ("L", "a", "b"), "jzazbz": ("Jz", "az", "bz")}


def split_channels(rgb, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE):
    """sRGB ``[..., 3]`` -> three encoded channels ``[..., 3]`` (each in 0..1 for sRGB input).

    Encoding (fixed, so other nodes can edit a channel and :func:`join_channels` undo it):

    * ``"oklab"``: L -> L (0..1), a -> a + 0.5, b -> b + 0.5
      (sRGB colours: a + 0.5 in 0.27..0.78, b + 0.5 in 0.19..0.70).
    * ``"jzazbz"``: with W = Jz of sRGB white at ``white_luminance`` (0.2221 at 203 cd/m²),
      Jz -> Jz / W (white = 1), az -> 0.5 + 0.5 az / W, bz -> 0.5 + 0.5 bz / W
      (at 203 cd/m²: 0.25..0.79 and 0.08..0.80; still inside 0..1 down to 80 cd/m²).
    """
    x = ok.as_float(rgb)
    ok.check_channels(x, "split_channels")
    if space == "oklab":
        lab = ok.srgb_to_oklab(x)
        return lab + _offset(lab, (0.0, 0.5, 0.5))
    if space == "jzazbz":
        w = jzazbz.white_jz(white_luminance)
        jab = jzazbz.srgb_to_jzazbz(x, white_luminance)
        return jab * _scale(jab, (1.0 / w, 0.5 / w, 0.5 / w)) + _offset(jab, (0.0, 0.5, 0.5))
    raise ValueError(f"unknown split space {space!r}; expected one of {tuple(CHANNELS)}")


def decode_channels(enc, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE):
    """Inverse of the encoding of :func:`split_channels`: encoded ``[..., 3]`` -> Oklab or Jzazbz."""
    e = ok.as_float(enc)
    if space == "oklab":
        return e - _offset(e, (0.0, 0.5, 0.5))
    if space == "jzazbz":
        w = jzazbz.white_jz(white_luminance)
        return (e - _offset(e, (0.0, 0.5, 0.5))) * _scale(e, (w, 2.0 * w, 2.0 * w))
    raise ValueError(f"unknown split space {space!r}; expected one of {tuple(CHANNELS)}")


#: linear-sRGB tolerance of :func:`join_channels`' in-gamut test, by the dtype it computes in: the
#: channels went through a float32 IMAGE, and its rounding puts sRGB colours on the cube's surface up
#: to 3e-7 outside 0..1 computed in float64 (1.4e-6 from Oklab, 1.4e-5 from Jzazbz in float32; measured).
#: Colours within it are clipped to 0..1, not gamut-mapped (see :func:`.gamut.gamut_map_oklab`), nor counted.
JOIN_EPS = {torch.float64: 1e-6, torch.float32: 5e-5}


def join_channels(enc, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE,
                  gamut_method: str = gamut.DEFAULT_METHOD, alpha: float = 0.05):
    """Encoded channels ``[..., 3]`` (see :func:`split_channels`) -> sRGB in [0, 1], gamut-mapped.

    Returns (sRGB, fraction of pixels that were out of gamut by more than :data:`JOIN_EPS` and were
    mapped back).
    """
    lab = decode_channels(enc, space, white_luminance)
    if space == "jzazbz":
        lin = jzazbz.jzazbz_to_linear_srgb(lab, white_luminance)
        lab = ok.linear_srgb_to_oklab(lin)
    else:
        lin = ok.oklab_to_linear_srgb(lab)
    t = lin if isinstance(lin, torch.Tensor) else torch.as_tensor(lin)
    eps = JOIN_EPS.get(t.dtype, JOIN_EPS[torch.float32])
    frac = float((~gamut.in_gamut_linear(t, eps)).float().mean()) if t.numel() else 0.0
    return gamut.oklab_to_srgb_in_gamut(lab, gamut_method, alpha, eps), frac


def _offset(like, values):
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


_scale = _offset


# --- image batches ------------------------------------------------------------------------------------
#: pixels per processing chunk (float64: 1.5 MB per [N, 3] tensor, so temporaries stay in cache)
CHUNK = 1 << 16
#: the float32 fast path's bound against the float64 reference: max |difference| of the outputs
#: (sRGB 0..1, or the encoded channels of :func:`split_channels`).  Gamut mapping is not reliable in
#: float32 (its cusp search rounds differently: up to 3e-3 for primaries pushed just outside the gamut),
#: so every pixel whose float32 result lies within :data:`EDGE` of the sRGB cube's surface -- where
#: mapped pixels land -- is computed again in float64.
#: The rest measured <= 4e-5 on photographs with saturated patches
FLOAT32_TOLERANCE = 1e-4
#: distance from 0 or 1 (output units) within which a float32 result is recomputed in float64
EDGE = 1e-4
#: pixels of the sample the float32 path is timed and checked on (evenly spread over the image)
SAMPLE = 1 << 14
#: images with fewer pixels than this run in float64 without a check (it would cost more than it saves)
CHECK_MIN_PIXELS = 8 * CHUNK
PRECISIONS = ("auto", "fp64", "fp32")
#: gamut mappings that stay in float64 under ``auto``: project_to_L0.5 differed by 1.3e-3 in float32
#: even with the surface pixels redone (measured; the other methods within FLOAT32_TOLERANCE)
FLOAT64_GAMUT_METHODS = ("project_to_L0.5",)


def _gamut_precision(precision: str, gamut_method: str) -> Tuple[str, str]:
    """``(precision to use, note)``: ``auto`` becomes ``fp64`` for a method in FLOAT64_GAMUT_METHODS."""
    if (precision or "auto").lower() == "auto" and gamut_method in FLOAT64_GAMUT_METHODS:
        return "fp64", f"float64 ({gamut_method} differs by more than {FLOAT32_TOLERANCE:.0e} in float32)"
    return precision, ""


def _timed(fn, x, device):
    t0 = time.perf_counter()
    y = fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return y, time.perf_counter() - t0


#: per (kind of work, device, torch threads): float32's speed relative to float64 where it was measured
#: slower in this process -- later images skip the check and run float64 (the speed is a property of the
#: work and the machine; accuracy is checked again on every image where float32 is used)
_SLOWER: Dict[tuple, float] = {}


def choose_dtype(flat: torch.Tensor, fn, device, precision: str = "auto", key: tuple = ()):
    """The dtype :func:`map_pixels` computes in, and why: ``(dtype, reason)``.

    ``auto``: float32 when, on :data:`SAMPLE` pixels spread over the image, it is at least 5 % faster
    than float64 (alternating timed calls, the fastest kept) and its output is within
    :data:`FLOAT32_TOLERANCE` of float64's everywhere on the sample; float64 otherwise, and for
    images too small for the check to pay off, and for work (``key``) whose float32 path was measured
    slower earlier in this process.  ``fp64`` / ``fp32``: the user's choice.  ``fn`` must be free of
    side effects (it also runs on the sample)."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return (torch.float64 if precision == "fp64" else torch.float32), f"{precision} requested"
    n = flat.shape[0]
    if n < CHECK_MIN_PIXELS:
        return torch.float64, "float64 (the image is too small for a float32 check to pay off)"
    memo = (key, str(device), torch.get_num_threads()) if key else None
    if memo in _SLOWER:
        return torch.float64, (f"float64 (float32 ran at {_SLOWER[memo]:.2f}x float64's speed on an earlier "
                               f"image in this process)")
    sample = flat[torch.linspace(0, n - 1, SAMPLE).long()]
    best, outs = {}, {}
    for _round in range(2):
        for dt in (torch.float64, torch.float32):
            y, t = _timed(lambda x: _run_chunk(fn, fn, x), sample.to(device=device, dtype=dt), device)
            best[dt] = min(best.get(dt, float("inf")), t)
            outs[dt] = y
    ref, fast = outs[torch.float64].to("cpu", torch.float64), outs[torch.float32].to("cpu", torch.float64)
    same_finite = bool(torch.equal(torch.isfinite(ref), torch.isfinite(fast)))
    diff = float((fast - ref).abs().nan_to_num(0.0, 0.0, 0.0).max()) if same_finite else float("inf")
    gain = best[torch.float64] / max(best[torch.float32], 1e-12)
    where = f"on {SAMPLE} pixels of the image: float32 {gain:.2f}x float64's speed, max |diff| {diff:.1e}"
    if diff <= FLOAT32_TOLERANCE and gain >= 1.05:
        return torch.float32, f"float32 ({where} <= {FLOAT32_TOLERANCE:.0e})"
    why = "outside the tolerance" if diff > FLOAT32_TOLERANCE else "not faster"
    if gain < 1.05 and memo is not None:
        _SLOWER[memo] = gain
    return torch.float64, f"float64 (float32 {why}: {where}; tolerance {FLOAT32_TOLERANCE:.0e})"


def _run_chunk(fn, pure, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)``; in float32, the pixels whose result lies within :data:`EDGE` of 0 or 1 (gamut-mapped
    ones among them) are computed again in float64 by ``pure``."""
    y = fn(x)
    if x.dtype == torch.float32:
        edge = ((y <= EDGE) | (y >= 1.0 - EDGE) | ~torch.isfinite(y)).any(-1)
        if bool(edge.any()):
            y[edge] = pure(x[edge].to(torch.float64)).to(y.dtype)
    return y


def map_pixels(rgb: torch.Tensor, fn, device=None, precision: str = "auto", pure=None, key: tuple = ()):
    """Apply ``fn(pixels [N,3] on device) -> [N,3]`` over a ``[..., 3]`` CPU tensor in chunks of
    :data:`CHUNK` pixels; returns ``(float32 result on the CPU, reason for the precision)``.

    The chunks compute in float64, or in float32 where :func:`choose_dtype` measures it faster and
    within :data:`FLOAT32_TOLERANCE`, with the pixels on the gamut's surface redone in float64
    (``pure``: a side-effect-free ``fn`` for the check and those pixels; default ``fn``).  On the CPU the chunks run with one torch thread (see :func:`.colour.pixelwise` for why)."""
    device = torch.device(device or "cpu")
    flat = rgb.reshape(-1, rgb.shape[-1])
    out = torch.empty(flat.shape[0], 3, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)
        dtype, reason = choose_dtype(flat, pure or fn, device, precision, key)
        for start in range(0, flat.shape[0], CHUNK):
            chunk = flat[start:start + CHUNK].to(device=device, dtype=dtype)
            out[start:start + CHUNK] = _run_chunk(fn, pure or fn, chunk).to("cpu", torch.float32)
    finally:
        torch.set_num_threads(threads)
    return out.reshape(*rgb.shape[:-1], 3), reason


def _rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(*image.shape[:-1], 3) if image.shape[-1] == 1 else image


def _space_text(space: str, white_luminance: float) -> str:
    return space + (f" (white {white_luminance:g} cd/m²)" if space in ("jzczhz", "jzazbz") else "")


@dataclass
class AdjustReport:
    """Settings of :func:`adjust_image` and the share of pixels that were gamut-mapped back."""

    space: str
    adjustments: str
    identity: bool
    gamut_mapping: str
    mapped: float
    precision: str = ""

    def info_fields(self) -> dict:
        return {"space": self.space, "adjustments": self.adjustments, "identity": self.identity,
                "gamut mapping": self.gamut_mapping, "pixels mapped back into sRGB": f"{100.0 * self.mapped:.2f} %",
                "precision": self.precision or None}


def adjust_image(image: torch.Tensor, space: str = "oklch", lightness: float = 0.0, chroma: float = 1.0,
                 hue_shift: float = 0.0, vibrance: float = 0.0, temperature: float = 0.0, tint: float = 0.0,
                 gamut_method: str = gamut.DEFAULT_METHOD, alpha: float = 0.05,
                 white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE, device=None, precision: str = "auto"):
    """:func:`adjust_srgb` over an image batch ``[B,H,W,C]`` (grey is taken as RGB) in chunks on ``device``
    (float64, or float32 within :data:`FLOAT32_TOLERANCE`: :func:`choose_dtype`).  Returns
    ``(sRGB [B,H,W,3], AdjustReport)``."""
    if gamut_method not in gamut.METHODS:
        raise ValueError(f"gamut_mapping: unknown method {gamut_method!r}; choose one of {gamut.METHODS}")
    if space not in SPACES:
        raise ValueError(f"space: unknown colour space {space!r}; choose one of {SPACES}")
    stats = {"out": 0.0, "n": 0}

    def run(px):
        return adjust_srgb(px, space, lightness, chroma, hue_shift, vibrance, temperature, tint,
                           gamut_method, alpha, white_luminance)

    def fn(px):
        out, st = run(px)
        stats["out"] += st["out_of_gamut"] * px.shape[0]
        stats["n"] += px.shape[0]
        return out

    precision, note = _gamut_precision(precision, gamut_method)
    out, why = map_pixels(_rgb(image), fn, device, precision, pure=lambda px: run(px)[0],
                          key=("adjust", space, gamut_method))
    return out, AdjustReport(
        space=_space_text(space, white_luminance),
        adjustments=f"lightness {lightness:+g}, chroma x{chroma:g}, hue {hue_shift:+g} deg, vibrance {vibrance:+g}, "
                    f"temperature {temperature:+g}, tint {tint:+g}",
        identity=is_identity(lightness, chroma, hue_shift, vibrance, temperature, tint),
        gamut_mapping=gamut_method + (f" (alpha {alpha:g})" if gamut_method.startswith("adaptive") else ""),
        mapped=stats["out"] / max(stats["n"], 1), precision=note or why)


@dataclass
class SplitReport:
    """The encoding of :func:`split_image` and the encoded range of each channel."""

    space: str
    encoding: str
    ranges: Dict[str, Tuple[float, float]]
    precision: str = ""

    def info_fields(self) -> dict:
        return {"space": self.space, "outputs": ", ".join(self.ranges), "encoding": self.encoding,
                "encoded ranges": "; ".join(f"{n} {lo:.4f}..{hi:.4f}" for n, (lo, hi) in self.ranges.items()),
                "precision": self.precision or None}


def split_image(image: torch.Tensor, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE,
                device=None, precision: str = "auto"):
    """An image batch ``[B,H,W,C]`` (grey taken as RGB) -> three grey RGB batches holding the encoded
    channels of :func:`split_channels` (clipped to 0..1).  Returns ``((L, a, b), SplitReport)``."""
    if space not in CHANNELS:
        raise ValueError(f"space: unknown space {space!r}; choose one of {tuple(CHANNELS)}")
    enc, why = map_pixels(_rgb(image), lambda px: split_channels(px, space, white_luminance), device, precision,
                          key=("split", space))
    outs, ranges = [], {}
    for name, i in zip(CHANNELS[space], range(3)):
        ch = enc[..., i:i + 1]
        ranges[name] = (float(ch.min()), float(ch.max()))
        outs.append(ch.clamp(0.0, 1.0).expand(*ch.shape[:-1], 3).contiguous())
    if space == "oklab":
        encoding = "L, a + 0.5, b + 0.5"
    else:
        w = jzazbz.white_jz(white_luminance)
        encoding = f"Jz/W, 0.5 + 0.5 az/W, 0.5 + 0.5 bz/W with W = {w:.5f} (white at {white_luminance:g} cd/m²)"
    return tuple(outs), SplitReport(space, encoding, ranges, why)


@dataclass
class JoinReport:
    space: str
    gamut_mapping: str
    mapped: float
    precision: str = ""

    def info_fields(self) -> dict:
        return {"space": self.space, "gamut mapping": self.gamut_mapping,
                "pixels mapped back into sRGB": f"{100.0 * self.mapped:.2f} %", "precision": self.precision or None}


def join_images(lightness: torch.Tensor, a, b, space: str = "oklab",
                white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE, gamut_method: str = gamut.DEFAULT_METHOD,
                alpha: float = 0.05, device=None, precision: str = "auto"):
    """Three channel images (from :func:`split_image`, possibly edited; colour images are averaged to
    grey, alpha ignored) -> sRGB ``[B,H,W,3]``, gamut-mapped.  A batch of one is used for every image
    of the others.  ``a`` and ``b`` are checked IMAGEs or raw inputs.  Returns ``(sRGB, JoinReport)``."""
    from .batch import check_image, split_alpha

    if space not in CHANNELS:
        raise ValueError(f"space: unknown space {space!r}; choose one of {tuple(CHANNELS)}")
    if gamut_method not in gamut.METHODS:
        raise ValueError(f"gamut_mapping: unknown method {gamut_method!r}; choose one of {gamut.METHODS}")
    chans = [lightness.mean(dim=-1)] + [split_alpha(check_image(x, n))[0].mean(dim=-1) for x, n in ((a, "a"), (b, "b"))]
    shapes = [tuple(c.shape[1:]) for c in chans]
    if len(set(shapes)) != 1:
        raise ValueError(f"lightness, a and b must have the same height and width, got {shapes} (H, W)")
    batch = max(c.shape[0] for c in chans)
    for n, c in zip(("lightness", "a", "b"), chans):
        if c.shape[0] not in (1, batch):
            raise ValueError(f"{n}: batch size {c.shape[0]} does not match the others ({batch})")
    enc = torch.stack([c.expand(batch, *c.shape[1:]) for c in chans], dim=-1)
    stats = {"out": 0.0, "n": 0}

    def run(px):
        return join_channels(px, space, white_luminance, gamut_method, alpha)

    def fn(px):
        out, frac = run(px)
        stats["out"] += frac * px.shape[0]
        stats["n"] += px.shape[0]
        return out

    precision, note = _gamut_precision(precision, gamut_method)
    out, why = map_pixels(enc, fn, device, precision, pure=lambda px: run(px)[0], key=("join", space, gamut_method))
    return out, JoinReport(_space_text(space, white_luminance), gamut_method, stats["out"] / max(stats["n"], 1),
                           note or why)

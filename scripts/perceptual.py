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


def join_channels(enc, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE,
                  gamut_method: str = gamut.DEFAULT_METHOD, alpha: float = 0.05):
    """Encoded channels ``[..., 3]`` (see :func:`split_channels`) -> sRGB in [0, 1], gamut-mapped.

    Returns (sRGB, fraction of pixels that were out of gamut and were mapped back).
    """
    lab = decode_channels(enc, space, white_luminance)
    if space == "jzazbz":
        lin = jzazbz.jzazbz_to_linear_srgb(lab, white_luminance)
        lab = ok.linear_srgb_to_oklab(lin)
    else:
        lin = ok.oklab_to_linear_srgb(lab)
    t = lin if isinstance(lin, torch.Tensor) else torch.as_tensor(lin)
    # count only real excursions, not float32 rounding of channels that went through an IMAGE
    frac = float((~gamut.in_gamut_linear(t, 1e-5)).float().mean()) if t.numel() else 0.0
    return gamut.oklab_to_srgb_in_gamut(lab, gamut_method, alpha), frac


def _offset(like, values):
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=like.dtype)


_scale = _offset


# --- image batches ------------------------------------------------------------------------------------
#: pixels per processing chunk (float64: 1.5 MB per [N, 3] tensor, so temporaries stay in cache)
CHUNK = 1 << 16


def map_pixels(rgb: torch.Tensor, fn, device=None) -> torch.Tensor:
    """Apply ``fn(pixels [N,3] float64 on device) -> [N,3]`` over a ``[..., 3]`` CPU tensor in chunks of
    :data:`CHUNK` pixels; float32 result on the CPU.  On the CPU the chunks run with one torch
    thread (see :func:`.colour.pixelwise` for why)."""
    device = torch.device(device or "cpu")
    flat = rgb.reshape(-1, rgb.shape[-1])
    out = torch.empty(flat.shape[0], 3, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(1)
        for start in range(0, flat.shape[0], CHUNK):
            chunk = flat[start:start + CHUNK].to(device=device, dtype=torch.float64)
            out[start:start + CHUNK] = fn(chunk).to("cpu", torch.float32)
    finally:
        torch.set_num_threads(threads)
    return out.reshape(*rgb.shape[:-1], 3)


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

    def info_fields(self) -> dict:
        return {"space": self.space, "adjustments": self.adjustments, "identity": self.identity,
                "gamut mapping": self.gamut_mapping, "pixels mapped back into sRGB": f"{100.0 * self.mapped:.2f} %"}


def adjust_image(image: torch.Tensor, space: str = "oklch", lightness: float = 0.0, chroma: float = 1.0,
                 hue_shift: float = 0.0, vibrance: float = 0.0, temperature: float = 0.0, tint: float = 0.0,
                 gamut_method: str = gamut.DEFAULT_METHOD, alpha: float = 0.05,
                 white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE, device=None):
    """:func:`adjust_srgb` over an image batch ``[B,H,W,C]`` (grey is taken as RGB) in float64 chunks on
    ``device``.  Returns ``(sRGB [B,H,W,3], AdjustReport)``."""
    if gamut_method not in gamut.METHODS:
        raise ValueError(f"gamut_mapping: unknown method {gamut_method!r}; choose one of {gamut.METHODS}")
    if space not in SPACES:
        raise ValueError(f"space: unknown colour space {space!r}; choose one of {SPACES}")
    stats = {"out": 0.0, "n": 0}

    def fn(px):
        out, st = adjust_srgb(px, space, lightness, chroma, hue_shift, vibrance, temperature, tint,
                              gamut_method, alpha, white_luminance)
        stats["out"] += st["out_of_gamut"] * px.shape[0]
        stats["n"] += px.shape[0]
        return out

    out = map_pixels(_rgb(image), fn, device)
    return out, AdjustReport(
        space=_space_text(space, white_luminance),
        adjustments=f"lightness {lightness:+g}, chroma x{chroma:g}, hue {hue_shift:+g} deg, vibrance {vibrance:+g}, "
                    f"temperature {temperature:+g}, tint {tint:+g}",
        identity=is_identity(lightness, chroma, hue_shift, vibrance, temperature, tint),
        gamut_mapping=gamut_method + (f" (alpha {alpha:g})" if gamut_method.startswith("adaptive") else ""),
        mapped=stats["out"] / max(stats["n"], 1))


@dataclass
class SplitReport:
    """The encoding of :func:`split_image` and the encoded range of each channel."""

    space: str
    encoding: str
    ranges: Dict[str, Tuple[float, float]]

    def info_fields(self) -> dict:
        return {"space": self.space, "outputs": ", ".join(self.ranges), "encoding": self.encoding,
                "encoded ranges": "; ".join(f"{n} {lo:.4f}..{hi:.4f}" for n, (lo, hi) in self.ranges.items())}


def split_image(image: torch.Tensor, space: str = "oklab", white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE,
                device=None):
    """An image batch ``[B,H,W,C]`` (grey taken as RGB) -> three grey RGB batches holding the encoded
    channels of :func:`split_channels` (clipped to 0..1).  Returns ``((L, a, b), SplitReport)``."""
    if space not in CHANNELS:
        raise ValueError(f"space: unknown space {space!r}; choose one of {tuple(CHANNELS)}")
    enc = map_pixels(_rgb(image), lambda px: split_channels(px, space, white_luminance), device)
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
    return tuple(outs), SplitReport(space, encoding, ranges)


@dataclass
class JoinReport:
    space: str
    gamut_mapping: str
    mapped: float

    def info_fields(self) -> dict:
        return {"space": self.space, "gamut mapping": self.gamut_mapping,
                "pixels mapped back into sRGB": f"{100.0 * self.mapped:.2f} %"}


def join_images(lightness: torch.Tensor, a, b, space: str = "oklab",
                white_luminance: float = jzazbz.DEFAULT_WHITE_LUMINANCE, gamut_method: str = gamut.DEFAULT_METHOD,
                alpha: float = 0.05, device=None):
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

    def fn(px):
        out, frac = join_channels(px, space, white_luminance, gamut_method, alpha)
        stats["out"] += frac * px.shape[0]
        stats["n"] += px.shape[0]
        return out

    out = map_pixels(enc, fn, device)
    return out, JoinReport(_space_text(space, white_luminance), gamut_method, stats["out"] / max(stats["n"], 1))

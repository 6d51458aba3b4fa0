"""Colour nodes: perceptual adjustments in OkLCh / JzCzhz with gamut mapping, channel split / join.

The maths lives in ``scripts/colour.py``, ``scripts/jzazbz.py``, ``scripts/gamut.py`` and
``scripts/perceptual.py``; these wrappers validate IMAGEs, handle alpha, grey and batches, pick the
device, and process the pixels in chunks (float64 internally, so round trips stay below 1e-6).
"""
from __future__ import annotations

import torch

from ._common import (
    resolve_device,
    CATEGORY_ROOT,
    DEVICE_INPUT,
    check_image,
    choice_input,
    float_input,
    format_info,
    image_input,
    merge_alpha,
    split_alpha,
    timed,
)

CATEGORY = f"{CATEGORY_ROOT}/Colour"

GAMUT_METHODS = [
    "adaptive_L0_0.5",
    "adaptive_L0_cusp",
    "preserve_lightness",
    "project_to_L0.5",
    "project_to_cusp",
    "css_chroma_reduction",
    "clip",
]
GAMUT_TOOLTIP = (
    "How colours pushed outside sRGB are brought back. Ottosson's methods keep the hue exactly and "
    "move the colour towards a grey point L0: preserve_lightness (L0 = L, only chroma drops), "
    "project_to_L0.5, project_to_cusp (L0 = lightness of the most saturated colour of that hue), "
    "adaptive_L0_0.5 / adaptive_L0_cusp (L0 slides from L towards 0.5 / the cusp the further out "
    "the colour is; a good default). css_chroma_reduction: CSS Color 4 chroma bisection (hue within "
    "a just-noticeable difference). clip: per-channel clipping (shifts hue; for comparison)."
)
WHITE_LUMINANCE_INPUT = float_input(
    203.0, 1.0, 10000.0, 1.0,
    "Jzazbz only: luminance of sRGB white in cd/m² (Jzazbz is absolute). 203 is the HDR reference "
    "white of ITU-R BT.2408; ~80-100 for an SDR monitor.",
)
ALPHA_INPUT = float_input(
    0.05, 0.001, 1.0, 0.001,
    "Adaptive gamut mapping only: Ottosson's alpha; larger values move L0 towards 0.5 / the cusp "
    "sooner as chroma grows.",
)

#: pixels per processing chunk (float64: 1.5 MB per [N, 3] tensor, so temporaries stay in cache)
CHUNK = 1 << 16


def _per_pixel(rgb: torch.Tensor, fn, device) -> torch.Tensor:
    """Apply ``fn(pixels[N,3] float64) -> [N,3]`` over [B,H,W,3] in chunks on ``device``."""
    flat = rgb.reshape(-1, rgb.shape[-1])
    out = torch.empty(flat.shape[0], 3, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            # small chunks: OpenMP hand-offs cost more than they gain (see scripts.colour.pixelwise)
            torch.set_num_threads(1)
        for start in range(0, flat.shape[0], CHUNK):
            chunk = flat[start:start + CHUNK].to(device=device, dtype=torch.float64)
            out[start:start + CHUNK] = fn(chunk).to("cpu", torch.float32)
    finally:
        torch.set_num_threads(threads)
    return out.reshape(*rgb.shape[:-1], 3)


def _as_rgb(image: torch.Tensor):
    """IMAGE -> (RGB [B,H,W,3], alpha or None, note)."""
    rgb, alpha = split_alpha(image)
    note = "RGB"
    if rgb.shape[-1] == 1:
        rgb = rgb.expand(*rgb.shape[:-1], 3)
        note = "grey input expanded to RGB"
    elif alpha is not None:
        note = "RGBA (alpha kept unchanged)"
    return rgb, alpha, note


class RestoreKitPerceptualAdjust:
    """Lightness, chroma, hue, vibrance and white balance in OkLCh or JzCzhz, gamut-mapped to sRGB."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "space": choice_input(
                    ["oklch", "jzczhz"],
                    "Where the adjustments happen: OkLCh (Ottosson 2020, display-referred) or JzCzhz "
                    "(Safdar et al. 2017, absolute luminance, see white_luminance).",
                ),
                "lightness": float_input(
                    0.0, -1.0, 1.0, 0.01,
                    "Lightness curve on L (white = 1): L' = L^(2^-lightness). Black and white stay; "
                    "+1 lifts mid-grey 0.5 to 0.71, -1 lowers it to 0.25.",
                ),
                "chroma": float_input(1.0, 0.0, 3.0, 0.01, "Chroma multiplier (0 = grey, 1 = unchanged)."),
                "hue_shift": float_input(0.0, -180.0, 180.0, 0.5, "Hue rotation in degrees."),
                "vibrance": float_input(
                    0.0, -1.0, 1.0, 0.01,
                    "Chroma change weighted towards dull colours: C' = C(1 + v·max(0, 1 - C/0.25)) "
                    "(Oklab units; saturated colours hardly move).",
                ),
                "temperature": float_input(
                    0.0, -1.0, 1.0, 0.01,
                    "White-balance shift along blue (-) / yellow (+), proportional to lightness so "
                    "black stays neutral (0.06 Oklab b at white for 1.0).",
                ),
                "tint": float_input(
                    0.0, -1.0, 1.0, 0.01,
                    "White-balance shift along green (-) / magenta (+), proportional to lightness.",
                ),
                "gamut_mapping": choice_input(GAMUT_METHODS, GAMUT_TOOLTIP),
                "white_luminance": WHITE_LUMINANCE_INPUT,
                "adaptive_alpha": ALPHA_INPUT,
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "adjust"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Perceptual colour adjustments in OkLCh or JzCzhz, then Ottosson's sRGB gamut mapping so the "
        "result stays in 0..1 with the hue kept."
    )

    def adjust(self, image, space="oklch", lightness=0.0, chroma=1.0, hue_shift=0.0, vibrance=0.0,
               temperature=0.0, tint=0.0, gamut_mapping="adaptive_L0_0.5", white_luminance=203.0,
               adaptive_alpha=0.05, device="auto"):
        from ..scripts import perceptual

        image = check_image(image)
        if gamut_mapping not in GAMUT_METHODS:
            raise ValueError(f"gamut_mapping: unknown method {gamut_mapping!r}; choose one of {GAMUT_METHODS}")
        if space not in perceptual.SPACES:
            raise ValueError(f"space: unknown colour space {space!r}; choose one of {perceptual.SPACES}")
        rgb, alpha, note = _as_rgb(image)
        dev, dev_note = resolve_device(device)
        stats = {"out": 0.0, "n": 0}

        def fn(px):
            out, st = perceptual.adjust_srgb(
                px, space, lightness, chroma, hue_shift, vibrance, temperature, tint,
                gamut_mapping, adaptive_alpha, white_luminance,
            )
            stats["out"] += st["out_of_gamut"] * px.shape[0]
            stats["n"] += px.shape[0]
            return out

        with timed() as t:
            out = _per_pixel(rgb, fn, dev)
        out = merge_alpha(out.clamp(0.0, 1.0), alpha)
        frac = stats["out"] / max(stats["n"], 1)
        info = format_info(
            "Perceptual Colour Adjust",
            {
                "space": space + (f" (white {white_luminance:g} cd/m²)" if space == "jzczhz" else ""),
                "adjustments": f"lightness {lightness:+g}, chroma x{chroma:g}, hue {hue_shift:+g} deg, "
                               f"vibrance {vibrance:+g}, temperature {temperature:+g}, tint {tint:+g}",
                "identity": perceptual.is_identity(lightness, chroma, hue_shift, vibrance, temperature, tint),
                "gamut mapping": gamut_mapping
                + (f" (alpha {adaptive_alpha:g})" if gamut_mapping.startswith("adaptive") else ""),
                "pixels mapped back into sRGB": f"{100.0 * frac:.2f} %",
                "input": f"{tuple(image.shape)}, {note}",
                "device": dev_note + ", float64",
                "seconds": t["seconds"],
            },
        )
        return (out, info)


class RestoreKitColourSplit:
    """Image -> three grey images holding Oklab L, a, b or Jzazbz Jz, az, bz (encoded into 0..1)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "space": choice_input(
                    ["oklab", "jzazbz"],
                    "oklab: outputs L, a+0.5, b+0.5. jzazbz: outputs Jz/W, 0.5+0.5·az/W, 0.5+0.5·bz/W "
                    "where W is Jz of sRGB white at white_luminance. Join Colour Channels undoes this.",
                ),
                "white_luminance": WHITE_LUMINANCE_INPUT,
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("lightness", "a", "b", "info")
    FUNCTION = "split"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Split an image into its Oklab or Jzazbz channels as three grey images (alpha, if any, rides "
        "on the lightness image) so other nodes can edit one channel; Join Colour Channels reverses it."
    )

    def split(self, image, space="oklab", white_luminance=203.0, device="auto"):
        from ..scripts import perceptual

        image = check_image(image)
        if space not in perceptual.CHANNELS:
            raise ValueError(f"space: unknown space {space!r}; choose one of {tuple(perceptual.CHANNELS)}")
        rgb, alpha, note = _as_rgb(image)
        dev, dev_note = resolve_device(device)
        with timed() as t:
            enc = _per_pixel(rgb, lambda px: perceptual.split_channels(px, space, white_luminance), dev)
        outs = []
        ranges = []
        for i in range(3):
            ch = enc[..., i:i + 1]
            ranges.append(f"{float(ch.min()):.4f}..{float(ch.max()):.4f}")
            grey = ch.clamp(0.0, 1.0).expand(*ch.shape[:-1], 3).contiguous()
            outs.append(merge_alpha(grey, alpha) if i == 0 else grey)
        names = perceptual.CHANNELS[space]
        if space == "oklab":
            encoding = "L, a + 0.5, b + 0.5"
        else:
            w = perceptual.jzazbz.white_jz(white_luminance)
            encoding = f"Jz/W, 0.5 + 0.5 az/W, 0.5 + 0.5 bz/W with W = {w:.5f} (white at {white_luminance:g} cd/m²)"
        info = format_info(
            "Split Colour Channels",
            {
                "space": space,
                "outputs": ", ".join(names),
                "encoding": encoding,
                "encoded ranges": "; ".join(f"{n} {r}" for n, r in zip(names, ranges)),
                "input": f"{tuple(image.shape)}, {note}",
                "alpha": "on the lightness output" if alpha is not None else "none",
                "device": dev_note + ", float64",
                "seconds": t["seconds"],
            },
        )
        return (outs[0], outs[1], outs[2], info)


def _channel(image, name: str) -> torch.Tensor:
    """One grey channel [B,H,W] from an IMAGE (mean of its colour channels)."""
    image = check_image(image, name)
    rgb, _ = split_alpha(image)
    return rgb.mean(dim=-1)


class RestoreKitColourJoin:
    """Three grey images (from Split Colour Channels, possibly edited) -> sRGB image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "lightness": image_input("Encoded L (or Jz) image from Split Colour Channels; its alpha, if any, is kept."),
                "a": image_input("Encoded a (or az) image; colour images are averaged to grey."),
                "b": image_input("Encoded b (or bz) image; colour images are averaged to grey."),
                "space": choice_input(["oklab", "jzazbz"], "The space the channels were split in (must match the split)."),
                "white_luminance": WHITE_LUMINANCE_INPUT,
                "gamut_mapping": choice_input(GAMUT_METHODS, GAMUT_TOOLTIP),
                "adaptive_alpha": ALPHA_INPUT,
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "join"
    CATEGORY = CATEGORY
    DESCRIPTION = "Join Oklab / Jzazbz channel images back into an sRGB image, gamut-mapping edited colours."

    def join(self, lightness, a, b, space="oklab", white_luminance=203.0, gamut_mapping="adaptive_L0_0.5",
             adaptive_alpha=0.05, device="auto"):
        from ..scripts import perceptual

        if space not in perceptual.CHANNELS:
            raise ValueError(f"space: unknown space {space!r}; choose one of {tuple(perceptual.CHANNELS)}")
        if gamut_mapping not in GAMUT_METHODS:
            raise ValueError(f"gamut_mapping: unknown method {gamut_mapping!r}; choose one of {GAMUT_METHODS}")
        light_img = check_image(lightness, "lightness")
        _, alpha = split_alpha(light_img)
        chans = [_channel(light_img, "lightness"), _channel(a, "a"), _channel(b, "b")]
        shapes = [tuple(c.shape[1:]) for c in chans]
        if len(set(shapes)) != 1:
            raise ValueError(f"lightness, a and b must have the same height and width, got {shapes} (H, W)")
        batch = max(c.shape[0] for c in chans)
        for n, c in zip(("lightness", "a", "b"), chans):
            if c.shape[0] not in (1, batch):
                raise ValueError(f"{n}: batch size {c.shape[0]} does not match the others ({batch})")
        chans = [c.expand(batch, *c.shape[1:]) for c in chans]
        if alpha is not None and alpha.shape[0] != batch:
            alpha = alpha.expand(batch, *alpha.shape[1:])
        enc = torch.stack(chans, dim=-1)
        dev, dev_note = resolve_device(device)
        stats = {"out": 0.0, "n": 0}

        def fn(px):
            out, frac = perceptual.join_channels(px, space, white_luminance, gamut_mapping, adaptive_alpha)
            stats["out"] += frac * px.shape[0]
            stats["n"] += px.shape[0]
            return out

        with timed() as t:
            out = _per_pixel(enc, fn, dev)
        out = merge_alpha(out.clamp(0.0, 1.0), alpha)
        info = format_info(
            "Join Colour Channels",
            {
                "space": space + (f" (white {white_luminance:g} cd/m²)" if space == "jzazbz" else ""),
                "gamut mapping": gamut_mapping,
                "pixels mapped back into sRGB": f"{100.0 * stats['out'] / max(stats['n'], 1):.2f} %",
                "output": f"{tuple(out.shape)}" + (", alpha from the lightness image" if alpha is not None else ""),
                "device": dev_note + ", float64",
                "seconds": t["seconds"],
            },
        )
        return (out, info)


NODE_CLASS_MAPPINGS = {
    "RestoreKitPerceptualAdjust": RestoreKitPerceptualAdjust,
    "RestoreKitColourSplit": RestoreKitColourSplit,
    "RestoreKitColourJoin": RestoreKitColourJoin,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitPerceptualAdjust": "Perceptual Colour Adjust",
    "RestoreKitColourSplit": "Split Colour Channels",
    "RestoreKitColourJoin": "Join Colour Channels",
}

"""Colour nodes: perceptual adjustments in OkLCh / JzCzhz with gamut mapping, channel split / join.

The maths lives in ``scripts/colour.py``, ``scripts/jzazbz.py``, ``scripts/gamut.py`` and
``scripts/perceptual.py``; these wrappers validate IMAGEs, handle alpha, grey and batches, pick the
device, and process the pixels in chunks (float64 internally, so round trips stay below 1e-6).
"""
from __future__ import annotations

from ._common import CATEGORY_ROOT, DEVICE_INPUT, choice_input, float_input, image_input, ImageNode
from ._common import node_mappings
from ..scripts.gamut import METHODS as GAMUT_METHODS
from ..scripts.perceptual import CHANNELS, SPACES

CATEGORY = f"{CATEGORY_ROOT}/Colour"

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


class _ColourNode(ImageNode):
    CATEGORY = CATEGORY

    def run_colour(self, image, fn, device, grey="rgb", **kwargs):
        """The colour nodes' library call: the whole batch (grey taken as RGB) in float64 chunks on
        ``device``, values as they are (the colour conversions handle any range)."""
        return self.run_images(image, fn, values="as_is", grey=grey, per_image=False, device=device, **kwargs)


class RestoreKitPerceptualAdjust(_ColourNode):
    """Lightness, chroma, hue, vibrance and white balance in OkLCh or JzCzhz, gamut-mapped to sRGB."""

    DISPLAY_NAME = "Perceptual Colour Adjust"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "space": choice_input(
                SPACES,
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
        }}

    FUNCTION = "adjust"
    DESCRIPTION = (
        "Perceptual colour adjustments in OkLCh or JzCzhz, then Ottosson's sRGB gamut mapping so the "
        "result stays in 0..1 with the hue kept."
    )

    def adjust(self, image, space="oklch", lightness=0.0, chroma=1.0, hue_shift=0.0, vibrance=0.0,
               temperature=0.0, tint=0.0, gamut_mapping="adaptive_L0_0.5", white_luminance=203.0,
               adaptive_alpha=0.05, device="auto"):
        from ..scripts import perceptual

        return self.run_colour(image, lambda x, device: perceptual.adjust_image(
            x, space, lightness, chroma, hue_shift, vibrance, temperature, tint, gamut_mapping, adaptive_alpha,
            white_luminance, device=device), device)


class RestoreKitColourSplit(_ColourNode):
    """Image -> three grey images holding Oklab L, a, b or Jzazbz Jz, az, bz (encoded into 0..1)."""

    DISPLAY_NAME = "Split Colour Channels"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "space": choice_input(
                CHANNELS,
                "oklab: outputs L, a+0.5, b+0.5. jzazbz: outputs Jz/W, 0.5+0.5·az/W, 0.5+0.5·bz/W "
                "where W is Jz of sRGB white at white_luminance. Join Colour Channels undoes this.",
            ),
            "white_luminance": WHITE_LUMINANCE_INPUT,
            "device": DEVICE_INPUT,
        }}

    RETURN_TYPES = ("IMAGE", "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("lightness", "a", "b", "info")
    FUNCTION = "split"
    DESCRIPTION = (
        "Split an image into its Oklab or Jzazbz channels as three grey images (alpha, if any, rides "
        "on the lightness image) so other nodes can edit one channel; Join Colour Channels reverses it."
    )

    def split(self, image, space="oklab", white_luminance=203.0, device="auto"):
        from ..scripts import perceptual

        (lightness, a, b), info = self.run_colour(image, lambda x, device: perceptual.split_image(
            x, space, white_luminance, device=device), device)
        return (lightness, a, b, info)


class RestoreKitColourJoin(_ColourNode):
    """Three grey images (from Split Colour Channels, possibly edited) -> sRGB image."""

    DISPLAY_NAME = "Join Colour Channels"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "lightness": image_input("Encoded L (or Jz) image from Split Colour Channels; its alpha, if any, is kept."),
            "a": image_input("Encoded a (or az) image; colour images are averaged to grey."),
            "b": image_input("Encoded b (or bz) image; colour images are averaged to grey."),
            "space": choice_input(CHANNELS, "The space the channels were split in (must match the split)."),
            "white_luminance": WHITE_LUMINANCE_INPUT,
            "gamut_mapping": choice_input(GAMUT_METHODS, GAMUT_TOOLTIP),
            "adaptive_alpha": ALPHA_INPUT,
            "device": DEVICE_INPUT,
        }}

    FUNCTION = "join"
    DESCRIPTION = "Join Oklab / Jzazbz channel images back into an sRGB image, gamut-mapping edited colours."

    def join(self, lightness, a, b, space="oklab", white_luminance=203.0, gamut_mapping="adaptive_L0_0.5",
             adaptive_alpha=0.05, device="auto"):
        from ..scripts import perceptual

        return self.run_colour(lightness, lambda x, device: perceptual.join_images(
            x, a, b, space, white_luminance, gamut_mapping, adaptive_alpha, device=device), device,
            grey="keep", name="lightness")


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitPerceptualAdjust, RestoreKitColourSplit, RestoreKitColourJoin)

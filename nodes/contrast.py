"""Contrast nodes: Learning-Based CLAHE and Multi-Scale Retinex (library: scripts/clahe.py,
scripts/lbclahe.py, scripts/retinex.py)."""
from __future__ import annotations

from functools import partial

from ._common import CATEGORY_ROOT, choice_input, float_input, image_input, ImageNode, int_input
from ._common import node_mappings, string_input
from ..scripts.clahe import CHANNEL_NAMES
from ..scripts.retinex import BLURS, MODES as RETINEX_MODES

CATEGORY = f"{CATEGORY_ROOT}/Contrast"


class _ContrastNode(ImageNode):
    CATEGORY = CATEGORY
    FUNCTION = "enhance"


class RestoreKitLBCLAHE(_ContrastNode):
    """Learning-based CLAHE (Campos et al., EURASIP JIVP 2019:59): a random forest trained on
    contrast-distorted images predicts the clip limit and tile grid for each image."""

    DISPLAY_NAME = "Learning-Based CLAHE"
    DESCRIPTION = ("Learning-Based CLAHE: contrast-limited adaptive histogram equalisation whose clip limit and "
                   "tile grid are predicted per image (Campos et al. 2019). Works on Oklab lightness by default.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "channel": choice_input(
                CHANNEL_NAMES,
                "Channel CLAHE equalises. Oklab L: perceptual lightness, colours kept (default). Lab L: CIE "
                "L*. YCbCr Y: BT.601 luma. RGB per channel: each of R, G, B (can shift colours). "
                "Grayscale images use their single channel.",
            ),
            "clip_limit": float_input(
                0.0, 0.0, 40.0, 0.1,
                "Clip limit in OpenCV's convention (multiple of the mean histogram bin; 1 = almost no "
                "change, 2-4 moderate, 40 strong). 0 = predicted per image by the LB-CLAHE model. "
                "skimage's clip_limit = this / 256.",
            ),
            "grid": int_input(
                0, 0, 64,
                "Tiles per side of the CLAHE grid (8 = OpenCV's default 8x8). 0 = predicted per image. "
                "More tiles = more local contrast.",
            ),
        }}

    def enhance(self, image, channel="Oklab L", clip_limit=0.0, grid=0):
        from ..scripts import lbclahe

        if channel not in CHANNEL_NAMES:
            raise ValueError(f"channel must be one of {', '.join(CHANNEL_NAMES)}, got {channel!r}")
        return self.run_images(image, partial(lbclahe.lb_clahe, channel=CHANNEL_NAMES[channel],
                                              clip_limit=clip_limit, grid=grid))


class RestoreKitRetinex(_ContrastNode):
    """Multi-scale Retinex (Jobson, Rahman, Woodell 1997; Petro, Sbert, Morel, IPOL 2014)."""

    DISPLAY_NAME = "Multi-Scale Retinex"
    DESCRIPTION = ("Multi-Scale Retinex: dynamic-range compression and local contrast from log ratios to Gaussian "
                   "surrounds at three scales, then simplest colour balance (IPOL 2014 defaults).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "mode": choice_input(
                RETINEX_MODES,
                "MSRCR: MSR with colour restoration (Jobson 1997). MSR: each channel on its own (can grey "
                "out colours). MSR-intensity: MSR on (R+G+B)/3, hue and saturation kept (IPOL's MSRCP).",
            ),
            "sigmas": string_input(
                "15, 80, 250",
                "Surround scales: Gaussian standard deviations in pixels, comma-separated (IPOL defaults "
                "15, 80, 250, equal weights). Jobson's c equals sigma * sqrt(2).",
            ),
            "low_clip": float_input(1.0, 0.0, 20.0, 0.1,
                                    "Simplest colour balance: percent of darkest pixels clipped to black, per channel."),
            "high_clip": float_input(1.0, 0.0, 20.0, 0.1,
                                     "Simplest colour balance: percent of brightest pixels clipped to white, per channel."),
            "blur": choice_input(
                BLURS,
                "fast: Gaussian surrounds computed on a downsampled image (well within 1/255 of exact). "
                "exact: full-size DCT blurs (slow on large images).",
            ),
        }}

    def enhance(self, image, mode="MSRCR", sigmas="15, 80, 250", low_clip=1.0, high_clip=1.0, blur="fast"):
        from ..scripts import retinex

        return self.run_images(image, partial(retinex.retinex, mode=mode, sigmas=sigmas, low_clip=low_clip,
                                              high_clip=high_clip, method=blur))


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(RestoreKitLBCLAHE, RestoreKitRetinex)

"""Contrast nodes: Learning-Based CLAHE and Multi-Scale Retinex (library: scripts/clahe.py,
scripts/lbclahe.py, scripts/retinex.py)."""
from __future__ import annotations

from ._common import (
    prepare_image,
    CATEGORY_ROOT,
    choice_input,
    float_input,
    format_info,
    image_input,
    int_input,
    map_images,
    string_input,
    timed,
)

CATEGORY = f"{CATEGORY_ROOT}/Contrast"

CLAHE_CHANNELS = {
    "Oklab L": "oklab",
    "Lab L": "lab",
    "YCbCr Y": "ycbcr",
    "RGB per channel": "rgb",
}


class RestoreKitLBCLAHE:
    """Learning-based CLAHE (Campos et al., EURASIP JIVP 2019:59): a random forest trained on
    contrast-distorted images predicts the clip limit and tile grid for each image."""

    DESCRIPTION = ("Learning-Based CLAHE: contrast-limited adaptive histogram equalisation whose clip limit and "
                   "tile grid are predicted per image (Campos et al. 2019). Works on Oklab lightness by default.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "enhance"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "channel": choice_input(
                    list(CLAHE_CHANNELS),
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
            }
        }

    def enhance(self, image, channel="Oklab L", clip_limit=0.0, grid=0):
        from ..scripts import lbclahe

        if channel not in CLAHE_CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CLAHE_CHANNELS)}, got {channel!r}")
        image, notes = prepare_image(image)
        note = "; ".join(notes)
        ch = CLAHE_CHANNELS[channel]
        need_model = clip_limit <= 0 or grid <= 0
        bundle = lbclahe.load_predictor() if need_model else None
        chosen = []

        def run(img):
            out, params = lbclahe.lb_clahe(img, ch, clip_limit if clip_limit > 0 else None,
                                           grid if grid > 0 else None, bundle)
            chosen.append(params)
            return out

        with timed() as t:
            out = map_images(image, run)
        fields = {
            "channel": channel + (" (grayscale input: its one channel)" if image.shape[-1] == 1 else ""),
            "clip limit (OpenCV)": ", ".join(f"{p['clip']:.1f}" for p in chosen) + f" ({chosen[0]['clip_source']})",
            "grid": ", ".join(f"{p['grid']}x{p['grid']}" for p in chosen) + f" ({chosen[0]['grid_source']})",
            "why": ("predicted per image from histogram/gradient features by the shipped LB-CLAHE random forest "
                    "(target: SSIM to pristine images)" if need_model else "manual values"),
            "predictor": (f"models/{lbclahe.PREDICTOR_PATH} (sha256 checked)" if need_model else "not used"),
            "images": int(image.shape[0]),
            "alpha": "kept" if image.shape[-1] == 4 else "none",
        }
        if note:
            fields["input"] = note
        fields["seconds"] = t["seconds"]
        return (out, format_info("Learning-Based CLAHE", fields))


RETINEX_MODES = ["MSRCR", "MSR", "MSR-intensity"]


class RestoreKitRetinex:
    """Multi-scale Retinex (Jobson, Rahman, Woodell 1997; Petro, Sbert, Morel, IPOL 2014)."""

    DESCRIPTION = ("Multi-Scale Retinex: dynamic-range compression and local contrast from log ratios to Gaussian "
                   "surrounds at three scales, then simplest colour balance (IPOL 2014 defaults).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "enhance"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
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
                    ["fast", "exact"],
                    "fast: Gaussian surrounds computed on a downsampled image (well within 1/255 of exact). "
                    "exact: full-size DCT blurs (slow on large images).",
                ),
            }
        }

    def enhance(self, image, mode="MSRCR", sigmas="15, 80, 250", low_clip=1.0, high_clip=1.0, blur="fast"):
        from ..scripts import retinex

        if mode not in RETINEX_MODES:
            raise ValueError(f"mode must be one of {', '.join(RETINEX_MODES)}, got {mode!r}")
        if blur not in ("fast", "exact"):
            raise ValueError(f"blur must be 'fast' or 'exact', got {blur!r}")
        sig = retinex.parse_sigmas(sigmas)
        image, notes = prepare_image(image)
        note = "; ".join(notes)
        with timed() as t:
            out = map_images(image, lambda img: retinex.retinex(img, mode, sig, low_clip, high_clip, method=blur))
        gray = image.shape[-1] == 1
        fields = {
            "mode": mode + (" (grayscale input: plain MSR)" if gray and mode != "MSR" else ""),
            "sigmas (Gaussian std, px)": ", ".join(f"{s:g}" for s in sig),
            "weights": f"equal (1/{len(sig)})",
            "colour balance": f"clip {low_clip:g} % dark / {high_clip:g} % bright per {'image' if mode == 'MSR-intensity' else 'channel'}",
            "colour restoration": ("alpha 125, beta 46 (Jobson 1997)" if mode == "MSRCR" and not gray else "none"),
            "blur": ("downsampled Gaussian, symmetric borders" if blur == "fast" else "exact DCT Gaussian, symmetric borders"),
            "images": int(image.shape[0]),
            "alpha": "kept" if image.shape[-1] == 4 else "none",
        }
        if note:
            fields["input"] = note
        fields["seconds"] = t["seconds"]
        return (out, format_info("Multi-Scale Retinex", fields))


NODE_CLASS_MAPPINGS = {
    "RestoreKitLBCLAHE": RestoreKitLBCLAHE,
    "RestoreKitRetinex": RestoreKitRetinex,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitLBCLAHE": "Learning-Based CLAHE",
    "RestoreKitRetinex": "Multi-Scale Retinex",
}

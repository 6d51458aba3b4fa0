"""Frequency nodes: FFT high-boost and homomorphic filtering, frequency separation into low/high
images and their recombination.  All torch: they run on the GPU when one is chosen."""
from __future__ import annotations

import torch

from ._common import (
    resolve_device,
    prepare_image,
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

CATEGORY = f"{CATEGORY_ROOT}/Frequency"


def _to_planes(rgb: torch.Tensor, space: str):
    """[B,H,W,C] -> (planes [B,P,H,W] to filter, state to rebuild)."""
    if rgb.shape[-1] == 1 or space == "rgb":
        return rgb.permute(0, 3, 1, 2), None
    from ..scripts.colour import srgb_to_oklab

    lab = srgb_to_oklab(rgb)
    return lab[..., 0:1].permute(0, 3, 1, 2), lab


def _from_planes(planes: torch.Tensor, state):
    out = planes.permute(0, 2, 3, 1)
    if state is None:
        return out
    from ..scripts.colour import oklab_to_srgb

    lab = torch.cat([out, state[..., 1:]], dim=-1)
    return oklab_to_srgb(lab)


def _finish(out: torch.Tensor, alpha):
    out = torch.nan_to_num(out.float().cpu(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    return merge_alpha(out.contiguous(), alpha)


class RestoreKitFrequencyEnhance:
    """FFT high-boost (sharpen fine detail, keep the mean) or homomorphic filtering (compress
    uneven lighting in log space and lift detail)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "mode": choice_input(["high_boost", "homomorphic"],
                                     "high_boost: H(f) = 1 + boost·(1 − Gaussian low-pass). homomorphic: "
                                     "on log intensity, low frequencies × gamma_low, high × gamma_high."),
                "sigma": float_input(2.0, 0.3, 200.0, 0.1,
                                     "Gaussian σ in px separating low from high frequencies (cutoff "
                                     "1/(2πσ) cycles/px). High-boost: 1–4; homomorphic: 15–60 (lighting scale)."),
                "boost": float_input(1.0, 0.0, 10.0, 0.05, "High-boost only: gain added to the high frequencies (0 = identity)."),
                "gamma_low": float_input(0.5, 0.0, 2.0, 0.05,
                                         "Homomorphic only: gain on log-illumination (below 1 evens out lighting)."),
                "gamma_high": float_input(1.5, 0.0, 4.0, 0.05,
                                          "Homomorphic only: gain on log-detail (above 1 lifts texture)."),
                "space": choice_input(["oklab", "rgb"],
                                      "oklab: filter Oklab lightness only (colours kept). rgb: each channel."),
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "enhance"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def enhance(self, image, mode="high_boost", sigma=2.0, boost=1.0, gamma_low=0.5, gamma_high=1.5,
                space="oklab", device="auto"):
        from ..scripts import frequency as fq

        if mode not in ("high_boost", "homomorphic"):
            raise ValueError(f"mode must be high_boost or homomorphic, got '{mode}'")
        x, notes = prepare_image(image)
        rgb, alpha = split_alpha(x)
        dev, dev_note = resolve_device(device)
        with timed() as t:
            planes, state = _to_planes(rgb.to(dev), space)
            if mode == "high_boost":
                res = fq.high_boost(planes, sigma=sigma, boost=boost)
                params = {"sigma px": float(sigma), "boost": float(boost),
                          "cutoff cycles/px": 1.0 / (2 * 3.141592653589793 * sigma)}
            else:
                res = fq.homomorphic(planes, sigma=sigma, gamma_low=gamma_low, gamma_high=gamma_high)
                params = {"sigma px": float(sigma), "gamma_low": float(gamma_low),
                          "gamma_high": float(gamma_high)}
            out = _finish(_from_planes(res, state), alpha)
        fields = {"mode": mode, **params,
                  "space": "grey" if rgb.shape[-1] == 1 else space,
                  "device": dev_note, "seconds": round(t["seconds"], 3)}
        if notes:
            fields["input"] = notes
        return (out, format_info("Frequency Enhance", fields))


class RestoreKitFrequencySeparate:
    """Split an image into a low-frequency image (Gaussian blur) and a high-frequency image
    0.5 + scale·(image − low), for retouching each separately; Frequency Combine puts them back."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "sigma": float_input(4.0, 0.3, 100.0, 0.1, "Gaussian σ in px of the low-frequency layer."),
                "scale": float_input(0.5, 0.05, 4.0, 0.05,
                                     "Gain of the high layer around mid-grey. 0.5 fits any detail into "
                                     "0..1 (exact round trip); 1 is the common 8-bit 'linear light' look. "
                                     "Use the same value in Frequency Combine."),
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("low", "high", "info")
    FUNCTION = "separate"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def separate(self, image, sigma=4.0, scale=0.5, device="auto"):
        from ..scripts import frequency as fq

        x, notes = prepare_image(image)
        rgb, alpha = split_alpha(x)
        dev, dev_note = resolve_device(device)
        with timed() as t:
            planes = rgb.to(dev).permute(0, 3, 1, 2)
            low, high = fq.separate(planes, sigma=sigma, scale=scale)
            clipped = float(((high < 0) | (high > 1)).float().mean())
            low = _finish(low.permute(0, 2, 3, 1), alpha)
            high = _finish(high.permute(0, 2, 3, 1), alpha)
        fields = {"sigma px": float(sigma), "scale": float(scale),
                  "high layer clipped": f"{100 * clipped:.3f} % of values"
                  + (" (round trip exact)" if clipped == 0 else " (lower scale for an exact round trip)"),
                  "device": dev_note, "seconds": round(t["seconds"], 3)}
        if notes:
            fields["input"] = notes
        return (low, high, format_info("Frequency Separate", fields))


class RestoreKitFrequencyCombine:
    """Recombine low and high layers from Frequency Separate: low + detail·(high − 0.5)/scale.
    Alpha comes from the low image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "low": image_input("Low-frequency image from Frequency Separate (possibly edited)."),
                "high": image_input("High-frequency image from Frequency Separate (possibly edited)."),
                "scale": float_input(0.5, 0.05, 4.0, 0.05, "The scale used in Frequency Separate."),
                "detail": float_input(1.0, 0.0, 5.0, 0.05,
                                      "Gain on the high layer: 1 reconstructs, above 1 sharpens, below 1 smooths."),
                "device": DEVICE_INPUT,
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "combine"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def combine(self, low, high, scale=0.5, detail=1.0, device="auto"):
        from ..scripts import frequency as fq

        lo, notes = prepare_image(low, "low")
        hi = check_image(high, "high")
        lo_rgb, alpha = split_alpha(lo)
        hi_rgb, _ = split_alpha(hi)
        if lo_rgb.shape[1:3] != hi_rgb.shape[1:3]:
            raise ValueError(f"low {tuple(lo_rgb.shape[1:3])} and high {tuple(hi_rgb.shape[1:3])} "
                             "images differ in size")
        if lo_rgb.shape[-1] != hi_rgb.shape[-1]:
            if hi_rgb.shape[-1] == 1:
                hi_rgb = hi_rgb.expand(*hi_rgb.shape[:-1], lo_rgb.shape[-1])
            elif lo_rgb.shape[-1] == 1:
                lo_rgb = lo_rgb.expand(*lo_rgb.shape[:-1], hi_rgb.shape[-1])
        bl, bh = lo_rgb.shape[0], hi_rgb.shape[0]
        if bl != bh:
            if bl == 1 or bh == 1:
                n = max(bl, bh)
                lo_rgb = lo_rgb.expand(n, *lo_rgb.shape[1:])
                hi_rgb = hi_rgb.expand(n, *hi_rgb.shape[1:])
                if alpha is not None:
                    alpha = alpha.expand(n, *alpha.shape[1:])
            else:
                raise ValueError(f"batch sizes differ: low {bl}, high {bh}")
        dev, dev_note = resolve_device(device)
        with timed() as t:
            out = fq.combine(lo_rgb.to(dev), hi_rgb.to(dev), scale=scale, detail=detail)
            out = _finish(out, alpha)
        fields = {"scale": float(scale), "detail": float(detail), "device": dev_note,
                  "seconds": round(t["seconds"], 3)}
        if notes:
            fields["input"] = notes
        return (out, format_info("Frequency Combine", fields))


NODE_CLASS_MAPPINGS = {
    "RestoreKitFrequencyEnhance": RestoreKitFrequencyEnhance,
    "RestoreKitFrequencySeparate": RestoreKitFrequencySeparate,
    "RestoreKitFrequencyCombine": RestoreKitFrequencyCombine,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitFrequencyEnhance": "Frequency Enhance",
    "RestoreKitFrequencySeparate": "Frequency Separate",
    "RestoreKitFrequencyCombine": "Frequency Combine",
}

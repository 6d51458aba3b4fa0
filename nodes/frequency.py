"""Frequency nodes: FFT high-boost and homomorphic filtering, frequency separation into low/high
images and their recombination.  All torch: they run on the GPU when one is chosen."""
from __future__ import annotations

from ._common import CATEGORY_ROOT, DEVICE_INPUT, check_image, choice_input, float_input, image_input
from ._common import ImageNode, node_mappings
from ..scripts.frequency import MODES, SPACES

CATEGORY = f"{CATEGORY_ROOT}/Frequency"


class RestoreKitFrequencyEnhance(ImageNode):
    """FFT high-boost (sharpen fine detail, keep the mean) or homomorphic filtering (compress
    uneven lighting in log space and lift detail)."""

    DISPLAY_NAME = "Frequency Enhance"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "mode": choice_input(MODES,
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
            "space": choice_input(SPACES,
                                  "oklab: filter Oklab lightness only (colours kept). rgb: each channel."),
            "device": DEVICE_INPUT,
        }}

    FUNCTION = "enhance"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def enhance(self, image, mode="high_boost", sigma=2.0, boost=1.0, gamma_low=0.5, gamma_high=1.5,
                space="oklab", device="auto"):
        from ..scripts import frequency as fq

        return self.run_images(image, lambda x, device: fq.enhance_image(x, mode, sigma, boost, gamma_low,
                                                                          gamma_high, space, device=device),
                               stage=mode, per_image=False, device=device)


class RestoreKitFrequencySeparate(ImageNode):
    """Split an image into a low-frequency image (Gaussian blur) and a high-frequency image
    0.5 + scale·(image − low), for retouching each separately; Frequency Combine puts them back."""

    DISPLAY_NAME = "Frequency Separate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "sigma": float_input(4.0, 0.3, 100.0, 0.1, "Gaussian σ in px of the low-frequency layer."),
            "scale": float_input(0.5, 0.05, 4.0, 0.05,
                                 "Gain of the high layer around mid-grey. 0.5 fits any detail into "
                                 "0..1 (exact round trip); 1 is the common 8-bit 'linear light' look. "
                                 "Use the same value in Frequency Combine."),
            "device": DEVICE_INPUT,
        }}

    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("low", "high", "info")
    FUNCTION = "separate"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def separate(self, image, sigma=4.0, scale=0.5, device="auto"):
        from ..scripts import frequency as fq

        (low, high), info = self.run_images(image, lambda x, device: fq.separate_image(x, sigma, scale, device=device),
                                            stage="separation", per_image=False, device=device, alpha_to=(0, 1))
        return (low, high, info)


class RestoreKitFrequencyCombine(ImageNode):
    """Recombine low and high layers from Frequency Separate: low + detail·(high − 0.5)/scale.
    Alpha comes from the low image."""

    DISPLAY_NAME = "Frequency Combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "low": image_input("Low-frequency image from Frequency Separate (possibly edited)."),
            "high": image_input("High-frequency image from Frequency Separate (possibly edited)."),
            "scale": float_input(0.5, 0.05, 4.0, 0.05, "The scale used in Frequency Separate."),
            "detail": float_input(1.0, 0.0, 5.0, 0.05,
                                  "Gain on the high layer: 1 reconstructs, above 1 sharpens, below 1 smooths."),
            "device": DEVICE_INPUT,
        }}

    FUNCTION = "combine"
    CATEGORY = CATEGORY
    DESCRIPTION = __doc__

    def combine(self, low, high, scale=0.5, detail=1.0, device="auto"):
        from ..scripts import frequency as fq
        from ..scripts.batch import split_alpha

        hi = split_alpha(check_image(high, "high"))[0]
        return self.run_images(low, lambda lo, device: fq.combine_images(lo, hi, scale, detail, device=device),
                               stage="recombination", name="low", per_image=False, device=device)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitFrequencyEnhance, RestoreKitFrequencySeparate, RestoreKitFrequencyCombine)

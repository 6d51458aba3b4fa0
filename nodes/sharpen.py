"""Smart Sharpen node: unsharp masking with halo clamp, noise threshold, edge-adaptive gain and an
automatic amount from the measured edge blur, on Oklab lightness by default."""
from __future__ import annotations

from functools import partial

from ._common import CATEGORY_ROOT, bool_input, choice_input, float_input, image_input, ImageNode
from ._common import node_mappings
from ..scripts.sharpen import SPACES


class RestoreKitSmartSharpen(ImageNode):
    """Artifact-aware sharpening: no halos (local min/max clamp), little noise boost (threshold
    relative to the estimated noise, edge-adaptive gain), amount and radius chosen from the edge
    blur unless set."""

    DISPLAY_NAME = "Smart Sharpen"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": image_input(),
            "amount": float_input(0.0, 0.0, 5.0, 0.05,
                                  "Sharpening gain. 0 = automatic from the measured edge blur "
                                  "(0.5 + 0.9·blur σ, at most 3)."),
            "radius": float_input(0.0, 0.0, 10.0, 0.1,
                                  "Gaussian radius σ in px of the unsharp mask. 0 = automatic "
                                  "(1.2 × the measured edge blur)."),
            "noise_sigma": float_input(0.0, 0.0, 0.25, 0.001,
                                       "Noise standard deviation (0..1 units) that the threshold "
                                       "and edge gain protect. 0 = estimate it (Haar MAD)."),
            "threshold": float_input(1.0, 0.0, 5.0, 0.1,
                                     "Detail smaller than this many noise σ is soft-cored (not "
                                     "sharpened). 0 = off."),
            "edge_adaptive": bool_input(True, "Scale the gain by edge strength so flat, noisy "
                                              "areas are barely touched."),
            "halo": float_input(0.0, -0.05, 0.5, 0.01,
                                "Overshoot allowed past the local min/max, as a fraction of the "
                                "local range. 0 = no halos; negative = clamp off (plain USM halos)."),
            "space": choice_input(SPACES,
                                  "oklab: sharpen Oklab lightness only (keeps hue and chroma). "
                                  "luma: Rec.601 Y added to RGB. rgb: each channel."),
        }}

    FUNCTION = "sharpen"
    CATEGORY = f"{CATEGORY_ROOT}/Sharpen"
    DESCRIPTION = __doc__

    def sharpen(self, image, amount=0.0, radius=0.0, noise_sigma=0.0, threshold=1.0,
                edge_adaptive=True, halo=0.0, space="oklab"):
        from ..scripts import sharpen as sh

        settings = {"threshold (× noise σ)": float(threshold), "edge adaptive": bool(edge_adaptive),
                    "halo clamp": "off" if halo < 0 else f"local min/max + {halo:g} × range"}
        return self.run_images(image, partial(
            sh.sharpen, amount=amount if amount > 0 else None, radius=radius if radius > 0 else None,
            noise_sigma=noise_sigma if noise_sigma > 0 else None, threshold=threshold,
            edge_adaptive=edge_adaptive, halo=halo, space=space), settings)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(RestoreKitSmartSharpen)

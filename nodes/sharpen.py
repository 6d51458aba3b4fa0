"""Smart Sharpen node: unsharp masking with halo clamp, noise threshold, edge-adaptive gain and an
automatic amount from the measured edge blur, on Oklab lightness by default."""
from __future__ import annotations

import numpy as np

from ._common import (
    prepare_image,
    CATEGORY_ROOT,
    bool_input,
    choice_input,
    float_input,
    format_info,
    from_numpy,
    image_input,
    merge_alpha,
    split_alpha,
    timed,
    to_numpy,
)


class RestoreKitSmartSharpen:
    """Artifact-aware sharpening: no halos (local min/max clamp), little noise boost (threshold
    relative to the estimated noise, edge-adaptive gain), amount and radius chosen from the edge
    blur unless set."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
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
                "space": choice_input(["oklab", "luma", "rgb"],
                                      "oklab: sharpen Oklab lightness only (keeps hue and chroma). "
                                      "luma: Rec.601 Y added to RGB. rgb: each channel."),
            }
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "sharpen"
    CATEGORY = f"{CATEGORY_ROOT}/Sharpen"
    DESCRIPTION = __doc__

    def sharpen(self, image, amount=0.0, radius=0.0, noise_sigma=0.0, threshold=1.0,
                edge_adaptive=True, halo=0.0, space="oklab"):
        from ..scripts import sharpen as sh

        x, notes = prepare_image(image)
        rgb, alpha = split_alpha(x)
        arr = to_numpy(rgb).astype(np.float64)
        outs, reps = [], []
        with timed() as t:
            for i in range(arr.shape[0]):
                o, rep = sh.sharpen(arr[i], amount=amount if amount > 0 else None,
                                    radius=radius if radius > 0 else None,
                                    noise_sigma=noise_sigma if noise_sigma > 0 else None,
                                    threshold=threshold, edge_adaptive=edge_adaptive,
                                    halo=halo, space=space)
                outs.append(o)
                reps.append(rep)
        out = merge_alpha(from_numpy(np.stack(outs)), alpha)

        def per(fn):
            vals = [fn(r) for r in reps]
            return vals[0] if len(vals) == 1 else vals

        fields = {
            "space": reps[0].space,
            "amount": per(lambda r: round(r.amount, 3)),
            "radius px": per(lambda r: round(r.radius, 3)),
            "edge blur σ px": per(lambda r: "not measured" if r.blur_sigma is None else round(r.blur_sigma, 3)),
            "noise σ": per(lambda r: round(r.noise_sigma, 5)),
            "threshold (× noise σ)": float(threshold),
            "edge adaptive": bool(edge_adaptive),
            "halo clamp": "off" if halo < 0 else f"local min/max + {halo:g} × range",
            "why": per(lambda r: "; ".join(r.notes) or "all parameters given"),
            "seconds": round(t["seconds"], 3),
        }
        if notes:
            fields["input"] = notes
        return (out, format_info("Smart Sharpen", fields))


NODE_CLASS_MAPPINGS = {"RestoreKitSmartSharpen": RestoreKitSmartSharpen}
NODE_DISPLAY_NAME_MAPPINGS = {"RestoreKitSmartSharpen": "Smart Sharpen"}

"""Hybrid restorer nodes: damage analysis and the routed restorer (library: hybrid/)."""
from __future__ import annotations

import json

import numpy as np

from ._common import CATEGORY_ROOT, DEVICE_INPUT, choice_input, float_input, image_input, ImageNode, info_text
from ._common import map_images, node_mappings
from ..hybrid.engine import CALIBRATED, DEFAULT_ESTIMATOR, ESTIMATORS, STRATEGIES, STRATEGY_HELP, Thresholds

CATEGORY = f"{CATEGORY_ROOT}/Hybrid"
#: the engine's calibrated defaults (hybrid/engine.py), the one place they are set
LIGHT_DB = Thresholds().light_min_db
SEVERE_DB = Thresholds().severe_max_db
ESTIMATOR_HELP = (
    "What the thresholds compare. forest (default): the random forest's estimate of the image's PSNR from the "
    "14 damage features (about 1 ms). unet: PSNR of the image against the U-Net's restoration of it (the "
    "restoration stands in for the unknown original; costs one U-Net run, reused when the image goes to the "
    "U-Net). Calibrated thresholds: " + "; ".join(f"{k}: light >= {v[0]:g}, severe < {v[1]:g} dB"
                                                  for k, v in CALIBRATED.items()) + ".")


MASK_HELP = ("Optional damage mask (MASK, white = damaged): these pixels are inpainted instead of the detector's "
             "mask — e.g. Load Image's MASK after painting the scratches in the mask editor, or the Damage "
             "Analysis mask. An all-black mask (what Load Image gives for a picture never painted on) counts as "
             "no mask: the detector decides. One mask for the whole batch or one per image; a mask of another "
             "size with the same aspect ratio is resized (nearest), another aspect ratio is an error.")
MASK_MODES = ("as inpainted", "all detected")
MASK_MODE_HELP = ("Which damage mask to output. as inpainted: what Hybrid Restore inpaints by itself — the inpaint "
                  "gate's choice among the detector's masks, and nothing when no mask is predicted to gain (the "
                  "info says why). all detected: every pixel the detector rates above its operating point (precision "
                  "and recall balanced on validation: more scratches found, and some scene detail taken for "
                  "damage) — a starting point to edit.")
#: a given mask may differ from the image's aspect ratio by this fraction (rounding of a resized mask)
MASK_ASPECT_TOLERANCE = 0.02


def _restorer(light_min_db, severe_max_db, device, estimator):
    from ..hybrid.engine import shared_restorer

    return shared_restorer(Thresholds(float(light_min_db), float(severe_max_db), estimator), device)


class RestoreKitHybridRestore(ImageNode):
    """Analyse each image's damage and restore it with the cheapest adequate method."""

    DISPLAY_NAME = "Hybrid Restore (damage-routed)"
    DESCRIPTION = ("Hybrid restorer for damaged photos and artwork: measures each defect (noise, blur, motion, "
                   "tone, colour cast, illumination, JPEG, 14 FFT features), then runs a plan over the pack's own "
                   "tools (inpaint, denoise, deblur, tone, colour, sharpen) or, for severe damage, the U-Net.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING", "MASK")  # outputs are only appended: saved links keep their index
    RETURN_NAMES = ("image", "info", "mask")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "strategy": choice_input(STRATEGIES, STRATEGY_HELP),
                "light_min_db": float_input(
                    LIGHT_DB, 5.0, 60.0, 0.25,
                    "auto only: images whose estimated quality (PSNR against the undamaged original, dB; "
                    "see estimator) is at least this are 'light' (light and moderate both go to the classical "
                    "plan; this only labels the report)."),
                "severe_max_db": float_input(
                    SEVERE_DB, 5.0, 60.0, 0.25,
                    "auto only: images whose estimated quality is below this (dB) are 'severe' -> U-Net; "
                    "above it -> the classical plan. Default chosen on the validation split. Must not exceed "
                    "light_min_db."),
                "device": DEVICE_INPUT,
            },
            # optional, so prompts written before they existed still validate
            "optional": {"estimator": choice_input(ESTIMATORS, ESTIMATOR_HELP, DEFAULT_ESTIMATOR),
                         "mask": ("MASK", {"tooltip": MASK_HELP})},
        }

    def restore(self, image, strategy="auto", light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, device="auto",
                estimator=DEFAULT_ESTIMATOR, mask=None):
        import torch

        from ..scripts.batch import check_image, read_masks

        restorer = _restorer(light_min_db, severe_max_db, device, estimator)
        settings = {"strategy": strategy,
                    "thresholds": f"light >= {light_min_db} dB, severe < {severe_max_db} dB (estimated quality, "
                                  f"{estimator})"}
        given = None
        m = None if mask is None else torch.as_tensor(mask)
        if m is not None and bool(torch.isfinite(m).all()) and not bool((m > 0.5).any()):
            settings["mask"] = "given mask is empty (all black): the detector decides"
            mask = None
        if mask is not None:
            b, h, w, _ = check_image(image).shape
            given = read_masks(mask, h, w, batch=b, aspect_tolerance=MASK_ASPECT_TOLERANCE) > 0.5
            settings["mask"] = (f"given ({given.shape[0]} for {b} image(s)"
                                + (f", resized from {mask.shape[-1]}x{mask.shape[-2]}"
                                   if tuple(mask.shape[-2:]) != (h, w) else "") + ")")

        def run(img, i):
            mine = None if given is None else given[min(i, given.shape[0] - 1)]
            out, rep = restorer.restore(img, strategy, mask=mine)
            used = rep.mask if rep.mask is not None else np.zeros(img.shape[:2], bool)
            if mine is not None and mine.any() and rep.mask is None:
                rep.notes = list(rep.notes) + [f"the given mask was not inpainted: the {rep.method} path ran"]
            return (out, used.astype(np.float32)), rep

        # grey stays one channel: the plan works on it as it is (the U-Net path replicates it internally)
        (out, used), report = map_images(image, run, what=self.DISPLAY_NAME, stage="restore", values="as_is",
                                         grey="keep", pass_index=True, alpha_to=(0,))
        return out, info_text(self.DISPLAY_NAME, report.items, settings, report), used[..., 0]


class RestoreKitDamageAnalysis:
    """The 14 FFT damage features of each image, the quality estimate and the severity."""

    DISPLAY_NAME = "Damage Analysis (FFT)"
    DESCRIPTION = ("Damage analysis: the defects with units (noise σ and kind, blur and motion, black/white point, "
                   "Oklab colour cast, illumination, JPEG blockiness), 14 FFT features, the estimated quality (dB) "
                   "and the severity (light/moderate/severe).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "STRING", "MASK")  # outputs are only appended: saved links keep their index
    RETURN_NAMES = ("features", "severity", "info", "mask")
    FUNCTION = "analyse"
    OUTPUT_NODE = True  # shows its report in the UI and runs even with nothing connected

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "light_min_db": float_input(LIGHT_DB, 5.0, 60.0, 0.25,
                                            "Estimated quality (dB) at or above which the damage is 'light'."),
                "severe_max_db": float_input(SEVERE_DB, 5.0, 60.0, 0.25,
                                             "Estimated quality (dB) below which the damage is 'severe'."),
            },
            "optional": {"estimator": choice_input(ESTIMATORS, ESTIMATOR_HELP, DEFAULT_ESTIMATOR),
                         "mask_mode": choice_input(MASK_MODES, MASK_MODE_HELP)},
        }

    def analyse(self, image, light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, estimator=DEFAULT_ESTIMATOR,
                mask_mode=MASK_MODES[0]):
        from ..hybrid import damage_mask

        if mask_mode not in MASK_MODES:
            raise ValueError(f"{self.DISPLAY_NAME}: unknown mask_mode '{mask_mode}' (expected one of {MASK_MODES})")
        restorer = _restorer(light_min_db, severe_max_db, "auto", estimator)

        def run(img):
            analysis = restorer.analyse(img)  # first: it refuses mis-scaled data with the engine's message
            if mask_mode == MASK_MODES[0]:  # exactly what Hybrid Restore inpaints by itself
                choice = restorer.inpaint_mask(img)
                mrep = choice.report(img.shape[:2])
                found = choice.inpaint if choice.inpaint is not None else np.zeros(img.shape[:2], bool)
            else:
                found, mrep = damage_mask.detect(img)
            return found.astype(np.float32), (analysis, mrep)

        found, report = map_images(image, run, what=self.DISPLAY_NAME, stage="damage mask", values="as_is",
                                   grey="keep", alpha_to=())
        analyses = [a for a, _ in report.items]
        masks = [m for _, m in report.items]
        results = [{"features": a.features, "quality_db": a.quality_db, "severity": a.severity,
                    "quality_source": a.quality_source, "forest_quality_db": a.forest_quality_db,
                    "defects": a.defects, "defect_summary": a.defect_summary, "damage_mask": m.as_dict()}
                   for a, m in zip(analyses, masks)]
        features = json.dumps(results[0] if len(results) == 1 else results, indent=1)
        severity = ", ".join(a.severity for a in analyses)
        info = info_text(self.DISPLAY_NAME, analyses, {"mask": [m.summary() + (f" ({m.note})" if m.note else "") for m in masks],
                                                       "seconds": round(report.seconds, 3)})
        return {"ui": {"text": [info + "\nfeatures:\n" + features]},
                "result": (features, severity, info, found[..., 0])}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitHybridRestore, RestoreKitDamageAnalysis)

"""Hybrid restorer nodes: damage analysis and the routed restorer (library: hybrid/)."""
from __future__ import annotations

import json

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
            # optional, so prompts written before it existed still validate
            "optional": {"estimator": choice_input(ESTIMATORS, ESTIMATOR_HELP, DEFAULT_ESTIMATOR)},
        }

    def restore(self, image, strategy="auto", light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, device="auto",
                estimator=DEFAULT_ESTIMATOR):
        restorer = _restorer(light_min_db, severe_max_db, device, estimator)
        settings = {"strategy": strategy,
                    "thresholds": f"light >= {light_min_db} dB, severe < {severe_max_db} dB (estimated quality, "
                                  f"{estimator})"}
        # grey stays one channel: the plan works on it as it is (the U-Net path replicates it internally)
        return self.run_images(image, lambda rgb: restorer.restore(rgb, strategy), settings, stage="restore",
                               values="as_is", grey="keep")


class RestoreKitDamageAnalysis:
    """The 14 FFT damage features of each image, the quality estimate and the severity."""

    DISPLAY_NAME = "Damage Analysis (FFT)"
    DESCRIPTION = ("Damage analysis: the defects with units (noise σ and kind, blur and motion, black/white point, "
                   "Oklab colour cast, illumination, JPEG blockiness), 14 FFT features, the estimated quality (dB) "
                   "and the severity (light/moderate/severe).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("features", "severity", "info")
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
            "optional": {"estimator": choice_input(ESTIMATORS, ESTIMATOR_HELP, DEFAULT_ESTIMATOR)},
        }

    def analyse(self, image, light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, estimator=DEFAULT_ESTIMATOR):
        restorer = _restorer(light_min_db, severe_max_db, "auto", estimator)
        _, report = map_images(image, lambda rgb: (None, restorer.analyse(rgb)), what=self.DISPLAY_NAME,
                               values="as_is", grey="keep")
        results = [{"features": a.features, "quality_db": a.quality_db, "severity": a.severity,
                    "quality_source": a.quality_source, "forest_quality_db": a.forest_quality_db,
                    "defects": a.defects, "defect_summary": a.defect_summary}
                   for a in report.items]
        features = json.dumps(results[0] if len(results) == 1 else results, indent=1)
        severity = ", ".join(a.severity for a in report.items)
        info = info_text(self.DISPLAY_NAME, report.items, {"seconds": round(report.seconds, 3)})
        return {"ui": {"text": [info + "\nfeatures:\n" + features]}, "result": (features, severity, info)}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitHybridRestore, RestoreKitDamageAnalysis)

"""Hybrid restorer nodes: damage analysis and the routed restorer (library: hybrid/)."""
from __future__ import annotations

import json

import numpy as np
import torch

from ._common import (
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
    to_numpy,
    from_numpy,
)

from ..hybrid.engine import CALIBRATED, DEFAULT_ESTIMATOR, ESTIMATORS, Thresholds

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
STRATEGY_HELP = (
    "auto: measure the defects; light and moderate damage -> the classical plan, severe -> the U-Net. "
    "classical: the plan over the pack's own tools (inpaint, denoise, deblur, tone, colour, sharpen), each stage "
    "only when its defect is measured; an image with none comes back unchanged and the info says why. "
    "ml_guided: unsharp/colour-stretch parameters predicted by the random forest, or no change when no setting "
    "is predicted to help. deep_learning: the shipped U-Net."
)

_RESTORERS = {}


def _restorer(light_min_db: float, severe_max_db: float, device: str, estimator: str = DEFAULT_ESTIMATOR):
    from ..hybrid.engine import HybridRestorer, Thresholds

    th = Thresholds(light_min_db=float(light_min_db), severe_max_db=float(severe_max_db), estimator=estimator)
    key = (th.light_min_db, th.severe_max_db, th.estimator, device)
    if key not in _RESTORERS:
        shared = next(iter(_RESTORERS.values()), None)
        r = HybridRestorer(thresholds=th, device=device)
        if shared is not None:  # share the loaded models between threshold settings
            r._predictor, r._unet = shared._predictor, shared._unet
        _RESTORERS.clear()
        _RESTORERS[key] = r
    return _RESTORERS[key]


class RestoreKitHybridRestore:
    """Analyse each image's damage and restore it with the cheapest adequate method."""

    DESCRIPTION = ("Hybrid restorer for damaged photos and artwork: measures each defect (noise, blur, motion, "
                   "tone, colour cast, illumination, JPEG, 14 FFT features), then runs a plan over the pack's own "
                   "tools (inpaint, denoise, deblur, tone, colour, sharpen) or, for severe damage, the U-Net.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": image_input(),
                "strategy": choice_input(["auto", "classical", "ml_guided", "deep_learning"], STRATEGY_HELP),
                "light_min_db": float_input(
                    LIGHT_DB, 5.0, 60.0, 0.25,
                    "auto only: images whose estimated quality (PSNR against the undamaged original, dB; "
                    "see estimator) is at least this are 'light' -> classical. Default calibrated on the "
                    "validation split for the best restored PSNR."),
                "severe_max_db": float_input(
                    SEVERE_DB, 5.0, 60.0, 0.25,
                    "auto only: images whose estimated quality is below this (dB) are 'severe' -> U-Net; "
                    "between the two thresholds -> ML-guided classical. Must not exceed light_min_db."),
                "device": DEVICE_INPUT,
            },
            # optional, so prompts written before it existed still validate
            "optional": {"estimator": choice_input(list(ESTIMATORS), ESTIMATOR_HELP, DEFAULT_ESTIMATOR)},
        }

    def restore(self, image, strategy="auto", light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, device="auto",
                estimator=DEFAULT_ESTIMATOR):
        image = check_image(image, "image", nan="error")
        if severe_max_db > light_min_db:
            raise ValueError(f"severe_max_db ({severe_max_db}) must not exceed light_min_db ({light_min_db})")
        restorer = _restorer(light_min_db, severe_max_db, device, estimator)
        rgb, alpha = split_alpha(image)
        arr = to_numpy(rgb)  # grey stays one channel: the plan works on it as it is
        outs, infos = [], []
        with timed() as t:
            for i in range(arr.shape[0]):
                out, info = restorer.restore(arr[i], strategy)
                outs.append(out)
                infos.append(info)
        res = merge_alpha(from_numpy(np.stack(outs)), alpha)
        per_image = [{"method": inf["method"], "severity": inf["severity"],
                      "quality_estimate_db": round(inf["analysis"]["quality_db"], 2),
                      "stages": inf.get("stages", []), "unchanged": inf.get("unchanged", False),
                      "reason": inf.get("reason", ""), "defects": inf["analysis"].get("defect_summary", ""),
                      "parameters": {k: v for k, v in inf["parameters"].items() if k not in ("runner", "execution")},
                      "runner": inf["parameters"].get("runner")} for inf in infos]
        notes = sorted({n for inf in infos for n in inf.get("notes", [])})
        info = format_info("Hybrid restore", {
            "strategy": strategy,
            "thresholds": f"light >= {light_min_db} dB, severe < {severe_max_db} dB (estimated quality, {estimator})",
            "images": json.dumps(per_image, default=str),
            "notes": notes or "shipped models (models/hybrid) used",
            "seconds": t["seconds"],
        })
        return (res, info)


class RestoreKitDamageAnalysis:
    """The 14 FFT damage features of each image, the quality estimate and the severity."""

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
            "optional": {"estimator": choice_input(list(ESTIMATORS), ESTIMATOR_HELP, DEFAULT_ESTIMATOR)},
        }

    def analyse(self, image, light_min_db=LIGHT_DB, severe_max_db=SEVERE_DB, estimator=DEFAULT_ESTIMATOR):
        image = check_image(image, "image", nan="error")
        if severe_max_db > light_min_db:
            raise ValueError(f"severe_max_db ({severe_max_db}) must not exceed light_min_db ({light_min_db})")
        restorer = _restorer(light_min_db, severe_max_db, "auto", estimator)
        rgb, _alpha = split_alpha(image)
        arr = to_numpy(rgb)
        results = []
        with timed() as t:
            for i in range(arr.shape[0]):
                a = restorer.analyse(arr[i])
                results.append({"features": a["features"], "quality_db": a["quality_db"],
                                "severity": a["severity"], "quality_source": a["quality_source"],
                                "forest_quality_db": a["forest_quality_db"], "defects": a["defects"],
                                "defect_summary": a["defect_summary"]})
        features = json.dumps(results[0] if len(results) == 1 else results, indent=1)
        severity = ", ".join(r["severity"] for r in results)
        info = format_info("Damage analysis", {
            "severity": severity,
            "quality estimate (dB)": ", ".join(f"{r['quality_db']:.2f}" for r in results),
            "estimated by": results[0]["quality_source"],
            "defects": " | ".join(r["defect_summary"] for r in results),
            "seconds": t["seconds"],
        })
        return {"ui": {"text": [info + "\nfeatures:\n" + features]}, "result": (features, severity, info)}


NODE_CLASS_MAPPINGS = {
    "RestoreKitHybridRestore": RestoreKitHybridRestore,
    "RestoreKitDamageAnalysis": RestoreKitDamageAnalysis,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitHybridRestore": "Hybrid Restore (damage-routed)",
    "RestoreKitDamageAnalysis": "Damage Analysis (FFT)",
}

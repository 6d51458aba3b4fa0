"""Generic model nodes over the memory-safe runner: load any spandrel model, run it safely; status.

Thin wrappers: ``scripts.inference.files`` loads (weights only, never unpickled code),
``scripts.inference.runner`` plans device, tile and precision and falls back on out-of-memory.
"""
from __future__ import annotations

from ._common import (
    CATEGORY_ROOT,
    DEVICE_INPUT,
    check_image,
    choice_input,
    format_info,
    image_input,
    int_input,
)

MODEL_TYPE = "RESTOREKIT_MODEL"
UPSCALE_FOLDER = "upscale_models"


def _runtime():
    from ..scripts.inference.runtime import get_runtime

    return get_runtime()


class RestoreKitLoadModel:
    DESCRIPTION = (
        "Load a restoration model file (.pth/.safetensors) from ComfyUI's models/upscale_models folder: "
        "any architecture spandrel supports (Real-ESRGAN, Compact, SCUNet, SwinIR…). Weights only: "
        "files carrying pickled code are refused. ncnn models (.param + .bin, e.g. from upscayl or chaiNNer) "
        "are listed too and converted on first use into models/restorekit_converted (cached by sha256)."
    )
    CATEGORY = f"{CATEGORY_ROOT}/Models"
    RETURN_TYPES = (MODEL_TYPE, "STRING")
    RETURN_NAMES = ("model", "info")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..scripts.inference.ncnn import param_files

        rt = _runtime()
        files = sorted(set(rt.model_files(UPSCALE_FOLDER)) | set(param_files(rt.model_folders(UPSCALE_FOLDER))))
        return {
            "required": {
                "model_name": (files, {"tooltip": "A model file in models/upscale_models (spandrel-supported architecture, or an ncnn .param with its .bin)."}),
            }
        }

    def load(self, model_name):
        from ..scripts.inference.ncnn import load_model_file

        path = _runtime().resolve_model_file(UPSCALE_FOLDER, model_name)
        handle, note = load_model_file(path)
        info = format_info(
            "Load Restoration Model",
            {
                "file": model_name + (f" ({note})" if note else ""),
                "architecture": handle.describe(),
                "size multiple": handle.size_multiple,
                "tiling": handle.tiling,
                "fp16": handle.supports_half,
                "bf16": handle.supports_bfloat16,
            },
        )
        return (handle, info)


class RestoreKitRestoreWithModel:
    DESCRIPTION = (
        "Run a loaded restoration model on the image without running out of memory: device and tile "
        "size are chosen from measured free memory; on out-of-memory the tile is halved, then the CPU is "
        "used. The info output lists every step taken."
    )
    CATEGORY = f"{CATEGORY_ROOT}/Models"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "A model from 'Load Restoration Model'."}),
                "image": image_input(),
                "device": DEVICE_INPUT,
                "tile": int_input(0, 0, 4096, "Tile side in input pixels; 0 = automatic from free memory (no tiling when the image fits)."),
                "overlap": int_input(32, 0, 512, "Overlap between tiles in input pixels (raised to the architecture's minimum); seams are feathered in the middle half of it."),
                "precision": choice_input(["auto", "fp32", "fp16", "bf16"], "Compute precision. auto: fp16 on CUDA when the model supports it, else fp32. fp16/bf16 fall back to fp32 where unsupported."),
            }
        }

    def restore(self, model, image, device, tile, overlap, precision):
        from ..scripts.inference.runner import run_model

        image = check_image(image)
        ov = max(int(overlap), int(model.min_overlap))
        out, report = run_model(model, image, device=device, tile=int(tile), overlap=ov, precision=precision)
        fields = report.summary()
        fields["input"] = f"{image.shape[0]}x{image.shape[2]}x{image.shape[1]} px, {image.shape[3]} ch"
        fields["output"] = f"{out.shape[2]}x{out.shape[1]} px"
        return (out, format_info("Restore With Model (memory-safe)", fields))


class RestoreKitStatus:
    DESCRIPTION = "Report RAM and VRAM, the chosen device, optional dependencies and the models found in the model folders."
    CATEGORY = f"{CATEGORY_ROOT}/Utility"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    FUNCTION = "status"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # memory changes: always re-run

    def status(self):
        from ..scripts.status_report import report_text

        text = report_text()
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "RestoreKitLoadModel": RestoreKitLoadModel,
    "RestoreKitRestoreWithModel": RestoreKitRestoreWithModel,
    "RestoreKitStatus": RestoreKitStatus,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RestoreKitLoadModel": "Load Restoration Model",
    "RestoreKitRestoreWithModel": "Restore With Model (memory-safe)",
    "RestoreKitStatus": "RestoreKit Status",
}

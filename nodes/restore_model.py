"""Generic model nodes over the memory-safe runner: load any spandrel model, run it safely.

Thin wrappers: ``scripts.inference.files`` loads (weights only, never unpickled code),
``scripts.inference.runner`` plans device, tile and precision and falls back on out-of-memory.
"""
from __future__ import annotations

from ._common import CATEGORY_ROOT, DEVICE_INPUT, check_image, choice_input, image_input, ImageNode, info_text
from ._common import int_input, model_files, model_path, node_mappings
from ..scripts.inference.runner import PRECISIONS

MODEL_TYPE = "RESTOREKIT_MODEL"
UPSCALE_FOLDER = "upscale_models"


class RestoreKitLoadModel:
    DISPLAY_NAME = "Load Restoration Model"
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
        return {"required": {
            "model_name": (model_files(UPSCALE_FOLDER, ncnn_params=True),
                           {"tooltip": "A model file in models/upscale_models (spandrel-supported architecture, "
                                       "or an ncnn .param with its .bin)."}),
        }}

    def load(self, model_name):
        from ..scripts.inference.ncnn import load_model_file

        handle, note = load_model_file(model_path(UPSCALE_FOLDER, model_name))
        return (handle, info_text(self.DISPLAY_NAME, {"file": model_name + (f" ({note})" if note else "")}, handle))


class RestoreKitRestoreWithModel(ImageNode):
    DISPLAY_NAME = "Restore With Model (memory-safe)"
    DESCRIPTION = (
        "Run a loaded restoration model on the image without running out of memory: device and tile "
        "size are chosen from measured free memory; on out-of-memory the tile is halved, then the CPU is "
        "used. The info output lists every step taken."
    )
    CATEGORY = f"{CATEGORY_ROOT}/Models"
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (MODEL_TYPE, {"tooltip": "A model from 'Load Restoration Model'."}),
            "image": image_input(),
            "device": DEVICE_INPUT,
            "tile": int_input(0, 0, 4096, "Tile side in input pixels; 0 = automatic from free memory (no tiling when the image fits)."),
            "overlap": int_input(32, 0, 512, "Overlap between tiles in input pixels (raised to the architecture's minimum); seams are feathered in the middle half of it."),
            "precision": choice_input(PRECISIONS, "Compute precision. auto: fp16 on CUDA when the model supports it, else fp32. fp16/bf16 fall back to fp32 where unsupported."),
        }}

    def restore(self, model, image, device, tile, overlap, precision):
        from ..scripts.inference.runner import run_model

        image = check_image(image)
        out, report = run_model(model, image, device=device, tile=int(tile),
                                overlap=max(int(overlap), int(model.min_overlap)), precision=precision)
        sizes = {"input": f"{image.shape[0]}x{image.shape[2]}x{image.shape[1]} px, {image.shape[3]} ch",
                 "output": f"{out.shape[2]}x{out.shape[1]} px"}
        return (out, info_text(self.DISPLAY_NAME, report, sizes))


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(
    RestoreKitLoadModel, RestoreKitRestoreWithModel)

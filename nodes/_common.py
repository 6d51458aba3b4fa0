"""What every node module shares: input declarations, and the one way a node runs and reports.

A node is a schema plus one library call.  The schema is built from the declarations here and the
option tuples the library defines (``scripts/*``: the choices of every dropdown).  The call goes
through :func:`scripts.batch.map_images` (input checks, value range, the alpha rule, no silent data
loss, per-image batches, the memory-safe runner for torch work) or a library function that does the
same (the model chain, the PSF), and returns ``(result, report)``.  ``info`` is the report as text,
from :func:`scripts.report.info_text` — the one formatter.

ComfyUI's IMAGE is a float32 tensor ``[B, H, W, C]`` in 0..1 on the CPU, C = 1, 3 (RGB) or 4 (RGBA);
MASK is ``[B, H, W]``.
"""
from __future__ import annotations

from typing import List, Optional

from ..scripts.batch import check_image, map_images, to_image
from ..scripts.inference.memory_utils import DEVICE_CHOICES
from ..scripts.report import info_text

__all__ = ["CATEGORY_ROOT", "DEVICE_INPUT", "ImageNode", "InfoNode", "bool_input", "check_image", "choice_input", "float_input",
           "image_input", "info_text", "int_input", "map_images", "model_files", "model_path", "node_mappings",
           "string_input", "to_image"]

CATEGORY_ROOT = "RestoreKit"


class ImageNode:
    """A node that returns an image and its info text.  ``DISPLAY_NAME`` is its name in the UI, in its
    info text and in its errors."""

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "info")
    DISPLAY_NAME = ""

    def run_images(self, image, fn, *info_parts, **map_kwargs):
        """The usual node body: the library call ``fn`` through :func:`scripts.batch.map_images`, then
        ``(image(s), info)`` with info from the per-image reports, ``info_parts`` and the batch report."""
        out, report = map_images(image, fn, what=self.DISPLAY_NAME, **map_kwargs)
        return out, info_text(self.DISPLAY_NAME, report.items, *info_parts, report)


class InfoNode:
    """An output node whose only result is its info text (shown on the node)."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("info",)
    OUTPUT_NODE = True
    DISPLAY_NAME = ""


def node_mappings(*classes):
    """``(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)`` of a node module: the node id is the class
    name, the display name its ``DISPLAY_NAME``."""
    return ({cls.__name__: cls for cls in classes}, {cls.__name__: cls.DISPLAY_NAME for cls in classes})


# --- input declarations -----------------------------------------------------------------------
def image_input(tooltip: str = "Image(s) to process: IMAGE [B,H,W,C], RGB or RGBA, 0..1."):
    return ("IMAGE", {"tooltip": tooltip})


def float_input(default, min, max, step, tooltip, round=None):
    opts = {"default": default, "min": min, "max": max, "step": step, "tooltip": tooltip}
    if round is not None:
        opts["round"] = round
    return ("FLOAT", opts)


def int_input(default, min, max, tooltip, step=1):
    return ("INT", {"default": default, "min": min, "max": max, "step": step, "tooltip": tooltip})


def bool_input(default, tooltip):
    return ("BOOLEAN", {"default": default, "tooltip": tooltip})


def choice_input(options, tooltip: str, default: Optional[str] = None):
    options = list(options)
    return (options, {"default": default or options[0], "tooltip": tooltip})


def string_input(default: str, tooltip: str, multiline: bool = False):
    return ("STRING", {"default": default, "multiline": multiline, "tooltip": tooltip})


DEVICE_INPUT = choice_input(
    DEVICE_CHOICES,
    "Where torch work runs. auto: the GPU when one has room (ComfyUI's device), else the CPU.",
)


# --- model files ----------------------------------------------------------------------------------
def model_files(kind: str, archs=None, ncnn_params: bool = False) -> List[str]:
    """Model file names in the host's ``kind`` folders, for a dropdown (empty when none or no host).

    ``archs``: leave out converted files of other architectures (``scripts.inference.ncnn``);
    ``ncnn_params``: list ncnn ``.param`` files too (converted on first use)."""
    from ..scripts.inference.runtime import get_runtime

    try:
        rt = get_runtime()
        files = list(rt.model_files(kind))
        if archs or ncnn_params:
            from ..scripts.inference import ncnn

            if archs:
                files = ncnn.drop_other_archs(rt.model_folders(kind), files, archs)
            if ncnn_params:
                files = sorted(set(files) | set(ncnn.param_files(rt.model_folders(kind))))
        return files
    except Exception:
        return []


def model_path(kind: str, name: str) -> str:
    """The full path of model file ``name`` inside a ``kind`` folder (refuses anything outside)."""
    from ..scripts.inference.runtime import get_runtime

    return get_runtime().resolve_model_file(kind, name)

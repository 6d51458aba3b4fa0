"""Load Image (16-bit/float) and Save Image (16-bit/float): archive scans keep their depth.

ComfyUI 0.3.64's core LoadImage turns a 16-bit greyscale PNG into an all-white image and SaveImage
writes 8 bits.  These two nodes read and write through the pack's one image I/O module
(:mod:`scripts.image_io`): 8/16-bit PNG and TIFF, float TIFF, EXR (with the optional OpenEXR package),
JPEG and WebP; EXIF orientation applied; ICC profile, EXIF, XMP, resolution and text metadata passed
from the loader to the saver through the ``metadata`` link; greyscale written back as greyscale.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np
import torch

from ..scripts import image_io
from ._common import CATEGORY_ROOT, InfoNode, check_image, choice_input, info_text, int_input, node_mappings
from ._common import string_input
from .comfy_adapter import install

CATEGORY = f"{CATEGORY_ROOT}/Image"
META_TYPE = "RESTOREKIT_IMAGE_META"
SAVE_FORMATS = ["png", "tiff", "exr", "jpeg", "webp"]
SAVE_DEPTHS = ["16", "8", "32 (float)", "as loaded"]
#: formats a browser shows in ComfyUI's preview; the others get an 8-bit PNG preview in temp
PREVIEWABLE = {"png", "jpeg", "webp"}


def _runtime():
    return install()


def _input_files():
    folder = _runtime().image_folder("input")
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder)
                  if os.path.isfile(os.path.join(folder, f)) and image_io.is_image_file(f))


class RestoreKitLoadImage16:
    """Load an image file at full depth (8/16-bit PNG/TIFF, float TIFF/EXR, JPEG, WebP), upright
    (EXIF orientation applied), with its metadata for Save Image (16-bit/float)."""

    DISPLAY_NAME = "Load Image (16-bit/float)"
    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", META_TYPE, "STRING")
    RETURN_NAMES = ("image", "mask", "metadata", "info")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (_input_files(), {
            "image_upload": True,
            "tooltip": "A file in ComfyUI's input folder. 16-bit samples become float32 exactly "
                       "(value/65535); grey is given as RGB with equal channels (and saved back as grey); "
                       "alpha becomes the mask (1 - alpha, as core Load Image)."})}}

    def load(self, image):
        path = _runtime().image_path(image)
        t0 = time.perf_counter()
        data = image_io.read_image(path)
        seconds = time.perf_counter() - t0
        px = data.pixels
        rgb = px[..., :3] if px.shape[-1] >= 3 else np.repeat(px, 3, axis=-1)
        if px.shape[-1] == 4:
            mask = 1.0 - px[..., 3]
        else:
            mask = np.zeros((64, 64), np.float32)  # core LoadImage's "no alpha" mask
        info = info_text(self.DISPLAY_NAME, {
            "file": os.path.basename(path),
            "read as": data.meta.describe(),
            "size": f"{px.shape[1]}x{px.shape[0]}",
            "notes": data.meta.notes or "none",
            "seconds": seconds,
        })
        return (torch.from_numpy(np.ascontiguousarray(rgb))[None], torch.from_numpy(np.ascontiguousarray(mask))[None],
                data.meta, info)

    @classmethod
    def IS_CHANGED(cls, image):
        h = hashlib.sha256()
        with open(_runtime().image_path(image), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        try:
            path = _runtime().image_path(image)
        except ValueError as exc:
            return str(exc)
        if not os.path.isfile(path):
            return f"Invalid image file: {image}"
        return True


class RestoreKitSaveImage16(InfoNode):
    """Save images at 16 bits (PNG/TIFF), as float (TIFF 32-bit, EXR) or as JPEG/WebP, keeping the
    loaded file's ICC profile and metadata and writing greyscale sources back as greyscale."""

    DISPLAY_NAME = "Save Image (16-bit/float)"
    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Image(s) to save (IMAGE [B,H,W,C], 0..1)."}),
                "filename_prefix": string_input("RestoreKit", "File name prefix; may contain a subfolder "
                                                "(sub/name). Files are numbered like core Save Image."),
                "format": choice_input(SAVE_FORMATS, "png: 8/16-bit. tiff: 8/16-bit or 32-bit float. exr: "
                                       "16/32-bit float, linear light (needs the OpenEXR package). jpeg, "
                                       "webp: 8-bit (quality below)."),
                "bit_depth": choice_input(SAVE_DEPTHS, "Bits per sample. A depth the format cannot store "
                                          "becomes the nearest it can (info says so). 'as loaded': the "
                                          "depth of the file the metadata came from (8 without it)."),
                "quality": int_input(image_io.DEFAULT_QUALITY, 1, 100, "JPEG/WebP quality (WebP 100 = lossless)."),
            },
            "optional": {
                "metadata": (META_TYPE, {"tooltip": "From Load Image (16-bit/float): ICC profile, EXIF, "
                                                    "XMP, resolution and text are carried over, and a "
                                                    "greyscale source is saved as greyscale."}),
                "mask": ("MASK", {"tooltip": "Saved as the alpha channel (alpha = 1 - mask, as core Load "
                                             "Image makes it). Not for JPEG."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, filename_prefix="RestoreKit", format="png", bit_depth="16",
             quality=image_io.DEFAULT_QUALITY, metadata=None, mask=None, prompt=None, extra_pnginfo=None):
        if format not in SAVE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(SAVE_FORMATS)}, got {format!r}")
        if bit_depth not in SAVE_DEPTHS:
            raise ValueError(f"bit_depth must be one of {', '.join(SAVE_DEPTHS)}, got {bit_depth!r}")
        x = check_image(images, "images").detach().cpu()
        meta = metadata if isinstance(metadata, image_io.ImageMeta) else image_io.ImageMeta()
        meta = image_io.ImageMeta(**{**meta.__dict__, "text": dict(meta.text), "notes": []})
        runtime = _runtime()
        if format == "png" and runtime.workflow_metadata_enabled():
            if prompt is not None:
                meta.text["prompt"] = json.dumps(prompt)
            for key, value in (extra_pnginfo or {}).items():
                meta.text[key] = json.dumps(value)
        depth = {"16": 16, "8": 8, "32 (float)": 32}.get(bit_depth, meta.bit_depth if metadata is not None else 8)
        alpha = _mask_alpha(mask, x.shape)
        folder, stem, counter, subfolder = runtime.save_target(filename_prefix)
        ext = image_io.FORMAT_EXTENSION[image_io.FORMAT_NAMES[format]]
        shown, written, notes = [], [], set()
        t0 = time.perf_counter()
        for i in range(x.shape[0]):
            px = x[i].float().numpy()
            if alpha is not None and px.shape[-1] in (1, 3):
                px = np.concatenate([px, alpha[min(i, alpha.shape[0] - 1)][..., None]], -1)
            name = f"{stem}_{counter:05}_{ext}"
            res = image_io.write_image(os.path.join(folder, name), px, meta, bit_depth=depth,
                                       quality=int(quality), overwrite=False)
            counter += 1
            written.append(res)
            notes.update(res.notes)
            if format in PREVIEWABLE:
                shown.append({"filename": name, "subfolder": subfolder, "type": "output"})
            else:
                shown.append(_preview(runtime, px, f"{stem}_{counter - 1:05}_preview"))
        info = info_text(self.DISPLAY_NAME, {
            "files": [os.path.join(subfolder, os.path.basename(r.path)) for r in written],
            "written as": f"{written[0].format} {written[0].bit_depth}-bit{' float' if written[0].bit_depth == 32 else ''} "
                          f"{'grey' if written[0].grey else 'colour'}",
            "metadata": meta.describe() if metadata is not None else "none linked (Software tag only)",
            "notes": sorted(notes) or "none",
            "seconds": time.perf_counter() - t0,
        })
        return {"ui": {"images": shown, "text": [info]}, "result": (info,)}


def _mask_alpha(mask, shape):
    """MASK ``[B,H,W]`` -> alpha ``[B,H,W]`` numpy (1 - mask), or None; a mask of another size (core
    LoadImage's 64x64 'no alpha' mask) is ignored."""
    if mask is None:
        return None
    m = torch.as_tensor(mask).detach().cpu().float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(shape[1:3]):
        return None
    return (1.0 - m.clamp(0, 1)).numpy()


def _preview(runtime, px, stem):
    folder, _stem, _counter, _sub = runtime.save_target("restorekit_preview", kind="temp")
    name = f"{stem}.png"
    image_io.write_image(os.path.join(folder, name), px, image_io.ImageMeta(), bit_depth=8)
    return {"filename": name, "subfolder": _sub, "type": "temp"}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(RestoreKitLoadImage16, RestoreKitSaveImage16)

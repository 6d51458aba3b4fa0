"""Restore an image batch with one model family, falling back when the model cannot run.

:func:`run_family` is what every model node calls.  It resolves the model file in the family's folder
(:data:`.zoo.FOLDER_KINDS`, through the host runtime), loads it with :func:`.zoo.load` (weights only,
strict architecture checks, cached), applies the family's tile rule (:func:`.zoo.tile_rule`) and runs
it through :func:`.runner.run_model` (device, tile and precision from free memory, progress,
interrupts, out-of-memory fallback).  With ``fallback`` on, a failure moves down the chain:

1. the full model, 2. a lighter model file the user names (same folder), 3. a classical method
   (:data:`CLASSICAL`): Lanczos for upscaling, non-local means for denoising, CLAHE on Lab lightness
   (after a 0.6 gamma for low light) for dehazing and low light, unsharp masking for deblurring.

A user's cancel is never a reason to fall back.  Real-ESRGAN's ``output_scale`` resamples the result
(antialiased bicubic, one image at a time into the final buffer, after checking that the final
buffer and the resampling fit in free RAM) to the requested scale; every output side is at least
1 px.  Whatever step of the chain ran, the output has the size the full model would have given
(``output_scale``, else the full model's own scale, else x4): a lighter x2 model's result is
resampled.  The report says what ran and why.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import memory_utils as mu
from . import zoo
from .runner import RunReport, run_model
from .runtime import get_runtime, is_interrupt
from .. import clahe, denoise, resample, sharpen
from ..batch import check_image, map_images, merge_alpha

#: the scale of a Real-ESRGAN network whose file could not be read (the family's usual x4)
DEFAULT_REALESRGAN_SCALE = 4

#: the "no lighter model" choice of the nodes' fallback_model input
NONE = "none"


# --- classical stand-ins (per image, numpy [H, W, C] float32 0..1) ------------------------------------------
def _nlm(img: np.ndarray, _opts: dict) -> np.ndarray:
    return denoise.denoise(img, "nlm")[0]


def _clahe(img: np.ndarray, _opts: dict, gamma: float = 1.0) -> np.ndarray:
    # a gamma of a negative value is NaN: model nodes take their input as is, so clip below 0 first
    return clahe.clahe(np.power(np.maximum(img, 0.0), gamma) if gamma != 1.0 else img,
                       clahe.DEFAULT_CLIP, clahe.DEFAULT_GRID, "lab")


def _unsharp(img: np.ndarray, _opts: dict) -> np.ndarray:
    return sharpen.unsharp_mask(img, 1.5, 1.0)


def _lanczos(img: np.ndarray, opts: dict) -> np.ndarray:
    s = opts.get("output_scale") or float(DEFAULT_REALESRGAN_SCALE)
    th, tw, _ = output_size(img.shape[0], img.shape[1], s)
    return resample.lanczos(img, th, tw)


UNSHARP = ("unsharp mask (sigma 1.5, amount 1)", _unsharp)
NLM = ("non-local means (skimage, noise level estimated)", _nlm)
CLAHE = ("CLAHE on Lab lightness", _clahe)
#: (family, task or None) -> (description, function(image, options)) of the classical stand-in
CLASSICAL: Dict[Tuple[str, Optional[str]], Tuple[str, Callable]] = {
    ("realesrgan", None): ("Lanczos", _lanczos),
    ("scunet", None): NLM,
    ("sfhformer", "motion-deblur"): UNSHARP,
    ("sfhformer", "low-light"): ("gamma 0.6 + CLAHE on Lab lightness", lambda img, o: _clahe(img, o, gamma=0.6)),
    ("sfhformer", None): CLAHE,
    ("noise_da", "deblur"): UNSHARP,
    ("noise_da", None): NLM,
}


def classical_for(family: str, options: dict) -> Tuple[str, Callable]:
    """The classical stand-in of ``family`` for the task in ``options`` (:data:`CLASSICAL`)."""
    return CLASSICAL.get((family, options.get("task")), CLASSICAL[(family, None)])


# --- the chain ---------------------------------------------------------------------------------------------
@dataclass
class ModelReport:
    """What :func:`run_family` ran: which step of the chain, the failures before it, the model, the
    runner's report (None for the classical step), the family's settings and the total time."""

    ran: str = ""
    failed: List[str] = field(default_factory=list)
    model: str = ""
    note: str = ""
    scale: Optional[float] = None
    native_scale: Optional[int] = None
    resampled: bool = False
    settings: dict = field(default_factory=dict)
    runner: Optional[RunReport] = None
    seconds: float = 0.0

    def info_fields(self) -> dict:
        out = {"ran": self.ran, "failed": self.failed or None, "model": self.model or None,
               "note": self.note or None}
        if self.scale is not None:
            out["output scale"] = f"x{self.scale:g}" + (f" (model x{self.native_scale}, resampled)"
                                                        if self.resampled and self.native_scale else "")
        out.update(self.settings)
        if self.runner is not None:
            out.update({k: v for k, v in self.runner.info_fields().items() if k != "model"})
        out["total time"] = f"{self.seconds:.2f} s"
        return out


def named_scale(model_name: str) -> int:
    """The scale a Real-ESRGAN file name states (``..._x2plus.pth``, ``4x_...``), else
    :data:`DEFAULT_REALESRGAN_SCALE`: the full model's size when its file cannot be read."""
    m = re.search(r"(?:^|[^a-z0-9])(?:x([1-8])|([1-8])x)(?:[^0-9]|$)", os.path.basename(str(model_name)).lower())
    return int(m.group(1) or m.group(2)) if m else DEFAULT_REALESRGAN_SCALE


def output_size(height: int, width: int, scale: float) -> Tuple[int, int, bool]:
    """``(out_h, out_w, raised)``: the sides times ``scale``, rounded, at least 1 px (``raised`` when a
    side would have rounded to 0)."""
    th, tw = int(round(height * scale)), int(round(width * scale))
    return max(1, th), max(1, tw), th < 1 or tw < 1


def resample_into(image: torch.Tensor, out_h: int, out_w: int, what: str = "output_scale") -> torch.Tensor:
    """``image`` ``[B,H,W,C]`` resized to ``out_h x out_w`` (antialiased bicubic, clipped), one image
    at a time into one preallocated buffer.  Checks first that the buffer and one image's resampling
    fit in free RAM (else :class:`~scripts.inference.memory_utils.OutOfMemoryError` naming the sizes)."""
    b, h, w, c = image.shape
    if (h, w) == (out_h, out_w):
        return image
    final = b * out_h * out_w * c * 4
    per_image = (h * w + 2 * out_h * out_w) * c * 4  # NCHW copy of the input, the result and its clip
    free = mu.free_memory("cpu")
    if final + per_image > 0.9 * free:
        raise mu.OutOfMemoryError(
            f"{what}: resampling {b} image(s) from {w}x{h} to {out_w}x{out_h} px needs "
            f"{mu.format_bytes(final + per_image)} of RAM ({mu.format_bytes(final)} for the result), but only "
            f"{mu.format_bytes(free)} is free: use a smaller scale or fewer images per batch")
    out = torch.empty((b, out_h, out_w, c), dtype=torch.float32)
    for i in range(b):
        out[i] = resample.bicubic(image[i:i + 1], out_h, out_w)[0]
    return out


def _short(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return f"{type(exc).__name__}: {msg[:240]}"


def run_family(family: str, image, model_name: str, *, device: str = "auto", tile: int = 0, overlap: int = 0,
               precision: str = "auto", fallback: bool = False, fallback_model: str = NONE,
               options: Optional[dict] = None, settings: Optional[dict] = None) -> Tuple[torch.Tensor, ModelReport]:
    """Restore ``image`` (IMAGE ``[B,H,W,C]``) with the model file ``model_name`` of ``family`` (a key
    of :data:`.zoo.FOLDER_KINDS`).

    ``options`` go to the loader and the classical step (``task``, ``denoise_strength``,
    ``output_scale``); ``settings`` are extra report fields.  ``overlap`` 0 = the architecture's
    default.  Returns ``(IMAGE, ModelReport)``.
    """
    t0 = time.perf_counter()
    options = dict(options or {})
    image = check_image(image)
    tile, overlap, run_kwargs = zoo.tile_rule(family, tile, overlap)
    kind = zoo.FOLDER_KINDS[family]
    chain = [("full model", model_name)]
    if fallback and fallback_model and fallback_model not in (NONE, model_name):
        chain.append(("lighter model", fallback_model))
    report = ModelReport(settings=dict(settings or {}))
    out = None
    full_scale: Optional[int] = None  # the full model's own scale, once its file has been read
    b, h, w, c = image.shape
    if family == "realesrgan" and options.get("output_scale"):
        # the whole job's memory before any work: the model's output and the resampled result
        s_out = float(options["output_scale"])
        th, tw, _ = output_size(h, w, s_out)
        need = b * c * 4 * (h * w * DEFAULT_REALESRGAN_SCALE ** 2 + th * tw)
        free = mu.free_memory("cpu")
        if need > 0.9 * free:
            raise mu.OutOfMemoryError(
                f"output_scale {s_out:g} on {b} image(s) of {w}x{h} px: the x{DEFAULT_REALESRGAN_SCALE} network output "
                f"and the {tw}x{th} px result need {mu.format_bytes(need)} of RAM, but only {mu.format_bytes(free)} "
                f"is free: use a smaller scale or fewer images per batch")
    for i, (label, name) in enumerate(chain):
        try:
            path = get_runtime().resolve_model_file(kind, name)
            handle, note = zoo.load(family, path, **options)
            if i == 0:
                full_scale = handle.scale
            ov = max(overlap, handle.min_overlap) if overlap else None
            out, report.runner = run_model(handle, image, device=device, tile=tile, overlap=ov,
                                           precision=precision, **run_kwargs)
            report.ran, report.note = f"{label}: {name}", note
            report.model = handle.description or handle.describe()
            report.native_scale = handle.scale
            break
        except Exception as exc:  # noqa: BLE001 - re-raised unless fallback is on
            if is_interrupt(exc) or not fallback:
                raise
            report.failed.append(f"{label} {name} failed ({_short(exc)})")
    target = None
    if family == "realesrgan":
        # the size the full model gives, even when a lighter model (e.g. x2) or a classical method ran
        target = float(options.get("output_scale") or full_scale or named_scale(model_name))
    if out is None:
        method, fn = classical_for(family, options)
        opts = dict(options, output_scale=target) if target else options
        out, _ = map_images(image, lambda img: fn(img, opts), what=f"{family} fallback", stage=method,
                            values="as_is", progress=False)
        report.ran = f"classical: {method}" + (f" x{target:g}" if family == "realesrgan" else "")
    if family == "realesrgan":
        report.scale = target
        th, tw, raised = output_size(h, w, target)
        if raised:
            report.settings["output size"] = f"{tw}x{th} px (a side of {w}x{h} x{target:g} rounds to 0: kept at 1 px)"
        report.resampled = out.shape[1] != th or out.shape[2] != tw
        if report.resampled:
            out = resample_into(out, th, tw)
            if c == 4:  # alpha follows the one rule from the input's alpha, not resampled twice
                out = merge_alpha(out[..., :3], image[..., 3:])
    report.seconds = time.perf_counter() - t0
    return out, report

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
(antialiased bicubic) to the requested scale.  The report says what ran and why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import zoo
from .runner import RunReport, run_model
from .runtime import get_runtime, is_interrupt
from .. import clahe, denoise, resample, sharpen
from ..batch import check_image, map_images

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
    s = opts.get("output_scale") or 4.0
    return resample.lanczos(img, round(img.shape[0] * s), round(img.shape[1] * s))


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
    for label, name in chain:
        try:
            path = get_runtime().resolve_model_file(kind, name)
            handle, note = zoo.load(family, path, **options)
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
    if out is None:
        method, fn = classical_for(family, options)
        out, _ = map_images(image, lambda img: fn(img, options), what=f"{family} fallback", stage=method,
                            values="as_is", progress=False)
        report.ran = f"classical: {method}" + (f" x{options.get('output_scale') or 4.0:g}" if family == "realesrgan" else "")
    if family == "realesrgan":
        report.scale = float(options.get("output_scale") or report.native_scale or 4)
        th, tw = round(image.shape[1] * report.scale), round(image.shape[2] * report.scale)
        report.resampled = out.shape[1] != th or out.shape[2] != tw
        if report.resampled:
            out = resample.bicubic(out, th, tw)
    report.seconds = time.perf_counter() - t0
    return out, report

"""Image batches: checks, value range, the alpha rule, the no-silent-data-loss rule, batch mapping.

An image batch is ComfyUI's IMAGE: a float tensor ``[B, H, W, C]`` in 0..1, C = 1 (grey), 3 (RGB) or
4 (RGBA).  Every node goes through :func:`map_images`, which applies the pack's contract rules in
one place:

* **Input checks** (:func:`check_image`): rank, channel count, empty or oversized sides and NaN/inf
  values are errors that name the input.
* **Value range** (``values="scale"``): values above 1 are read as 8-bit (max ≤ 255, scaled by
  1/255) or 16-bit data (scaled by 1/65535); what remains outside 0..1 is clipped.  The report says
  so.  ``values="as_is"`` leaves the range to the library function (colour, optics, model nodes).
* **Alpha rule**: the 4th channel of an RGBA image is never processed.  It gets the same range
  scaling as the colour channels, is clipped to 0..1, and is resized (bicubic, clipped again) when
  the output size differs from the input's; otherwise it passes through unchanged.
* **No silent data loss**: a NaN or infinite value in a result is an error naming the node and the
  stage that produced it (:class:`NonFiniteError`), never replaced by a number.  Results are clipped
  to 0..1 and returned as contiguous float32 CPU tensors.
* **Batches**: the library function runs per image (numpy float32 ``[H, W, C]``, with progress and
  an interrupt check between images) or once on the whole batch (a torch tensor), optionally inside
  the memory-safe :class:`scripts.inference.runner.TorchJob` (device choice, out-of-memory fallback).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .finite import NonFiniteError, all_finite, check_finite  # noqa: F401 - part of this module's API
from .report import shown

#: the largest image side the pack accepts (px); bigger inputs get a clear error, not a crash
MAX_SIDE = 32768
VALUE_POLICIES = ("scale", "as_is")
GREY_POLICIES = ("keep", "rgb", "rgb_and_back")


# --- checks and value range ---------------------------------------------------------------------------
def check_image(image: Any, name: str = "image", channels: Iterable[int] = (1, 3, 4)) -> torch.Tensor:
    """Validate an IMAGE and return it as a contiguous float32 tensor (a numpy array is accepted).

    fp16 / bf16 IMAGEs (ComfyUI's ``--fp16-intermediates``) are converted to float32 here, so every
    node computes in float32 on exactly the values it was given and returns float32.

    Raises ``ValueError`` naming ``name`` and the problem for: a non-tensor, rank other than 4 (a
    rank-3 ``[H,W,C]`` tensor is taken as a batch of one), a channel count outside ``channels``, an
    empty side, a side over :data:`MAX_SIDE`, and NaN/inf values.  Integer tensors are scaled to 0..1
    (uint8 by 1/255).
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ValueError(
            f"{name}: expected an IMAGE tensor [batch, height, width, channels], got rank "
            f"{image.ndim} with shape {tuple(image.shape)}"
        )
    b, h, w, c = image.shape
    allowed = tuple(channels)
    if c not in allowed:
        raise ValueError(
            f"{name}: {c} channels is not supported (expected {' or '.join(map(str, allowed))}); "
            f"shape {tuple(image.shape)} — is this a [B,C,H,W] tensor instead of ComfyUI's [B,H,W,C]?"
        )
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{name}: the image is empty (shape {tuple(image.shape)})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"{name}: {w}x{h} px is larger than the supported {MAX_SIDE} px per side")
    if not image.is_floating_point():
        image = image.float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    image = image.float()
    if not all_finite(image):
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name}: {bad} pixel value(s) are NaN or infinite")
    return image.contiguous()


@dataclass
class InputReport:
    """The checked input: its size, and what the value-range policy did (``scale``: 255 or 65535
    when the values were read as 8- or 16-bit data, else None; ``clipped``: values outside 0..1
    were clipped)."""

    images: int
    width: int
    height: int
    channels: int
    scale: Optional[float] = None
    max_value: float = 1.0
    clipped: bool = False

    @property
    def alpha(self) -> str:
        return "kept" if self.channels == 4 else "none"

    @property
    def notes(self) -> List[str]:
        notes = []
        if self.scale:
            notes.append(f"input max {self.max_value:.4g} > 1: read as {'8' if self.scale == 255 else '16'}-bit data, "
                         f"scaled by 1/{self.scale:.0f}")
        if self.clipped:
            notes.append("values outside 0..1 clipped")
        return notes

    def info_fields(self) -> dict:
        return {"images": self.images, "alpha": "kept" if self.channels == 4 else None,
                "input": self.notes or None}


def read_images(image: Any, name: str = "image", values: str = "scale") -> Tuple[torch.Tensor, InputReport]:
    """:func:`check_image`, then the value-range policy (module docstring); returns the report too."""
    if values not in VALUE_POLICIES:
        raise ValueError(f"values must be one of {VALUE_POLICIES}, got {values!r}")
    x = check_image(image, name)
    b, h, w, c = x.shape
    rep = InputReport(images=b, width=w, height=h, channels=c)
    if values == "scale":
        rep.max_value = float(x.max())
        if rep.max_value > 1.0 + 1e-3:
            rep.scale = 255.0 if rep.max_value <= 255.0 + 1e-3 else 65535.0
            x = x / rep.scale
        if float(x.min()) < 0.0 or float(x.max()) > 1.0:
            x = x.clamp(0.0, 1.0)
            rep.clipped = True
    return x.contiguous(), rep


def read_masks(mask: Any, height: int, width: int, name: str = "mask", batch: Optional[int] = None,
               aspect_tolerance: Optional[float] = None) -> Optional[np.ndarray]:
    """A MASK (``[B,H,W]`` or ``[H,W]``, 1 = selected) as float32 numpy ``[B, height, width]``,
    resized (nearest) when its size differs; ``None`` stays ``None``.

    ``batch``: the image batch size; the mask must then have 1 (used for every image) or ``batch``
    entries.  ``aspect_tolerance``: refuse, with both sizes in the error, a mask whose aspect ratio
    differs from the image's by more than this fraction (a mask drawn on another picture); within it
    the mask is resized.  NaN or infinite values are an error.
    """
    if mask is None:
        return None
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[-1] == 1:  # an IMAGE-shaped mask [B,H,W,1]
        m = m[..., 0]
    if m.ndim != 3 or 0 in m.shape:
        raise ValueError(f"{name}: expected MASK [B,H,W], got shape {tuple(m.shape)}")
    if batch is not None and m.shape[0] not in (1, batch):
        raise ValueError(f"{name}: {m.shape[0]} masks for {batch} images (give one mask, or one per image)")
    m = m.detach().cpu().float()
    if not all_finite(m):
        raise ValueError(f"{name}: {int((~torch.isfinite(m)).sum())} mask value(s) are NaN or infinite")
    mh, mw = int(m.shape[1]), int(m.shape[2])
    if (mh, mw) != (height, width):
        if aspect_tolerance is not None and abs((mw / mh) / (width / height) - 1.0) > aspect_tolerance:
            raise ValueError(f"{name}: the mask is {mw}x{mh} px, the image {width}x{height} px; their aspect ratios "
                             f"differ, so the mask was not drawn on this image (resize or redraw it)")
        m = torch.nn.functional.interpolate(m[:, None], size=(height, width), mode="nearest")[:, 0]
    return m.numpy()


# --- alpha rule -------------------------------------------------------------------------------------------
def split_alpha(image: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``[B,H,W,4]`` -> (``[B,H,W,3]``, alpha ``[B,H,W,1]``); other channel counts -> (image, None)."""
    if image.shape[-1] == 4:
        return image[..., :3], image[..., 3:4]
    return image, None


def fit_alpha(alpha: torch.Tensor, height: int, width: int, batch: Optional[int] = None) -> torch.Tensor:
    """The alpha rule: ``[B,H,W,1]`` alpha clipped to 0..1, resized (bicubic) to ``height x width`` when
    that differs, a batch of one repeated to ``batch``; float32 on the CPU."""
    a = alpha.to("cpu", torch.float32)
    if a.shape[1] != height or a.shape[2] != width:
        a = torch.nn.functional.interpolate(a.permute(0, 3, 1, 2), size=(int(height), int(width)),
                                            mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    a = a.clamp(0.0, 1.0)
    if batch is not None and a.shape[0] != batch:
        if a.shape[0] != 1:
            raise ValueError(f"alpha has batch {a.shape[0]}, the image {batch}")
        a = a.expand(batch, *a.shape[1:])
    return a


def merge_alpha(colour: torch.Tensor, alpha: Optional[torch.Tensor]) -> torch.Tensor:
    """Reattach ``alpha`` to ``colour`` ``[B,H,W,C]`` following the alpha rule (:func:`fit_alpha`)."""
    if alpha is None:
        return colour
    a = fit_alpha(alpha, colour.shape[1], colour.shape[2], colour.shape[0]).to(colour)
    return torch.cat([colour, a], dim=-1)


# --- results ----------------------------------------------------------------------------------------------
def to_image(result, what: str, stage: str) -> torch.Tensor:
    """A library result (numpy or torch; ``[B,H,W,C]``, ``[H,W,C]`` or ``[H,W]``) as an IMAGE tensor:
    finite (else :class:`NonFiniteError`), clipped to 0..1, contiguous float32 on the CPU."""
    if isinstance(result, torch.Tensor):
        t = result.detach().to("cpu", torch.float32)
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(result, dtype=np.float32)))
    if t.ndim == 2:
        t = t[None, :, :, None]
    elif t.ndim == 3:
        t = t[None]
    check_finite(t, what, stage)
    return t.clamp(0.0, 1.0).contiguous()


# --- batch mapping ----------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What :func:`map_images` did: the input, the library's report per image (or one for the
    whole batch), the device and time."""

    input: InputReport
    items: List[Any] = field(default_factory=list)
    device: Optional[str] = shown("device", default=None)
    steps: List[str] = shown("device steps", fmt=lambda s: "; ".join(s) if s else None, default_factory=list)
    seconds: float = shown("seconds", fmt=lambda s: round(s, 3), default=0.0)

    @property
    def item(self):
        """The report of the first (or only) call."""
        return self.items[0] if self.items else None


def _split(res) -> Tuple[Any, Any]:
    if isinstance(res, tuple) and len(res) == 2 and not isinstance(res[1], (np.ndarray, torch.Tensor)):
        return res
    return res, None


def _stack(parts: Sequence[Any]) -> Any:
    if parts[0] is None:
        return None
    if isinstance(parts[0], torch.Tensor):
        out = torch.stack([p.to("cpu", torch.float32) for p in parts])
    else:
        out = np.stack([np.asarray(p, dtype=np.float32) for p in parts])
    return out[..., None] if out.ndim == 3 else out


def map_images(image: Any, fn: Callable, *, what: str, stage: Optional[str] = None, name: str = "image",
               values: str = "scale", grey: str = "keep", per_image: bool = True,
               device: Optional[str] = None, pass_index: bool = False, alpha_to: Sequence[int] = (0,),
               progress: bool = True) -> Tuple[Any, BatchReport]:
    """Run library function ``fn`` over the IMAGE batch ``image`` under the contract rules.

    ``what``: the node's name for errors; ``stage``: the step named when a result is not finite
    (default ``fn``'s name).  ``values``: :data:`VALUE_POLICIES`.  ``grey``: ``keep``, ``rgb``
    (replicate a grey image to RGB; the output stays RGB) or ``rgb_and_back`` (replicate, then
    average the output back to one channel).  ``per_image``: call ``fn(array [H,W,C] float32)`` (or
    ``fn(array, index)`` with ``pass_index``) once per image; otherwise ``fn(tensor [B,H,W,C])`` once,
    as ``fn(tensor, device=...)`` inside a :class:`~scripts.inference.runner.TorchJob` when ``device``
    is given.  ``fn`` returns an image, a tuple of images, ``None``, or ``(that, report)``.
    ``alpha_to``: which outputs get the input's alpha back.

    Returns ``(IMAGE or tuple of IMAGEs or None, BatchReport)``.
    """
    if grey not in GREY_POLICIES:
        raise ValueError(f"grey must be one of {GREY_POLICIES}, got {grey!r}")
    stage = stage or getattr(fn, "__name__", "processing")
    t0 = time.perf_counter()
    x, inp = read_images(image, name, values)
    colour, alpha = split_alpha(x)
    was_grey = colour.shape[-1] == 1
    if was_grey and grey != "keep":
        colour = colour.expand(*colour.shape[:-1], 3)
    report = BatchReport(input=inp)
    if per_image:
        from .inference.runtime import get_runtime

        runtime = get_runtime()
        arr = colour.numpy()
        bar = runtime.progress(arr.shape[0], what) if progress and arr.shape[0] > 1 else None
        results = []
        try:
            for i in range(arr.shape[0]):
                runtime.check_interrupt()
                out, rep = _split(fn(arr[i], i) if pass_index else fn(arr[i]))
                results.append(out)
                report.items.append(rep)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if isinstance(results[0], tuple):
            outs = tuple(_stack([r[k] for r in results]) for k in range(len(results[0])))
        else:
            outs = _stack(results)
    elif device is not None:
        from .inference.runner import TorchJob

        with TorchJob(device, label=what) as job:
            outs, rep = _split(job.run(fn, colour))
        report.items.append(rep)
        report.device, report.steps = job.report.device, job.report.steps
    else:
        outs, rep = _split(fn(colour))
        report.items.append(rep)
    single = not isinstance(outs, tuple)
    outs = [outs] if single else list(outs)
    images = []
    for k, out in enumerate(outs):
        if out is None:
            images.append(None)
            continue
        img = to_image(out, what, stage)
        if was_grey and grey == "rgb_and_back" and img.shape[-1] == 3:
            img = img.mean(dim=-1, keepdim=True)
        images.append(merge_alpha(img, alpha) if k in alpha_to else img)
    report.seconds = time.perf_counter() - t0
    return (images[0] if single else tuple(images)), report

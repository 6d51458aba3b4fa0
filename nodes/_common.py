"""Helpers every node module shares: input declarations, IMAGE checks and conversions, info text.

ComfyUI's IMAGE is a float32 tensor ``[B, H, W, C]`` in 0..1 on the CPU, C = 3 (RGB) or 4 (RGBA);
MASK is ``[B, H, W]``.  Nodes check their inputs with :func:`check_image`, work per image or on the
whole batch, and return ``(image, info)`` where ``info`` comes from :func:`format_info`.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from ..scripts.finite import all_finite

CATEGORY_ROOT = "RestoreKit"

#: the largest image side the pack accepts (px); bigger inputs get a clear error, not a crash
MAX_SIDE = 32768


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


def choice_input(options: List[str], tooltip: str, default: Optional[str] = None):
    return (list(options), {"default": default or options[0], "tooltip": tooltip})


def string_input(default: str, tooltip: str, multiline: bool = False):
    return ("STRING", {"default": default, "multiline": multiline, "tooltip": tooltip})


DEVICE_INPUT = choice_input(
    ["auto", "cpu", "gpu"],
    "Where torch work runs. auto: the GPU when one has room (ComfyUI's device), else the CPU.",
)


def resolve_device(choice: str):
    """(torch.device, note) for the DEVICE_INPUT choice: the host's device for auto/gpu (ComfyUI's
    inside ComfyUI), the CPU with a note when gpu is asked for and none exists."""
    from ..scripts.inference.memory_utils import resolve_device as _resolve

    return _resolve(choice)


# --- checks ------------------------------------------------------------------------------------
def check_image(image: Any, name: str = "image", channels: Iterable[int] = (1, 3, 4),
                nan: str = "error") -> torch.Tensor:
    """Validate a ComfyUI IMAGE and return it as a contiguous float32 CPU/GPU tensor.

    fp16 / bf16 IMAGEs (ComfyUI's ``--fp16-intermediates``) are converted to float32 here, so every
    node computes in float32 on exactly the values it was given and returns float32.

    Raises ``ValueError`` naming the problem for: a non-tensor, rank other than 4 (a rank-3
    ``[H,W,C]`` tensor is accepted as a batch of one), a channel count outside ``channels``,
    an empty side, a side over :data:`MAX_SIDE`, and NaN/inf pixels when ``nan == "error"``
    (``nan == "repair"`` replaces them: NaN -> 0, +inf -> 1, -inf -> 0).
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
        if nan == "error":
            raise ValueError(f"{name}: {bad} pixel value(s) are NaN or infinite")
        image = torch.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
    return image.contiguous()


def prepare_image(image: Any, name: str = "image") -> Tuple[torch.Tensor, List[str]]:
    """:func:`check_image` (NaN/inf is an error) plus range handling for classical nodes.

    Values above 1 are read as 8-bit (max ≤ 255, scaled by 1/255) or 16-bit (scaled by 1/65535)
    data; what remains outside 0..1 is clipped.  Returns ``(tensor, notes)``; ``notes`` says what
    was done, for the node's info text.
    """
    x = check_image(image, name)
    notes: List[str] = []
    mx = float(x.max())
    if mx > 1.0 + 1e-3:
        div = 255.0 if mx <= 255.0 + 1e-3 else 65535.0
        x = x / div
        notes.append(f"input max {mx:.4g} > 1: read as {'8' if div == 255 else '16'}-bit data, scaled by 1/{div:.0f}")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        x = x.clamp(0.0, 1.0)
        notes.append("values outside 0..1 clipped")
    return x.contiguous(), notes


def split_alpha(image: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``[B,H,W,4]`` -> (``[B,H,W,3]``, alpha ``[B,H,W,1]``); other channel counts -> (image, None)."""
    if image.shape[-1] == 4:
        return image[..., :3], image[..., 3:4]
    return image, None


def merge_alpha(rgb: torch.Tensor, alpha: Optional[torch.Tensor]) -> torch.Tensor:
    """Reattach ``alpha`` (resized to ``rgb``'s size if needed) as a 4th channel."""
    if alpha is None:
        return rgb
    if alpha.shape[1:3] != rgb.shape[1:3]:
        a = alpha.permute(0, 3, 1, 2)
        a = torch.nn.functional.interpolate(a, size=rgb.shape[1:3], mode="bilinear", align_corners=False)
        alpha = a.permute(0, 2, 3, 1)
    return torch.cat([rgb, alpha.to(rgb)], dim=-1)


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """IMAGE tensor -> float32 numpy ``[B,H,W,C]`` on the CPU."""
    return image.detach().to("cpu", torch.float32).numpy()


def from_numpy(array: np.ndarray) -> torch.Tensor:
    """numpy ``[B,H,W,C]`` (or ``[H,W,C]``, ``[H,W]``) -> IMAGE tensor clipped to 0..1."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return torch.from_numpy(np.ascontiguousarray(np.clip(a, 0.0, 1.0)))


def map_images(image: torch.Tensor, fn, keep_alpha: bool = True) -> torch.Tensor:
    """Apply ``fn(rgb_or_gray: np.ndarray[H,W,C]) -> np.ndarray[H,W,C]`` to each image of a batch.

    Alpha is split off before and reattached after when ``keep_alpha``.
    """
    rgb, alpha = split_alpha(image) if keep_alpha else (image, None)
    arr = to_numpy(rgb)
    out = np.stack([np.asarray(fn(arr[i]), dtype=np.float32) for i in range(arr.shape[0])])
    if out.ndim == 3:
        out = out[..., None]
    return merge_alpha(from_numpy(out), alpha)


# --- info text ----------------------------------------------------------------------------------
def format_info(title: str, fields: Dict[str, Any]) -> str:
    """One human-readable block: a title line and ``key: value`` lines (floats to 4 digits)."""
    lines = [title]
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = "; ".join(value)
        elif isinstance(value, dict):
            value = json.dumps(value, default=str)
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t["seconds"]``."""
    t: Dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield t
    finally:
        t["seconds"] = time.perf_counter() - start

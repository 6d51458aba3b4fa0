"""Planning: how much memory a model needs per pixel, and whether the image runs whole or in tiles.

* :func:`probe_bytes_per_pixel` — activation memory per input pixel, measured on a small tile.
* :func:`plan_tiles` — the whole image when it fits the budget (free memory minus a safety margin,
  the output buffer and the weights when they move), otherwise the largest tile (a multiple of the
  model's size requirement) that fits, with the overlap the architecture needs.

All memory figures are bytes; measuring lives in :mod:`.memory_utils`.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Optional

import torch

from .memory_utils import MemoryMonitor, OutOfMemoryError, format_bytes, free_memory

#: fraction of free memory the planner leaves untouched
SAFETY_MARGIN = {"cuda": 0.20, "mps": 0.30, "cpu": 0.50}
#: multiplier on the probed activation memory (allocator slack, fragmentation)
ACTIVATION_SAFETY = 1.5
#: the largest tile side the planner proposes (px); larger tiles stop paying off
MAX_TILE = {"cuda": 1024, "mps": 1024, "cpu": 512}
MIN_TILE = 64


#: probe results per live module (weak keys: an ``id()`` key could be reused by a new module after
#: the old one is freed, and would hand it the old module's measurement)
_PROBE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _hook_estimate(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Largest input+output bytes of any leaf module during one forward pass."""
    peak = [0]

    def hook(_m, inputs, output):
        size = 0
        for t in list(inputs) + [output]:
            if isinstance(t, torch.Tensor):
                size += t.numel() * t.element_size()
        peak[0] = max(peak[0], size)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return peak[0]


def probe_bytes_per_pixel(handle, device, dtype=torch.float32, probe_side: int = 0) -> float:
    """Activation memory per input pixel, measured by running the model on a small tile.

    On CUDA the measure is the allocator's peak; on the CPU it is the larger of the RSS rise and
    twice the largest single layer's input+output (a floor when the allocator reuses freed memory).
    The result includes :data:`ACTIVATION_SAFETY` and is cached per model, device and dtype.
    """
    device = torch.device(device)
    key = (str(device), str(dtype))
    try:
        per_module = _PROBE_CACHE.setdefault(handle.module, {})
    except TypeError:  # not weak-referenceable: measure every time
        per_module = {}
    if key in per_module:
        return per_module[key]
    mult = max(1, handle.size_multiple)
    side = probe_side or max(64, handle.min_size)
    side = int(math.ceil(side / mult) * mult)
    x = torch.rand(1, handle.in_channels, side, side, device=device, dtype=dtype)
    pixels = side * side
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            handle.module(x)
        torch.cuda.synchronize(device)
        used = torch.cuda.max_memory_allocated(device) - base
    else:
        with MemoryMonitor(interval_s=0.001) as mon:
            with torch.inference_mode():
                handle.module(x)
        used = max(mon.ram_delta_bytes, 2 * _hook_estimate(handle.module, x))
    del x
    bpp = max(float(used) / pixels, 64.0) * ACTIVATION_SAFETY
    per_module[key] = bpp
    return bpp


@dataclass
class TilePlan:
    """How an image will be run: ``tile is None`` means the whole image at once."""

    tile: Optional[int]
    overlap: int
    bytes_per_pixel: float
    free_bytes: int
    budget_bytes: int
    reason: str

    def describe(self) -> str:
        if self.tile is None:
            return f"whole image ({self.reason})"
        return f"tiles {self.tile}px, overlap {self.overlap}px ({self.reason})"


def round_to_multiple(value: int, multiple: int, up: bool = False) -> int:
    multiple = max(1, int(multiple))
    if up:
        return int(math.ceil(value / multiple) * multiple)
    return max(multiple, int(value // multiple) * multiple)


def default_overlap(handle, tile: int) -> int:
    """The overlap a tile of side ``tile`` gets: the architecture's minimum, at least 32 px, ≤ tile/4."""
    ov = max(int(handle.min_overlap), 32)
    return int(max(0, min(ov, tile // 4)))


def plan_tiles(handle, height: int, width: int, device, dtype=torch.float32, *, tile: int = 0,
               overlap: Optional[int] = None, free_bytes: Optional[int] = None,
               reserved_bytes: int = 0, bytes_per_pixel: Optional[float] = None) -> TilePlan:
    """Choose whole-image or a tile size from measured free memory.

    ``tile > 0`` forces that tile side (rounded to the model's size multiple); ``reserved_bytes`` is
    memory the caller will hold on the same device (e.g. the output buffer on the CPU).
    """
    device = torch.device(device)
    mult = max(1, handle.size_multiple)
    free = int(free_memory(device) if free_bytes is None else free_bytes)
    margin = SAFETY_MARGIN.get(device.type, 0.5)
    model_bytes = handle.parameter_bytes() if handle.device.type != device.type else 0
    budget = int(free * (1.0 - margin)) - int(reserved_bytes) - int(model_bytes)
    min_tile = round_to_multiple(max(MIN_TILE, handle.min_size), mult, up=True)

    if tile and tile > 0:  # a forced tile needs no probe
        bpp = float(bytes_per_pixel or 0.0)
        t = round_to_multiple(max(int(tile), handle.min_size, mult), mult, up=True)
        if t >= max(height, width):
            return TilePlan(None, 0, bpp, free, budget, f"requested tile {tile} covers the image")
        ov = default_overlap(handle, t) if overlap is None else int(max(0, min(overlap, t // 2 - 1)))
        return TilePlan(t, ov, bpp, free, budget, f"tile {tile} requested")

    bpp = float(bytes_per_pixel if bytes_per_pixel is not None else probe_bytes_per_pixel(handle, device, dtype))
    need_whole = bpp * height * width
    if handle.tiling == "internal":
        return TilePlan(None, 0, bpp, free, budget, "the model tiles internally")
    if need_whole <= budget:
        return TilePlan(None, 0, bpp, free, budget,
                        f"fits: needs ~{format_bytes(need_whole)} of {format_bytes(budget)} budget")
    if budget <= 0:
        raise OutOfMemoryError(
            f"not enough free memory on {device}: {format_bytes(free)} free, "
            f"{format_bytes(reserved_bytes)} needed for the output alone"
        )
    side = int(math.sqrt(budget / bpp))
    side = min(side, MAX_TILE.get(device.type, 512))
    t = max(min_tile, round_to_multiple(side, mult))
    ov = default_overlap(handle, t) if overlap is None else int(max(0, min(overlap, t // 2 - 1)))
    why = f"image needs ~{format_bytes(need_whole)}, budget {format_bytes(budget)}"
    if handle.tiling == "discouraged":
        why += "; the architecture discourages tiling, so seams are possible"
    return TilePlan(t, ov, bpp, free, budget, why)

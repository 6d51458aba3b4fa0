"""Measured costs of one network variant on one device: seconds and bytes per call, by tile size.

A :class:`CostTable` holds, for one model in one precision and memory layout on one device, the
time and the memory of a network call as functions of the (padded) pixel count of its input:

* **time** — the fastest call seen per size bucket (a shared, loaded machine can only slow a call
  down, so the minimum is the robust estimate).  Between measured sizes the per-pixel time is
  interpolated in log pixels; above the largest measured size it is assumed flat
  (:data:`GROWTH_PER_DOUBLING`: per-pixel time can grow with the working set — realesr-animevideov3
  ran 10 us/px at 128-256 px tiles and 14.5 at 512 on one core — or fall as per-call overheads
  amortise — ESRGAN 64 filters ran ~2.5x faster per pixel at 289x216 than at 100 px under load —
  so neither is assumed).  Every real tile
  the runner computes is recorded, so the assumption is replaced by measurements as a session runs.
* **memory** — the peak bytes of tensors alive during the call plus its input
  (:class:`~scripts.inference.memory_utils.TensorBytes` on the CPU, the allocator's peak on CUDA),
  a least-squares line through the measured sizes (one size: proportional), times
  :data:`ALLOCATOR_SLACK` for what the allocator adds.

:func:`measure_call` runs one call and records both.  Tables live on the
:class:`~scripts.inference.handle.ModelHandle` (:func:`table_for`), so they are cached per model,
device, precision and layout for as long as the model stays loaded.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .memory_utils import TensorBytes
from .tiling import pad_to_multiple, round_up

#: assumed growth of the per-pixel time per doubling of the pixel count above the largest measured size
GROWTH_PER_DOUBLING = {"cpu": 0.0, "cuda": 0.0, "mps": 0.0}
#: what the allocator adds to the bytes of live tensors (fragmentation, scratch of fused kernels)
ALLOCATOR_SLACK = 1.15
#: size buckets: 8 per doubling of the pixel count (pixel counts within ~9 % share a bucket)
_BUCKETS_PER_DOUBLING = 8


def _bucket(px: int) -> int:
    return int(round(math.log2(max(1, px)) * _BUCKETS_PER_DOUBLING))


@dataclass
class CostTable:
    """Time and memory of one network variant per call, as functions of the input pixel count."""

    device_type: str = "cpu"
    times: Dict[int, Tuple[int, float]] = field(default_factory=dict)  # bucket -> (px, fastest seconds)
    mems: Dict[int, Tuple[int, float]] = field(default_factory=dict)   # bucket -> (px, peak bytes)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- recording ---------------------------------------------------------------------------------
    def add_time(self, px: int, seconds: float) -> None:
        """Record one call of ``px`` input pixels that took ``seconds`` (keeps the fastest per size)."""
        if px <= 0 or not seconds > 0:
            return
        b = _bucket(px)
        with self._lock:
            old = self.times.get(b)
            if old is None or seconds / px < old[1] / old[0]:
                self.times[b] = (int(px), float(seconds))

    def add_memory(self, px: int, nbytes: float) -> None:
        if px <= 0 or nbytes <= 0:
            return
        b = _bucket(px)
        with self._lock:
            old = self.mems.get(b)
            if old is None or nbytes / px > old[1] / old[0]:
                self.mems[b] = (int(px), float(nbytes))

    @property
    def has_time(self) -> bool:
        return bool(self.times)

    @property
    def has_memory(self) -> bool:
        return bool(self.mems)

    def largest_timed(self) -> int:
        return max((px for px, _t in self.times.values()), default=0)

    # --- prediction --------------------------------------------------------------------------------
    def seconds(self, px: int) -> float:
        """Predicted seconds of one call on ``px`` input pixels (0 when nothing was measured)."""
        with self._lock:
            pts = sorted(self.times.values())
        if not pts or px <= 0:
            return 0.0
        rates = [(p, t / p) for p, t in pts]
        if px <= rates[0][0]:
            return rates[0][1] * px
        if px >= rates[-1][0]:
            p_last, r_last = rates[-1]
            growth = GROWTH_PER_DOUBLING.get(self.device_type, 0.0)
            return r_last * px * (1.0 + growth * math.log2(px / p_last))
        for (p0, r0), (p1, r1) in zip(rates, rates[1:]):
            if p0 <= px <= p1:
                f = math.log(px / p0) / math.log(p1 / p0) if p1 > p0 else 0.0
                return (r0 + f * (r1 - r0)) * px
        return rates[-1][1] * px  # unreachable

    def bytes(self, px: int) -> float:
        """Predicted peak bytes of one call on ``px`` input pixels (0 when nothing was measured)."""
        with self._lock:
            pts = sorted(self.mems.values())
        if not pts or px <= 0:
            return 0.0
        if len(pts) == 1:
            p, m = pts[0]
            return m / p * px * ALLOCATOR_SLACK
        n = len(pts)
        mx = sum(p for p, _ in pts) / n
        my = sum(m for _, m in pts) / n
        sxx = sum((p - mx) ** 2 for p, _ in pts)
        slope = sum((p - mx) * (m - my) for p, m in pts) / sxx if sxx > 0 else my / mx
        slope = max(slope, 0.0)
        base = max(0.0, my - slope * mx)
        # never below the largest per-pixel rate measured at a size at or above px
        floor = max((m / p * px for p, m in pts if p >= px), default=0.0)
        return max(base + slope * px, floor) * ALLOCATOR_SLACK

    def describe(self) -> str:
        with self._lock:
            t = sorted(self.times.values())
            m = sorted(self.mems.values())
        ts = ", ".join(f"{int(math.sqrt(p))}²: {s * 1e6 / p:.2f} us/px" for p, s in t)
        ms = ", ".join(f"{int(math.sqrt(p))}²: {b / p:.0f} B/px" for p, b in m)
        return f"time [{ts}]; memory [{ms}]"


def table_for(handle, device, dtype: torch.dtype, channels_last: bool) -> CostTable:
    """The cost table of ``handle`` on ``device`` in ``dtype`` and layout (created empty)."""
    device = torch.device(device)
    key = ("costs", str(device), str(dtype), bool(channels_last))
    with handle._lock:
        table = handle.costs.get(key)
        if table is None:
            table = handle.costs[key] = CostTable(device_type=device.type)
    return table


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_call(module: torch.nn.Module, x: torch.Tensor, table: Optional[CostTable] = None,
                 memory: bool = True) -> Tuple[torch.Tensor, float, int]:
    """Run ``module(x)`` once under inference mode; return ``(output, seconds, peak bytes)``.

    Peak bytes: the call's live tensors plus its input (0 when ``memory`` is off).  The time of a
    call that tracks memory on the CPU includes the tracker's per-operator cost and is not
    recorded; an untracked call's is.  Both are recorded in ``table`` when given.
    """
    device = x.device
    px = int(x.shape[-1] * x.shape[-2])
    in_bytes = x.numel() * x.element_size()
    peak = 0
    _sync(device)
    if memory and device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = module(x)
        _sync(device)
        seconds = time.perf_counter() - t0
        peak = int(torch.cuda.max_memory_allocated(device) - base) + in_bytes
    elif memory:
        ignore = [x, *module.parameters(), *module.buffers()]
        t0 = time.perf_counter()
        with torch.inference_mode(), TensorBytes(ignore=ignore) as tb:
            y = module(x)
        seconds = time.perf_counter() - t0
        peak = int(tb.peak_bytes) + in_bytes
    else:
        t0 = time.perf_counter()
        with torch.inference_mode():
            y = module(x)
        _sync(device)
        seconds = time.perf_counter() - t0
    if table is not None:
        if peak:
            table.add_memory(px, peak)
        if not (memory and device.type != "cuda"):
            table.add_time(px, seconds)
    return y, seconds, peak


def sample_tile(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A ``[1, C, height, width]`` crop from the centre of the first image of an IMAGE batch
    (edge-replicated where the image is smaller): a probe tile with the image's own content."""
    img = image[0].permute(2, 0, 1)[None]
    h, w = img.shape[-2:]
    y0, x0 = max(0, (h - height) // 2), max(0, (w - width) // 2)
    crop = img[..., y0:y0 + height, x0:x0 + width]
    ph, pw = height - crop.shape[-2], width - crop.shape[-1]
    if ph > 0 or pw > 0:
        crop = torch.nn.functional.pad(crop, (0, pw, 0, ph), mode="replicate")
    return crop.contiguous()


def probe_sizes(align: int, floor: int, largest: int) -> List[int]:
    """Square probe sides from the smallest probe (64 px on the grid) doubling up to ``largest``."""
    a = max(1, int(align))
    side = max(a, -(-64 // a) * a)
    sides = []
    while side <= max(largest, side) and len(sides) < 5:
        sides.append(side)
        nxt = -(-(side * 2) // a) * a
        if nxt > largest:
            break
        side = nxt
    return sides


def probe_side(handle) -> int:
    """The side of the smallest probe tile of ``handle``: 64 px on its grid, at least its minimum size."""
    return round_up(max(probe_sizes(handle.align, 0, 1 << 30)[0], handle.min_size), handle.align)


def probe_input(handle, image: torch.Tensor, side: int, dtype: torch.dtype, channels_last: bool,
                device) -> torch.Tensor:
    """A ``side``² probe tile of the IMAGE batch ``image`` as the network takes it: on ``device`` in
    ``dtype`` and memory layout, padded to the size multiple."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = sample_tile(image, side, side).to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    return pad_to_multiple(x, handle.size_multiple, handle.min_size, handle.pad_mode)[0]

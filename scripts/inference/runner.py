"""Run a :class:`~scripts.inference.handle.ModelHandle` on an image without running out of memory.

:func:`run_model` picks the device (``auto``/``cpu``/``gpu``) and precision, plans whole-image or
tiled inference from measured free memory (:func:`scripts.inference.memory_utils.plan_tiles`), and on
out-of-memory walks a fallback chain: free memory, halve the tile down to the minimum, move to the
CPU, then raise :class:`scripts.inference.memory_utils.OutOfMemoryError` listing every step.  The report it
returns says what ran: device, tile, precision, fallbacks, time, peak RAM and VRAM.

Images are ComfyUI-style ``[B, H, W, C]`` float32 0..1 on the CPU, C = 1, 3 or 4.  Grey images are
replicated for RGB networks (and averaged back); RGBA alpha bypasses the network and is resized
with bicubic interpolation; an RGB image fed to a 1-channel network goes in as its luma (BT.601).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import memory_utils as mu
from ..finite import all_finite
from .handle import ModelHandle
from .runtime import get_runtime
from .tiling import count_tiles, tiled_inference

#: the smallest tile (input px) the out-of-memory chain halves down to before moving to the CPU
FALLBACK_MIN_TILE = 32
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass
class RunReport:
    arch: str = ""
    device: str = "cpu"
    tile: Optional[int] = None
    overlap: int = 0
    tiles: int = 1
    precision: str = "fp32"
    plan: str = ""
    steps: List[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_ram_bytes: int = 0
    ram_delta_bytes: int = 0
    peak_vram_bytes: int = 0

    def summary(self) -> dict:
        """Fields for a node's info text."""
        return {
            "model": self.arch,
            "device": self.device,
            "tile": "whole image" if self.tile is None else f"{self.tile}px (overlap {self.overlap}px, {self.tiles} tiles/image)",
            "precision": self.precision,
            "plan": self.plan,
            "fallbacks": "; ".join(self.steps) if self.steps else "none",
            "time": f"{self.seconds:.2f} s",
            "peak RAM": mu.format_bytes(self.peak_ram_bytes) + f" (+{mu.format_bytes(self.ram_delta_bytes)})",
            "peak VRAM": mu.format_bytes(self.peak_vram_bytes),
        }

    def as_dict(self) -> dict:
        return asdict(self)


def choose_precision(handle: ModelHandle, device: torch.device, precision: str) -> Tuple[torch.dtype, str, Optional[str]]:
    """(dtype, name, note): fp16/bf16 only where the model and the device support them."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda" and handle.supports_half:
            return torch.float16, "fp16", None
        return torch.float32, "fp32", None
    if precision == "fp32":
        return torch.float32, "fp32", None
    supported = handle.supports_half if precision == "fp16" else handle.supports_bfloat16
    if not supported:
        return torch.float32, "fp32", f"{precision} not supported by {handle.arch}: used fp32"
    if device.type == "cpu" and precision == "fp16":
        return torch.float32, "fp32", "fp16 is not used on the CPU: used fp32"
    return _DTYPES[precision], precision, None


def _channel_forward(handle: ModelHandle, image_channels: int):
    """Wrap the network so that it takes and returns ``image_channels`` channels (no alpha)."""
    net = handle.module
    cin, cout = handle.in_channels, handle.out_channels

    def forward(x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == cin:
            y = net(x)
        elif c == 1 and cin >= 3:
            y = net(x.expand(-1, 3, -1, -1) if cin == 3 else torch.cat([x.expand(-1, 3, -1, -1), torch.ones_like(x)], 1))
        elif c == 3 and cin == 1:
            y = net((x * _LUMA.to(x)[None, :, None, None]).sum(1, keepdim=True))
        else:
            raise ValueError(f"{handle.arch} takes {cin} channels; cannot feed it {c}")
        if y.shape[1] == image_channels:
            return y
        if image_channels == 1:
            return y[:, :3].mean(1, keepdim=True)
        if y.shape[1] == 1:
            return y.expand(-1, image_channels, -1, -1)
        return y[:, :image_channels]

    return forward, cout


def _check_input(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ValueError(f"expected an image tensor [B,H,W,C], got {getattr(image, 'shape', type(image))}")
    if image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got {image.shape[-1]}")
    if min(image.shape[:3]) == 0:
        raise ValueError(f"the image is empty (shape {tuple(image.shape)})")
    if not all_finite(image):
        raise ValueError("the image contains NaN or infinite values")
    return image.to("cpu", torch.float32).contiguous()


def run_model(handle: ModelHandle, image: torch.Tensor, *, device: str = "auto", tile: int = 0,
              overlap: Optional[int] = None, precision: str = "auto", progress: bool = True,
              min_tile: Optional[int] = None) -> Tuple[torch.Tensor, RunReport]:
    """Run ``handle`` on ``image`` ([B,H,W,C] 0..1) with planning and the OOM fallback chain.

    ``min_tile`` is the floor of the halving chain (default :data:`FALLBACK_MIN_TILE`).
    """
    image = _check_input(image)
    runtime = get_runtime()
    b, h, w, c = image.shape
    s = handle.scale
    rgb_c = 3 if c == 4 else c
    dev, dev_note = mu.resolve_device(device)
    report = RunReport(arch=handle.describe())
    if "none available" in dev_note:
        report.steps.append(dev_note)

    out_bytes = b * h * s * w * s * c * 4
    ram_free = mu.free_memory("cpu")
    if out_bytes > 0.9 * ram_free:
        raise mu.OutOfMemoryError(
            f"the output ({b}x{h * s}x{w * s}x{c} float32) needs {mu.format_bytes(out_bytes)} of RAM "
            f"but only {mu.format_bytes(ram_free)} is free: use a smaller image or a smaller scale"
        )
    out: Optional[torch.Tensor] = None  # allocated only when tiles, a batch or alpha need a buffer
    forward, _ = _channel_forward(handle, rgb_c)
    floor = max(FALLBACK_MIN_TILE if min_tile is None else int(min_tile), handle.size_multiple, handle.min_size)

    requested_tile = int(tile or 0)
    cur_tile: Optional[int] = None
    forced_tile = requested_tile  # 0 = let the planner decide
    t0 = time.perf_counter()
    with mu.MemoryMonitor(device=dev) as mon:
        while True:
            dtype, pname, pnote = choose_precision(handle, dev, precision)
            if pnote and pnote not in report.steps:
                report.steps.append(pnote)
            cur_tile = forced_tile or None  # what this attempt runs at, should planning itself fail
            try:
                handle.to(dev, dtype)
                reserved = out_bytes if dev.type == "cpu" else 0
                plan = mu.plan_tiles(handle, h, w, dev, dtype, tile=forced_tile, overlap=overlap,
                                     reserved_bytes=reserved)
                cur_tile = plan.tile
                n_tiles = count_tiles(h, w, cur_tile, plan.overlap)
                report.device, report.precision, report.plan = str(dev), pname, plan.describe()
                report.tile, report.overlap, report.tiles = cur_tile, plan.overlap if cur_tile else 0, n_tiles
                bar = runtime.progress(b * n_tiles, f"{handle.arch}") if progress else None
                whole = b == 1 and c != 4 and (cur_tile is None or (cur_tile >= h and cur_tile >= w))
                if out is None and not whole:
                    out = torch.empty((b, h * s, w * s, c), dtype=torch.float32)
                try:
                    res = tiled_inference(
                        forward, image[..., :rgb_c], scale=s, out_channels=rgb_c, tile=cur_tile,
                        overlap=plan.overlap, size_multiple=handle.size_multiple, min_size=handle.min_size,
                        pad_mode=handle.pad_mode, device=dev, dtype=dtype,
                        out=None if whole else out[..., :rgb_c],
                        on_tile=(lambda: bar.update(1)) if bar is not None else None,
                        check_interrupt=runtime.check_interrupt, clamp=handle.clamp,
                    )
                    if whole:  # the network's own output is the result: no second buffer
                        out = res
                    del res
                finally:
                    if bar is not None:
                        bar.close()
                break
            except Exception as exc:  # noqa: BLE001 - filtered by is_oom_error
                if not mu.is_oom_error(exc):
                    handle.to("cpu", torch.float32)
                    mu.cleanup(dev)
                    raise
                kind = type(exc).__name__
                where = "whole image" if cur_tile is None else f"tile {cur_tile}px"
                del exc
                mu.cleanup(dev, after_oom=True)
                if cur_tile is None:
                    nxt = mu.round_to_multiple(max(h, w) // 2, handle.size_multiple)
                else:
                    nxt = mu.round_to_multiple(cur_tile // 2, handle.size_multiple)
                if nxt >= floor and (cur_tile is None or nxt < cur_tile):
                    report.steps.append(f"out of memory ({kind}) on {dev} at {where}: retry with tile {nxt}px")
                    forced_tile = nxt
                    continue
                if dev.type != "cpu":
                    report.steps.append(f"out of memory ({kind}) on {dev} at {where}: moving to cpu")
                    handle.to("cpu", torch.float32)
                    mu.cleanup(dev, after_oom=True)
                    dev, forced_tile = torch.device("cpu"), requested_tile
                    continue
                report.steps.append(f"out of memory ({kind}) on cpu at {where}: no smaller tile left")
                handle.to("cpu", torch.float32)
                mu.cleanup(dev, after_oom=True)
                raise mu.OutOfMemoryError(
                    f"{handle.arch} ran out of memory even at the smallest tile ({floor}px) on the cpu. "
                    f"Steps: " + "; ".join(report.steps), report.steps
                ) from None
        if c == 4:
            alpha = image[..., 3:4].permute(0, 3, 1, 2)
            if s != 1:
                alpha = F.interpolate(alpha, scale_factor=s, mode="bicubic", align_corners=False)
            out[..., 3:4] = alpha.clamp(0, 1).permute(0, 2, 3, 1)
    handle.to("cpu", torch.float32)
    mu.cleanup(dev)
    report.seconds = time.perf_counter() - t0
    report.peak_ram_bytes, report.ram_delta_bytes = mon.peak_ram_bytes, mon.ram_delta_bytes
    report.peak_vram_bytes = mon.peak_vram_bytes
    return out, report

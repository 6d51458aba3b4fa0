"""The memory-safe runner: every piece of torch work in the pack runs through it.

:class:`TorchJob` is the general form, for any torch computation (deconvolution, FFT filters, colour
conversions): it picks the device (``auto``/``cpu``/``gpu``, or the CPU when a stated memory need
does not fit the GPU's free memory), drives the host's progress bar and interrupt checks, and when a
call runs out of memory (:func:`~scripts.inference.memory_utils.is_oom_error`: CUDA OOM,
``MemoryError``, the CPU allocator's ``RuntimeError``) frees memory and repeats it on the CPU, or
raises :class:`~scripts.inference.memory_utils.OutOfMemoryError` listing every step.

:func:`run_model` is the same for a :class:`~scripts.inference.handle.ModelHandle` network, with
precision choice and planning (:func:`scripts.inference.planning.plan_tiles`: whole image or tiles
from measured free memory); its out-of-memory chain first halves the tile down to the minimum, then
moves to the CPU.  Its report says what ran: device, tile, precision, fallbacks, time, peak RAM and
VRAM.

Images are ComfyUI-style ``[B, H, W, C]`` float32 0..1 on the CPU, C = 1, 3 or 4.  Grey images are
replicated for RGB networks (and averaged back); RGBA alpha bypasses the network and follows the
pack's alpha rule (:func:`scripts.batch.fit_alpha`: resized bicubically, clipped to 0..1); an RGB
image fed to a 1-channel network goes in as its luma (BT.601).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import memory_utils as mu
from .handle import ModelHandle
from .planning import plan_tiles, round_to_multiple
from .runtime import get_runtime
from .tiling import count_tiles, tiled_inference
from ..batch import check_image, fit_alpha
from ..report import shown

#: the smallest tile (input px) the out-of-memory chain halves down to before moving to the CPU
FALLBACK_MIN_TILE = 32
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LUMA = torch.tensor([0.299, 0.587, 0.114])


# --- any torch work ------------------------------------------------------------------------------------
@dataclass
class JobReport:
    """Where a :class:`TorchJob` ran and which fallback steps it took."""

    device: str = shown("device", default="cpu")
    steps: List[str] = shown("device steps", fmt=lambda s: "; ".join(s) if s else None, default_factory=list)


def _oom_step(exc: BaseException, device: torch.device, where: str, action: str) -> str:
    """The wording of one out-of-memory step, the same for every runner."""
    at = f" at {where}" if where else ""
    return f"out of memory ({type(exc).__name__}) on {device}{at}: {action}"


class TorchJob:
    """Device choice, progress, interrupts and the out-of-memory fallback for any torch work.

    >>> with TorchJob("auto", label="Deconvolve", total=n, needs=lambda dev: nbytes) as job:
    ...     out = job.run(fn, x)        # fn(x, device=job.device); on OOM redone on the CPU
    ...     job.tick()                  # progress + interrupt check (also usable as a callback)

    ``needs``: bytes the work will hold on the device (a number, or a function of the device); on a
    GPU whose free memory cannot hold it with a 20 % margin the job starts on the CPU and says so.
    ``total``: progress steps (0 = no bar); ``interrupt_every``: check for a cancel every n ticks.
    The device the job ends on is sticky: after a fallback later calls run on the CPU too.
    """

    def __init__(self, device: str = "auto", *, label: str = "RestoreKit", total: int = 0,
                 needs: Any = None, interrupt_every: int = 1):
        self.runtime = get_runtime()
        self.device, note = mu.resolve_device(device)
        self.report = JobReport(device=note)
        if "none available" in note:
            self.report.steps.append(note)
        self.label = label
        self.total = int(total)
        self.interrupt_every = max(1, int(interrupt_every))
        self._ticks = 0
        self._bar = None
        if needs is not None and self.device.type != "cpu":
            need = int(needs(self.device) if callable(needs) else needs)
            if need > 0.8 * mu.free_memory(self.device):
                self.report.steps.append(f"{mu.format_bytes(need)} does not fit the free memory of {self.device}: "
                                         f"moving to cpu")
                self.device = torch.device("cpu")
                self.report.device = f"cpu (not enough free memory on {note.split(' ')[0]})"

    def __enter__(self) -> "TorchJob":
        if self.total > 0:
            self._bar = self.runtime.progress(self.total, self.label)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        mu.cleanup(self.device)

    def tick(self, *_args) -> None:
        """One progress step; every ``interrupt_every`` steps, raise if the user cancelled."""
        self._ticks += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._ticks % self.interrupt_every == 0:
            self.runtime.check_interrupt()

    def fall_back(self, exc: BaseException, where: str = "") -> None:
        """After an out-of-memory error ``exc``: free memory and move to the CPU, or, already on the
        CPU, raise :class:`~scripts.inference.memory_utils.OutOfMemoryError` listing every step."""
        mu.cleanup(self.device, after_oom=True)
        if self.device.type != "cpu":
            self.report.steps.append(_oom_step(exc, self.device, where, "moving to cpu"))
            self.report.device = f"cpu ({self.device} out of memory)"
            self.device = torch.device("cpu")
            return
        self.report.steps.append(_oom_step(exc, self.device, where, "no fallback left"))
        raise mu.OutOfMemoryError(f"{self.label} ran out of memory on the cpu. Steps: " + "; ".join(self.report.steps),
                                  self.report.steps) from None

    def run(self, fn: Callable, *args, where: str = "", **kwargs):
        """``fn(*args, device=self.device, **kwargs)``, repeated on the CPU after an out-of-memory
        error on the GPU."""
        while True:
            try:
                return fn(*args, device=self.device, **kwargs)
            except Exception as exc:  # noqa: BLE001 - filtered by is_oom_error
                if not mu.is_oom_error(exc):
                    raise
                self.fall_back(exc, where)


# --- networks -----------------------------------------------------------------------------------------
@dataclass
class RunReport:
    """What :func:`run_model` did (memory in bytes, time in seconds)."""

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

    def info_fields(self) -> dict:
        """How a node shows this report (:func:`scripts.report.info_text`)."""
        return {
            "model": self.arch,
            "device": self.device,
            "tile": "whole image" if self.tile is None else f"{self.tile}px (overlap {self.overlap}px, {self.tiles} tiles/image)",
            "precision": self.precision,
            "plan": self.plan,
            "out-of-memory steps": "; ".join(self.steps) if self.steps else "none",
            "runner time": f"{self.seconds:.2f} s",
            "peak RAM": mu.format_bytes(self.peak_ram_bytes) + f" (+{mu.format_bytes(self.ram_delta_bytes)})",
            "peak VRAM": mu.format_bytes(self.peak_vram_bytes),
        }


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


def run_model(handle: ModelHandle, image: torch.Tensor, *, device: str = "auto", tile: int = 0,
              overlap: Optional[int] = None, precision: str = "auto", progress: bool = True,
              min_tile: Optional[int] = None) -> Tuple[torch.Tensor, RunReport]:
    """Run ``handle`` on ``image`` ([B,H,W,C] 0..1) with planning and the OOM fallback chain.

    ``min_tile`` is the floor of the halving chain (default :data:`FALLBACK_MIN_TILE`).
    """
    image = check_image(image).to("cpu", torch.float32)
    b, h, w, c = image.shape
    s = handle.scale
    rgb_c = 3 if c == 4 else c
    job = TorchJob(device, label=handle.arch)
    report = RunReport(arch=handle.describe(), steps=job.report.steps)

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
    with mu.MemoryMonitor(device=job.device) as mon:
        while True:
            dev = job.device
            dtype, pname, pnote = choose_precision(handle, dev, precision)
            if pnote and pnote not in report.steps:
                report.steps.append(pnote)
            cur_tile = forced_tile or None  # what this attempt runs at, should planning itself fail
            try:
                handle.to(dev, dtype)
                reserved = out_bytes if dev.type == "cpu" else 0
                plan = plan_tiles(handle, h, w, dev, dtype, tile=forced_tile, overlap=overlap,
                                  reserved_bytes=reserved)
                cur_tile = plan.tile
                n_tiles = count_tiles(h, w, cur_tile, plan.overlap)
                report.device, report.precision, report.plan = str(dev), pname, plan.describe()
                report.tile, report.overlap, report.tiles = cur_tile, plan.overlap if cur_tile else 0, n_tiles
                bar = job.runtime.progress(b * n_tiles, f"{handle.arch}") if progress else None
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
                        check_interrupt=job.runtime.check_interrupt, clamp=handle.clamp,
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
                where = "whole image" if cur_tile is None else f"tile {cur_tile}px"
                mu.cleanup(dev, after_oom=True)
                nxt = round_to_multiple((max(h, w) if cur_tile is None else cur_tile) // 2, handle.size_multiple)
                if nxt >= floor and (cur_tile is None or nxt < cur_tile):
                    report.steps.append(_oom_step(exc, dev, where, f"retry with tile {nxt}px"))
                    forced_tile = nxt
                    continue
                handle.to("cpu", torch.float32)
                try:
                    job.fall_back(exc, where)
                except mu.OutOfMemoryError:
                    report.steps[-1] = _oom_step(exc, dev, where, "no smaller tile left")
                    raise mu.OutOfMemoryError(
                        f"{handle.arch} ran out of memory even at the smallest tile ({floor}px) on the cpu. "
                        f"Steps: " + "; ".join(report.steps), report.steps) from None
                forced_tile = requested_tile
        if c == 4:
            out[..., 3:4] = fit_alpha(image[..., 3:4], h * s, w * s)
    handle.to("cpu", torch.float32)
    mu.cleanup(job.device)
    report.seconds = time.perf_counter() - t0
    report.peak_ram_bytes, report.ram_delta_bytes = mon.peak_ram_bytes, mon.ram_delta_bytes
    report.peak_vram_bytes = mon.peak_vram_bytes
    return out, report

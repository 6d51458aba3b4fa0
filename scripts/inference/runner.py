"""The memory-safe runner: every piece of torch work in the pack runs through it.

:class:`TorchJob` is the general form, for any torch computation (deconvolution, FFT filters, colour
conversions): it picks the device (``auto``/``cpu``/``gpu``, or the CPU when a stated memory need
does not fit the GPU's free memory), drives the host's progress bar and interrupt checks, and when a
call runs out of memory (:func:`~scripts.inference.memory_utils.is_oom_error`: CUDA OOM,
``MemoryError``, the CPU allocator's ``RuntimeError``) frees memory and repeats it on the CPU, or
raises :class:`~scripts.inference.memory_utils.OutOfMemoryError` listing every step.

:func:`run_model` is the same for a :class:`~scripts.inference.handle.ModelHandle` network:

1. the fast path (:func:`scripts.inference.fastpath.select`: precision and memory layout measured on
   a tile of the image, the user's precision wins, reduced precision only within the architecture's
   tolerance; always on a copy of the model, never the loaded one),
2. the plan (:func:`scripts.inference.planning.plan_tiles`: time and memory per tile size measured and
   cached per model, device and variant; the least memory within 5 % of the fastest plan; tiles on the
   architecture's grid with the overlap it needs),
3. the run, every tile timed into the model's cost table, and its out-of-memory chain: halve the tile
   down to the minimum, then move to the CPU.  A NaN or infinite output is an error
   (:class:`scripts.finite.NonFiniteError`); from a reduced precision it is first retried in fp32.

Its report says what ran: device, tile, precision and why, the plan and why, fallbacks, time, planned
and measured peak memory.

Images are ComfyUI-style ``[B, H, W, C]`` float32 0..1 on the CPU, C = 1, 3 or 4.  Grey images are
replicated for RGB networks (and averaged back); RGBA alpha bypasses the network and follows the
pack's alpha rule (:func:`scripts.batch.fit_alpha`: resized bicubically, clipped to 0..1); an RGB
image fed to a 1-channel network goes in as its luma (BT.601).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import cost_cache, fastpath
from . import memory_utils as mu
from .costs import table_for
from .handle import ModelHandle
from .planning import MAX_TILE, measure_costs, plan_tiles, round_to_multiple, tile_rule
from .runtime import get_runtime
from .tiling import count_tiles, tiled_inference
from ..batch import check_image, fit_alpha
from ..finite import NonFiniteError, all_finite
from ..report import shown

#: the smallest tile (input px) the out-of-memory chain halves down to before moving to the CPU
FALLBACK_MIN_TILE = 32
PRECISIONS = fastpath.PRECISIONS
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
    layout: str = ""
    fast_path: str = ""
    plan: str = ""
    steps: List[str] = field(default_factory=list)
    input_note: str = ""
    seconds: float = 0.0
    probe_seconds: float = 0.0
    cache: str = ""
    planned_bytes: float = 0.0
    peak_ram_bytes: int = 0
    ram_delta_bytes: int = 0
    peak_vram_bytes: int = 0

    def info_fields(self) -> dict:
        """How a node shows this report (:func:`scripts.report.info_text`)."""
        mem = mu.format_bytes(self.peak_ram_bytes) + f" (+{mu.format_bytes(self.ram_delta_bytes)})"
        if self.planned_bytes:
            mem += f"; planned ~{mu.format_bytes(self.planned_bytes)}"
        return {
            "model": self.arch,
            "device": self.device,
            "tile": "whole image" if self.tile is None else f"{self.tile}px (overlap {self.overlap}px, {self.tiles} tiles/image)",
            "precision": self.precision + (f", {self.layout}" if self.layout else ""),
            "fast path": self.fast_path or None,
            "plan": self.plan,
            "cost cache": self.cache or None,
            "input": self.input_note or None,
            "out-of-memory steps": "; ".join(self.steps) if self.steps else "none",
            "runner time": f"{self.seconds:.2f} s" + (f" (measuring {self.probe_seconds:.2f} s)" if self.probe_seconds >= 0.01 else ""),
            "peak RAM": mem,
            "peak VRAM": mu.format_bytes(self.peak_vram_bytes),
        }


def _channel_forward(handle: ModelHandle, image_channels: int, net: Optional[torch.nn.Module] = None):
    """Wrap the network so that it takes and returns ``image_channels`` channels (no alpha)."""
    net = handle.module if net is None else net
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


def _network_input(handle: ModelHandle, rgb: torch.Tensor) -> torch.Tensor:
    """The IMAGE as the network sees it (``[B, H, W, C_in]``), for probe tiles."""
    c, cin = rgb.shape[-1], handle.in_channels
    if c == cin:
        return rgb
    if c == 1 and cin >= 3:
        x = rgb.expand(*rgb.shape[:-1], 3)
        return x if cin == 3 else torch.cat([x, torch.ones_like(rgb)], -1)
    if c == 3 and cin == 1:
        return (rgb * _LUMA).sum(-1, keepdim=True)
    raise ValueError(f"{handle.arch} takes {cin} channels; cannot feed it {c}")


def _clip_input(image: torch.Tensor) -> Tuple[torch.Tensor, str]:
    """The value-range rule of the model runner: networks are trained on 0..1, so values outside are
    clipped (an out-of-range input in fp16/bf16 could overflow to inf inside the network)."""
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0:
        return image, ""
    return image.clamp(0.0, 1.0), f"values {lo:.4g}..{hi:.4g} outside 0..1 clipped before the network"


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device):
    """``torch.backends.cudnn.benchmark`` on for a run on CUDA (cuDNN picks the fastest convolution
    algorithm per tile shape), restored afterwards."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def run_model(handle: ModelHandle, image: torch.Tensor, *, device: str = "auto", tile: int = 0,
              overlap: Optional[int] = None, precision: str = "auto", progress: bool = True,
              min_tile: Optional[int] = None, measure: Optional[bool] = None) -> Tuple[torch.Tensor, RunReport]:
    """Run ``handle`` on ``image`` ([B,H,W,C] 0..1) with fast-path choice, planning and the OOM chain.

    ``tile`` > 0 forces a tile side (raised to the architecture's smallest tile); ``overlap`` None or
    0 = the architecture's; ``min_tile`` is the floor of the halving chain (default
    :data:`FALLBACK_MIN_TILE`); ``measure`` forces (True) or skips (False) measuring the fast path and
    the costs (None: when the image is large enough for it to pay off).  The loaded model is never
    changed.
    """
    image = check_image(image).to("cpu", torch.float32)
    image, input_note = _clip_input(image)
    b, h, w, c = image.shape
    s = handle.scale
    rgb_c = 3 if c == 4 else c
    job = TorchJob(device, label=handle.arch)
    report = RunReport(arch=handle.describe(), steps=job.report.steps, input_note=input_note)

    out_bytes = b * h * s * w * s * c * 4
    ram_free = mu.free_memory("cpu")
    if out_bytes > 0.9 * ram_free:
        raise mu.OutOfMemoryError(
            f"the output ({b}x{h * s}x{w * s}x{c} float32) needs {mu.format_bytes(out_bytes)} of RAM "
            f"but only {mu.format_bytes(ram_free)} is free: use a smaller image or a smaller scale"
        )
    rule = tile_rule(handle, overlap)
    net_image = _network_input(handle, image[..., :rgb_c])
    out: Optional[torch.Tensor] = None  # allocated only when tiles, a batch or alpha need a buffer
    floor = max(FALLBACK_MIN_TILE if min_tile is None else int(min_tile), handle.size_multiple, handle.min_size,
                rule.overlap + rule.align)

    requested_tile = int(tile or 0)
    cur_tile: Optional[int] = None
    forced_tile, oom_tile = requested_tile, False  # 0 = let the planner decide
    force_fp32 = False
    probe_px = 64 * 64
    measuring = measure if measure is not None else b * h * w >= fastpath.MEASURE_MIN_TILES * probe_px
    small = not measuring and h * w <= 4 * probe_px  # too small to be worth even a memory probe
    t0 = time.perf_counter()
    cache_notes: List[str] = []
    with mu.MemoryMonitor(device=job.device) as mon:
        while True:
            dev = job.device
            cache_notes.append(cost_cache.load(handle, dev))  # once per handle and device
            cur_tile = forced_tile or None  # what this attempt runs at, should planning itself fail
            module = None
            try:
                with _cudnn_autotune(dev):
                    sel, notes = fastpath.select(handle, dev, "fp32" if force_fp32 else precision, net_image,
                                                 job_px=b * h * w, measure=measuring,
                                                 check_interrupt=job.runtime.check_interrupt,
                                                 check_only=None if measure is None else False)
                    for n in notes:
                        if n not in report.steps:
                            report.steps.append(n)
                    variant = sel.variant
                    report.probe_seconds += sel.probe_seconds
                    module = handle.variant(dev, variant.dtype)
                    table = table_for(handle, dev, variant.dtype, variant.channels_last)
                    if measuring and not forced_tile:
                        report.probe_seconds += measure_costs(
                            handle, module, table, net_image, variant, dev, job_px=b * h * w,
                            largest=min(max(h, w), MAX_TILE.get(dev.type, 512)),
                            check_interrupt=job.runtime.check_interrupt)
                    new_copy = 0 if handle.has_variant(dev, variant.dtype) else handle.parameter_bytes(variant.dtype)
                    extra = (out_bytes + new_copy) if dev.type == "cpu" else 0
                    plan = plan_tiles(handle, h, w, dev, variant.dtype, tile=forced_tile, overlap=overlap,
                                      costs=table if table.has_memory else None,
                                      bytes_per_pixel=0.0 if small and not table.has_memory else None,
                                      batch=b, extra_bytes=extra, floor=floor if oom_tile else None)
                    cur_tile = plan.tile
                    n_tiles = count_tiles(h, w, cur_tile, plan.overlap, rule.align)
                    report.device, report.precision, report.plan = str(dev), variant.precision, plan.describe()
                    report.layout = "channels-last" if variant.channels_last else "NCHW"
                    report.fast_path = sel.describe()
                    report.planned_bytes = plan.predicted_bytes
                    report.tile, report.overlap, report.tiles = cur_tile, plan.overlap if cur_tile else 0, n_tiles
                    forward, _ = _channel_forward(handle, rgb_c, module)
                    bar = job.runtime.progress(b * n_tiles, f"{handle.arch}") if progress else None
                    whole = b == 1 and c != 4 and (cur_tile is None or (cur_tile >= h and cur_tile >= w))
                    if out is None and not whole:
                        out = torch.empty((b, h * s, w * s, c), dtype=torch.float32)
                    try:
                        res = tiled_inference(
                            forward, image[..., :rgb_c], scale=s, out_channels=rgb_c, tile=cur_tile,
                            overlap=plan.overlap, size_multiple=handle.size_multiple, min_size=handle.min_size,
                            pad_mode=handle.pad_mode, device=dev, dtype=variant.dtype,
                            out=None if whole else out[..., :rgb_c],
                            on_tile=(lambda: bar.update(1)) if bar is not None else None,
                            check_interrupt=job.runtime.check_interrupt, clamp=handle.clamp,
                            align=rule.align, channels_last=variant.channels_last,
                            timer=table.add_time,
                        )
                        if whole:  # the network's own output is the result: no second buffer
                            out = res
                        del res
                    finally:
                        if bar is not None:
                            bar.close()
                    if not all_finite(out[..., :rgb_c]):
                        if variant.reduced:
                            report.steps.append(f"{variant.precision} produced NaN/inf values: repeated in fp32")
                            force_fp32 = True
                            if whole:
                                out = None
                            continue
                        raise NonFiniteError(
                            f"{handle.arch}: the network produced NaN or infinite values (in {variant.precision}); "
                            f"nothing was replaced or hidden. Please report it with the image size and the model.")
                del module
                break
            except Exception as exc:  # noqa: BLE001 - filtered by is_oom_error
                module = None
                if not mu.is_oom_error(exc):
                    mu.cleanup(dev)
                    raise
                where = "whole image" if cur_tile is None else f"tile {cur_tile}px"
                mu.cleanup(dev, after_oom=True)
                nxt = round_to_multiple((max(h, w) if cur_tile is None else cur_tile) // 2, rule.align)
                if nxt >= floor and (cur_tile is None or nxt < cur_tile):
                    report.steps.append(_oom_step(exc, dev, where, f"retry with tile {nxt}px"))
                    forced_tile, oom_tile = nxt, True
                    continue
                try:
                    job.fall_back(exc, where)
                except mu.OutOfMemoryError:
                    report.steps[-1] = _oom_step(exc, dev, where, "no smaller tile left")
                    raise mu.OutOfMemoryError(
                        f"{handle.arch} ran out of memory even at the smallest tile ({floor}px) on the cpu. "
                        f"Steps: " + "; ".join(report.steps), report.steps) from None
                forced_tile, oom_tile = requested_tile, False
        if c == 4:
            out[..., 3:4] = fit_alpha(image[..., 3:4], h * s, w * s)
    cache_notes.append(cost_cache.save(handle, job.device))
    report.cache = "; ".join(n for n in cache_notes if n)
    mu.cleanup(job.device)
    report.seconds = time.perf_counter() - t0
    report.peak_ram_bytes, report.ram_delta_bytes = mon.peak_ram_bytes, mon.ram_delta_bytes
    report.peak_vram_bytes = mon.peak_vram_bytes
    return out, report

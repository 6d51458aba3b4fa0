"""Device choice, memory measurement, tile planning and out-of-memory handling.

Before a torch (or TensorFlow) model runs, RestoreKit picks a device and a tile size from the memory
that is actually free, so a large image never takes the machine down:

* :func:`resolve_device` — ``auto`` / ``cpu`` / ``gpu`` to a ``torch.device`` (the host's device
  inside ComfyUI, else CUDA, MPS or CPU).
* :class:`MemoryMonitor` — current and peak process RAM (RSS, sampled every few ms) and peak GPU
  memory around any block of code.
* :func:`probe_bytes_per_pixel` — activation memory per input pixel, measured on a small tile.
* :func:`plan_tiles` — whole image when it fits, otherwise the largest tile (a multiple of the
  model's size requirement) that fits the budget, with the overlap the architecture needs.
* :func:`is_oom_error` — CUDA OOM, ``MemoryError`` and the CPU allocator's ``RuntimeError``.
* :func:`configure_tensorflow` — memory growth on TensorFlow's GPUs before it allocates anything.

All memory figures are bytes.
"""
from __future__ import annotations

import gc
import math
import weakref

import threading

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .runtime import get_runtime, memory_share

#: fraction of free memory the planner leaves untouched
SAFETY_MARGIN = {"cuda": 0.20, "mps": 0.30, "cpu": 0.50}
#: multiplier on the probed activation memory (allocator slack, fragmentation)
ACTIVATION_SAFETY = 1.5
#: the largest tile side the planner proposes (px); larger tiles stop paying off
MAX_TILE = {"cuda": 1024, "mps": 1024, "cpu": 512}
MIN_TILE = 64

_OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "defaultcpuallocator",
    "not enough memory",
    "failed to allocate",
)


class OutOfMemoryError(RuntimeError):
    """Every fallback step ran out of memory; ``steps`` lists what was tried."""

    def __init__(self, message: str, steps: Optional[List[str]] = None):
        super().__init__(message)
        self.steps = list(steps or [])


# --- devices ---------------------------------------------------------------------------------
def gpu_available() -> bool:
    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(preference: str = "auto") -> Tuple[torch.device, str]:
    """Map ``auto`` / ``cpu`` / ``gpu`` (or a torch device string) to a device and a note.

    ``gpu`` without a GPU falls back to the CPU, and the note says so.
    """
    pref = (preference or "auto").lower()
    runtime = get_runtime()
    if pref == "cpu":
        return torch.device("cpu"), "cpu (requested)"
    if pref == "auto":
        dev = torch.device(runtime.default_device())
        return dev, f"{dev} (auto)"
    if pref == "gpu":
        dev = torch.device(runtime.default_device())
        if dev.type == "cpu":
            if torch.cuda.is_available():
                dev = torch.device("cuda")
            elif gpu_available():
                dev = torch.device("mps")
            else:
                return torch.device("cpu"), "cpu (gpu requested but none available)"
        return dev, f"{dev} (requested)"
    try:
        return torch.device(pref), f"{pref} (requested)"
    except Exception:
        raise ValueError(f"device must be auto, cpu or gpu, got {preference!r}") from None


def free_memory(device) -> int:
    """Free bytes on ``device`` for this process to plan with: what the host reports times this
    process's share of the machine (1 unless several workers share it: :func:`runtime.set_memory_share`)."""
    device = torch.device(device)
    return int(get_runtime().free_memory(device) * memory_share(device))


def cleanup(device=None, after_oom: bool = False) -> None:
    """Release memory after a model run or an out-of-memory error.

    On a GPU (or after any OOM): collect garbage, then return the allocator's cached memory
    (``empty_cache`` / ComfyUI's ``soft_empty_cache``).  After a normal CPU run nothing is done:
    tensors are freed by reference counting, and a full ``gc.collect`` costs 0.1-0.3 s in a process
    with as many Python objects as a ComfyUI server (measured: 0.19 s per call in the model
    benchmark, a third of a small model's run time).
    """
    dev = torch.device(device) if device is not None else None
    if after_oom or dev is None or dev.type != "cpu":
        get_runtime().empty_cache(device)  # collects garbage first


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA OOM, ``MemoryError`` and allocator failures reported as ``RuntimeError``."""
    if isinstance(exc, get_runtime().oom_exception_types()):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(m in msg for m in _OOM_MESSAGES)
    return False


# --- measuring -----------------------------------------------------------------------------------
def process_rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


@dataclass
class MemoryMonitor:
    """Context manager recording RAM (process RSS) and GPU memory, current and peak.

    >>> with MemoryMonitor() as mon: ...
    >>> mon.peak_ram_bytes, mon.ram_delta_bytes, mon.peak_vram_bytes
    """

    interval_s: float = 0.005
    device: Optional[torch.device] = None
    collect: bool = False  # gc.collect() before reading the starting RSS (benchmarks; slow in big processes)
    start_ram_bytes: int = 0
    peak_ram_bytes: int = 0
    end_ram_bytes: int = 0
    peak_vram_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: Optional[threading.Thread] = field(default=None, repr=False)

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = process_rss()
            if rss > self.peak_ram_bytes:
                self.peak_ram_bytes = rss
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemoryMonitor":
        if self.collect:
            gc.collect()
        self.start_ram_bytes = self.peak_ram_bytes = process_rss()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.end_ram_bytes = process_rss()
        self.peak_ram_bytes = max(self.peak_ram_bytes, self.end_ram_bytes)
        if torch.cuda.is_available():
            self.peak_vram_bytes = int(torch.cuda.max_memory_allocated())

    @property
    def ram_delta_bytes(self) -> int:
        """Peak RSS above the RSS at entry: the RAM the block needed."""
        return max(0, self.peak_ram_bytes - self.start_ram_bytes)


def format_bytes(n: float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


# --- probing and planning --------------------------------------------------------------------------
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


# --- TensorFlow -----------------------------------------------------------------------------------------
def configure_tensorflow(preference: str = "auto"):
    """Prepare TensorFlow (optional dependency) before it allocates: memory growth on every GPU.

    Returns ``(tf_module, device_string, note)``; ``tf_module`` is ``None`` when TensorFlow is not
    installed.  ``preference`` is ``auto`` / ``cpu`` / ``gpu``; with ``cpu`` TensorFlow's GPUs are
    hidden from it.
    """
    try:
        import tensorflow as tf  # noqa: F401
    except Exception:
        return None, "cpu", "tensorflow not installed"
    gpus = []
    try:
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised: growth must be set before the first op
        if (preference or "auto").lower() == "cpu" and gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass
            return tf, "/CPU:0", "tensorflow on cpu (requested)"
    except Exception as exc:  # pragma: no cover - depends on the TF build
        return tf, "/CPU:0", f"tensorflow device setup failed ({exc}); using cpu"
    if gpus and (preference or "auto").lower() in ("auto", "gpu"):
        return tf, "/GPU:0", f"tensorflow on gpu with memory growth ({len(gpus)} gpu)"
    return tf, "/CPU:0", "tensorflow on cpu"



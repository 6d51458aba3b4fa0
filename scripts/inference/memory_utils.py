"""Measuring: devices, free memory, memory use, and what counts as running out of memory.

* :func:`resolve_device` — ``auto`` / ``cpu`` / ``gpu`` to a ``torch.device`` (the host's device
  inside ComfyUI, else CUDA, MPS or CPU).
* :func:`free_memory` — free bytes on a device, as the host reports them.
* :class:`MemoryMonitor` — current and peak process RAM (RSS, sampled every few ms) and peak GPU
  memory around any block of code.
* :func:`is_oom_error` — CUDA OOM, ``MemoryError`` and the CPU allocator's ``RuntimeError``;
  :func:`cleanup` frees memory after a run or an out-of-memory error.

Planning (how much a model needs, which tile fits) is :mod:`.planning`; the memory-safe runs that use
both are :mod:`.runner`.  All memory figures are bytes.
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from .runtime import get_runtime, memory_share

#: the choices of every node's ``device`` input
DEVICE_CHOICES = ("auto", "cpu", "gpu")

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
    tensors are freed by reference counting, and a full ``gc.collect`` is slow in a process with as
    many Python objects as a ComfyUI server (``benchmarks/bench_models.py`` measures a model node
    against the bare network, this cost included).
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


# --- memory use ------------------------------------------------------------------------------------
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

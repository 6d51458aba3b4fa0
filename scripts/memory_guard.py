"""Running out of memory in a node: one clear error that names the image and the memory needed.

numpy raises ``MemoryError: Unable to allocate 380. MiB for an array with shape ...``, OpenCV
``cv2.error: ... Insufficient memory`` and torch ``RuntimeError: ... DefaultCPUAllocator: can't
allocate memory``; none says which node, which image, or how much memory the job needs.  At the
node boundary (:func:`guard`, applied to every node by ``nodes/__init__.py``) any of them becomes
:class:`ImageMemoryError`, which says all three, with what was available: free RAM and, under an
address-space limit (``ulimit -v``, ``prlimit --as``, a container), the room left below it.

Library code that can do the job in pieces (e.g. the colour conversions of CLAHE in row strips,
:func:`strips`) keeps its peak memory near the size of the input and output; the guard is the
backstop for everything else.  The model runner has its own chain (smaller tiles, then the CPU) and
its own ``OutOfMemoryError``; both are left as they are.

Torch-free (numpy and psutil only), so every library module may import it.  All sizes are bytes.
"""
from __future__ import annotations

import functools
import re
from typing import Iterator, Optional, Tuple

#: the pack's root package (the pack loads under any folder name)
_ROOT = __name__.rsplit(".scripts.", 1)[0]

#: pieces of the messages of allocator failures that are not ``MemoryError`` (OpenCV, torch, CUDA)
OOM_MESSAGES = ("insufficient memory", "failed to allocate", "out of memory", "can't allocate memory",
                "cannot allocate memory", "defaultcpuallocator", "not enough memory")


class ImageMemoryError(MemoryError):
    """A node ran out of memory.  ``needed``: bytes the job needed at least (what was in use plus the
    allocation that failed), ``available``: bytes it could still get; either may be None."""

    def __init__(self, message: str, needed: Optional[int] = None, available: Optional[int] = None):
        super().__init__(message)
        self.needed = needed
        self.available = available


def is_memory_error(exc: BaseException) -> bool:
    """True for ``MemoryError`` (numpy's included) and for allocator failures reported as another
    type: ``cv2.error`` "Insufficient memory", torch's CPU/CUDA ``RuntimeError``/``OutOfMemoryError``."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, (RuntimeError, OSError)) or type(exc).__module__.split(".")[0] == "cv2":
        msg = str(exc).lower()
        return any(m in msg for m in OOM_MESSAGES)
    return False


def requested_bytes(exc: BaseException) -> Optional[int]:
    """The size of the allocation that failed, when the exception tells it."""
    shape, dtype = getattr(exc, "shape", None), getattr(exc, "dtype", None)
    if shape is not None and dtype is not None:  # numpy's _ArrayMemoryError
        try:
            import numpy as np

            return int(np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize)
        except Exception:
            pass
    msg = str(exc)
    m = re.search(r"allocate (\d+) bytes", msg) or re.search(r"Failed to allocate (\d+) bytes", msg)
    if m:
        return int(m.group(1))
    m = re.search(r"allocate ([\d.]+) ?([KMGT]i?B)", msg)
    if m:
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2)[0]]
        return int(float(m.group(1)) * unit)
    return None


def address_space() -> Tuple[Optional[int], int]:
    """(address-space limit or None when unlimited, address space in use now)."""
    limit = None
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1):
            limit = int(soft)
    except Exception:  # not on this platform
        pass
    used = 0
    try:
        import psutil

        used = int(psutil.Process().memory_info().vms)
    except Exception:
        pass
    return limit, used


def available_bytes() -> int:
    """Bytes this process can still allocate: free RAM, or less under an address-space limit."""
    free = 1 << 62
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except Exception:
        pass
    limit, used = address_space()
    if limit is not None:
        free = min(free, max(0, limit - used))
    return free


def format_bytes(n: Optional[float]) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def describe_images(*values) -> str:
    """'1 image 7680x4320, 3 channels, float32 (380 MiB)' for the tensors/arrays among ``values``
    (IMAGE ``[B,H,W,C]``, ``[H,W,C]`` or ``[H,W]``), joined with '; '."""
    parts = []
    for v in values:
        shape = getattr(v, "shape", None)
        if shape is None or len(shape) < 2 or not hasattr(v, "dtype"):
            continue
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4:
            b, h, w, c = shape
        elif len(shape) == 3:
            b, (h, w, c) = 1, shape
        else:
            b, (h, w), c = 1, shape, 1
        itemsize = getattr(v, "itemsize", None) or getattr(getattr(v, "dtype", None), "itemsize", 4)
        nbytes = b * h * w * c * int(itemsize)
        parts.append(f"{b} image{'s' if b != 1 else ''} {w}x{h}, {c} channel{'s' if c != 1 else ''} "
                     f"({format_bytes(nbytes)} as {str(v.dtype).replace('torch.', '')})")
    return "; ".join(parts) or "its input"


def memory_error(what: str, images: str, exc: BaseException, room: Optional[int] = None,
                 limit: Optional[int] = None, held: Optional[int] = None) -> ImageMemoryError:
    """The :class:`ImageMemoryError` for ``exc`` raised while ``what`` processed ``images``.

    ``room``: the bytes the process could still allocate when the node started (:func:`available_bytes`),
    ``limit``/``held``: its address-space limit and the address space it held then.  The node needed
    more than ``room`` (the ``needed`` lower bound of the error)."""
    req = requested_bytes(exc)
    if room is None:
        room = available_bytes()
    where = (f"address-space limit {format_bytes(limit)} (ulimit -v / prlimit --as), "
             f"{format_bytes(held)} already in use when the node started" if limit is not None
             else "free RAM when the node started")
    step = f"; an allocation of {format_bytes(req)} failed" if req is not None else ""
    message = (f"{what} ran out of memory on {images}: it needs more than the {format_bytes(room)} it could "
               f"use ({where}{step}). Free memory (close other jobs, raise the limit) or process a smaller "
               f"or cropped image. [{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}]")
    return ImageMemoryError(message, needed=room + 1, available=room)


def guard(fn, what: str):
    """Wrap a node function so that running out of memory raises :class:`ImageMemoryError` naming
    ``what``, the images it was given and the memory it needed.  The pack's own memory errors (the
    model runner's) pass through unchanged."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limit, held = address_space()
        room = available_bytes()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            mod = type(exc).__module__
            own = mod == _ROOT or mod.startswith(_ROOT + ".")
            if own or not is_memory_error(exc):
                raise
            err = memory_error(what, describe_images(*args, *kwargs.values()), exc, room, limit, held)
        raise err  # outside the except block: the allocator's traceback (and its frames) is let go

    wrapper.__restorekit_memory_guard__ = True
    return wrapper


def strips(height: int, row_bytes: int, budget: int = 64 << 20) -> Iterator[slice]:
    """Row slices of an image ``height`` rows high whose rows take ``row_bytes`` each (of working
    memory), so that one strip needs about ``budget`` bytes (at least one row per strip)."""
    step = max(1, int(budget // max(1, row_bytes)))
    for y in range(0, int(height), step):
        yield slice(y, min(int(height), y + step))

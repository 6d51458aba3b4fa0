"""Host services the library needs: device, free memory, progress, interrupts, model folders.

The library (``scripts/``) never imports ComfyUI.  It asks this module for the services a host
provides.  :class:`PlainRuntime` implements them with psutil, torch and tqdm, which is what the CLI,
the tests and any non-ComfyUI caller get.  Inside ComfyUI, ``nodes/comfy_adapter.py`` installs a
subclass that routes every call to ComfyUI (``comfy.model_management``, ``comfy.utils.ProgressBar``,
``folder_paths``) and falls back to these methods where ComfyUI is absent.

Memory figures are in bytes.
"""
from __future__ import annotations

import gc
import os
import threading
from typing import Dict, List, Optional

MODEL_EXTENSIONS = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")

#: model-folder kind -> folders inside the pack's own models/ whose weights ship with the pack
#: (the converted realesr-animevideov3; see models/realesrgan/MODEL_CARD.md)
_PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models")
SHIPPED_MODEL_FOLDERS = {"upscale_models": [os.path.join(_PACK_MODELS, "realesrgan")]}


class InterruptedByUser(Exception):
    """Raised by :meth:`PlainRuntime.check_interrupt` when the host asked to stop."""


def is_interrupt(exc: BaseException) -> bool:
    """True for a user's cancel: ours or ComfyUI's ``InterruptProcessingException`` (never a
    reason to fall back to another method)."""
    return isinstance(exc, InterruptedByUser) or type(exc).__name__ == "InterruptProcessingException"


class _TqdmProgress:
    def __init__(self, total: int, desc: str):
        self._bar = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, disable=None)
        except Exception:  # tqdm is optional for the library
            self._bar = None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class PlainRuntime:
    """Services outside ComfyUI: psutil for RAM, torch for CUDA/MPS, tqdm for progress.

    Model folders default to ``$RESTOREKIT_MODELS_DIR/<kind>`` (or ``./models/<kind>``) and can be
    extended with :meth:`register_model_folder`.
    """

    name = "standalone"

    def __init__(self) -> None:
        self._folders: Dict[str, List[str]] = {}
        self._interrupt = threading.Event()

    # --- devices and memory -------------------------------------------------------------
    def default_device(self):
        """The best torch device available: CUDA, then MPS, then CPU."""
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    def free_memory(self, device) -> int:
        """Free bytes on ``device``: ``torch.cuda.mem_get_info`` on CUDA, psutil available RAM else."""
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            # memory torch has cached but not handed out is free for us too
            reserved = torch.cuda.memory_reserved(device)
            allocated = torch.cuda.memory_allocated(device)
            return int(free + max(0, reserved - allocated))
        return int(_available_ram())

    def total_memory(self, device) -> int:
        import torch

        device = torch.device(device)
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        try:
            import psutil

            return int(psutil.virtual_memory().total)
        except Exception:
            return 0

    def empty_cache(self, device=None) -> None:
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            mps = getattr(torch, "mps", None)
            if mps is not None and getattr(torch.backends, "mps", None) is not None:
                if torch.backends.mps.is_available():
                    mps.empty_cache()
        except Exception:
            pass

    def oom_exception_types(self) -> tuple:
        """Exception classes that mean 'out of memory' (plus RuntimeError, checked by message)."""
        types: list = [MemoryError]
        try:
            import torch

            types.append(torch.cuda.OutOfMemoryError)
        except Exception:
            pass
        return tuple(types)

    # --- a folder for measured costs ----------------------------------------------------------
    def cache_dir(self) -> Optional[str]:
        """A per-user folder for small caches (measured model costs), or None when caching is off.

        ``$RESTOREKIT_COST_CACHE_DIR`` wins (``off`` or ``0`` turns caching off), then
        ``$RESTOREKIT_CACHE_DIR`` (the pack's cache folder, shared with ncnn conversions); else the platform's
        cache folder: ``%LOCALAPPDATA%\\restorekit`` on Windows, ``~/Library/Caches/restorekit`` on
        macOS, ``$XDG_CACHE_HOME/restorekit`` (default ``~/.cache/restorekit``) elsewhere.
        """
        env = cache_dir_override()
        if env is not None:
            return env or None
        import sys

        home = os.path.expanduser("~")
        if sys.platform.startswith("win"):
            base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        elif sys.platform == "darwin":
            base = os.path.join(home, "Library", "Caches")
        else:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
        return os.path.join(base, "restorekit")

    # --- progress and interruption ----------------------------------------------------------
    def progress(self, total: int, desc: str = "RestoreKit"):
        """An object with ``update(n)`` and ``close()``."""
        return _TqdmProgress(total, desc)

    def request_interrupt(self) -> None:
        self._interrupt.set()

    def check_interrupt(self) -> None:
        """Raise :class:`InterruptedByUser` if the host asked to stop (between tiles)."""
        if self._interrupt.is_set():
            self._interrupt.clear()
            raise InterruptedByUser("processing interrupted")

    # --- model folders -----------------------------------------------------------------------
    def register_model_folder(self, kind: str, path: str) -> None:
        paths = self._folders.setdefault(kind, [])
        path = os.path.abspath(path)
        if path not in paths:
            paths.append(path)

    def model_folders(self, kind: str) -> List[str]:
        base = os.environ.get("RESTOREKIT_MODELS_DIR", os.path.join(os.getcwd(), "models"))
        folders = list(self._folders.get(kind, [])) + [os.path.join(base, kind)]
        return folders + [f for f in SHIPPED_MODEL_FOLDERS.get(kind, []) if f not in folders]

    def model_files(self, kind: str) -> List[str]:
        """Model file names (relative to their folder) found in the folders of ``kind``."""
        names = []
        for folder in self.model_folders(kind):
            if not os.path.isdir(folder):
                continue
            for root, _dirs, files in os.walk(folder, followlinks=True):
                for f in files:
                    if f.lower().endswith(MODEL_EXTENSIONS):
                        rel = os.path.relpath(os.path.join(root, f), folder)
                        names.append(rel.replace(os.sep, "/"))
        return sorted(set(names))

    def resolve_model_file(self, kind: str, name: str) -> str:
        """Full path of model ``name`` inside a folder of ``kind``; see :func:`resolve_inside`."""
        return resolve_inside(self.model_folders(kind), name, kind)


def resolve_inside(folders: List[str], name: str, kind: str) -> str:
    """Return the real path of ``name`` if it lies inside one of ``folders``.

    Rejects absolute paths, ``..`` components and symlinks that lead outside the folder, with an
    error that names the file and the folder kind.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"no model file name given for the '{kind}' folder")
    norm = name.replace("\\", "/")
    if os.path.isabs(name) or norm.startswith("/") or ".." in norm.split("/"):
        raise ValueError(
            f"model name '{name}' points outside the '{kind}' model folder; give a file name "
            f"listed in that folder"
        )
    for folder in folders:
        root = os.path.realpath(folder)
        candidate = os.path.realpath(os.path.join(root, norm))
        if os.path.commonpath([root, candidate]) != root:
            continue
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"model file '{name}' was not found in the '{kind}' model folder(s): "
        + ", ".join(folders or ["(none registered)"])
    )


#: environment variable naming the cost cache's folder (``off`` / ``0`` / empty: no cost cache)
COST_CACHE_ENV = "RESTOREKIT_COST_CACHE_DIR"
#: the pack's general cache folder (also where first-use ncnn conversions go: scripts/inference/ncnn.py)
CACHE_DIR_ENV = "RESTOREKIT_CACHE_DIR"


def cache_dir_override() -> Optional[str]:
    """The cost cache's folder from the environment: None when neither variable is set, ``""`` when
    ``$RESTOREKIT_COST_CACHE_DIR`` turns it off, else that folder or ``$RESTOREKIT_CACHE_DIR``."""
    value = os.environ.get(COST_CACHE_ENV)
    if value is not None:
        value = value.strip()
        return "" if value.lower() in ("", "0", "off", "none", "false") else os.path.abspath(value)
    value = os.environ.get(CACHE_DIR_ENV)
    return os.path.abspath(value) if value else None


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except Exception:
            return 4 << 30


# --- this process's share of the machine's memory ------------------------------------------------------
#: environment variable giving a process its share: ``0.5`` (RAM and GPU) or ``ram=0.5,gpu=0.25``
MEMORY_SHARE_ENV = "RESTOREKIT_MEMORY_SHARE"
_memory_share: Optional[Dict[str, float]] = None


def _parse_share(text: str) -> Dict[str, float]:
    """``"0.5"`` -> both kinds 0.5; ``"ram=0.5,gpu=0.25"`` -> each named kind (the other stays 1)."""
    share = {"ram": 1.0, "gpu": 1.0}
    text = (text or "").strip()
    if not text:
        return share
    items = text.split(",") if "=" in text else [f"ram={text}", f"gpu={text}"]
    for item in items:
        kind, _, value = item.partition("=")
        kind = kind.strip().lower()
        if kind not in share:
            raise ValueError(f"{MEMORY_SHARE_ENV}: unknown kind {kind!r} (ram or gpu) in {text!r}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"{MEMORY_SHARE_ENV}: {value!r} is not a number (in {text!r})") from None
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{MEMORY_SHARE_ENV}: a share is a fraction in (0, 1], got {v} (in {text!r})")
        share[kind] = v
    return share


def set_memory_share(ram: float = 1.0, gpu: float = 1.0) -> None:
    """Make this process plan with only a fraction of the free memory it measures.

    Several workers on one machine each measure the same free memory; without a share each would
    plan its tiles as if it had all of it.  An engine that starts N workers per machine gives each a
    share (the Ray engine: ``1 / actors per node``, see ``hybrid/tools/ray_engine.memory_shares``),
    and :func:`memory_utils.free_memory` returns ``measured free x share``, so the workers' budgets
    together never exceed what was free.  ``ram`` applies to the CPU, ``gpu`` to CUDA; MPS (unified
    memory) takes the smaller.  Both are fractions in (0, 1]; ``(1, 1)`` is the default (no sharing).
    The same can be set for a process from outside with ``RESTOREKIT_MEMORY_SHARE=0.5`` (or
    ``ram=0.5,gpu=0.25``), e.g. for several ComfyUI servers on one GPU.
    """
    global _memory_share
    for name, v in (("ram", ram), ("gpu", gpu)):
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"memory share {name} must be a fraction in (0, 1], got {v}")
    _memory_share = {"ram": float(ram), "gpu": float(gpu)}


def memory_share(device) -> float:
    """This process's share (0, 1] of the free memory of ``device`` (a torch device or its name)."""
    global _memory_share
    if _memory_share is None:
        _memory_share = _parse_share(os.environ.get(MEMORY_SHARE_ENV, ""))
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cpu":
        return _memory_share["ram"]
    if kind == "mps":
        return min(_memory_share["ram"], _memory_share["gpu"])
    return _memory_share["gpu"]


_runtime: Optional[PlainRuntime] = None


def get_runtime() -> PlainRuntime:
    """The active runtime (ComfyUI's adapter when installed, else a :class:`PlainRuntime`)."""
    global _runtime
    if _runtime is None:
        _runtime = PlainRuntime()
    return _runtime


def set_runtime(runtime: PlainRuntime) -> None:
    global _runtime
    _runtime = runtime


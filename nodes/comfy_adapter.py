"""The one place RestoreKit touches ComfyUI's own services.

Inside ComfyUI this runtime answers with ``comfy.model_management`` (device, free memory, cache,
interrupts), ``comfy.utils.ProgressBar`` (progress in the UI, which is also an interrupt point) and
``folder_paths`` (model folders, ``extra_model_paths.yaml`` included).  Outside ComfyUI, every method
falls back to :class:`scripts.inference.runtime.PlainRuntime` (psutil, torch, tqdm), so the nodes can be tested
without ComfyUI.
"""
from __future__ import annotations

import importlib
import os

from ..scripts.inference.runtime import (SHIPPED_MODEL_FOLDERS, PlainRuntime, get_runtime, resolve_inside,
                                         set_runtime)


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except Exception:
        return None


#: model-folder kinds this pack registers with ComfyUI (name -> subfolder of ComfyUI's models dir)
PACK_MODEL_FOLDERS = {"restorekit": "restorekit"}


class ComfyRuntime(PlainRuntime):
    """ComfyUI's services where importable, :class:`PlainRuntime` where not."""

    def __init__(self) -> None:
        super().__init__()
        self.mm = _optional("comfy.model_management")
        self.cutils = _optional("comfy.utils")
        self.folder_paths = _optional("folder_paths")
        self.name = "comfyui" if self.mm is not None else "standalone"

    def default_device(self):
        if self.mm is not None:
            return self.mm.get_torch_device()
        return super().default_device()

    def free_memory(self, device) -> int:
        if self.mm is not None:
            try:
                return int(self.mm.get_free_memory(device))
            except Exception:
                pass
        return super().free_memory(device)

    def empty_cache(self, device=None) -> None:
        super().empty_cache(device)
        if self.mm is not None:
            try:
                self.mm.soft_empty_cache()
            except Exception:
                pass

    def oom_exception_types(self) -> tuple:
        types = super().oom_exception_types()
        exc = getattr(self.mm, "OOM_EXCEPTION", None) if self.mm is not None else None
        if isinstance(exc, type) and exc not in types:
            types = types + (exc,)
        return types

    def progress(self, total: int, desc: str = "RestoreKit"):
        if self.cutils is not None and hasattr(self.cutils, "ProgressBar"):
            return _ComfyProgress(self.cutils.ProgressBar(total))
        return super().progress(total, desc)

    def check_interrupt(self) -> None:
        if self.mm is not None:
            self.mm.throw_exception_if_processing_interrupted()
        super().check_interrupt()

    def register_model_folder(self, kind: str, path: str) -> None:
        super().register_model_folder(kind, path)
        fp = self.folder_paths
        if fp is None:
            return
        if kind in fp.folder_names_and_paths:
            fp.add_model_folder_path(kind, path)  # merge with the user's own entry
        else:
            fp.folder_names_and_paths[kind] = ([path], set(fp.supported_pt_extensions))

    def model_folders(self, kind: str):
        fp = self.folder_paths
        if fp is not None:
            try:
                return list(fp.get_folder_paths(kind))
            except Exception:
                pass
        return super().model_folders(kind)

    def model_files(self, kind: str):
        fp = self.folder_paths
        if fp is not None:
            try:
                return list(fp.get_filename_list(kind))
            except Exception:
                pass
        return super().model_files(kind)

    def resolve_model_file(self, kind: str, name: str) -> str:
        return resolve_inside(self.model_folders(kind), name, kind)


class _ComfyProgress:
    def __init__(self, bar):
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        pass


def install() -> ComfyRuntime:
    """Make :class:`ComfyRuntime` the library's runtime and register the pack's model folders."""
    runtime = get_runtime()
    if not isinstance(runtime, ComfyRuntime):
        runtime = ComfyRuntime()
        set_runtime(runtime)
    if runtime.folder_paths is not None:
        models_dir = getattr(runtime.folder_paths, "models_dir", None)
        if models_dir:
            for kind, sub in PACK_MODEL_FOLDERS.items():
                runtime.register_model_folder(kind, os.path.join(models_dir, sub))
        for kind, folders in SHIPPED_MODEL_FOLDERS.items():  # weights that ship inside the pack
            for folder in folders:
                runtime.register_model_folder(kind, folder)
    return runtime

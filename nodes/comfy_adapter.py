"""The one place RestoreKit touches ComfyUI's own services.

Inside ComfyUI this runtime answers with ``comfy.model_management`` (device, free memory, cache,
interrupts), ``comfy.utils.ProgressBar`` (progress in the UI, which is also an interrupt point) and
``folder_paths`` (model folders, ``extra_model_paths.yaml`` included).  Outside ComfyUI, every method
falls back to :class:`scripts.inference.runtime.PlainRuntime` (psutil, torch, tqdm), so the nodes can be tested
without ComfyUI.
"""
from __future__ import annotations

import contextlib
import importlib
import os

from ..scripts.inference.runtime import (SHIPPED_MODEL_FOLDERS, PlainRuntime, cache_dir_override, get_runtime,
                                         resolve_inside, set_runtime)


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
        self._image_dirs = {}

    # --- image folders (what LoadImage / SaveImage-style nodes read and write) ---------------
    def image_folder(self, kind: str) -> str:
        """``input`` / ``output`` / ``temp`` folder: one set with :meth:`set_image_folder` (the CLI
        does), else ComfyUI's, else ``./input``, ``./output`` and a temp folder."""
        if kind not in ("input", "output", "temp"):
            raise ValueError(f"unknown image folder kind {kind!r}")
        if kind in self._image_dirs:
            return self._image_dirs[kind]
        fp = self.folder_paths
        if fp is not None:
            return getattr(fp, f"get_{kind}_directory")()
        if kind == "temp":
            import tempfile

            return os.path.join(tempfile.gettempdir(), "restorekit-temp")
        return os.path.abspath(kind)

    def set_image_folder(self, kind: str, path: str) -> None:
        self.image_folder(kind)  # validates kind
        self._image_dirs[kind] = os.path.abspath(path)

    @contextlib.contextmanager
    def image_folders(self, **folders):
        """``with runtime.image_folders(input=..., output=...):`` set for the block, then restored."""
        old = dict(self._image_dirs)
        try:
            for kind, path in folders.items():
                self.set_image_folder(kind, path)
            yield self
        finally:
            self._image_dirs = old

    def image_path(self, name: str) -> str:
        """Full path of an image input value: ComfyUI's annotated names (``x.png [output]``) inside
        ComfyUI, else a file in the input folder.  Refuses names that leave the image folders."""
        fp = self.folder_paths
        if fp is not None and "input" not in self._image_dirs:
            path = fp.get_annotated_filepath(name)
        else:
            path = os.path.join(self.image_folder("input"), name)
        full = os.path.abspath(path)  # '..' is resolved, links the user made in the folder are kept
        roots = [os.path.abspath(self.image_folder(k)) for k in ("input", "output", "temp")]
        if not any(full == r or full.startswith(r + os.sep) for r in roots):
            raise ValueError(f"image '{name}' is outside ComfyUI's input, output and temp folders")
        return path

    def save_target(self, prefix: str, kind: str = "output"):
        """``(folder, stem, counter, subfolder)`` for a new file named ``<stem>_<counter:05>_.<ext>``
        in the output (or temp) folder, as ComfyUI's SaveImage numbers them."""
        base = self.image_folder(kind)
        fp = self.folder_paths
        if fp is not None and kind not in self._image_dirs:
            folder, stem, counter, subfolder, _ = fp.get_save_image_path(prefix, base, 0, 0)
            return folder, stem, counter, subfolder
        subfolder, stem = os.path.split(os.path.normpath(prefix))
        folder = os.path.join(base, subfolder)
        if os.path.commonpath([os.path.abspath(folder), os.path.abspath(base)]) != os.path.abspath(base):
            raise ValueError(f"filename_prefix '{prefix}' leaves the output folder")
        os.makedirs(folder, exist_ok=True)
        taken = [f[len(stem) + 1:].split("_")[0] for f in os.listdir(folder) if f.startswith(stem + "_")]
        counter = max([int(t) for t in taken if t.isdigit()] + [0]) + 1
        return folder, stem, counter, subfolder

    def workflow_metadata_enabled(self) -> bool:
        """False when ComfyUI runs with ``--disable-metadata`` (no prompt/workflow in saved files)."""
        cli_args = _optional("comfy.cli_args")
        return not bool(getattr(getattr(cli_args, "args", None), "disable_metadata", False))

    def cache_dir(self):
        """``$RESTOREKIT_COST_CACHE_DIR`` / ``$RESTOREKIT_CACHE_DIR`` when set, else ``<ComfyUI user directory>/restorekit/cache``
        (``folder_paths.get_user_directory()``), else the platform's cache folder."""
        fp = self.folder_paths
        if cache_dir_override() is None and fp is not None and hasattr(fp, "get_user_directory"):
            try:
                return os.path.join(fp.get_user_directory(), "restorekit", "cache")
            except Exception:
                pass
        return super().cache_dir()

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

    def _folder_paths(self, method: str, kind: str, fallback):
        """``folder_paths.<method>(kind)`` as a list, or ``fallback(kind)`` outside ComfyUI / for an
        unknown kind."""
        fp = self.folder_paths
        if fp is not None:
            try:
                return list(getattr(fp, method)(kind))
            except Exception:
                pass
        return fallback(kind)

    def model_folders(self, kind: str):
        return self._folder_paths("get_folder_paths", kind, super().model_folders)

    def model_files(self, kind: str):
        return self._folder_paths("get_filename_list", kind, super().model_files)

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
    previous = get_runtime()
    runtime = previous
    if not isinstance(runtime, ComfyRuntime):
        runtime = ComfyRuntime()
        for kind, folders in previous._folders.items():  # folders registered before the nodes loaded
            for folder in folders:
                runtime.register_model_folder(kind, folder)
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

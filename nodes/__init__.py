"""ComfyUI node modules, one per family.

Every public module here (name not starting with ``_``, not the adapter) that defines
``NODE_CLASS_MAPPINGS`` is collected.  A family that fails to import is logged and recorded in
:data:`NODE_IMPORT_ERRORS`, so one broken optional dependency never takes the rest of the pack down;
the test suite asserts that dict is empty.

Every node's function is wrapped by :func:`scripts.memory_guard.guard` here, in one place: running
out of memory anywhere in a node (numpy, OpenCV, torch) raises the pack's ``ImageMemoryError`` naming
the node, the image size and the memory needed, instead of the library's own message.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import traceback

from . import comfy_adapter
from ..scripts.memory_guard import guard

log = logging.getLogger("RestoreKit")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
NODE_IMPORT_ERRORS: dict = {}

_SKIP = {"comfy_adapter"}


def _collect() -> None:
    comfy_adapter.install()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SKIP:
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as exc:  # keep the rest of the pack loading
            NODE_IMPORT_ERRORS[info.name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.error("RestoreKit: node family '%s' failed to import:\n%s", info.name, traceback.format_exc())
            continue
        for key, cls in getattr(module, "NODE_CLASS_MAPPINGS", {}).items():
            if key in NODE_CLASS_MAPPINGS:
                raise RuntimeError(f"RestoreKit node id {key} defined twice")
            NODE_CLASS_MAPPINGS[key] = cls
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    for key, cls in NODE_CLASS_MAPPINGS.items():
        fname = getattr(cls, "FUNCTION", None)
        fn = getattr(cls, fname, None) if fname else None
        if callable(fn) and not getattr(fn, "__restorekit_memory_guard__", False):
            setattr(cls, fname, guard(fn, f"{NODE_DISPLAY_NAME_MAPPINGS.get(key, key)} ({key})"))


_collect()

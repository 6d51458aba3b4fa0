"""RestoreKit: image restoration nodes for ComfyUI, and the same tools as a Python library and CLI.

ComfyUI imports this folder as a package (under whatever name the folder has) and reads
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``.  Both are provided lazily (PEP 562
module ``__getattr__``): importing the package costs nothing, and the node modules (and torch) are
imported the first time a mapping is read.  Imports are relative only.

The Python API (documented in :mod:`.api` and the README) is importable from here too::

    from restorekit import restore, analyse, restore_file, read_image

None of these names imports torch until a torch path runs (the U-Net, a model node).
"""

__version__ = "0.2.0"

#: public name -> submodule (relative) that defines it; resolved on first access
_LAZY = {
    "NODE_CLASS_MAPPINGS": ".nodes",
    "NODE_DISPLAY_NAME_MAPPINGS": ".nodes",
    "NODE_IMPORT_ERRORS": ".nodes",
    "HybridRestorer": ".api",
    "Thresholds": ".api",
    "analyse": ".api",
    "restore": ".api",
    "restore_file": ".api",
    "restore_folder": ".api",
    "run_node": ".api",
    "run_workflow": ".api",
    "list_nodes": ".api",
    "read_image": ".api",
    "write_image": ".api",
    "ImageData": ".api",
    "ImageMeta": ".api",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "__version__"] + [
    n for n in _LAZY if not n.startswith("NODE_")]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

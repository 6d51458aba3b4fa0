"""RestoreKit: image restoration nodes for ComfyUI.

ComfyUI imports this folder as a package (under whatever name the folder has) and reads
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``.  Imports are relative only.
Heavy libraries (OpenCV, scikit-image, scikit-learn, spandrel, bm3d) are imported inside the
functions that use them, so loading the pack costs little.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, NODE_IMPORT_ERRORS

__version__ = "0.1.0"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

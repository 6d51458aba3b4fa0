"""The Status node: memory, device, optional dependencies and the model files found (library:
``scripts/status_report.py``, also behind ``restorekit status``)."""
from __future__ import annotations

from ._common import CATEGORY_ROOT, InfoNode, node_mappings


class RestoreKitStatus(InfoNode):
    DISPLAY_NAME = "RestoreKit Status"
    DESCRIPTION = "Report RAM and VRAM, the chosen device, optional dependencies and the models found in the model folders."
    CATEGORY = f"{CATEGORY_ROOT}/Utility"
    FUNCTION = "status"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **_kwargs):
        return float("nan")  # memory changes: always re-run

    def status(self):
        from ..scripts.status_report import report_text

        text = report_text()
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = node_mappings(RestoreKitStatus)

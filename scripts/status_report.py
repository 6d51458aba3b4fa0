"""A plain-text report of what RestoreKit sees: memory, device, optional dependencies, model folders.

Used by the ``restorekit status`` CLI command and the "RestoreKit Status" node.
"""
from __future__ import annotations

import importlib.util
import platform
from typing import Dict, List

from .inference import memory_utils as mu
from .inference.runtime import get_runtime

OPTIONAL_DEPENDENCIES = {
    "bm3d": "BM3D film-grain denoising (non-commercial licence; fallback denoiser without it)",
    "tensorflow": "loading TensorFlow .h5 U-Nets (Keras on the torch backend is used without it)",
    "keras": "loading Keras .h5 U-Nets",
    "spandrel": "Real-ESRGAN / SCUNet / any spandrel model",
    "cv2": "OpenCV (opencv-python-headless)",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn (LB-CLAHE and hybrid predictors)",
}
MODEL_KINDS = ("upscale_models", "restorekit")


def collect() -> Dict[str, object]:
    import torch

    runtime = get_runtime()
    dev, note = mu.resolve_device("auto")
    info: Dict[str, object] = {
        "host": runtime.name,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device (auto)": note,
        "ram free": mu.format_bytes(runtime.free_memory(torch.device("cpu"))),
        "ram total": mu.format_bytes(runtime.total_memory(torch.device("cpu"))),
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            d = torch.device("cuda", i)
            info[f"cuda:{i}"] = (
                f"{torch.cuda.get_device_name(i)}, free {mu.format_bytes(runtime.free_memory(d))} of "
                f"{mu.format_bytes(runtime.total_memory(d))}"
            )
    else:
        info["gpu"] = "none (cpu only)"
    deps = {}
    for mod, what in OPTIONAL_DEPENDENCIES.items():
        deps[mod] = ("present" if importlib.util.find_spec(mod) is not None else "absent") + f" — {what}"
    info["dependencies"] = deps
    folders = {}
    for kind in MODEL_KINDS:
        files: List[str] = []
        try:
            files = runtime.model_files(kind)
        except Exception:
            pass
        folders[kind] = {"folders": runtime.model_folders(kind), "models": files}
    info["model folders"] = folders
    info["real pretrained models"] = _pretrained_lines()
    return info


def _pretrained_lines() -> List[str]:
    """One line per real pretrained model (available or not, with the reason): scripts/pretrained.py."""
    try:
        from .pretrained import available_pretrained

        return [f"{m.name}: {m.arch or '?'} ({m.task}) — " + ("available" if m.available else m.reason)
                for m in available_pretrained(include_unavailable=True)]
    except Exception as exc:  # the report must never fail
        return [f"could not list ({type(exc).__name__}: {exc})"]


def report_text() -> str:
    info = collect()
    lines = ["RestoreKit status"]
    for key, value in info.items():
        if key == "dependencies":
            lines.append("optional dependencies:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        elif key == "real pretrained models":
            lines.append("real pretrained models (restorekit models list for licences):")
            lines += [f"  {v}" for v in value]
        elif key == "model folders":
            lines.append("model folders:")
            for kind, d in value.items():
                lines.append(f"  {kind}: " + ", ".join(d["folders"]))
                lines += [f"    - {m}" for m in d["models"]] or ["    (no models found)"]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)

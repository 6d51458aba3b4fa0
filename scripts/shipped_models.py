"""Load and save the small models RestoreKit trains and ships in the pack's own ``models/`` folder.

joblib files unpickle code, so they are loaded only from ``models/`` and only after their sha256
matches the hash recorded beside them in ``<file>.sha256`` (written by :func:`save_joblib`).  Torch
weights are loaded with ``weights_only=True`` and checked the same way.
"""
from __future__ import annotations

import hashlib
import os

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


class ShippedModelError(RuntimeError):
    """A shipped model is missing, outside models/, or fails its hash check."""


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(relpath: str, models_dir: str = MODELS_DIR) -> str:
    """Absolute path of ``relpath`` inside ``models_dir``; refuses anything that leaves it."""
    root = os.path.realpath(models_dir)
    path = os.path.realpath(os.path.join(root, relpath))
    if os.path.commonpath([root, path]) != root:
        raise ShippedModelError(f"'{relpath}' is outside the pack's models folder {root}")
    return path


def verify(relpath: str, models_dir: str = MODELS_DIR) -> str:
    """Check ``relpath`` against ``relpath.sha256``; return its absolute path."""
    path = model_path(relpath, models_dir)
    if not os.path.isfile(path):
        raise ShippedModelError(f"shipped model '{relpath}' is missing from {models_dir}")
    hash_file = path + ".sha256"
    if not os.path.isfile(hash_file):
        raise ShippedModelError(f"shipped model '{relpath}' has no recorded sha256 ({hash_file})")
    with open(hash_file, "r", encoding="utf-8") as f:
        expected = f.read().split()[0].strip().lower()
    actual = sha256_file(path)
    if actual != expected:
        raise ShippedModelError(
            f"shipped model '{relpath}' fails its hash check (sha256 {actual[:12]}…, expected "
            f"{expected[:12]}…): refusing to unpickle it; reinstall the pack or retrain the model"
        )
    return path


def load_joblib(relpath: str, models_dir: str = MODELS_DIR):
    """Unpickle a joblib file from the pack's models folder after its sha256 check."""
    import joblib

    return joblib.load(verify(relpath, models_dir))


def load_torch_weights(relpath: str, models_dir: str = MODELS_DIR):
    """A state dict from ``.pt``/``.pth`` (``weights_only=True``) or ``.safetensors``, hash-checked."""
    path = verify(relpath, models_dir)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def write_hash(path: str) -> str:
    digest = sha256_file(path)
    with open(path + ".sha256", "w", encoding="utf-8") as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")
    return digest


def save_joblib(obj, relpath: str, models_dir: str = MODELS_DIR) -> str:
    """Dump ``obj`` with joblib into the models folder and record its sha256; returns the digest."""
    import joblib

    path = model_path(relpath, models_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    joblib.dump(obj, path, compress=3)
    return write_hash(path)


def save_torch_weights(state_dict, relpath: str, models_dir: str = MODELS_DIR) -> str:
    """Save a state dict (safetensors if the name ends so, else torch.save) and record its sha256."""
    path = model_path(relpath, models_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state_dict.items()}, path)
    else:
        import torch

        torch.save(state_dict, path)
    return write_hash(path)

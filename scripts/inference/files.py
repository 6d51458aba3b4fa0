"""Reading model files safely: no pickled code ever runs, and every refusal names the file.

``.safetensors`` files are read with safetensors; everything else with
``torch.load(weights_only=True)``, which refuses pickles that would build arbitrary objects or call
functions.  The file's bytes are sniffed first, so a renamed file is still read the right way and
random bytes get a clear message instead of an unpickling traceback.
"""
from __future__ import annotations

import os
import pickle
from typing import Dict, Iterable, Mapping, Union

import torch

from .handle import ModelHandle

StateDict = Dict[str, torch.Tensor]

UNWRAP_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net", "netG")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what was expected."""


def _name(path: str) -> str:
    return os.path.basename(str(path)) or str(path)


def sniff_format(path: str) -> str:
    """'safetensors', 'torch-zip', 'torch-legacy' or 'unknown', from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    return "unknown"


def load_state_dict(path: str) -> dict:
    """Read a weights file without running code; returns what the file holds (not unwrapped).

    Raises :class:`ModelFileError` for a missing, empty, truncated or corrupt file, random bytes, and
    pickles carrying anything but tensors and plain containers.
    """
    name = _name(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file '{name}' does not exist ({path})")
    size = os.path.getsize(path)
    if size == 0:
        raise ModelFileError(f"model file '{name}' is empty (0 bytes)")
    fmt = sniff_format(path)
    if fmt == "safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        except Exception as exc:
            raise ModelFileError(
                f"model file '{name}' looks like safetensors but cannot be read (truncated or corrupt?): {exc}"
            ) from exc
    if fmt == "unknown":
        raise ModelFileError(
            f"model file '{name}' is not a PyTorch (.pth/.pt) or safetensors weights file "
            f"({size} bytes of unrecognised data)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(
            f"model file '{name}' contains pickled code or objects other than tensors; RestoreKit "
            f"loads weights only (torch.load weights_only=True) and refused it. Use a plain state-dict "
            f"or .safetensors file. Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"model file '{name}' could not be read (truncated or corrupt?): {str(exc).splitlines()[0]}"
        ) from exc
    return obj


def unwrap_state_dict(obj, keys: Iterable[str] = UNWRAP_KEYS) -> StateDict:
    """Find the tensor dict inside a training checkpoint (``{'params_ema': sd}``, ``{'state_dict': sd}``…).

    Non-tensor entries (epoch counters, optimiser settings) are dropped.
    """
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"expected a dict of tensors, got {type(obj).__name__}")
    current = obj
    for _ in range(3):
        if any(isinstance(v, torch.Tensor) for v in current.values()):
            break
        for key in keys:
            if isinstance(current.get(key), Mapping):
                current = current[key]
                break
        else:
            if len(current) == 1 and isinstance(next(iter(current.values())), Mapping):
                current = next(iter(current.values()))
            else:
                break
    tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError("the file holds no tensors (is it a model weights file?)")
    return tensors


def handle_from_spandrel(descriptor, source: str = "") -> ModelHandle:
    """Turn a spandrel ``ImageModelDescriptor`` into a :class:`ModelHandle`."""
    from spandrel import ImageModelDescriptor

    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelFileError(
            f"model file '{_name(source)}' is a {descriptor.architecture.name} "
            f"{type(descriptor).__name__} (e.g. inpainting with a mask); this node needs a plain "
            f"image-to-image restoration model"
        )
    req = descriptor.size_requirements
    tiling = {1: "supported", 2: "discouraged", 3: "internal"}.get(int(descriptor.tiling.value), "supported")
    arch = descriptor.architecture.name
    return ModelHandle(
        module=descriptor.model,
        arch=arch,
        scale=int(descriptor.scale),
        in_channels=int(descriptor.input_channels),
        out_channels=int(descriptor.output_channels),
        size_multiple=int(req.multiple_of),
        min_size=int(req.minimum),
        pad_mode="reflect",
        min_overlap=16,
        tiling=tiling,
        supports_half=bool(descriptor.supports_half),
        supports_bfloat16=bool(descriptor.supports_bfloat16),
        source=str(source),
        description=f"{arch} via spandrel",
        extra={"square": bool(req.square), "purpose": getattr(descriptor, "purpose", "")},
    )


def load_spandrel(path_or_state_dict: Union[str, Mapping], source: str = "") -> ModelHandle:
    """Load any architecture spandrel supports, from a file path or an already-read state dict."""
    from spandrel import ModelLoader, UnsupportedModelError

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = source or str(path_or_state_dict)
        obj = load_state_dict(str(path_or_state_dict))
    else:
        obj = path_or_state_dict
    try:
        state_dict = unwrap_state_dict(obj)
    except ModelFileError as exc:
        raise ModelFileError(f"model file '{_name(source)}': {exc}") from None
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state_dict)
    except UnsupportedModelError:
        raise ModelFileError(
            f"model file '{_name(source)}' is not an architecture spandrel can load (expected an "
            f"image restoration network such as ESRGAN/Real-ESRGAN, Compact, SCUNet, SwinIR…)"
        ) from None
    except Exception as exc:
        raise ModelFileError(
            f"model file '{_name(source)}' looks like {type(exc).__name__} to spandrel but its weights do "
            f"not fit: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    return handle_from_spandrel(descriptor, source)

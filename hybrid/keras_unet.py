"""Loading a Keras ``.h5`` U-Net saved by the original TensorFlow design, and TensorFlow's setup.

:func:`load_keras_h5` runs the model through TensorFlow when it is installed (after
:func:`configure_tensorflow` has set GPU memory growth, before TensorFlow allocates anything), and
otherwise through Keras 3 on the torch backend.  Either way the result is a
:class:`~scripts.inference.handle.ModelHandle` for the memory-safe runner.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .unet import _handle


def configure_tensorflow(preference: str = "auto"):
    """Prepare TensorFlow (optional dependency) before it allocates: memory growth on every GPU.

    Returns ``(tf_module, device_string, note)``; ``tf_module`` is ``None`` when TensorFlow is not
    installed.  ``preference`` is ``auto`` / ``cpu`` / ``gpu``; with ``cpu`` TensorFlow's GPUs are
    hidden from it.
    """
    try:
        import tensorflow as tf  # noqa: F401
    except Exception:
        return None, "cpu", "tensorflow not installed"
    gpus = []
    try:
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised: growth must be set before the first op
        if (preference or "auto").lower() == "cpu" and gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass
            return tf, "/CPU:0", "tensorflow on cpu (requested)"
    except Exception as exc:  # pragma: no cover - depends on the TF build
        return tf, "/CPU:0", f"tensorflow device setup failed ({exc}); using cpu"
    if gpus and (preference or "auto").lower() in ("auto", "gpu"):
        return tf, "/GPU:0", f"tensorflow on gpu with memory growth ({len(gpus)} gpu)"
    return tf, "/CPU:0", "tensorflow on cpu"


class _KerasTorchModule(nn.Module):
    """A Keras 3 model on the torch backend (itself a torch Module), NCHW in/out."""

    def __init__(self, model):
        super().__init__()
        self.keras_model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.keras_model(x.permute(0, 2, 3, 1), training=False)
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        return y.permute(0, 3, 1, 2).to(x.dtype)


class _TensorFlowModule(nn.Module):
    """A tf.keras model run by TensorFlow on ``tf_device``; NCHW torch in/out (via numpy)."""

    def __init__(self, model, tf, tf_device: str):
        super().__init__()
        self.keras_model, self.tf, self.tf_device = model, tf, tf_device
        self.register_buffer("_anchor", torch.zeros(1))  # so .device / .dtype resolve

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().permute(0, 2, 3, 1).float().cpu().numpy()
        with self.tf.device(self.tf_device):
            y = self.keras_model(arr, training=False)
        y = torch.from_numpy(y.numpy() if hasattr(y, "numpy") else y)
        return y.permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)


def _keras_size_multiple(model) -> int:
    """2**(number of pooling / stride-2 layers) — what the input side must be a multiple of."""
    n = 0
    for layer in getattr(model, "layers", []):
        name = type(layer).__name__
        if "Pooling2D" in name and "Global" not in name:
            n += 1
        elif name == "Conv2D" and tuple(getattr(layer, "strides", (1, 1))) == (2, 2):
            n += 1
    return 2 ** n


def load_keras_h5(path: str, device: str = "auto") -> "ModelHandle":  # noqa: F821
    """Load a Keras U-Net ``.h5`` (NHWC, 3 → 3 channels, 0..1) as a ModelHandle.

    Backend: TensorFlow when it is installed (device and GPU memory growth set by
    :func:`configure_tensorflow`), otherwise Keras 3 on the torch backend.  Keras'
    ``safe_mode`` stays on (no Lambda-layer code is deserialised).  Raises ``ValueError`` naming the
    file for anything that is not a loadable Keras model.
    """
    if not os.path.isfile(path):
        raise ValueError(f"Keras model file '{path}' does not exist")
    # memory growth and device choice happen before TensorFlow allocates anything
    tf, tf_device, note = configure_tensorflow(device)
    if tf is not None:
        try:
            model = tf.keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise ValueError(f"'{os.path.basename(path)}' is not a loadable Keras model: {exc}") from exc
        return _handle(_TensorFlowModule(model, tf, tf_device), "Keras-UNet (TensorFlow)", path,
                       f"Keras U-Net via TensorFlow on {tf_device} ({note})",
                       size_multiple=_keras_size_multiple(model))
    # Keras 3 on the torch backend
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if os.environ["KERAS_BACKEND"] != "torch":
        raise ValueError(
            f"cannot load '{os.path.basename(path)}': TensorFlow is not installed and KERAS_BACKEND is "
            f"'{os.environ['KERAS_BACKEND']}' (set it to 'torch' or install tensorflow-cpu)")
    try:
        import keras
    except Exception as exc:
        raise ValueError(f"cannot load '{os.path.basename(path)}': install keras and h5py "
                         f"(pip install 'comfyui-restorekit[keras]'): {exc}") from exc
    if keras.backend.backend() != "torch":
        raise ValueError(f"cannot load '{os.path.basename(path)}': Keras was already imported with the "
                         f"'{keras.backend.backend()}' backend and TensorFlow is not installed")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise ValueError(f"'{os.path.basename(path)}' is not a loadable Keras model: {exc}") from exc
    module = _KerasTorchModule(model)
    module.requires_grad_(False)
    return _handle(module, "Keras-UNet (Keras 3, torch backend)", path,
                   "Keras U-Net via Keras 3 on the torch backend",
                   size_multiple=_keras_size_multiple(model))

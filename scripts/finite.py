"""Fast "are all values finite?" check for image tensors and arrays.

``torch.isfinite(x).all()`` builds a boolean image and reduces it, a cost paid by every node and
again by the model runner (``benchmarks/bench_models.py`` measures node overhead against the bare
network).  A float32 sum is much cheaper and is NaN or infinite whenever any element is (NaN and
±inf propagate; +inf + −inf is NaN).  Only when the
sum is not finite (a NaN/inf, or finite values so large that their sum overflows) does the exact
element-wise check run, so the answer is always exact.

:func:`check_finite` is the pack's no-silent-data-loss rule for results: a NaN or infinite value
made inside a node is an error naming the node and the step, never replaced by a number.
"""
from __future__ import annotations

import sys

import numpy as np


def all_finite(x) -> bool:
    """True when every element of the tensor or array ``x`` is finite (exact, fast path first)."""
    torch = sys.modules.get("torch")  # a tensor implies torch is imported; numpy callers need not import it
    if torch is not None and isinstance(x, torch.Tensor):
        if not x.is_floating_point() or x.numel() == 0:
            return True
        if bool(torch.isfinite(x.sum())):
            return True
        return bool(torch.isfinite(x).all())
    a = np.asarray(x)
    if a.dtype.kind not in "fc" or a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(a.sum()):
            return True
    return bool(np.isfinite(a).all())


class NonFiniteError(ValueError):
    """A result holds NaN or infinite values: an internal failure, reported instead of hidden."""


def check_finite(result, what: str, stage: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` (the node) and ``stage`` when ``result`` (tensor
    or array) holds NaN or infinite values."""
    if all_finite(result):
        return
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(result, torch.Tensor):
        bad, total = int((~torch.isfinite(result)).sum()), result.numel()
    else:
        arr = np.asarray(result)
        bad, total = int((~np.isfinite(arr)).sum()), arr.size
    raise NonFiniteError(
        f"{what}: the {stage} step produced {bad} NaN or infinite value(s) out of {total}; this is an "
        f"internal failure (nothing was replaced or hidden). Please report it with the node's settings "
        f"and the image size.")

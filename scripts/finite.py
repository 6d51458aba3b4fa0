"""Fast "are all values finite?" check for image tensors and arrays.

``torch.isfinite(x).all()`` builds a boolean image and reduces it, a cost paid by every node and
again by the model runner (``benchmarks/bench_models.py`` measures node overhead against the bare
network).  A float32 sum is much cheaper and is NaN or infinite whenever any element is (NaN and
±inf propagate; +inf + −inf is NaN).  Only when the
sum is not finite (a NaN/inf, or finite values so large that their sum overflows) does the exact
element-wise check run, so the answer is always exact.
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

"""scripts/finite.all_finite equals the element-wise reference (torch/numpy isfinite().all())."""
import numpy as np
import pytest
import torch


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -float("inf"), "overflow", "inf-inf"])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_all_finite_matches_elementwise_check(pack, bad, kind):
    from restorekit.scripts.finite import all_finite

    x = np.random.default_rng(0).random((1, 17, 23, 3), dtype=np.float32)
    if bad == "overflow":  # all finite, but the float32 sum overflows: the exact check must decide
        x[...] = 3e38
    elif bad == "inf-inf":
        x[0, 1, 2, 0], x[0, 3, 4, 1] = np.inf, -np.inf
    elif bad is not None:
        x[0, 5, 6, 2] = bad
    ref = bool(np.isfinite(x).all())
    val = torch.from_numpy(x) if kind == "torch" else x
    assert all_finite(val) is ref


def test_non_float_and_empty_inputs_are_finite(pack):
    from restorekit.scripts.finite import all_finite

    assert all_finite(torch.zeros(2, 3, dtype=torch.uint8))
    assert all_finite(torch.zeros(0, 3))
    assert all_finite(np.arange(5))

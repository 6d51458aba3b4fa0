"""The node-boundary memory guard (scripts/memory_guard.py): foreign out-of-memory errors become the
pack's ImageMemoryError naming the node, the image and the memory needed."""
import numpy as np
import pytest
import torch

from restorekit import NODE_CLASS_MAPPINGS
from restorekit.scripts import memory_guard as mg
from restorekit.scripts.inference.memory_utils import OutOfMemoryError


def _numpy_oom():
    return np.empty((1 << 42,), dtype=np.float64)  # 32 TiB: malloc refuses at once


def test_recognises_allocator_failures():
    with pytest.raises(MemoryError) as info:
        _numpy_oom()
    assert mg.is_memory_error(info.value) and mg.requested_bytes(info.value) == (1 << 42) * 8
    torch_msg = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                             "memory: you tried to allocate 408251664 bytes. Error code 12")
    assert mg.is_memory_error(torch_msg) and mg.requested_bytes(torch_msg) == 408251664
    import cv2

    try:
        cv2.resize(np.zeros((4, 4), np.float32), (0, 0), fx=1e6, fy=1e6)
    except cv2.error as exc:  # whatever OpenCV says here, a memory message is recognised by its words
        assert mg.is_memory_error(exc) == any(m in str(exc).lower() for m in mg.OOM_MESSAGES)
    assert not mg.is_memory_error(RuntimeError("shape mismatch")) and not mg.is_memory_error(ValueError("x"))


def test_guard_names_node_image_and_memory():
    def node_fn(self, image, amount=1.0):
        _numpy_oom()

    wrapped = mg.guard(node_fn, "Smart Sharpen (RestoreKitSmartSharpen)")
    with pytest.raises(mg.ImageMemoryError) as info:
        wrapped(object(), image=torch.zeros(2, 30, 40, 3))
    msg = str(info.value)
    assert "Smart Sharpen (RestoreKitSmartSharpen)" in msg and "2 images 40x30, 3 channels" in msg
    assert "needs more than" in msg and info.value.available is not None
    assert info.value.__cause__ is None  # the allocator's traceback is not kept alive


def test_guard_leaves_other_errors_and_the_packs_own_alone():
    def refuses(self, image):
        raise ValueError("image: 2 channels is not supported")

    def runner_oom(self, image):
        raise OutOfMemoryError("out of memory at every tile size", steps=["tile 64", "cpu"])

    with pytest.raises(ValueError, match="2 channels"):
        mg.guard(refuses, "X")(object(), torch.zeros(1, 2, 2, 3))
    with pytest.raises(OutOfMemoryError):
        mg.guard(runner_oom, "X")(object(), torch.zeros(1, 2, 2, 3))


def test_every_node_is_guarded_once():
    for name, cls in NODE_CLASS_MAPPINGS.items():
        fn = getattr(cls, cls.FUNCTION)
        assert getattr(fn, "__restorekit_memory_guard__", False), name
        assert not getattr(fn.__wrapped__, "__restorekit_memory_guard__", False), name


def test_strips_cover_every_row_once():
    rows = [r for sl in mg.strips(1001, 7 * 3 * 4, budget=2000) for r in range(sl.start, sl.stop)]
    assert rows == list(range(1001))
    assert len(list(mg.strips(5, 10**9, budget=1))) == 5  # at least one row per strip

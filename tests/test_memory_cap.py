"""Memory under a cap (issue 13): a node short of memory finishes through its fallback or stops
with the pack's memory error naming the image and the memory needed -- never numpy's MemoryError,
cv2.error or torch's allocator error, never a kill.  Each case runs in a subprocess whose address
space is capped (RLIMIT_AS) at what it holds after imports and a warm-up plus a small headroom, so
a 3 MP image stands in for an 8K one under ``prlimit --as`` (``python -m tests.memory_cap``)."""
import sys

import pytest

import memory_cap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")

SIZE = (2048, 1536)  # 36 MiB as float32 RGB


def test_lbclahe_finishes_in_strips_under_a_cap():
    # before the strip-wise colour conversions LB-CLAHE needed ~10x the image and died here with
    # numpy's "Unable to allocate 36.0 MiB" (and cv2.error "Insufficient memory" at 8K)
    r = memory_cap.run_capped("RestoreKitLBCLAHE", SIZE, headroom=260 << 20, timeout=300)
    assert r["status"] == "ok", r
    assert r["outputs"] == [[1, SIZE[1], SIZE[0], 3]]


def test_out_of_memory_is_the_packs_error():
    node = "RestoreKitSmartSharpen"  # float64 working copies: numpy's MemoryError before the guard
    r = memory_cap.run_capped(node, SIZE, headroom=100 << 20, timeout=300)
    assert r["status"] == "pack memory error", r
    assert r["type"].endswith("ImageMemoryError")
    msg = r["message"]
    assert f"{SIZE[0]}x{SIZE[1]}" in msg and "needs more than" in msg and node in msg

"""Load the repository as package ``restorekit`` for the benchmark scripts: the tests' loader
(tests/_repo.py), so the pack is imported the same way everywhere."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from _repo import load_pack  # noqa: E402


def load():
    return load_pack("restorekit")


def best_of(fn, n: int = 3):
    """``(seconds, result)``: the shortest wall time of ``n`` calls of ``fn`` and the last call's result."""
    best, out = float("inf"), None
    for _ in range(max(1, int(n))):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out

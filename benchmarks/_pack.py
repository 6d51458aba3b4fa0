"""Load the repository as package ``restorekit`` for the benchmark scripts: the tests' loader
(tests/_repo.py), so the pack is imported the same way everywhere."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from _repo import load_pack  # noqa: E402


def load():
    return load_pack("restorekit")

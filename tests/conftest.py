"""Load the pack the way ComfyUI does: the repository folder imported as a package (tests/_repo.py).

The tests import it as ``restorekit`` (``from restorekit.scripts.inference import tiling``); one test in
test_pack_schema.py loads it again under a random name to prove the imports are relative only.
"""
import os

import pytest

from _repo import load_pack

# measured model costs persist across processes in a user cache folder (scripts/inference/cost_cache.py);
# tests must not read what an earlier run (or the user) measured: off unless a test points it elsewhere
os.environ["RESTOREKIT_COST_CACHE_DIR"] = "off"

load_pack("restorekit")


@pytest.fixture(scope="session")
def pack():
    return load_pack("restorekit")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, then the previous count: tiny networks and training loops run
    faster on one thread than with an OpenMP pool spinning on a small shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

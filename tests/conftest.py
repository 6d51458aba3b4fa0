"""Load the pack the way ComfyUI does: the repository folder imported as a package.

The tests import it as ``restorekit`` (``from restorekit.scripts.inference import tiling``); one test in
test_pack_schema.py loads it again under a random name to prove the imports are relative only.
"""
import importlib.util
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack(name: str):
    """Import the repository folder as package ``name`` (as ComfyUI's load_custom_node does)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, "__init__.py"), submodule_search_locations=[REPO]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


load_pack("restorekit")


@pytest.fixture(scope="session")
def pack():
    return sys.modules["restorekit"]


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

"""The repository imported as a package, the way ComfyUI imports a custom node pack.

The one loader for the tests (``conftest.py``), the example tools (``_workflows.py``) and the
benchmarks (``benchmarks/_pack.py``): ``load_pack()`` imports the repository folder as package
``restorekit`` (``from restorekit.scripts.inference import tiling``); ``load_pack(name)`` loads it
again under another name (test_pack_schema.py does, to prove the imports are relative only).
"""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_pack(name: str = "restorekit"):
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

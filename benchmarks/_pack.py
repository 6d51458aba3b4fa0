"""Load the repository as package ``restorekit`` for the benchmark scripts (as tests/conftest.py does)."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    if "restorekit" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "restorekit", os.path.join(REPO, "__init__.py"), submodule_search_locations=[REPO]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["restorekit"] = module
        spec.loader.exec_module(module)
    return sys.modules["restorekit"]

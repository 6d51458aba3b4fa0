"""End to end: every API example posted to a real ComfyUI finishes with an output image.

Needs COMFY_ROOT (a ComfyUI source tree) and COMFY_VENV (the venv its main.py runs in); skipped when
COMFY_ROOT is not set.  One server start (~15-30 s) for all examples.  Runner: tests/_comfy_server.py.
"""
import os

import pytest

import _comfy_server as CS
import _workflows as W

pytestmark = pytest.mark.skipif(not os.environ.get("COMFY_ROOT"), reason="COMFY_ROOT not set (no ComfyUI to run in)")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    venv = os.environ.get("COMFY_VENV")
    python = os.path.join(venv, "bin", "python") if venv else os.sys.executable
    lines = []
    result = CS.run_examples(os.environ["COMFY_ROOT"], python, base=str(tmp_path_factory.mktemp("comfy")),
                             echo=lines.append)
    print("\n".join(lines))
    return {o.name: o for o in result}


@pytest.mark.parametrize("name", [e.name for e in W.load_examples()])
def test_example_runs_in_comfyui(outcomes, name):
    o = outcomes[name]
    assert o.ok, f"{name}: {o.error}"
    assert o.images and all(os.path.getsize(p) > 0 for p in o.images)

"""Many ComfyUI workers behind one queue, for real: two headless ComfyUI servers with this pack on
loopback, fed a folder of images as API prompts by the client (hybrid/tools/comfy_client.py) directly,
and through the Ray Serve recipe (hybrid/tools/comfy_serve.py, two replicas that start their own
ComfyUI).  Every image comes back, both workers take work, and the pixels equal what
``restorekit run --workflow`` makes in-process from the same prompt.

Needs COMFY_ROOT (a ComfyUI source tree) and COMFY_VENV (its venv); skipped without COMFY_ROOT.  The
Serve part also needs Ray Serve (pip install 'comfyui-restorekit[serve]').  ~2 minutes: four ComfyUI
start-ups.
"""
import importlib.util
import os
import shutil
import socket
import threading

import numpy as np
import pytest

import _comfy_server as CS
from restorekit.hybrid.tools import cli
from restorekit.hybrid.tools import comfy_client as cc
from restorekit.scripts import image_io

pytestmark = pytest.mark.skipif(not os.environ.get("COMFY_ROOT"), reason="COMFY_ROOT not set (no ComfyUI to run in)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = os.path.join(REPO, "examples", "api", "hybrid_restore.json")
#: severe (U-Net), moderate, a greyscale file (LoadImage makes it RGB) and a small one
NAMES = ["hybrid_rocket_severe.png", "old_photo.png", "camera_gauss_blur.png", "models_astronaut_96x80.png"]


def _python():
    venv = os.environ.get("COMFY_VENV")
    return os.path.join(venv, "bin", "python") if venv else os.sys.executable


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_workers")
    src = base / "in"
    src.mkdir()
    for n in NAMES:
        shutil.copy(os.path.join(REPO, "examples", "images", n), src / n)
    # the reference: the same prompt run in-process on each file
    assert cli.main(["run", "--workflow", PROMPT, str(src), "-o", str(base / "ref"), "--no-progress"]) == 0
    return base


def _outputs(folder):
    return {n: image_io.read_image(os.path.join(folder, n.replace(".png", "_restorekit_hybrid.png"))).pixels
            for n in NAMES}


def _check_against_reference(rep, work, out):
    assert rep["counts"] == {"processed": len(NAMES), "skipped": 0, "failed": 0}, rep["files"]
    assert len(rep["per_worker"]) == 2, rep["per_worker"]  # both workers took images
    ref, got = _outputs(work / "ref"), _outputs(out)
    for n in NAMES:
        r = ref[n] if ref[n].shape[-1] == 3 else np.repeat(ref[n], 3, -1)  # ours keeps a grey file grey
        assert got[n].shape == r.shape
        # ComfyUI's SaveImage truncates to 8 bits where our writer rounds: at most one level apart
        assert np.abs(got[n] - r).max() <= 1 / 255 + 1e-6, n
    return got


@pytest.fixture(scope="module")
def direct(work, tmp_path_factory):
    servers = [CS.ComfyServer(os.environ["COMFY_ROOT"], _python(), str(tmp_path_factory.mktemp(f"srv{i}")))
               for i in range(2)]
    errors = []

    def up(s):
        try:
            s.__enter__()
        except Exception as exc:  # reported below, after both tried
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        for s in servers:
            assert not s.import_problem(), s.import_problem()
        rep = cc.submit([str(work / "in")], PROMPT, str(work / "direct"), servers=[s.url for s in servers])
    finally:
        for s in servers:
            s.stop()
    return rep


def test_two_comfyui_servers_share_a_folder(direct, work):
    _check_against_reference(direct, work, work / "direct")
    assert set(direct["per_worker"]) == set(direct["servers"])


@pytest.mark.skipif(importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None,
                    reason="Ray Serve not installed (pip install 'comfyui-restorekit[serve]')")
def test_ray_serve_recipe_two_replicas(direct, work, tmp_path):
    from restorekit.hybrid.tools import comfy_serve

    base = tmp_path / "comfy_base"  # custom_nodes with this pack; the replicas' own folders come on top
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models").mkdir()
    os.symlink(REPO, base / "custom_nodes" / "RestoreKit")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = comfy_serve.start(os.environ["COMFY_ROOT"], 2, python=_python(), base_directory=str(base), num_cpus=2,
                            port=port, cpus_per_replica=1.0, start_timeout=400)
    try:
        assert url == f"http://127.0.0.1:{port}/restorekit"
        rep = cc.submit([str(work / "in")], PROMPT, str(work / "served"), serve_url=url, concurrency=4)
    finally:
        comfy_serve.stop()
    got = _check_against_reference(rep, work, work / "served")
    first = _outputs(work / "direct")
    for n in NAMES:  # the same ComfyUI code behind Serve and without it: the same pixels
        assert np.array_equal(got[n], first[n]), n
    for r in rep["files"]:  # each ComfyUI planned with half the machine, one thread
        assert r["worker_share"]["ram"] == 0.5 and r["worker_share"]["threads"] == 1

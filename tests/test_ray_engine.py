"""The Ray engine (hybrid/tools/ray_engine.py) on a local 2-CPU Ray: same outputs and report as the local
engine, a corrupt file is reported while the rest complete, --skip-existing resumes (and does nothing
when everything is done), a killed worker's files are retried without duplicates, and each actor's
memory share follows the documented formula.

Ray starts in ~10 s here; the tests share one CLI run and one in-process Ray to stay near a minute.
"""
import functools
import importlib.util
import json
import os
import random
import shutil
import sys

import numpy as np
import pytest

from restorekit.hybrid.tools import batch, cli, ray_engine
from restorekit.scripts import image_io
from restorekit.scripts.inference import memory_utils as mu
from restorekit.scripts.inference import runtime as rt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(REPO, "examples", "images")
#: the U-Net path (severe), the plan (moderate), a 16-bit greyscale scan, and a clean ramp the engine
#: leaves unchanged (written by the fixture)
SUBSET = ["hybrid_rocket_severe.png", "old_photo.png", "scan16_grey.png", "clean_ramp.png"]
CLEAN = "clean_ramp.png"


# --- memory shares: the formula, without Ray ---------------------------------------------------------
@pytest.mark.parametrize("workers,cpw,gpw,node_cpus,node_gpus,ram,gpu", [
    (2, 1.0, 0.0, 2, 0, 1 / 2, 1.0),        # the CI case: two 1-CPU actors on a 2-CPU local Ray
    (4, 0.5, 0.0, 2, 0, 1 / 4, 1.0),        # more actors than cores: half a CPU each
    (1, 1.0, 0.0, 16, 0, 1.0, 1.0),         # one actor has the machine
    (64, 1.0, 0.0, 16, 0, 1 / 16, 1.0),     # a cluster: at most 16 of the 64 fit on a 16-CPU node
    (8, 4.0, 1.0, 32, 4, 1 / 4, 1.0),       # one GPU each: four per 4-GPU node, each GPU its own
    (16, 1.0, 0.25, 32, 4, 1 / 16, 1 / 4),  # four actors per GPU: 16 on the node, a quarter GPU each
    (2, 1.0, 0.25, 32, 4, 1 / 2, 1 / 2),    # only two actors in the job: they split what they can share
    (3, 1.0, 0.4, 8, 1, 1 / 2, 1 / 2),      # 0.4 GPU: two fit on the one GPU
    (2, 8.0, 0.0, 4, 0, 1.0, 1.0),          # an actor larger than the node still plans with its node
])
def test_memory_shares_follow_the_documented_formula(workers, cpw, gpw, node_cpus, node_gpus, ram, gpu):
    assert ray_engine.memory_shares(workers, cpw, gpw, node_cpus, node_gpus) == pytest.approx((ram, gpu))


def test_actor_budgets_together_never_exceed_free_memory():
    """For random jobs and nodes: the actors that fit on a node, each planning with its share of what
    is free when it looks (less what the earlier ones took), never plan more than was free."""
    rng = random.Random(7)
    for _ in range(500):
        workers = rng.randint(1, 64)
        cpw = rng.choice([0.25, 0.5, 1.0, 2.0, 3.0])
        gpw = rng.choice([0.0, 0.0, 0.2, 0.25, 0.5, 1.0, 2.0])
        node_cpus, node_gpus = rng.choice([2, 4, 16, 64]), (rng.choice([1, 2, 8]) if gpw else 0)
        ram, gpu = ray_engine.memory_shares(workers, cpw, gpw, node_cpus, node_gpus)
        n = ray_engine.actors_per_node(workers, cpw, gpw, node_cpus, node_gpus)
        assert 0 < ram <= 1 and 0 < gpu <= 1
        free, planned = 1000.0, 0.0
        for _actor in range(n):  # each takes its share of what is still free
            take = (free - planned) * ram
            planned += take
        assert planned <= free
        if 0 < gpw < 1:  # actors on one GPU
            per_gpu = min(workers, int(1 / gpw + 1e-9))
            assert per_gpu * gpu <= 1 + 1e-12
    assert ray_engine.torch_threads(0.5) == 1 and ray_engine.torch_threads(2.0) == 2
    assert ray_engine.torch_threads(3.999) == 3


def test_planner_sees_only_the_share(monkeypatch):
    """free_memory (what the tile planner uses) is the host's figure times the share; a forced share
    of 1/4 makes the planner's budget a quarter."""
    monkeypatch.setattr(rt.get_runtime(), "free_memory", lambda device: 8 << 30)
    monkeypatch.setattr(rt, "_memory_share", None)
    monkeypatch.delenv(rt.MEMORY_SHARE_ENV, raising=False)
    assert mu.free_memory("cpu") == 8 << 30
    rt.set_memory_share(ram=0.25, gpu=0.5)
    assert mu.free_memory("cpu") == 2 << 30
    assert rt.memory_share("cuda:0") == 0.5 and rt.memory_share("mps") == 0.25
    with pytest.raises(ValueError):
        rt.set_memory_share(ram=0.0)
    with pytest.raises(ValueError):
        rt.set_memory_share(gpu=1.5)


@pytest.mark.parametrize("text,ram,gpu", [("", 1.0, 1.0), ("0.5", 0.5, 0.5), ("ram=0.25", 0.25, 1.0),
                                          ("ram=0.5, gpu=0.125", 0.5, 0.125)])
def test_memory_share_from_the_environment(monkeypatch, text, ram, gpu):
    monkeypatch.setattr(rt, "_memory_share", None)
    monkeypatch.setenv(rt.MEMORY_SHARE_ENV, text)
    assert (rt.memory_share("cpu"), rt.memory_share("cuda")) == (ram, gpu)


@pytest.mark.parametrize("bad", ["0", "2", "ram=x", "vram=0.5", "-0.5"])
def test_memory_share_environment_errors_name_the_variable(monkeypatch, bad):
    monkeypatch.setattr(rt, "_memory_share", None)
    monkeypatch.setenv(rt.MEMORY_SHARE_ENV, bad)
    with pytest.raises(ValueError, match=rt.MEMORY_SHARE_ENV):
        rt.memory_share("cpu")
    monkeypatch.setattr(rt, "_memory_share", None)


def test_ray_options_without_the_ray_engine_are_a_usage_error(tmp_path, capsys):
    assert cli.main(["restore", IMAGES, "-o", str(tmp_path / "o"), "--workers", "2"]) == 2
    assert "--workers need --engine ray" in capsys.readouterr().err
    assert cli.main(["restore", IMAGES, "-o", str(tmp_path / "o"), "--engine", "ray", "--address", "auto",
                     "--num-cpus", "2"]) == 2
    assert "local Ray only" in capsys.readouterr().err
    assert cli.main(["restore", IMAGES, "-o", str(tmp_path / "o"), "--engine", "ray",
                     "--gpus-per-worker", "-1"]) == 2


# --- on Ray --------------------------------------------------------------------------------------------
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is an optional extra (pip install 'comfyui-restorekit[ray]')")


def _pixels(path):
    d = image_io.read_image(path)
    return d.pixels, d.meta.bit_depth


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Three example images and a corrupt file, restored by the local engine and by `--engine ray`
    (a local Ray started and stopped by the command)."""
    import ray

    assert not ray.is_initialized()
    base = tmp_path_factory.mktemp("ray_archive")
    src = base / "in"
    src.mkdir()
    for name in SUBSET:
        if name != CLEAN:
            shutil.copy(os.path.join(IMAGES, name), src / name)
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    ramp = np.stack([xx / 128, 0.1 + 0.8 * yy / 96, 0.5 + 0 * xx], -1)
    image_io.write_image(str(src / CLEAN), ramp)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    local = cli.main(["restore", str(src), "-o", str(base / "local"), "--no-progress"])
    rc = cli.main(["restore", str(src), "-o", str(base / "ray"), "--no-progress", "--engine", "ray",
                   "--workers", "2", "--num-cpus", "2"])
    assert not ray.is_initialized()  # the command's own Ray was shut down
    reports = {k: json.load(open(base / k / "restore_report.json")) for k in ("local", "ray")}
    return {"base": base, "src": src, "rc": (local, rc), **reports}


@needs_ray
def test_ray_outputs_identical_to_the_local_engine(archive):
    assert archive["rc"] == (1, 1)  # one file failed in both
    local = {os.path.basename(r["input"]): r for r in archive["local"]["files"]}
    on_ray = {os.path.basename(r["input"]): r for r in archive["ray"]["files"]}
    assert list(local) == list(on_ray)  # same rows, same order
    for name in SUBSET:
        a, b = local[name], on_ray[name]
        assert b["status"] == a["status"] and b.get("reason") == a.get("reason")
        assert (b["method"], b["severity"], b["quality_db"]) == (a["method"], a["severity"], a["quality_db"])
        assert [os.path.basename(p) for p in b["outputs"]] == [os.path.basename(p) for p in a["outputs"]]
        pa, da = _pixels(a["outputs"][0])
        pb, db = _pixels(b["outputs"][0])
        assert da == db and pa.shape == pb.shape and np.array_equal(pa, pb), name
    assert {local[n]["method"] for n in SUBSET} & {"deep_learning", "ml_guided", "classical"}  # routed by the engine
    assert {local[n]["status"] for n in SUBSET} == {"restored", "unchanged"}
    assert local[CLEAN]["status"] == "unchanged"


@needs_ray
def test_corrupt_file_is_reported_and_the_rest_complete(archive):
    rows = {os.path.basename(r["input"]): r for r in archive["ray"]["files"]}
    bad = rows["broken.png"]
    assert bad["status"] == "failed" and bad["category"] == "unreadable image" and "broken.png" in bad["reason"]
    assert archive["ray"]["summary"]["counts"] == archive["local"]["summary"]["counts"]
    assert archive["ray"]["summary"]["counts"]["failed"] == 1
    assert sorted(os.listdir(archive["base"] / "ray")) == sorted(
        [n.replace(".png", "_restored.png") for n in SUBSET] + ["restore_report.json"])


@needs_ray
def test_each_actor_planned_with_its_share(archive):
    engine = archive["ray"]["engine"]
    assert (engine["cluster"], engine["workers"], engine["cpus_per_worker"], engine["torch_threads"]) == \
        ("local", 2, 1.0, 1)
    seen = engine["workers_seen"]
    assert seen and sum(w["files"] for w in seen) == len(SUBSET) + 1  # and the corrupt file
    for w in seen:  # measured inside each actor: 2 actors on a 2-CPU node -> half of the RAM each
        assert (w["ram_share"], w["gpu_share"], w["threads"], w["node_cpus"]) == (0.5, 1.0, 1, 2.0)
        assert w["peak_rss_bytes"] > 50 << 20


@needs_ray
def test_second_run_with_skip_existing_does_nothing(archive, capsys):
    import ray

    base, src = archive["base"], archive["src"]
    os.remove(src / "broken.png")  # the user set the bad scan aside; everything else is done
    before = {n: os.stat(base / "ray" / n).st_mtime_ns for n in os.listdir(base / "ray")}
    rc = cli.main(["restore", str(src), "-o", str(base / "ray"), "--no-progress", "--engine", "ray",
                   "--workers", "2", "--num-cpus", "2", "--skip-existing"])
    assert rc == 0 and not ray.is_initialized()
    rep = json.load(open(base / "ray" / "restore_report_1.json"))
    assert rep["summary"]["counts"] == {"restored": 0, "unchanged": 0, "skipped": len(SUBSET), "failed": 0}
    assert rep["engine"]["note"] == "nothing to do: Ray was not started"
    after = {n: os.stat(base / "ray" / n).st_mtime_ns for n in before}
    assert after == before
    assert sorted(os.listdir(base / "ray")) == sorted(list(before) + ["restore_report_1.json"])


# --- faults, on one in-process Ray ----------------------------------------------------------------
class DiesOnce(batch.Processor):
    """Inverts images; on ``victim`` it kills its own process once (a marker file remembers)."""

    outputs = ("",)
    done_label = "restored"

    def __init__(self, victim, marker):
        self.victim, self.marker = victim, marker

    def __call__(self, image):
        if os.path.basename(image.path) == self.victim and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)  # as a worker killed by the OOM killer or a lost node
        return batch.Result({"": 1.0 - image.pixels}, {}, "inverted")


@pytest.fixture(scope="module")
def local_ray(archive, tmp_path_factory):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DiesOnce travels by value
    with ray_engine.ray_session(ray_engine.RayOptions(num_cpus=2)) as session:
        yield session


def _small_set(folder, n, rng):
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


@needs_ray
def test_killed_worker_files_are_retried_without_duplicates(local_ray, tmp_path, rng):
    _small_set(tmp_path / "in", 3, rng)
    spec = ray_engine.WorkerSpec(functools.partial(DiesOnce, "img1.png", str(tmp_path / "died")))
    rep = ray_engine.run_batch([str(tmp_path / "in")], spec, batch.BatchOptions(output_dir=str(tmp_path / "out")),
                               ray_engine.RayOptions(workers=1, files_per_block=3))
    assert os.path.exists(tmp_path / "died")  # the worker did die on img1
    rows = {os.path.basename(r["input"]): r for r in rep["files"]}
    assert [r["status"] for r in rows.values()] == ["restored"] * 3
    # img0 was written before the death; the retried block finds it and writes no second copy
    assert "earlier attempt" in " ".join(rows["img0.png"].get("notes", []))
    assert sorted(os.listdir(tmp_path / "out")) == ["img0_restored.png", "img1_restored.png", "img2_restored.png",
                                                    "restore_report.json"]
    for i in range(3):
        src = image_io.read_image(str(tmp_path / "in" / f"img{i}.png")).pixels
        out = image_io.read_image(str(tmp_path / "out" / f"img{i}_restored.png")).pixels
        assert np.abs(out - (1.0 - src)).max() < 1e-6
    # the dead actor's rows never came back: all three were reported by its replacement
    assert [w["files"] for w in rep["engine"]["workers_seen"]] == [3]


@needs_ray
def test_interrupted_job_resumes_with_skip_existing(local_ray, tmp_path, rng):
    _small_set(tmp_path / "in", 4, rng)
    spec = ray_engine.WorkerSpec(functools.partial(DiesOnce, "none", str(tmp_path / "never")))
    opts = batch.BatchOptions(output_dir=str(tmp_path / "out"))
    first = ray_engine.run_batch([str(tmp_path / "in")], spec, opts, ray_engine.RayOptions(workers=2))
    assert first["summary"]["counts"]["restored"] == 4
    os.remove(tmp_path / "out" / "img2_restored.png")  # as if the job had stopped before img2
    again = ray_engine.run_batch([str(tmp_path / "in")], spec, batch.BatchOptions(output_dir=str(tmp_path / "out"),
                                                                                  existing="skip"),
                                 ray_engine.RayOptions(workers=2))
    rows = {os.path.basename(r["input"]): r["status"] for r in again["files"]}
    assert rows == {"img0.png": "skipped", "img1.png": "skipped", "img3.png": "skipped", "img2.png": "restored"}
    assert again["engine"]["workers"] == 1  # never more actors than files

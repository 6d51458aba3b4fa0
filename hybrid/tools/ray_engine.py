"""Archive restoration on Ray Data: ``restorekit restore|run ... --engine ray``.

The batch rules are :mod:`.batch`'s, unchanged; only *where* each task runs differs from the local loop:

1. **Driver** (the process running the command): :func:`batch.plan` lists the files, names every
   output and drops what ``--skip-existing`` skips, exactly as the local engine does.  When nothing is
   left to do, Ray is not started at all.
2. **Ray Data**: the planned tasks become a dataset (``ray.data.from_items``, small blocks so work
   spreads and a retry repeats little) mapped with ``map_batches`` over an ``ActorPoolStrategy`` of N
   stateful actors (:class:`FileWorker`).  Each actor builds its processor once (the hybrid
   restorer's models, a node, or a workflow load once per actor, not per file) and calls
   :func:`batch.process_task` per file, which reads the input, restores it and writes the outputs
   atomically, never overwriting in the default mode.  A file that fails is a ``failed`` row; the
   job goes on.
3. **Rows** stream back to the driver, which prints them as they come, puts them in input order and
   writes the same JSON report as the local engine (plus an ``engine`` section: workers, shares,
   peak RSS per actor).

Faults: Ray Data restarts a dead actor and resubmits its unfinished block (``max_restarts=-1``,
``max_task_retries=-1``, Ray Data's defaults for actor pools), so a killed worker's files are
retried.  A retried file whose outputs an earlier attempt of the same job already wrote (RestoreKit
files newer than the job's start) is reported done without a second copy.  An interrupted job is
resumed with ``--skip-existing``.

Memory: every actor plans its tiles with its *share* of the node's free memory (see
:func:`memory_shares` for the formula); torch and OpenCV use as many threads as the actor has CPUs.

Cluster: without an address a local Ray is started with an explicit CPU count, no dashboard and a
temporary folder for its logs, and stopped at the end; ``--address`` joins an existing cluster
(``auto``, ``HOST:6379`` or ``ray://HOST:10001``).  On a cluster the input and output folders must be
the same paths on every node (a shared file system), and RestoreKit must be installed on every node
(``pip install comfyui-restorekit[ray]``).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import batch

RAY_MISSING = ("the Ray engine needs Ray Data: pip install 'comfyui-restorekit[ray]' "
               "(or pip install 'ray[data]')")
#: the package this module belongs to (``restorekit``, or the folder name ComfyUI loaded it under)
PACK_NAME = __name__.split(".")[0]
PACK_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: a retried file whose outputs are RestoreKit files this much older than the job's start still
#: counts as written by an earlier attempt (file-system clock skew between nodes), seconds
CLOCK_SKEW_S = 2.0


class RayEngineError(RuntimeError):
    """The job could not run on Ray (not installed, cannot join the cluster, workers cannot start)."""


@dataclass
class RayOptions:
    """Where and with how many actors a Ray job runs.

    ``address``: ``None`` starts a local Ray for this job (stopped at the end); ``"auto"``,
    ``"HOST:PORT"`` or ``"ray://HOST:10001"`` joins a running cluster.  In a process that is already
    connected (``ray.init`` called before), that connection is used and left open.
    ``workers``: actors; 0 = one per CPU of the local Ray (``num_cpus``) or, with GPUs, one per
    ``gpus_per_worker`` of the cluster's GPUs; never more than there are files.
    ``cpus_per_worker``: 0 = on one machine (a local Ray or a one-node cluster) its CPUs divided
    among the workers (a fraction when there are more workers than CPUs); on a cluster 1, or the
    fraction that lets every worker start when there are more workers than CPUs.  ``gpus_per_worker``: a fraction shares a GPU
    (0.25 = four actors per GPU).  ``num_cpus``: CPUs the local Ray may use (0 = this machine's).
    ``object_store_mb``: the local Ray's object store (only file lists and report rows travel).
    ``files_per_block``: files per Ray Data block (0 = automatic: about four blocks per worker, at
    most 16 files each); a killed worker's block is retried as a whole.
    """

    address: Optional[str] = None
    workers: int = 0
    cpus_per_worker: float = 0.0
    gpus_per_worker: float = 0.0
    num_cpus: int = 0
    object_store_mb: int = 200
    files_per_block: int = 0

    def __post_init__(self):
        if int(self.workers) < 0:
            raise ValueError(f"workers must be 0 (automatic) or more, got {self.workers}")
        for name in ("cpus_per_worker", "gpus_per_worker"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name.replace('_', '-')} must be a finite number >= 0, got {v}")
        if int(self.num_cpus) < 0:
            raise ValueError(f"num_cpus must be 0 (all) or more, got {self.num_cpus}")
        if self.address is not None and int(self.num_cpus):
            raise ValueError("num_cpus applies to a local Ray only; a cluster's nodes declare their own CPUs")
        if int(self.object_store_mb) < 80:
            raise ValueError(f"object_store_mb must be at least 80 (Ray's minimum), got {self.object_store_mb}")


# --- memory and threads per actor -------------------------------------------------------------------
def actors_per_node(workers: int, cpus_per_worker: float, gpus_per_worker: float,
                    node_cpus: float, node_gpus: float) -> int:
    """How many of the job's actors can be on one node at once: at most ``workers``, at most as many
    as the node's CPUs allow (``node_cpus / cpus_per_worker``) and, for GPU actors, as many as its
    GPUs allow (``node_gpus / gpus_per_worker``); at least 1."""
    eps = 1e-9
    fit = max(1, int(workers))
    if cpus_per_worker > 0:
        fit = min(fit, int(math.floor(node_cpus / cpus_per_worker + eps)))
    if gpus_per_worker > 0:
        fit = min(fit, int(math.floor(node_gpus / gpus_per_worker + eps)))
    return max(1, fit)


def memory_shares(workers: int, cpus_per_worker: float, gpus_per_worker: float,
                  node_cpus: float, node_gpus: float = 0.0) -> Tuple[float, float]:
    """``(ram_share, gpu_share)`` of one actor: the fractions of the free memory it measures that
    its tile planning may use (:func:`scripts.inference.runtime.set_memory_share`).

    * ``ram_share = 1 / A`` with ``A = actors_per_node(...)`` (the job's actors that fit on the
      node by its CPUs and GPUs, at most ``workers``);
    * ``gpu_share = 1 / min(workers, floor(1 / gpus_per_worker))`` for a fraction of a GPU (the
      actors Ray can put on one GPU), 1 for a whole GPU or more (Ray gives it GPUs of its own) and
      for CPU actors.

    Each actor plans with ``free_measured x share`` (then the planner's own safety margin).  Since
    at most ``A`` actors share a node and each takes at most ``1/A`` of what is free when it looks,
    what they plan together never exceeds the node's free memory, whatever order they start in:
    memory an actor already holds is no longer free for the next one to measure.
    """
    a = actors_per_node(workers, cpus_per_worker, gpus_per_worker, node_cpus, node_gpus)
    if 0 < gpus_per_worker < 1:
        per_gpu = max(1, min(int(workers), int(math.floor(1.0 / gpus_per_worker + 1e-9))))
        gpu = 1.0 / per_gpu
    else:
        gpu = 1.0
    return 1.0 / a, gpu


def torch_threads(cpus_per_worker: float) -> int:
    """Threads an actor's torch and OpenCV use: its whole CPUs, at least one."""
    return max(1, int(math.floor(cpus_per_worker + 1e-9)))


# --- what each actor builds --------------------------------------------------------------------------
@dataclass
class WorkerSpec:
    """What every actor builds once: ``build()`` returns a :class:`batch.Processor`.

    ``models_dir``: registered as a model folder in each actor (``--models-dir``);
    ``node_output_dir``: where nodes that save files themselves write (the output folder).
    ``outputs`` / ``done_label``: the processor's, needed on the driver to plan and summarise.
    """

    build: Callable[[], batch.Processor]
    outputs: Sequence[str] = ("",)
    done_label: str = "restored"
    models_dir: Optional[str] = None
    node_output_dir: Optional[str] = None


def _hybrid_processor(thresholds, device: str, tile: int, strategy: str):
    from ..engine import HybridRestorer

    restorer = HybridRestorer(thresholds=thresholds, device=device, tile=tile, progress=False)
    restorer.predictor, restorer.unet  # noqa: B018 - load the shipped models once, when the actor starts
    return batch.RestoreProcessor(restorer, strategy)


def restore_spec(thresholds, device: str = "auto", tile: int = 0, strategy: str = "auto") -> WorkerSpec:
    """The hybrid restorer (``restorekit restore``) as a worker spec."""
    return WorkerSpec(functools.partial(_hybrid_processor, thresholds, device, int(tile), strategy),
                      outputs=batch.RestoreProcessor.outputs, done_label=batch.RestoreProcessor.done_label)


def processor_spec(processor_class, *args, models_dir: Optional[str] = None,
                   node_output_dir: Optional[str] = None, outputs=None, done_label=None, **kwargs) -> WorkerSpec:
    """Any processor class (``noderun.NodeProcessor``, ``noderun.WorkflowProcessor``) built in each
    actor from ``args``/``kwargs``; pass ``outputs``/``done_label`` of one built on the driver."""
    return WorkerSpec(functools.partial(processor_class, *args, **kwargs),
                      outputs=tuple(outputs if outputs is not None else processor_class.outputs),
                      done_label=done_label or processor_class.done_label,
                      models_dir=models_dir, node_output_dir=node_output_dir)


# --- the actor -----------------------------------------------------------------------------------------
def _node_resources() -> Tuple[float, float]:
    """(CPUs, GPUs) the Ray node this process runs on declares."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            res = node.get("Resources") or {}
            return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    return float(os.cpu_count() or 1), 0.0  # pragma: no cover - the node always lists itself


def _peak_rss_bytes() -> int:
    """This process's peak resident set size so far (bytes)."""
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kb) * (1 if sys.platform == "darwin" else 1024)
    except Exception:  # pragma: no cover - non-POSIX
        from ...scripts.inference.memory_utils import process_rss

        return process_rss()


class FileWorker:
    """A Ray Data actor: builds the processor once, then runs :func:`batch.process_task` per file.

    ``spec``: :class:`WorkerSpec`; ``options``: :class:`batch.BatchOptions` as a dict; ``job``:
    ``workers``, ``cpus_per_worker``, ``gpus_per_worker``, ``started`` (the job's start, epoch s) and
    ``cwd`` (the driver's folder, for relative input paths).
    """

    def __init__(self, spec: WorkerSpec, options: Dict[str, Any], job: Dict[str, Any]):
        from ...scripts.inference.runtime import get_runtime, set_memory_share

        t0 = time.perf_counter()
        self.options = batch.BatchOptions(**options)
        self.job = job
        node_cpus, node_gpus = _node_resources()
        self.ram_share, self.gpu_share = memory_shares(job["workers"], job["cpus_per_worker"],
                                                       job["gpus_per_worker"], node_cpus, node_gpus)
        set_memory_share(ram=self.ram_share, gpu=self.gpu_share)
        self.threads = torch_threads(job["cpus_per_worker"])
        import torch

        torch.set_num_threads(self.threads)
        try:
            import cv2

            cv2.setNumThreads(self.threads)
        except Exception:  # pragma: no cover - OpenCV is a dependency
            pass
        if spec.models_dir:
            for kind in ("upscale_models", "restorekit"):
                get_runtime().register_model_folder(kind, os.path.join(spec.models_dir, kind))
        if spec.node_output_dir:
            from .workflow import _adapter

            _adapter().set_image_folder("output", spec.node_output_dir)
        self.processor = spec.build()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.node = {"node_cpus": node_cpus, "node_gpus": node_gpus,
                     "init_seconds": round(time.perf_counter() - t0, 3)}  # imports + models loaded

    def __call__(self, items: Dict[str, Any]) -> Dict[str, List[Any]]:
        out: Dict[str, List[Any]] = {"i": [], "row": [], "worker": []}
        for i, text in zip(items["i"], items["task"]):
            out["i"].append(int(i))
            out["row"].append(json.dumps(self._one(json.loads(str(text))), default=str))
            out["worker"].append(json.dumps(self.info()))
        return out

    def info(self) -> Dict[str, Any]:
        return {"worker": self.name, "ram_share": self.ram_share, "gpu_share": self.gpu_share,
                "threads": self.threads, "peak_rss_bytes": _peak_rss_bytes(), **self.node}

    def _one(self, t: Dict[str, Any]) -> Dict[str, Any]:
        given = t["src"]
        task = batch.Task(os.path.join(self.job["cwd"], given), t["rel_dir"], dict(t["targets"]), t["explicit"])
        options = self.options
        mine = [p for p in task.targets.values() if _written_by_this_job(p, self.job["started"])]
        if mine and len(mine) == len(task.targets):
            r = batch.row(given, self.processor.done_label, outputs=list(task.targets.values()),
                          notes=["written by an earlier attempt of this job (its worker was restarted)"])
        else:
            if mine:  # an earlier attempt wrote part of this file's outputs: replace those, not rename
                options = batch.BatchOptions(**dict(asdict(options), existing="overwrite"))
            if not os.path.exists(task.src):
                r = batch.row(given, "failed", f"file not found on worker {self.name} (on a cluster, inputs "
                                               f"must be on a file system every node mounts at the same path)",
                              category="input not visible on the worker")
            else:
                r = batch.process_task(task, self.processor, options)
                r["input"] = given
        r["worker"] = self.name
        r["finished_at"] = round(time.time(), 3)  # epoch s: when this worker finished the file
        return r


def _written_by_this_job(path: str, started: float) -> bool:
    from ...scripts import image_io

    try:
        return os.path.getmtime(path) >= started - CLOCK_SKEW_S and image_io.is_restorekit_output(path)
    except OSError:
        return False


# --- the driver ----------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise RayEngineError(RAY_MISSING) from None
    return ray


def _pack_import_path() -> Optional[str]:
    """A folder to put on the workers' ``PYTHONPATH`` so they import this pack under the driver's name
    (``restorekit``): None when a plain ``import`` finds it already (an installed package); else a
    temporary folder with a link ``<name> -> this pack`` (the pack was loaded from a folder of
    another name, as ComfyUI and the tests do).  Only meaningful for workers on this machine."""
    for entry in sys.path:
        cand = os.path.join(entry or os.getcwd(), PACK_NAME)
        if os.path.isdir(cand) and os.path.realpath(cand) == os.path.realpath(PACK_DIR):
            return None if entry in _inherited_paths() else os.path.abspath(entry or os.getcwd())
    shim = os.path.join(tempfile.gettempdir(), f"restorekit-import-{os.getuid() if hasattr(os, 'getuid') else 0}",
                        _digest(PACK_DIR))
    link = os.path.join(shim, PACK_NAME)
    os.makedirs(shim, exist_ok=True)
    if not (os.path.islink(link) and os.path.realpath(link) == os.path.realpath(PACK_DIR)):
        tmp = f"{link}.{os.getpid()}"
        os.symlink(PACK_DIR, tmp)
        os.replace(tmp, link)
    return shim


def worker_runtime_env() -> Optional[Dict[str, Any]]:
    """Ray ``runtime_env`` that lets workers on this machine import the pack (None when they can)."""
    shim = _pack_import_path()
    if not shim:
        return None
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([shim] + rest)}}


def _inherited_paths() -> List[str]:
    """sys.path entries a fresh interpreter of this Python has (site-packages)."""
    import site

    paths = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return paths + ([user] if user else [])


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def ray_session(opts: RayOptions) -> Iterator[Dict[str, Any]]:
    """Connect to Ray for one job: reuse this process's connection, join ``opts.address``, or start a
    local Ray (explicit CPUs, no dashboard, logs in a temporary folder) and stop it afterwards."""
    ray = _import_ray()
    if ray.is_initialized():
        yield {"cluster": "this process's Ray connection", "address": None}
        return
    if opts.address:
        try:
            ray.init(address=opts.address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:
            raise RayEngineError(f"cannot join the Ray cluster at {opts.address!r}: {exc}") from None
        try:
            yield {"cluster": "joined", "address": opts.address}
        finally:
            ray.shutdown()
        return
    num_cpus = int(opts.num_cpus or os.cpu_count() or 1)
    temp = tempfile.mkdtemp(prefix="rk-ray-")  # short: Ray's socket paths must fit 107 characters
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp, logging_level=logging.WARNING,
             log_to_driver=False, object_store_memory=int(opts.object_store_mb) << 20)
    ok = False
    try:
        yield {"cluster": "local", "address": None, "num_cpus": num_cpus,
               "start_seconds": round(time.perf_counter() - t0, 2)}
        ok = True
    finally:
        ray.shutdown()
        if ok:
            shutil.rmtree(temp, ignore_errors=True)
        else:
            print(f"Ray's logs are kept in {temp}", file=sys.stderr)


def _resolve(opts: RayOptions, session: Dict[str, Any], n_tasks: int) -> Tuple[int, float, float]:
    """(workers, cpus_per_worker, gpus_per_worker) for this job on this cluster."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    gpw = float(opts.gpus_per_worker)
    if gpw > 0 and gpus < gpw:
        raise RayEngineError(f"--gpus-per-worker {gpw:g}: the Ray cluster has {gpus:g} GPU(s)")
    workers = int(opts.workers)
    if not workers:
        workers = int(math.floor(gpus / gpw + 1e-9)) if gpw > 0 else int(cpus) or 1
    workers = max(1, min(workers, n_tasks))
    cpw = float(opts.cpus_per_worker)
    if not cpw and cpus:
        # one machine (a local Ray, or a one-node cluster): its CPUs split among the workers;
        # a cluster: 1 CPU each, less when there are more workers than CPUs so that all can start
        one_node = sum(1 for n in ray.nodes() if n.get("Alive")) <= 1
        cpw = cpus / workers if one_node else min(1.0, cpus / workers)
    cpw = cpw or 1.0
    if cpw > cpus:
        raise RayEngineError(f"--cpus-per-worker {cpw:g}: the Ray cluster has {cpus:g} CPU(s)")
    return workers, cpw, gpw


def _blocks(n: int, workers: int, files_per_block: int) -> int:
    per = int(files_per_block) or max(1, min(16, math.ceil(n / (4 * workers))))
    return max(1, math.ceil(n / per))


def _task_item(i: int, task: batch.Task) -> Dict[str, Any]:
    return {"i": i, "task": json.dumps({"src": task.src, "rel_dir": task.rel_dir, "targets": task.targets,
                                        "explicit": task.explicit})}


def run_batch(inputs, spec: WorkerSpec, options: batch.BatchOptions, ray_options: Optional[RayOptions] = None,
              *, report_name: str = "restore_report.json", extra: Optional[Dict[str, Any]] = None,
              on_row: Optional[Callable[[Dict[str, Any]], None]] = None, progress: bool = False
              ) -> Dict[str, Any]:
    """Plan on the driver, restore on Ray actors, write the report: the Ray twin of
    :func:`batch.run_batch` (same rows, same report, plus ``report["engine"]``).

    Raises :class:`RayEngineError` when Ray is missing, the cluster cannot be joined or the workers
    cannot start; ``FileNotFoundError`` for an input that does not exist.
    """
    ray_options = ray_options or RayOptions()
    tasks, rows = batch.plan(inputs, options, spec.outputs)
    for r in rows:
        if on_row:
            on_row(r)
    os.makedirs(options.output_dir, exist_ok=True)
    engine: Dict[str, Any] = {"name": "ray", "files": len(tasks)}
    if not tasks:
        engine["note"] = "nothing to do: Ray was not started"
        return batch.finish_report(rows, spec.done_label, options, report_name, dict(extra or {}, engine=engine))
    _import_ray()
    started = time.time()
    results: Dict[int, Dict[str, Any]] = {}
    workers_seen: Dict[str, Dict[str, Any]] = {}
    with ray_session(ray_options) as session:
        import ray
        import ray.data

        workers, cpw, gpw = _resolve(ray_options, session, len(tasks))
        engine.update(session, workers=workers, cpus_per_worker=round(cpw, 4), gpus_per_worker=gpw,
                      torch_threads=torch_threads(cpw))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # rows are printed as they come, with the local engine's bar
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        runtime_env = worker_runtime_env()
        job = {"workers": workers, "cpus_per_worker": cpw, "gpus_per_worker": gpw, "started": started,
               "cwd": os.getcwd()}
        items = [_task_item(i, t) for i, t in enumerate(tasks)]
        ds = ray.data.from_items(items, override_num_blocks=_blocks(len(items), workers, ray_options.files_per_block))
        ds = ds.map_batches(FileWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                            fn_constructor_kwargs={"spec": spec, "options": asdict(options), "job": job},
                            num_cpus=cpw, num_gpus=gpw or None, runtime_env=runtime_env)
        t_run = time.perf_counter()
        bar = batch._bar(len(tasks)) if progress else None
        try:
            for out in ds.iter_rows():
                r = json.loads(out["row"])
                results[int(out["i"])] = r
                info = json.loads(out["worker"])
                seen = workers_seen.setdefault(info["worker"], dict(info, files=0))
                seen["files"] += 1
                seen["peak_rss_bytes"] = max(seen["peak_rss_bytes"], info["peak_rss_bytes"])
                if on_row:
                    on_row(r)
                if bar is not None:
                    bar.update(1)
        except Exception as exc:
            raise RayEngineError(_explain(exc)) from exc
        finally:
            if bar is not None:
                bar.close()
        engine["run_seconds"] = round(time.perf_counter() - t_run, 3)
    missing = [i for i in range(len(tasks)) if i not in results]
    for i in missing:  # pragma: no cover - Ray returns every row or raises
        results[i] = batch.row(tasks[i].src, "failed", "no result came back from the Ray workers",
                               category="lost by the engine")
    engine["workers_seen"] = sorted(workers_seen.values(), key=lambda w: w["worker"])
    rows += [results[i] for i in range(len(tasks))]
    return batch.finish_report(rows, spec.done_label, options, report_name, dict(extra or {}, engine=engine))


def _explain(exc: BaseException) -> str:
    text = str(exc)
    if "ModuleNotFoundError" in text and PACK_NAME in text:
        return (f"the Ray workers cannot import RestoreKit ('{PACK_NAME}'): install it on every node "
                f"(pip install 'comfyui-restorekit[ray]').\n{text[-2000:]}")
    return f"the Ray job failed: {type(exc).__name__}: {text[-3000:]}"

"""N ComfyUI servers with RestoreKit behind one Ray Serve queue (``restorekit comfy-serve``).

Each Serve replica starts one headless ComfyUI on a free loopback port of its node (the ComfyUI
install given by ``comfy_root``, with RestoreKit in its ``custom_nodes``), with input, output, temp
and user folders of its own, and answers ``POST /restorekit`` requests::

    {"body": {"prompt": {...}}, "loader": "1", "name": "scan.png", "image": "<base64>", "timeout": 600}
 -> {"ok": true, "outputs": [{"node": "3", "filename": "...", "data": "<base64 PNG>"}],
     "worker": "host:port", "seconds": 1.9}

by uploading the image to its ComfyUI (``/upload/image``), queueing the prompt, waiting for it and
returning the SaveImage outputs (then deleting the uploaded and written files, so a long archive does
not fill the replica's disk).  ``max_ongoing_requests=1``: ComfyUI runs one prompt at a time, so
Serve's router keeps the rest in its queue and hands each request to a replica that is free.  A
replica whose ComfyUI has died fails its health check and Serve replaces it.

Resources: ``cpus_per_replica`` CPUs (ComfyUI's torch threads) and ``gpus_per_replica`` GPUs
(0 = ComfyUI runs with ``--cpu``; a fraction shares a GPU).  RestoreKit inside each ComfyUI plans its
tiles with the replica's share of the node's memory (``RESTOREKIT_MEMORY_SHARE``, the formula of
``ray_engine.memory_shares``).

The client is :mod:`.comfy_client` (standard library only): ``restorekit submit FOLDER --prompt
examples/api/hybrid_restore.json --serve http://127.0.0.1:8000/restorekit -o OUT``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from . import comfy_client as cc
from .ray_engine import memory_shares, torch_threads, worker_runtime_env

ROUTE = "/restorekit"
APP_NAME = "restorekit-comfy"
_ray_temp: Optional[str] = None  # the local Ray's folder, removed by stop()
SERVE_MISSING = "the ComfyUI workers recipe needs Ray Serve: pip install 'comfyui-restorekit[serve]'"


def _free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """Linux: the ComfyUI child gets SIGTERM when its replica process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ComfyProcess:
    """One headless ComfyUI on a free loopback port, with input/output/temp/user folders of its own
    under ``workdir`` (a new temporary folder by default); ``base_directory`` is ComfyUI's
    ``--base-directory`` (custom_nodes, models).  Start-up waits for ``/system_stats`` (at most
    ``start_timeout`` s) and, with ``require_pack``, for RestoreKit's nodes to be registered.  On
    Linux the server dies with the process that started it (see :meth:`_tie_to_parent`)."""

    def __init__(self, comfy_root: str, python: Optional[str] = None, *, base_directory: Optional[str] = None,
                 cpu: bool = True, extra_args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
                 start_timeout: float = 300.0, workdir: Optional[str] = None, require_pack: bool = True,
                 die_with_parent: Optional[bool] = None):
        self.root = os.path.abspath(comfy_root)
        if not os.path.isfile(os.path.join(self.root, "main.py")):
            raise ValueError(f"'{comfy_root}' is not a ComfyUI folder (no main.py)")
        self.python = python or sys.executable
        self.workdir = workdir or tempfile.mkdtemp(prefix="rk-comfy-")
        self.dirs = {k: os.path.join(self.workdir, k) for k in ("input", "output", "temp", "user")}
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.workdir, "comfyui.log")
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
               "--input-directory", self.dirs["input"], "--output-directory", self.dirs["output"],
               "--temp-directory", self.dirs["temp"], "--user-directory", self.dirs["user"],
               "--database-url", f"sqlite:///{os.path.join(self.dirs['user'], 'comfyui.db')}"]
        if base_directory:
            cmd += ["--base-directory", os.path.abspath(base_directory)]
        if cpu:
            cmd.append("--cpu")
        cmd += list(extra_args)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})),
                                     preexec_fn=_die_with_parent if self._tie_to_parent(die_with_parent) else None)
        self.api = cc.ComfyAPI(self.url)
        t0 = time.monotonic()
        while not self.api.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up (code {self.proc.returncode}):\n{self.log_tail()}")
            if time.monotonic() - t0 > start_timeout:
                self.stop()
                raise RuntimeError(f"ComfyUI did not answer within {start_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.3)
        self.start_seconds = time.monotonic() - t0
        problem = self.pack_problem() if require_pack else ""
        if problem:
            self.stop()
            raise RuntimeError(f"RestoreKit did not load in ComfyUI:\n{problem}")

    @staticmethod
    def _tie_to_parent(wanted: Optional[bool]) -> bool:
        """Whether the server gets SIGTERM when its parent dies (Linux only).  Linux sends it when the
        *thread* that started the server ends, so by default only a start from the main thread is
        tied; ``die_with_parent=True`` is for callers whose thread lives as long as the server (a
        Serve replica's user-code thread)."""
        import threading

        if not sys.platform.startswith("linux"):
            return False
        return threading.current_thread() is threading.main_thread() if wanted is None else bool(wanted)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def pack_problem(self) -> str:
        """'' when ComfyUI lists RestoreKit's nodes, else what its log says."""
        try:
            info = self.api.get_json("/object_info/RestoreKitHybridRestore")
        except Exception as exc:
            return f"{exc}\n{self.log_tail()}"
        if "RestoreKitHybridRestore" not in info:
            return "the RestoreKit nodes are not registered (is RestoreKit in this ComfyUI's custom_nodes?)\n" \
                   + self.log_tail()
        return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if self._log:
            self._log.close()
            self._log = None

    def remove(self, files) -> None:
        """Delete files this server wrote or received ((filename, subfolder, kind) as /view names them)."""
        for name, sub, kind in files:
            path = os.path.realpath(os.path.join(self.dirs[kind], sub, name))
            if os.path.commonpath([path, os.path.realpath(self.dirs[kind])]) == os.path.realpath(self.dirs[kind]):
                with contextlib.suppress(OSError):
                    os.remove(path)


class ComfyWorker:
    """The Serve replica (wrapped by :func:`build_app`): one :class:`ComfyProcess` and the request handler."""

    def __init__(self, comfy_root: str, python: Optional[str] = None, base_directory: Optional[str] = None,
                 extra_args: Sequence[str] = (), replicas: int = 1, cpus_per_replica: float = 1.0,
                 gpus_per_replica: float = 0.0, start_timeout: float = 300.0):
        import ray

        from .ray_engine import _node_resources

        node_cpus, node_gpus = _node_resources()
        ram, gpu = memory_shares(replicas, cpus_per_replica, gpus_per_replica, node_cpus, node_gpus)
        threads = str(torch_threads(cpus_per_replica))
        env = {"RESTOREKIT_MEMORY_SHARE": f"ram={ram:.6g},gpu={gpu:.6g}", "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        self.server = ComfyProcess(comfy_root, python, base_directory=base_directory, cpu=gpus_per_replica <= 0,
                                   extra_args=extra_args, env=env, start_timeout=start_timeout,
                                   die_with_parent=True)  # the replica's thread lives as long as it does
        self.name = f"{socket.gethostname()}:{self.server.port}"
        self.share = {"ram": ram, "gpu": gpu, "threads": int(threads), "node": ray.get_runtime_context().get_node_id()}

    def check_health(self) -> None:
        """Serve's health check: a replica whose ComfyUI died is replaced."""
        if not self.server.alive():
            raise RuntimeError(f"ComfyUI on {self.name} exited:\n{self.server.log_tail(20)}")

    def handle(self, request: dict) -> dict:
        t0 = time.monotonic()
        try:
            body, loader, name = request["body"], str(request["loader"]), str(request.get("name", "image.png"))
            data = base64.b64decode(request["image"])
            outputs, files = self.server.api.run(body, loader, name, data,
                                                 timeout=float(request.get("timeout", 600.0)))
        except (cc.ComfyError, ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "worker": self.name,
                    "seconds": round(time.monotonic() - t0, 3)}
        self.server.remove(files)
        return {"ok": True, "worker": self.name, "seconds": round(time.monotonic() - t0, 3), "share": self.share,
                "outputs": [{"node": o.node, "filename": o.filename, "data": base64.b64encode(o.data).decode()}
                            for o in outputs]}

    async def __call__(self, request) -> dict:
        payload = await request.json()
        return await asyncio.get_running_loop().run_in_executor(None, self.handle, payload)

    def __del__(self):
        server = getattr(self, "server", None)
        if server is not None:
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


def build_app(comfy_root: str, replicas: int = 2, *, python: Optional[str] = None,
              base_directory: Optional[str] = None, extra_args: Sequence[str] = (), cpus_per_replica: float = 1.0,
              gpus_per_replica: float = 0.0, start_timeout: float = 300.0):
    """The Serve application: ``replicas`` ComfyWorker replicas, one request at a time each."""
    try:
        from ray import serve
    except ImportError:
        raise RuntimeError(SERVE_MISSING) from None
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    actor = {"num_cpus": float(cpus_per_replica), "num_gpus": float(gpus_per_replica)}
    env = worker_runtime_env()  # replicas import this pack under the driver's name
    if env:
        actor["runtime_env"] = env
    deployment = serve.deployment(
        ComfyWorker, name="ComfyWorker", num_replicas=int(replicas), max_ongoing_requests=1,
        ray_actor_options=actor,
        health_check_period_s=10, health_check_timeout_s=30, graceful_shutdown_timeout_s=30)
    return deployment.bind(comfy_root, python, base_directory, list(extra_args), int(replicas),
                           float(cpus_per_replica), float(gpus_per_replica), float(start_timeout))


def start(comfy_root: str, replicas: int = 2, *, host: str = "127.0.0.1", port: int = 8000,
          address: Optional[str] = None, num_cpus: int = 0, **kwargs) -> str:
    """Connect to (``address``) or start a local Ray, run the application, return the endpoint URL.
    ``kwargs`` go to :func:`build_app`.  Stop with :func:`stop`."""
    import logging

    try:
        import ray
        from ray import serve
    except ImportError:
        raise RuntimeError(SERVE_MISSING) from None
    global _ray_temp
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            _ray_temp = tempfile.mkdtemp(prefix="rk-ray-")  # short: Ray's socket paths are limited
            ray.init(num_cpus=int(num_cpus or os.cpu_count() or 1), include_dashboard=False, _temp_dir=_ray_temp,
                     logging_level=logging.WARNING, object_store_memory=200 << 20)
    serve.start(http_options={"host": host, "port": int(port)})
    serve.run(build_app(comfy_root, replicas, **kwargs), name=APP_NAME, route_prefix=ROUTE)
    return f"http://{host}:{int(port)}{ROUTE}"


def stop() -> None:
    """Delete the application (replicas stop their ComfyUI) and shut Serve and this Ray connection down."""
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.delete(APP_NAME)
    with contextlib.suppress(Exception):
        serve.shutdown()
    ray.shutdown()
    global _ray_temp
    if _ray_temp:
        shutil.rmtree(_ray_temp, ignore_errors=True)
        _ray_temp = None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="restorekit comfy-serve",
                                 description="N ComfyUI servers with RestoreKit behind one Ray Serve queue")
    ap.add_argument("--comfy-root", required=True, help="a ComfyUI folder (main.py) with RestoreKit in custom_nodes")
    ap.add_argument("--python", help="the Python ComfyUI runs with (its venv's bin/python; default: this one)")
    ap.add_argument("--base-directory", help="ComfyUI --base-directory (custom_nodes, models); default: comfy-root's")
    ap.add_argument("--replicas", type=int, default=2, help="ComfyUI servers (default 2)")
    ap.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs per server (its torch threads)")
    ap.add_argument("--gpus-per-replica", type=float, default=0.0,
                    help="GPUs per server (0 = --cpu; 0.5 = two servers per GPU)")
    ap.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    ap.add_argument("--num-cpus", type=int, default=0, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--host", default="127.0.0.1", help="address the endpoint listens on (default loopback)")
    ap.add_argument("--port", type=int, default=8000, help="endpoint port (default 8000)")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds a ComfyUI may take to start")
    ap.add_argument("--hours", type=float, default=0.0,
                    help="stop after this long (default: until Ctrl-C or SIGTERM, which stop every ComfyUI cleanly)")
    ap.add_argument("comfy_args", nargs="*", help="extra ComfyUI arguments after --")
    args = ap.parse_args(argv)
    try:
        url = start(args.comfy_root, args.replicas, host=args.host, port=args.port, address=args.address,
                    num_cpus=args.num_cpus, python=args.python, base_directory=args.base_directory,
                    extra_args=args.comfy_args, cpus_per_replica=args.cpus_per_replica,
                    gpus_per_replica=args.gpus_per_replica, start_timeout=args.start_timeout)
    except (RuntimeError, ValueError) as exc:
        print(f"restorekit comfy-serve: error: {exc}", file=sys.stderr)
        return 2
    print(f"READY {url}  ({args.replicas} ComfyUI servers; submit with: restorekit submit FOLDER "
          f"--prompt examples/api/hybrid_restore.json --serve {url} -o OUT)", flush=True)
    deadline = time.monotonic() + args.hours * 3600 if args.hours > 0 else None

    def _interrupt(signum, frame):  # Ctrl-C, and SIGTERM / a background job's SIGINT, stop cleanly
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0

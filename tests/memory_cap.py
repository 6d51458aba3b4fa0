"""Run nodes on a large image under an address-space cap (``prlimit --as``), one subprocess each.

The contract (issue 13, "memory under a cap"): a node given an image too large for the memory it
may use either finishes (through a strip/tile fallback) or stops with the pack's memory error
(:class:`scripts.memory_guard.ImageMemoryError`, or the model runner's ``OutOfMemoryError``), which
names the image size and the memory needed.  Never a foreign exception (``cv2.error``, numpy's
``MemoryError`` without a word about the image, torch's allocator ``RuntimeError``) and never a
kill.

Usage (from the repository root)::

    python -m tests.memory_cap                      # every classical node, 7680x4320 RGB, 6 GiB cap
    python -m tests.memory_cap --size 3840x2160 --cap 5G RestoreKitLBCLAHE
    python -m tests.memory_cap --set RestoreKitFilmGrainBM3D.method=fallback

Each node runs with its default widgets (``--set NODE.input=value`` overrides one) on a smooth
gradient with noise, in a fresh ``python`` started under ``prlimit --as=CAP`` (or
``resource.setrlimit`` where prlimit is missing), so the cap covers imports too (about 3.5 GiB of
address space after importing torch, OpenCV, SciPy and scikit-image on Linux).  One line per node:
``ok`` / ``pack memory error`` / ``FOREIGN`` / ``KILLED`` / ``TIMEOUT`` with the message.

"Classical node" = a node with an IMAGE input and no model-file input (the model nodes have their
own memory planner, tested in test_memory_utils.py).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

#: exit codes of the child
OK, PACK_MEMORY, FOREIGN, REFUSED = 0, 3, 4, 5


def parse_bytes(text: str) -> int:
    """'6G', '512M', '1.5GiB', '123456' -> bytes (binary units)."""
    t = text.strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(float(t))


def parse_size(text: str):
    w, h = text.lower().split("x")
    return int(w), int(h)


def classical_nodes() -> List[str]:
    """Pack nodes with an IMAGE input and no model input (model_name combo or model socket)."""
    from _workflows import input_specs, load_pack

    pack = load_pack()
    out = []
    for name, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
        specs = input_specs(cls)
        has_image = any(s.type == "IMAGE" for s in specs)
        has_model = any(s.name in ("model_name", "fallback_model") or "MODEL" in s.type for s in specs)
        if has_image and not has_model:
            out.append(name)
    return out


# --- the child ----------------------------------------------------------------------------------
def _test_image(w: int, h: int, c: int = 3, seed: int = 0):
    """A float32 ``[1,h,w,c]`` gradient with mild noise, built in row strips (no float64 copies)."""
    import numpy as np
    import torch

    out = torch.empty((1, h, w, c), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    xs = np.linspace(0.1, 0.9, w, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, w * c))
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[y0:y1, None]
        for ch in range(c):
            base = (xs[None, :] * (0.6 + 0.1 * ch) + 0.3 * ys).astype(np.float32)
            base += rng.normal(0.0, 0.02, size=base.shape).astype(np.float32)
            out[0, y0:y1, :, ch] = torch.from_numpy(np.clip(base, 0.0, 1.0))
    return out


def _node_kwargs(cls, image, overrides: Dict[str, str]) -> dict:
    from _workflows import input_specs

    kwargs = {}
    for s in input_specs(cls):
        if s.type == "IMAGE":
            kwargs[s.name] = image
        elif s.name in overrides:
            v = overrides[s.name]
            kwargs[s.name] = {"INT": int, "FLOAT": float, "BOOLEAN": lambda x: x.lower() in ("1", "true", "yes")}.get(
                s.type, str)(v)
        elif "default" in s.options:
            kwargs[s.name] = s.options["default"]
        elif s.type == "COMBO" and s.choices:
            kwargs[s.name] = s.choices[0]
        elif not s.required:
            continue
        else:
            raise SystemExit(f"{cls.__name__}: no default for required input {s.name}")
    return kwargs


def is_pack_memory_error(exc: BaseException, pack_name: str) -> bool:
    """The pack's memory errors: a MemoryError/RuntimeError subclass defined in the pack whose name
    says memory (ImageMemoryError, the runner's OutOfMemoryError)."""
    t = type(exc)
    return (t.__module__.startswith(pack_name + ".") and "Memory" in t.__name__
            and isinstance(exc, (MemoryError, RuntimeError)))


def child(node: str, w: int, h: int, c: int, overrides: Dict[str, str], headroom: int = 0) -> int:
    from _workflows import load_pack

    pack = load_pack()
    cls = pack.NODE_CLASS_MAPPINGS[node]
    t0 = time.time()
    runtime = importlib.import_module(pack.__name__ + ".scripts.inference.runtime").get_runtime()
    if hasattr(runtime, "set_image_folder"):  # image-saving nodes write to a scratch folder
        scratch = tempfile.mkdtemp(prefix="restorekit-memcap-")
        for kind in ("output", "temp"):
            runtime.set_image_folder(kind, scratch)
    try:
        image = _test_image(w, h, c)
        kwargs = _node_kwargs(cls, image, overrides)
    except MemoryError as exc:
        print(json.dumps({"node": node, "status": "setup", "message": f"no memory for the test image: {exc}"}))
        return REFUSED
    try:  # warm-up on a small image: lazily loaded libraries and models are mapped before the cap
        small = _test_image(32, 24, c)
        getattr(cls(), cls.FUNCTION)(**_node_kwargs(cls, small, overrides))
    except Exception:
        pass
    if headroom:  # cap = what the process holds now (interpreter, libraries, the image) + headroom
        import resource

        import psutil

        cap = psutil.Process().memory_info().vms + headroom
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        ret = getattr(cls(), cls.FUNCTION)(**kwargs)
    except BaseException as exc:  # noqa: BLE001 - classified and reported
        status = "pack memory error" if is_pack_memory_error(exc, pack.__name__) else "FOREIGN"
        if status == "FOREIGN" and isinstance(exc, ValueError) and type(exc).__module__ == "builtins":
            status = "refused"
        print(json.dumps({"node": node, "status": status, "type": f"{type(exc).__module__}.{type(exc).__name__}",
                          "message": str(exc)[:600], "seconds": round(time.time() - t0, 1)}))
        return {"pack memory error": PACK_MEMORY, "refused": REFUSED}.get(status, FOREIGN)
    result = ret["result"] if isinstance(ret, dict) else ret
    shapes = [tuple(r.shape) for r in result if hasattr(r, "shape")]
    print(json.dumps({"node": node, "status": "ok", "outputs": shapes, "seconds": round(time.time() - t0, 1)}))
    return OK


# --- the parent ---------------------------------------------------------------------------------
def run_capped(node: str, size=(7680, 4320), channels: int = 3, cap: Optional[int] = 6 << 30,
               overrides: Optional[Dict[str, str]] = None, timeout: float = 1800.0,
               threads: int = 1, headroom: int = 0) -> dict:
    """Run ``node`` in a subprocess under an address-space cap; returns the child's report dict
    plus ``returncode``; ``status`` is KILLED (signal) or TIMEOUT when the child gave no report.

    ``cap``: the limit for the whole process (imports included, as ``prlimit --as``); or
    ``headroom``: the limit is set inside the child once the libraries and the test image are
    loaded, at what it holds then plus ``headroom`` (independent of how much address space the
    libraries reserve on a given machine -- what the CI test uses)."""
    args = [os.path.join(HERE, "memory_cap.py"), "--child", node, "--size", f"{size[0]}x{size[1]}",
            "--channels", str(channels)]
    if headroom:
        args += ["--headroom", str(int(headroom))]
        cap = None
    for k, v in (overrides or {}).items():
        args += ["--set", f"{node}.{k}={v}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if cap is None:
        cmd, pre = [sys.executable] + args, None
    elif shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={cap}", sys.executable] + args
        pre = None
    else:
        import resource

        cmd = [sys.executable] + args

        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
                              preexec_fn=pre)
    except subprocess.TimeoutExpired:
        return {"node": node, "status": "TIMEOUT", "seconds": round(time.time() - t0, 1), "returncode": None}
    report = None
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except ValueError:
                pass
    if report is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        status = "KILLED" if proc.returncode < 0 else "FOREIGN"
        report = {"node": node, "status": status, "message": " | ".join(tail)[:600]}
    report["returncode"] = proc.returncode
    report.setdefault("seconds", round(time.time() - t0, 1))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("nodes", nargs="*", help="node ids (default: every classical node)")
    ap.add_argument("--size", default="7680x4320", help="WIDTHxHEIGHT (default 8K UHD 7680x4320)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--cap", default="6G", help="address-space cap (prlimit --as), e.g. 6G")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per node")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    ap.add_argument("--headroom", default="0", help="instead of --cap: limit = address space after "
                    "imports and the test image + this (e.g. 600M)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    overrides: Dict[str, Dict[str, str]] = {}
    for item in a.set:
        key, value = item.split("=", 1)
        node, name = key.split(".", 1)
        overrides.setdefault(node, {})[name] = value
    w, h = parse_size(a.size)
    if a.child:
        return child(a.child, w, h, a.channels, overrides.get(a.child, {}), parse_bytes(a.headroom))
    nodes = a.nodes or classical_nodes()
    cap = parse_bytes(a.cap)
    bad = 0
    print(f"{len(nodes)} node(s), {w}x{h}x{a.channels}, address-space cap {cap / 2**30:.1f} GiB", flush=True)
    for node in nodes:
        r = run_capped(node, (w, h), a.channels, cap, overrides.get(node), a.timeout,
                       headroom=parse_bytes(a.headroom))
        ok = r["status"] in ("ok", "pack memory error")
        bad += not ok
        detail = r.get("message") or r.get("outputs") or ""
        print(f"{node:32s} {r['status']:18s} {r.get('seconds', '')!s:>7} s  {detail}", flush=True)
    print(f"{len(nodes) - bad} of {len(nodes)} within the contract", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Tiled-runner benchmark: our runner against ComfyUI core's fixed-tile method and untiled inference.

Input 3840x2160 (``--width/--height``), a small random-weight ESRGAN x4 (RRDBNet, 16 filters, 1 block).
Each method runs in its own subprocess so its peak RSS is its own (RAM above the process's RSS once
model and input exist):

* ``ours``  — ``scripts.inference.runner.run_model``: planned tile, feathered blending straight into the
  final ``[B,H*s,W*s,C]`` buffer with a tile-sized weight map.
* ``core``  — ComfyUI core's method (``bench_core.core_method``): fixed 512 px tiles, overlap 32, a
  linear feather on every tile edge, output and divisor accumulated in full-size float32 buffers,
  then divided and moved to channel-last.
* ``untiled`` — the bare network on the whole image (only where it fits: by default on a 1/4-area
  crop, and throughput is compared per pixel).

Goal (issue #2): ours ≥ 1.0x core's throughput at ≤ 0.6x its peak RSS.
Run: ``python benchmarks/bench_tiling.py`` (a few minutes on 2 cores) or ``--quick``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_core import core_method  # noqa: E402  ComfyUI core's method, re-implemented once


def build_model():
    import importlib

    import torch

    RRDBNet = importlib.import_module("spandrel.architectures.ESRGAN.__arch.RRDB").RRDBNet
    torch.manual_seed(0)
    net = RRDBNet(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4).eval()
    return net


def run_one(method: str, width: int, height: int) -> dict:
    import torch

    import _pack

    _pack.load()
    from restorekit.scripts.inference import memory_utils as mu
    from restorekit.scripts.inference.handle import ModelHandle
    from restorekit.scripts.inference.runner import run_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    net = build_model()
    image = torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # warm up kernels outside the measurement
        net(torch.rand(1, 3, 64, 64))
    info = {}
    with mu.MemoryMonitor(interval_s=0.002, collect=True) as mon:
        t0 = time.perf_counter()
        if method == "ours":
            handle = ModelHandle(net, "ESRGAN-small", scale=4, min_overlap=32)
            out, report = run_model(handle, image, device="cpu", progress=False)
            info = {"tile": report.tile, "overlap": report.overlap, "tiles": report.tiles}
        elif method == "core":
            with torch.inference_mode():  # as ComfyUI runs every node
                out = core_method(net, image)
            info = {"tile": 512, "overlap": 32}
        else:
            with torch.inference_mode():
                out = net(image.movedim(-1, -3)).clamp(0, 1).movedim(-3, -1)
            info = {"tile": None}
        seconds = time.perf_counter() - t0
    assert out.shape == (1, height * 4, width * 4, 3)
    return {"method": method, "seconds": seconds, "mpix_per_s": width * height / 1e6 / seconds,
            "peak_rss_delta": mon.ram_delta_bytes, "width": width, "height": height, **info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--quick", action="store_true", help="960x540 instead of 3840x2160")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.width, args.height = 960, 540
    if args.one:
        print(json.dumps(run_one(args.one, args.width, args.height)))
        return 0

    def sub(method, w, h):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", method, "--width", str(w), "--height", str(h)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-2000:])
            raise SystemExit(f"{method} failed")
        return json.loads(res.stdout.strip().splitlines()[-1])

    w, h = args.width, args.height
    ours, core = sub("ours", w, h), sub("core", w, h)
    uw, uh = max(64, w // 2), max(64, h // 2)
    untiled = sub("untiled", uw, uh)
    gib = 1 << 30
    print(f"input {w}x{h}, ESRGAN x4 (16 filters, 1 block), random weights, cpu threads {os.cpu_count()}")
    for r in (ours, core, untiled):
        print(f"  {r['method']:8s} {r['width']}x{r['height']}: {r['seconds']:7.2f} s, {r['mpix_per_s']:.4f} MP/s, "
              f"peak RSS +{r['peak_rss_delta'] / gib:.2f} GiB, tile {r.get('tile')}")
    thr = ours["mpix_per_s"] / core["mpix_per_s"]
    mem = ours["peak_rss_delta"] / core["peak_rss_delta"]
    print(f"ours / core throughput: {thr:.2f}x (goal >= 1.0)  {'OK' if thr >= 1.0 else 'MISSED'}")
    print(f"ours / core peak RSS:   {mem:.2f}x (goal <= 0.6)  {'OK' if mem <= 0.6 else 'MISSED'}")
    print(f"ours / untiled throughput (untiled on {uw}x{uh}): {ours['mpix_per_s'] / untiled['mpix_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

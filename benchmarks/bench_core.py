"""Our model runner against ComfyUI core's upscale method, same network, same machine, same run.

Core's method (``ImageUpscaleWithModel`` + ``comfy.utils.tiled_scale_multidim`` of ComfyUI 0.3.64,
re-implemented here so no ComfyUI is needed): the IMAGE moved to NCHW by ``movedim`` (a
channels-last-strided view), fixed 512 px tiles with a 32 px overlap at positions
``range(0, side - 32, 480)``, fp32, a feather mask per tile, three full-size float32 buffers (the
output, the accumulator and the divisor) and a clamped channel-last copy at the end; the node runs
under ``torch.inference_mode`` as ComfyUI runs every node.

Ours: :func:`scripts.inference.runner.run_model` with everything automatic (precision and layout
measured on a tile of the image, the plan with the least memory within 5 % of the fastest, tiles on
the network's grid); its measuring time is part of its time (a first run on a fresh process).

Networks (random weights, the published sizes): ESRGAN ×4 (RRDBNet, 64 filters, 2 RRDB blocks — the
realistic cost of issue 18; RealESRGAN_x4plus has 23 blocks), Compact ×4 (realesr-general-x4v3:
64 features, 32 convolutions) and SCUNet ×1 (the released size: dim 64, [4]*7), at 0.5, 1, 4 and
16 MP *output* (4:3).  Each method runs the job twice in one process: the first run on a fresh
process (ours measures then), the second with the model loaded and measured (a ComfyUI server that
keeps the model).  Every measurement runs in its own subprocess (peak RSS is that process's;
"+RSS" is the peak above the RSS once the model and the input exist); ours and core alternate
(ours first in even repeats, core first in odd ones).

Ours runs with an empty cost cache (``RESTOREKIT_COST_CACHE_DIR``: a new folder per process) unless
``--fresh``: then every process runs the job once, and ours runs both with an empty cache (a
first-ever run) and with the cache an earlier process filled (a restarted ComfyUI).

Run: ``nice -n 10 python benchmarks/bench_core.py [--repeat 2] [--sizes 0.5 1 4 16] [--archs ESRGAN
Compact SCUNet] [--max-seconds 300] [--fresh]``.  A size is skipped for an architecture once core's method took
longer than ``--max-seconds`` at the previous size times the size ratio (16 MP SCUNet on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

ARCHS = ("ESRGAN", "Compact", "SCUNet")
SCALE = {"ESRGAN": 4, "Compact": 4, "SCUNet": 1}


def write_model(arch: str, folder: str) -> str:
    """A random-weight checkpoint of ``arch`` at its published size (seeded), written once."""
    import importlib

    import torch

    path = os.path.join(folder, f"{arch}.pth")
    if os.path.exists(path):
        return path
    torch.manual_seed(0)
    if arch == "ESRGAN":
        RRDBNet = importlib.import_module("spandrel.architectures.ESRGAN.__arch.RRDB").RRDBNet
        net = RRDBNet(in_nc=3, out_nc=3, num_filters=64, num_blocks=2, scale=4)
    elif arch == "Compact":
        from spandrel.architectures.Compact import Compact

        net = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4)
    else:
        from spandrel.architectures.SCUNet import SCUNet

        net = SCUNet(in_nc=3, config=[4] * 7, dim=64)
    sd = net.state_dict()
    if arch != "SCUNet":  # variance-preserving weights keep the output inside 0..1 (no trivial clamp)
        with torch.no_grad():
            for k, v in sd.items():
                if k.endswith("weight") and v.ndim == 4:
                    v.normal_(0, (2.0 / (v.shape[1] * v.shape[2] * v.shape[3])) ** 0.5 * 0.5)
    torch.save(sd, path)
    return path


def core_method(net, image, tile: int = 512, overlap: int = 32, scale: int = 4):
    """ComfyUI 0.3.64's ImageUpscaleWithModel + tiled_scale_multidim (2-D), re-implemented."""
    import itertools

    import torch

    s = image.movedim(-1, -3)
    b, c, h, w = s.shape
    output = torch.empty((b, c, h * scale, w * scale))
    for bi in range(b):
        x = s[bi:bi + 1]
        if h <= tile and w <= tile:
            output[bi:bi + 1] = net(x)
            continue
        out = torch.zeros((1, c, h * scale, w * scale))
        out_div = torch.zeros((1, c, h * scale, w * scale))
        positions = [range(0, n - overlap, tile - overlap) if n > tile else [0] for n in (h, w)]
        for it in itertools.product(*positions):
            x_in, up = x, []
            for d, n in enumerate((h, w)):
                pos = max(0, min(n - overlap, it[d]))
                x_in = x_in.narrow(d + 2, pos, min(tile, n - pos))
                up.append(pos * scale)
            ps = net(x_in)
            mask = torch.ones_like(ps)
            feather = overlap * scale
            for d in (2, 3):
                if feather >= mask.shape[d]:
                    continue
                for t in range(feather):
                    a = (t + 1) / feather
                    mask.narrow(d, t, 1).mul_(a)
                    mask.narrow(d, mask.shape[d] - 1 - t, 1).mul_(a)
            o = out.narrow(2, up[0], mask.shape[2]).narrow(3, up[1], mask.shape[3])
            o_d = out_div.narrow(2, up[0], mask.shape[2]).narrow(3, up[1], mask.shape[3])
            o.add_(ps * mask)
            o_d.add_(mask)
            del ps, mask
        output[bi:bi + 1] = out / out_div
        del out, out_div
    return torch.clamp(output.movedim(-3, -1), min=0, max=1.0)


def input_size(arch: str, mp_out: float):
    """Input ``(height, width)`` at 4:3 giving ``mp_out`` megapixels of output."""
    px_in = mp_out * 1e6 / SCALE[arch] ** 2
    w = int(round(math.sqrt(px_in * 4 / 3)))
    return int(round(px_in / w)), w


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_one(method: str, arch: str, mp_out: float, folder: str, runs: int = 2) -> dict:
    import torch

    import _pack

    _pack.load()
    from restorekit.scripts.inference import memory_utils as mu
    from restorekit.scripts.inference.files import load_spandrel
    from restorekit.scripts.inference.runner import run_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    handle = load_spandrel(write_model(arch, folder))
    h, w = input_size(arch, mp_out)
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 5, 1, 2)
    image = image.permute(0, 2, 3, 1).contiguous()
    base = _rss()
    info, seconds = {}, []
    with mu.MemoryMonitor(interval_s=0.002) as mon:
        for _run in range(runs):  # a first run on a fresh process, then the same job with the model loaded
            t0 = time.perf_counter()
            if method == "ours":
                out, rep = run_model(handle, image, device="cpu", progress=False)
                info = info or {"plan": rep.plan, "tile": rep.tile, "tiles": rep.tiles, "precision": rep.precision,
                                "layout": rep.layout, "measuring_s": rep.probe_seconds, "cache": rep.cache}
            else:
                with torch.inference_mode():
                    out = core_method(handle.module, image, scale=handle.scale)
                info = {"tile": 512, "precision": "fp32", "layout": "NCHW view", "measuring_s": 0.0, "plan": ""}
            seconds.append(time.perf_counter() - t0)
            assert out.shape == (1, h * handle.scale, w * handle.scale, 3), out.shape
            del out
    peak = max(mon.peak_ram_bytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": method, "arch": arch, "mp_out": mp_out, "h": h, "w": w, "seconds": seconds[0],
            "seconds2": seconds[-1],
            "peak_rss": peak, "rss_delta": max(0, peak - base), "cpu_s": time.process_time(), **info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--sizes", nargs="+", type=float, default=[0.5, 1, 4, 16], help="output megapixels")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="skip a size whose core run is predicted to take longer")
    ap.add_argument("--fresh", action="store_true",
                    help="one run per process: ours with an empty cost cache (cold), ours with the cache a "
                         "previous process filled (warm), and core, alternating")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "ARCH", "MP"), help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        m, a, mp = args.one
        print(json.dumps(run_one(m, a, float(mp), args.folder, runs=args.runs)))
        return 0

    folder = tempfile.mkdtemp(prefix="bench_core_")

    def sub(method, arch, mp, runs=2, cache=None):
        """One measurement in its own process; ``cache``: the cost-cache folder (None: a new empty one)."""
        cmd = [sys.executable, os.path.abspath(__file__), "--one", method, arch, str(mp), "--folder", folder,
               "--runs", str(runs)]
        env = dict(os.environ, RESTOREKIT_COST_CACHE_DIR=cache or tempfile.mkdtemp(prefix="cold_", dir=folder))
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(res.stderr[-3000:])
            raise SystemExit(f"{method} {arch} {mp} MP failed")
        return json.loads(res.stdout.strip().splitlines()[-1])

    if args.fresh:
        return fresh(args, sub)
    gib = 1 << 30
    rows, every = [], []
    print(f"cpu threads {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; random weights; ratio = ours / core")
    for arch in args.archs:
        last = None  # (mp, core seconds)
        for mp in args.sizes:
            if last is not None and last[1] * mp / last[0] > args.max_seconds:
                print(f"{arch} {mp:g} MP: skipped (core predicted {last[1] * mp / last[0]:.0f} s > {args.max_seconds:g} s)")
                continue
            t_ratio, t2_ratio, m_ratio, d_ratio, pairs = [], [], [], [], []
            for r in range(args.repeat):
                order = ("ours", "core") if r % 2 == 0 else ("core", "ours")
                res = {m: sub(m, arch, mp) for m in order}
                pairs.append(res)
                every.extend(res.values())
                o, c = res["ours"], res["core"]
                t_ratio.append(o["seconds"] / c["seconds"])
                t2_ratio.append(o["seconds2"] / c["seconds2"])
                m_ratio.append(o["peak_rss"] / c["peak_rss"])
                d_ratio.append(o["rss_delta"] / max(1, c["rss_delta"]))
                print(f"  {arch} {mp:g} MP ({o['w']}x{o['h']} in) rep {r}: ours {o['seconds']:.2f} s "
                      f"(measuring {o['measuring_s']:.2f} s; {o['precision']} {o['layout']}; {o['plan'][:120]}), "
                      f"core {c['seconds']:.2f} s; second run {o['seconds2']:.2f} vs {c['seconds2']:.2f} s; peak RSS {o['peak_rss'] / gib:.2f} vs {c['peak_rss'] / gib:.2f} GiB "
                      f"(+{o['rss_delta'] / gib:.2f} vs +{c['rss_delta'] / gib:.2f})", flush=True)
            last = (mp, statistics.median(p["core"]["seconds"] for p in pairs))
            rows.append((arch, mp, t_ratio, t2_ratio, m_ratio, d_ratio, pairs))
    print("\n| network | output | time ours/core, 1st run | 2nd run | peak RSS ours/core | +RSS ours/core | ours s (1st/2nd) | core s (1st/2nd) | ours ran |")
    print("|---|---|---|---|---|---|---|---|---|")

    span = _span

    for arch, mp, tr, tr2, mr, dr, pairs in rows:
        o = [p["ours"] for p in pairs]
        c = [p["core"] for p in pairs]
        ran = f"{o[0]['precision']} {o[0]['layout']}, " + ("whole image" if o[0]["tile"] is None else f"tile {o[0]['tile']}")
        print(f"| {arch} ×{SCALE[arch]} | {mp:g} MP | {span(tr)}× | {span(tr2)}× | {span(mr)}× | {span(dr)}× | "
              f"{span([x['seconds'] for x in o])} / {span([x['seconds2'] for x in o])} | "
              f"{span([x['seconds'] for x in c])} / {span([x['seconds2'] for x in c])} | {ran} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(every, f, indent=1)
    return 0


def fresh(args, sub) -> int:
    """``--fresh``: every process runs the job once.  Per repeat: ours with an empty cost cache (a
    first-ever run), ours with the cache an earlier, untimed process of ours filled (a restarted
    ComfyUI), and core, in alternating order.  Ratios are ours / core of the same repeat."""
    gib = 1 << 30
    print(f"--fresh: cpu threads {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; ratio = ours / core")
    rows = []
    for arch in args.archs:
        for mp in args.sizes:
            warm = tempfile.mkdtemp(prefix="warm_")
            sub("ours", arch, mp, runs=1, cache=warm)  # fills the cache (not timed)
            cold_r, warm_r, mem_r, loads = [], [], [], []
            for r in range(args.repeat):
                order = ("cold", "warm", "core") if r % 2 == 0 else ("core", "warm", "cold")
                res = {}
                for k in order:
                    res[k] = sub("core" if k == "core" else "ours", arch, mp, runs=1,
                                 cache=warm if k == "warm" else None)
                loads.append(os.getloadavg()[0])
                c = res["core"]["seconds"]
                cold_r.append(res["cold"]["seconds"] / c)
                warm_r.append(res["warm"]["seconds"] / c)
                mem_r.append(res["warm"]["peak_rss"] / res["core"]["peak_rss"])
                print(f"  {arch} {mp:g} MP rep {r}: cold {res['cold']['seconds']:.2f} s (measuring "
                      f"{res['cold']['measuring_s']:.2f} s; {res['cold']['precision']} {res['cold']['layout']}), "
                      f"warm {res['warm']['seconds']:.2f} s ({res['warm']['precision']} {res['warm']['layout']}; "
                      f"{res['warm']['plan'][:90]}), core {c:.2f} s; peak RSS warm {res['warm']['peak_rss'] / gib:.2f} "
                      f"vs core {res['core']['peak_rss'] / gib:.2f} GiB; load {loads[-1]:.1f}", flush=True)
            rows.append((arch, mp, cold_r, warm_r, mem_r, loads))
    print("\n| network | output | fresh process, empty cache: ours/core | fresh process, cache filled: ours/core "
          "| peak RSS (cache filled) ours/core | load |")
    print("|---|---|---|---|---|---|")
    for arch, mp, cr, wr, mr, ld in rows:
        print(f"| {arch} ×{SCALE[arch]} | {mp:g} MP | {_span(cr)}× | {_span(wr)}× | {_span(mr)}× | "
              f"{min(ld):.1f}–{max(ld):.1f} |")
    return 0


def _span(v):
    return f"{min(v):.2f}–{max(v):.2f}" if len(v) > 1 and max(v) - min(v) >= 0.005 else f"{v[0]:.2f}"


if __name__ == "__main__":
    sys.exit(main())

"""Model nodes vs the bare network: time and peak RSS on a 1 MP image on the CPU.

For each node (Real-ESRGAN, SCUNet, SFHformer, Noise-DA) a small random-weight model is written in
the official layout; then, each in a fresh subprocess (so allocator state does not leak between
measurements):

* bare: the network called once, untiled, on the ``[1, 3, H, W]`` tensor (padded to the size
  multiple beforehand), under ``torch.inference_mode``, in NCHW and in channels-last layout; the
  faster layout is the reference (a permuted ComfyUI IMAGE is channels-last, which mkldnn runs
  faster, so an NCHW-only baseline would flatter the node);
* node: the ComfyUI node's ``restore`` on the ``[1, H, W, 3]`` IMAGE, under ``torch.inference_mode``
  as ComfyUI's executor runs every node (file read, runner planning and probe, padding, clamping,
  output assembly included; module imports and the model were warmed by one call on a 64 px crop,
  as in a ComfyUI session that has run the workflow once: the pack keeps loaded models cached).
  ``--cold`` clears the model cache before every call, so the file read, network build, memory
  probe and the new module's first forward are timed too (a one-time cost per model load: about
  0.05-0.3 s, i.e. up to 30 % of a 0.7 s model in single runs, within the ±15 % run-to-run noise
  of a fresh process for larger ones).

Time is the best of ``--repeat`` runs (at least 5 for calls under 2 s); memory is the peak RSS above the process RSS before the call
(sampled every 5 ms; large allocations are served by mmap in both processes, see ``main``).  Goal: node overhead <= 10 % in time and in peak RSS.

    .venv/bin/python benchmarks/bench_models.py [--side 1024] [--repeat 2] [--threads 1] [--cold] [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = {
    # name: (node class, folder kind, file, node kwargs)
    "Real-ESRGAN (RRDB nf 8, 1 block)": ("RestoreKitRealESRGAN", "upscale_models", "RealESRGAN_x4plus.pth", {}),
    "SCUNet (dim 64, 1 block/stage)": ("RestoreKitSCUNet", "upscale_models", "scunet_color_real_psnr.pth", {}),
    "SFHformer (lol family, width 8)": ("RestoreKitSFHformer", "restorekit", "sfhformer_11211_lolv2s.pth", {}),
    "Noise-DA (width 8)": ("RestoreKitNoiseDA", "restorekit", "denoise.pth", {"accept_license": True}),
}


def write_models(folder: str) -> None:
    import torch
    from spandrel.architectures.SCUNet import SCUNet

    import _pack

    _pack.load()
    from _nets import rrdbnet_official  # tests/_nets.py (tests/ is on the path through _pack)
    from restorekit.scripts.archs import noise_da as nda
    from restorekit.scripts.archs import sfhformer as sfh

    up, rk = os.path.join(folder, "upscale_models"), os.path.join(folder, "restorekit")
    os.makedirs(up, exist_ok=True)
    os.makedirs(rk, exist_ok=True)
    sd = rrdbnet_official(nf=8, nb=1, gc=32, seed=0, centre_output=False)
    torch.save({"params_ema": sd}, os.path.join(up, "RealESRGAN_x4plus.pth"))
    torch.manual_seed(0)
    torch.save(SCUNet(in_nc=3, config=[1] * 7, dim=64).state_dict(), os.path.join(up, "scunet_color_real_psnr.pth"))
    net = sfh.SFHformer(sfh.SFHformerConfig("lol", 8, (1, 1, 1, 1, 1)))
    torch.save(sfh.official_layout(net), os.path.join(rk, "sfhformer_11211_lolv2s.pth"))
    torch.save(nda.official_layout(nda.RestorationNet(width=8)), os.path.join(rk, "denoise.pth"))


#: calls shorter than this get at least SHORT_REPEATS repeats: a sub-second model's first call in a
#: fresh process (page faults, oneDNN primitive creation) varies by ±15 %, as much as the goal
SHORT_CALL_S = 2.0
SHORT_REPEATS = 5


def _repeats(repeat: int, best):
    """``repeat`` iterations, extended to SHORT_REPEATS while ``best()`` (read after every
    iteration) is shorter than SHORT_CALL_S."""
    i = 0
    while i < repeat or (i < SHORT_REPEATS and best() < SHORT_CALL_S):
        yield i
        i += 1


def measure(name: str, mode: str, folder: str, side: int, repeat: int, warm: bool = False) -> dict:
    import torch
    import torch.nn.functional as F

    import _pack

    _pack.load()
    from restorekit.nodes import models as nodes
    from restorekit.scripts.inference import zoo
    from restorekit.scripts.inference.memory_utils import MemoryMonitor
    from restorekit.scripts.inference.runtime import get_runtime

    cls_name, kind, fname, kwargs = MODELS[name]
    rt = get_runtime()
    rt.register_model_folder("upscale_models", os.path.join(folder, "upscale_models"))
    rt.register_model_folder("restorekit", os.path.join(folder, "restorekit"))
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, side, side, 3, generator=g)
    best_t, best_mem = float("inf"), float("inf")
    if mode == "bare":
        path = os.path.join(folder, kind, fname)
        family = {"RestoreKitRealESRGAN": "realesrgan", "RestoreKitSCUNet": "scunet",
                  "RestoreKitSFHformer": "sfhformer", "RestoreKitNoiseDA": "noise_da"}[cls_name]
        handle, _ = zoo.load(family, path)
        m = handle.size_multiple
        x = image.permute(0, 3, 1, 2).contiguous()
        ph, pw = (-side) % m, (-side) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        # both memory layouts: a contiguous NCHW tensor and channels-last (what a permuted ComfyUI
        # IMAGE is); the faster one is the reference, so the node is compared with the best bare call
        layouts = {"NCHW": x, "channels_last": x.contiguous(memory_format=torch.channels_last)}
        per_layout = {}
        for lname, xin in layouts.items():
            t_best, m_best = float("inf"), float("inf")
            for _ in _repeats(repeat, lambda: t_best):
                with MemoryMonitor(collect=True) as mon:
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        y = handle.module(xin)
                    t_best = min(t_best, time.perf_counter() - t0)
                del y
                m_best = min(m_best, mon.ram_delta_bytes)
            per_layout[lname] = (t_best, m_best)
        best_layout = min(per_layout, key=lambda k: per_layout[k][0])
        best_t, best_mem = per_layout[best_layout]
        return {"seconds": best_t, "peak_rss_delta": best_mem, "layout": best_layout,
                "all": {k: list(v) for k, v in per_layout.items()}}
    else:
        node = getattr(nodes, cls_name)()
        # one-time costs of a ComfyUI session (imports of spandrel, cv2, the runner) stay outside
        with torch.inference_mode():
            node.restore(image[:, :64, :64], fname, "cpu", **kwargs)
        for _ in _repeats(repeat, lambda: best_t):
            if not warm:  # cold: file read, network build and the runner's memory probe are timed too
                zoo.clear_cache()
            with MemoryMonitor(collect=True) as mon:
                t0 = time.perf_counter()
                with torch.inference_mode():  # ComfyUI runs every node in inference mode
                    out, info = node.restore(image, fname, "cpu", **kwargs)
                best_t = min(best_t, time.perf_counter() - t0)
            del out
            best_mem = min(best_mem, mon.ram_delta_bytes)
        tile_line = [ln for ln in info.splitlines() if ln.startswith("tile:")]
        return {"seconds": best_t, "peak_rss_delta": best_mem, "tile": tile_line[0][6:] if tile_line else "?"}
    return {"seconds": best_t, "peak_rss_delta": best_mem}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cold", action="store_true",
                    help="reload the model before every call (the default keeps it cached: the steady "
                         "state of a ComfyUI session)")
    ap.add_argument("--only", default="", help="run only the models whose name contains this text")
    ap.add_argument("--one", nargs=3, metavar=("NAME", "MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one[0], args.one[1], args.one[2], args.side, args.repeat, not args.cold)))
        return
    # glibc: serve every allocation over 128 KiB by mmap, so freed tensors go back to the OS at once
    # and each call's peak RSS is its own live memory (otherwise memory kept in the heap from an
    # earlier call hides part of the next call's peak, by ±15 % between runs at 1 MP)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MALLOC_MMAP_THRESHOLD_="131072")
    with tempfile.TemporaryDirectory() as folder:
        write_models(folder)
        print(f"1 image {args.side}x{args.side} ({args.side * args.side / 1e6:.2f} MP), CPU, {args.threads} thread(s), "
              f"best of {args.repeat}, model cache {'cold' if args.cold else 'warm'}")
        print(f"{'model':36s} {'bare s':>8s} {'node s':>8s} {'time':>7s} {'bare MiB':>9s} {'node MiB':>9s} {'RSS':>7s}  goal  (node tiling)")
        all_ok = True
        for name in MODELS:
            if args.only and args.only.lower() not in name.lower():
                continue
            res = {}
            for mode in ("bare", "node"):
                cmd = [sys.executable, os.path.abspath(__file__), "--side", str(args.side), "--repeat",
                       str(args.repeat), "--threads", str(args.threads), "--one", name, mode, folder]
                if args.cold:
                    cmd.insert(-4, "--cold")
                outp = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if outp.returncode != 0:
                    print(outp.stderr[-2000:])
                    raise SystemExit(f"{name} {mode} failed")
                res[mode] = json.loads(outp.stdout.strip().splitlines()[-1])
            tr = res["node"]["seconds"] / res["bare"]["seconds"]
            mr = res["node"]["peak_rss_delta"] / max(1, res["bare"]["peak_rss_delta"])
            ok = tr <= 1.10 and mr <= 1.10
            all_ok &= ok
            print(f"{name:36s} {res['bare']['seconds']:8.2f} {res['node']['seconds']:8.2f} {tr:7.3f} "
                  f"{res['bare']['peak_rss_delta'] / 2**20:9.1f} {res['node']['peak_rss_delta'] / 2**20:9.1f} {mr:7.3f}  "
                  f"{'met' if ok else 'NOT met'}  (node: {res['node'].get('tile', '?')}; bare: {res['bare'].get('layout')} "
                  f"{json.dumps(res['bare'].get('all'))})")
        print("overhead <= 10 % (time and peak RSS):", "met" if all_ok else "NOT met")


if __name__ == "__main__":
    main()

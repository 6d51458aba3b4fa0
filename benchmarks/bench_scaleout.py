"""Scale-out: the same image set restored by the local loop and by the Ray engine with 1, 2 and 4 actors.

Reported per configuration (median and min-max over ``--repeats`` runs):

* ``steady images/s``: files finished per second once every actor has started (from the A-th
  finished file to the last, by the times the actors record), the rate a long archive runs at;
* ``end-to-end images/s``: files / wall time of ``ray_engine.run_batch`` (actors starting, importing
  torch and loading the models included; the local Ray's own start is reported once, separately);
* ``efficiency``: steady images/s against ideal scaling of the 1-actor run, ``A x rate(1)`` for A
  actors up to the CPUs Ray was given and flat beyond (4 actors on 2 CPUs cannot beat 2 actors);
* ``peak RSS per actor``: the largest ``ru_maxrss`` an actor reported (torch, the models, one image);
* ``overhead/image``: what the engine adds per file against the local loop on the same per-actor
  thread count, both in steady state: ``1 / rate(1 actor) - 1 / rate(local loop)`` (Ray start and
  actor start-up are fixed costs per job, printed apart).

The reference is the local engine (``batch.run_batch``) in a fresh process with one actor's thread
settings (1 torch/OpenCV/BLAS thread = one actor's CPU share), measured in the same run and
interleaved with the Ray runs, so the ratios compare between machines.  Every image goes through
the U-Net (``--strategy deep_learning``, the path a GPU cluster would run) unless told otherwise.

Run (the machine is shared: niced, repeated, load average printed)::

    nice -n 10 python benchmarks/bench_scaleout.py                 # 160 images, 1/2/4 actors, 3 repeats
    nice -n 10 python benchmarks/bench_scaleout.py --images 32 --actors 1 2 4 8 --num-cpus 8 --json out.json
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pack  # noqa: E402

_pack.load()
from restorekit.hybrid.engine import HybridRestorer, Thresholds  # noqa: E402
from restorekit.hybrid.tools import batch, ray_engine  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(REPO, "examples", "images")
SOURCES = ["hybrid_rocket_severe.png", "hybrid_chelsea_severe.png", "hybrid_rocket_moderate.png",
           "hybrid_chelsea_light.png"]  # 384x256 RGB each


def make_set(folder, n):
    """``n`` files cycling through the four hybrid example images (same cost per file)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        shutil.copy(os.path.join(IMAGES, SOURCES[i % len(SOURCES)]), os.path.join(folder, f"img{i:04d}.png"))
    return folder


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


#: what Ray sets for a 1-CPU actor (and the actor sets for torch and OpenCV): one thread everywhere
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run_local(src, out, strategy):
    """The local loop in a fresh process with one actor's thread settings (the reference)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--local-only", src, out, strategy]
    done = subprocess.run(cmd, env=dict(os.environ, **ONE_THREAD_ENV), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _local_only(src, out, strategy):
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    restorer = HybridRestorer(thresholds=Thresholds())
    t0 = time.perf_counter()
    restorer.predictor, restorer.unet  # noqa: B018 - load as an actor does at start
    load = time.perf_counter() - t0
    done = []
    t0 = time.perf_counter()
    rep = batch.run_batch([src], batch.RestoreProcessor(restorer, strategy), batch.BatchOptions(output_dir=out),
                          progress=False, on_row=lambda r: done.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    assert rep["summary"]["counts"]["failed"] == 0, rep["summary"]
    # the part of an image's cost a GPU would take over: the U-Net's run (runner included) on each source
    from restorekit.hybrid.unet import run as unet_run
    from restorekit.scripts import image_io

    unet_times = []
    for name in SOURCES * 3:
        rgb = image_io.read_image(os.path.join(IMAGES, name)).pixels[..., :3]
        t0 = time.perf_counter()
        unet_run(restorer.unet, rgb)
        unet_times.append(time.perf_counter() - t0)
    # steady state as for the actors: from the first finished file to the last
    print(json.dumps({"seconds": wall, "load_seconds": load, "unet_seconds": statistics.median(unet_times),
                      "steady_images_per_s": (len(done) - 1) / (done[-1] - done[0])}))


def run_ray(src, out, strategy, actors, num_cpus):
    """One Ray run; every actor gets one CPU (one thread), a fraction when there are more actors than CPUs."""
    spec = ray_engine.restore_spec(Thresholds(), strategy=strategy)
    opts = ray_engine.RayOptions(workers=actors, cpus_per_worker=min(1.0, num_cpus / actors))
    t0, t0_epoch = time.perf_counter(), time.time()
    rep = ray_engine.run_batch([src], spec, batch.BatchOptions(output_dir=out), opts)
    wall = time.perf_counter() - t0
    assert rep["summary"]["counts"]["failed"] == 0, rep["summary"]
    seen = rep["engine"]["workers_seen"]
    arrivals = sorted(r["finished_at"] - t0_epoch for r in rep["files"])  # when each file was done
    k = min(len(seen), len(arrivals) - 1)  # steady state: from the file by which every actor had started
    return {"seconds": wall, "workers_seen": len(seen), "cpus_per_worker": rep["engine"]["cpus_per_worker"],
            "first_row_seconds": arrivals[0],
            "steady_images_per_s": (len(arrivals) - k) / (arrivals[-1] - arrivals[k - 1]),
            "startup_seconds": max(w["init_seconds"] for w in seen),
            "peak_rss_mb": max(w["peak_rss_bytes"] for w in seen) / 2 ** 20,
            "ram_share": seen[0]["ram_share"]}


class Copy(batch.Processor):
    """A processor that does nothing but hand the pixels back: what is left is the engine's own cost."""

    outputs = ("",)
    done_label = "restored"

    def __call__(self, image):
        return batch.Result({"": image.pixels}, {}, "copied", changed=True)


def engine_overhead(work, n, num_cpus):
    """Seconds per file of the local loop and of one Ray actor with the no-op :class:`Copy` on ``n``
    16x16 PNGs (steady state): their difference is the engine's cost per file."""
    import numpy as np
    from PIL import Image

    src = os.path.join(work, "tiny")
    os.makedirs(src)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(os.path.join(src, f"t{i:05d}.png"))
    done = []
    batch.run_batch([src], Copy(), batch.BatchOptions(output_dir=os.path.join(work, "tiny_local")), progress=False,
                    on_row=lambda r: done.append(time.perf_counter()))
    local = (done[-1] - done[0]) / (len(done) - 1)
    spec = ray_engine.WorkerSpec(Copy)  # defined in __main__: travels to the actor by value
    rep = ray_engine.run_batch([src], spec, batch.BatchOptions(output_dir=os.path.join(work, "tiny_ray")),
                               ray_engine.RayOptions(workers=1, cpus_per_worker=min(1.0, num_cpus)))
    t = sorted(r["finished_at"] for r in rep["files"])
    return local, (t[-1] - t[0]) / (len(t) - 1)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--local-only"]:
        return _local_only(*argv[1:4])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    ap.add_argument("--strategy", default="deep_learning")
    ap.add_argument("--overhead-files", type=int, default=400, help="tiny files for the no-op overhead run")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="rk-scaleout-")
    load_before = os.getloadavg()
    results = {"images": args.images, "strategy": args.strategy, "num_cpus": args.num_cpus,
               "cpu_count": os.cpu_count(), "loadavg_before": load_before}
    try:
        src = make_set(os.path.join(work, "in"), args.images)
        t0 = time.perf_counter()
        with ray_engine.ray_session(ray_engine.RayOptions(num_cpus=args.num_cpus)) as session:
            results["ray_start_seconds"] = round(time.perf_counter() - t0, 2)
            results["session"] = session
            over = [engine_overhead(os.path.join(work, f"over{r}"), args.overhead_files, args.num_cpus)
                    for r in range(args.repeats)]
            results["noop_local_s_per_file"] = spread([o[0] for o in over])
            results["noop_ray_s_per_file"] = spread([o[1] for o in over])
            results["noop_overhead_s_per_file"] = spread([o[1] - o[0] for o in over])
            local, ray_runs = [], {a: [] for a in args.actors}
            for r in range(args.repeats):  # interleaved, so a busy spell of the machine hits every configuration
                local.append(run_local(src, os.path.join(work, f"local{r}"), args.strategy))
                for a in args.actors:
                    ray_runs[a].append(run_ray(src, os.path.join(work, f"ray{a}_{r}"), args.strategy, a,
                                               args.num_cpus))
                    shutil.rmtree(os.path.join(work, f"ray{a}_{r}"), ignore_errors=True)
        results["local"] = {k: spread([x[k] for x in local]) for k in ("seconds", "load_seconds", "unet_seconds",
                                                                      "steady_images_per_s")}
        for a, runs in ray_runs.items():
            results[f"ray_{a}"] = {k: spread([x[k] for x in runs]) for k in
                                   ("seconds", "steady_images_per_s", "first_row_seconds", "startup_seconds",
                                    "peak_rss_mb")}
            results[f"ray_{a}"]["cpus_per_worker"] = runs[0]["cpus_per_worker"]
            results[f"ray_{a}"]["ram_share"] = runs[0]["ram_share"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_after"] = os.getloadavg()
    report(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def report(res, args):
    n = res["images"]
    t_local = res["local"]["seconds"]["median"]
    print(f"{n} images ({', '.join(SOURCES)} cycled, 384x256), strategy {res['strategy']}; local Ray with "
          f"{res['num_cpus']} CPUs on a {res['cpu_count']}-core machine; load average before "
          f"{res['loadavg_before'][0]:.1f}, after {res['loadavg_after'][0]:.1f}; {args.repeats} runs each")
    lo = res["local"]["steady_images_per_s"]
    local_rate = lo["median"]
    print(f"local loop, 1 thread: steady {local_rate:.3f} images/s ({lo['min']:.3f}-{lo['max']:.3f}; "
          f"{1 / local_rate:.3f} s/image), whole loop {n / t_local:.3f} images/s, model load "
          f"{res['local']['load_seconds']['max']:.2f} s")
    unet_s = res["local"]["unet_seconds"]["median"]
    print(f"  of an image's {1 / local_rate:.3f} s, the U-Net's run (what a GPU takes over) is {unet_s:.3f} s; "
          f"the other {max(0.0, 1 / local_rate - unet_s):.3f} s (decode, damage analysis, forest, PNG encode) "
          f"stay on the CPU")
    print(f"local Ray start: {res['ray_start_seconds']:.1f} s (once per job)")
    one = res.get("ray_1")
    rate1 = one["steady_images_per_s"]["median"] if one else None
    print(f"{'actors':>6} {'CPU/actor':>9} {'RAM share':>9} {'steady images/s (min-max)':>26} {'efficiency':>10} "
          f"{'end-to-end images/s':>19} {'first row s':>11} {'peak RSS/actor MiB':>18}")
    for a in args.actors:
        r = res[f"ray_{a}"]
        st = r["steady_images_per_s"]
        ideal = rate1 * min(a, res["num_cpus"]) if rate1 else None
        eff = f"{st['median'] / ideal:.2f}" if ideal else "-"
        print(f"{a:>6} {r['cpus_per_worker']:>9.2f} {r['ram_share']:>9.3f} {st['median']:>10.3f} "
              f"({st['min']:.3f}-{st['max']:.3f}) {eff:>10} {n / r['seconds']['median']:>19.3f} "
              f"{r['first_row_seconds']['median']:>11.1f} {r['peak_rss_mb']['max']:>18.0f}")
    if one:
        over = 1.0 / rate1 - 1.0 / local_rate
        res["overhead_per_image_s"] = over
        print(f"engine overhead per image against the local loop (1 actor, steady state): {over * 1000:.0f} ms "
              f"({over * local_rate * 100:.0f}% of a {1 / local_rate:.3f} s image); fixed per job: Ray start "
              f"{res['ray_start_seconds']:.1f} s, first row after {one['first_row_seconds']['median']:.1f} s "
              f"(actor process, imports, models {one['startup_seconds']['median']:.1f} s)")
    print("efficiency = steady images/s / (min(actors, CPUs) x steady images/s of 1 actor)")
    lo, ra, ov = res["noop_local_s_per_file"], res["noop_ray_s_per_file"], res["noop_overhead_s_per_file"]
    print(f"engine cost per file, no-op processor on {args.overhead_files} 16x16 PNGs (read + write included): "
          f"local {lo['median'] * 1000:.1f} ms, 1 Ray actor {ra['median'] * 1000:.1f} ms -> overhead "
          f"{ov['median'] * 1000:.1f} ms/file ({ov['min'] * 1000:.1f}-{ov['max'] * 1000:.1f})")


if __name__ == "__main__":
    main()

"""Hybrid restorer speed: U-Net seconds per megapixel on the CPU and damage-analysis ms per megapixel.

Goals (issue 6): U-Net ≤ 1 s/MP on CPU; analysis ≤ 50 ms/MP.  Also printed: a whole ``auto``
restore (analysis, the U-Net-residual quality estimate and the chosen method), whose U-Net run is
the estimate's own when the image is routed to the U-Net.  The reference in the same run is a
plain 5×5 Gaussian blur (cv2) of the same image, so the printed ratios can be compared between
machines; the absolute numbers are what the goals are stated in.
Run: ``nice -n 10 .venv/bin/python benchmarks/bench_hybrid.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _pack  # noqa: E402

_pack.load()
best_of = _pack.best_of
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from restorekit.hybrid import analysis, unet  # noqa: E402
from restorekit.hybrid.tools import damage  # noqa: E402


def main():
    img = damage.load_source("retina", 1024)[:1024, :1024]
    img = np.ascontiguousarray(img)
    mp = img.shape[0] * img.shape[1] / 1e6
    ref = best_of(lambda: cv2.GaussianBlur(img, (5, 5), 1.0), 5)[0]
    ta = best_of(lambda: analysis.analyze(img), 5)[0]
    try:
        h = unet.load_shipped()
    except Exception as exc:  # no shipped weights: time an untrained net of the same size
        print(f"(shipped U-Net not loadable: {exc}; timing an untrained base-16 net)")
        h = unet.handle_from_module(unet.RestoreUNet(16))
    unet.run(h, img[:128, :128], device="cpu")
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        tu = best_of(lambda: unet.run(h, img, device="cpu"), 2)[0]
        print(f"U-Net ({threads} thread(s)): {tu / mp:.3f} s/MP  ({tu / ref:.0f}x a 5x5 Gaussian blur) "
              f"goal <= 1 s/MP: {'met' if tu / mp <= 1 else 'MISSED'}")
    # the fast path (issue 18 item 3): auto (bf16 copy where native and within unet.REDUCED_TOLERANCE)
    # against fp32 (the path before it), alternating, same run
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    unet.run(h, img, device="cpu", precision="fp32")
    ratios = []
    for r in range(4):
        order = ("auto", "fp32") if r % 2 == 0 else ("fp32", "auto")
        t = {p: best_of(lambda: unet.run(h, img, device="cpu", precision=p), 1) for p in order}
        ratios.append(t["auto"][0] / t["fp32"][0])
    (out, rep), out_fp32 = t["auto"][1], t["fp32"][1][0]
    d = np.abs(out - out_fp32)
    print(f"U-Net fast path: auto ran {rep.precision} {rep.layout}; time auto/fp32 {min(ratios):.2f}–{max(ratios):.2f}x; "
          f"|diff| mean {d.mean():.1e}, max {d.max():.1e} (bound mean {unet.REDUCED_TOLERANCE[0]:.0e}, "
          f"p99.9 {unet.REDUCED_TOLERANCE[1]:.0e}); load {os.getloadavg()[0]:.1f}")
    from restorekit.hybrid.engine import HybridRestorer

    r = HybridRestorer(unet=h, device="cpu")
    method = r.restore(img, "auto")[1]["method"]  # also warms the predictor and the runner's probe
    tr = best_of(lambda: r.restore(img, "auto"), 2)[0]
    print(f"auto restore ({torch.get_num_threads()} thread(s)): {tr / mp:.3f} s/MP (routed to {method})")
    print(f"analysis: {1000 * ta / mp:.1f} ms/MP ({ta / ref:.1f}x the blur) goal <= 50 ms/MP: "
          f"{'met' if 1000 * ta / mp <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()

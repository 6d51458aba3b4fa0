"""Training and evaluation of the damage-mask detector (:mod:`hybrid.damage_mask`).

Data: random crops of the ``train`` sources of :mod:`.sources` (variants of one picture count once),
damaged by recipe v2 of :mod:`.damage` at a random level; the target is the generator's true mask
(``info["mask"]``: scratches, cracks, dust, patches).  So that thin lines of the scene are *not*
learnt as damage, half of the clean crops first get 1–3 :func:`.damage_marks.scene_lines` (wires,
twigs; softened like the rest of the scene), 15 % are made grey (old black-and-white photos) and
20 % get another plausible tone curve (:func:`.damage.vary_tone`).  Flips and 90° rotations.

Loss: binary cross-entropy on the logits with ``pos_weight`` (damaged pixels are rare).  Adam,
cosine learning-rate decay, seeded.  Every ``eval_every`` steps the detector is scored on fixed
validation pairs; the best step (F1 at its best threshold) is kept, and its threshold is stored in
the weights file as ``meta.threshold``.

Score (:func:`tolerant_counts`): pixel precision and recall with a 2 px tolerance — a predicted
pixel counts as correct when a true damaged pixel lies within a disk of radius 2 px, and a true
pixel as found when a predicted one does — summed over all images of a split (micro average).
The test splits (held-out sources, held-out family) are scored once at the end and never used to
choose anything.

Run: ``restorekit retrain`` (everything) or ``python -m restorekit.hybrid.tools.train_damage_mask``
(this model only; ``--quick`` for a smoke run).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from . import damage, damage_marks, sources

RELPATH = "hybrid/damage_mask.safetensors"
#: the shipped detector's settings; ``steps`` sets the cosine schedule, ``stop_step`` (None = steps)
#: where training ends (the shipped run ended at 1500 of 3000 on its time budget)
DEFAULTS = dict(widths=(16, 32, 48), crop=128, batch=12, steps=3000, stop_step=None, lr=2e-3, pos_weight=3.0,
                seed=0, sides=(256, 512), scene_lines=0.5, grey=0.15, tone=0.2, eval_every=500,
                val_per_level=1, val_side=256, threads=2)
QUICK = dict(widths=(8, 8, 8), crop=48, batch=2, steps=6, eval_every=3, sides=(96,), val_side=64)
TOLERANCE_PX = 2
THRESHOLDS = tuple(np.round(np.arange(0.1, 0.951, 0.05), 2))


# --- scoring --------------------------------------------------------------------------------------------
def _disk(r: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def tolerant_counts(pred: np.ndarray, true: np.ndarray, tol: int = TOLERANCE_PX) -> np.ndarray:
    """``[correct predicted px, predicted px, found true px, true px]`` with a ``tol``-px tolerance."""
    import cv2

    pred = pred.astype(bool)
    true = true.astype(bool)
    k = _disk(tol)
    dil_t = cv2.dilate(true.astype(np.uint8), k) > 0
    dil_p = cv2.dilate(pred.astype(np.uint8), k) > 0
    return np.array([np.sum(pred & dil_t), pred.sum(), np.sum(true & dil_p), true.sum()], np.int64)


def precision_recall(counts: np.ndarray) -> Dict[str, float]:
    """Precision, recall and F1 from summed :func:`tolerant_counts` (precision 1 when nothing was
    predicted, recall 1 when nothing was there)."""
    p = counts[0] / counts[1] if counts[1] else 1.0
    r = counts[2] / counts[3] if counts[3] else 1.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": float(p), "recall": float(r), "f1": float(f),
            "predicted_px": int(counts[1]), "true_px": int(counts[3])}


def eval_pairs(split: str, per_level: int = 1, max_side: int = 256, base_seed: int = 11,
               limit: Optional[int] = None) -> List[Dict[str, object]]:
    """Fixed damaged images of a registry split with their true masks (recipe v2)."""
    return sources.make_pairs(split, per_level=per_level, max_side=max_side, base_seed=base_seed,
                              limit=limit)


def score_probabilities(probs: List[np.ndarray], pairs: List[Dict[str, object]],
                        thresholds=THRESHOLDS) -> Dict[float, Dict[str, float]]:
    """Precision / recall / F1 at each threshold over all pairs."""
    out = {}
    for t in thresholds:
        c = sum(tolerant_counts(p > t, q["params"]["mask"]) for p, q in zip(probs, pairs))
        out[float(t)] = precision_recall(c)
    return out


def score_masks(masks: List[np.ndarray], pairs: List[Dict[str, object]], by: Optional[str] = None) -> Dict[str, object]:
    """Precision / recall of fixed masks, overall and (``by="level"``/``"family"``) per group."""
    total = sum(tolerant_counts(m, q["params"]["mask"]) for m, q in zip(masks, pairs))
    res: Dict[str, object] = {"all": precision_recall(total)}
    if by == "level":
        for lv in damage.LEVEL_NAMES:
            c = [tolerant_counts(m, q["params"]["mask"]) for m, q in zip(masks, pairs) if q["level"] == lv]
            if c:
                res[lv] = precision_recall(sum(c))
    if by == "kind":
        for kind in damage.MARK_KINDS:
            n = np.zeros(4, np.int64)
            for m, q in zip(masks, pairs):
                t = q["params"]["mask_kinds"][kind]
                n += tolerant_counts(m, t)
            res[kind] = {"recall": float(n[2] / n[3]) if n[3] else float("nan"), "true_px": int(n[3])}
    return res


def best_threshold(table: Dict[float, Dict[str, float]], min_precision: float = 0.8) -> float:
    """The threshold with the highest recall among those with precision ≥ ``min_precision``; when
    none reaches it, the one with the highest F1."""
    ok = [t for t, v in table.items() if v["precision"] >= min_precision]
    if ok:
        return max(ok, key=lambda t: (table[t]["recall"], table[t]["f1"]))
    return max(table, key=lambda t: table[t]["f1"])


# --- training ---------------------------------------------------------------------------------------------
def _augment(rng: np.random.Generator, *arrs):
    k = int(rng.integers(0, 4))
    fl = rng.random() < 0.5
    out = []
    for a in arrs:
        if fl:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(np.rot90(a, k)))
    return out


def sample_batch(sampler: sources.CropSampler, rng: np.random.Generator, cfg: Dict[str, object]):
    """``(x [B,H,W,3] float32, y [B,H,W] float32)`` of damaged crops and their true masks."""
    xs, ys = [], []
    for _ in range(int(cfg["batch"])):
        c, _ = sampler.crop(rng, int(cfg["crop"]))
        if c.shape[0] < cfg["crop"] or c.shape[1] < cfg["crop"]:
            c = np.pad(c, ((0, cfg["crop"] - c.shape[0]), (0, cfg["crop"] - c.shape[1]), (0, 0)), mode="reflect")
        if rng.random() < cfg["grey"]:
            c = np.repeat(c.mean(-1, keepdims=True), 3, axis=-1)
        if rng.random() < cfg["tone"]:
            c = damage.vary_tone(c, rng)
        if rng.random() < cfg["scene_lines"]:
            c = damage_marks.scene_lines(c, rng, int(rng.integers(1, 4)))
        lv = damage.LEVEL_NAMES[int(rng.integers(0, 3))]
        d, info = damage.damage_image(c, lv, int(rng.integers(0, 2**31 - 1)))
        d, m = _augment(rng, d, info["mask"].astype(np.float32))
        xs.append(d)
        ys.append(m)
    return np.stack(xs), np.stack(ys)


def predict_all(net, pairs, device: str = "cpu") -> List[np.ndarray]:
    from ..damage_mask import cnn_probability

    net.eval()
    return [cnn_probability(p["damaged"], net, device=device) for p in pairs]


def train(out_relpath: Optional[str] = RELPATH, *, models_dir: Optional[str] = None, quick: bool = False,
          log: Callable[[str], None] = print, max_minutes: Optional[float] = None,
          report_tests: bool = True, **overrides) -> Dict[str, object]:
    """Train the CNN detector, choose its threshold on validation, save it (with sha256) and score
    it — and the classical detector — on the validation and both test splits.  Returns a summary
    (also written beside the weights as ``damage_mask_training.json``)."""
    import torch
    import torch.nn.functional as F

    from ..damage_mask import build_net
    from ...scripts import shipped_models

    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(QUICK)
    cfg.update(overrides)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(int(cfg["threads"]))
    rng = np.random.default_rng(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    t0 = time.perf_counter()
    fams = [f for f in sources.FAMILIES if sources.available(f)]
    missing = [f for f in sources.FAMILIES if f not in fams]
    if missing:
        log(f"[damage-mask] source families not installed (pip install 'comfyui-restorekit[data]'): {missing}")
    train_names = sources.split_names("train")
    if quick:
        train_names = train_names[:3]
    sampler = sources.CropSampler(names=train_names, sides=cfg["sides"], min_side=int(cfg["crop"]) // 2)
    val = eval_pairs("val", per_level=cfg["val_per_level"], max_side=cfg["val_side"],
                     limit=3 if quick else None)
    log(f"[damage-mask] {len(train_names)} training sources ({len(sampler.groups)} picture groups), "
        f"{len(val)} validation images; loaded in {time.perf_counter() - t0:.0f} s")

    net = build_net(cfg["widths"])
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    steps = int(cfg["steps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    pos_weight = torch.tensor([float(cfg["pos_weight"])])
    best = {"f1": -1.0}
    best_state = None
    history = []
    stopped = "max steps" if not cfg["stop_step"] else f"stop_step {cfg['stop_step']}"
    step = 0
    last = min(steps, int(cfg["stop_step"] or steps))
    for step in range(1, last + 1):
        net.train()
        x, y = sample_batch(sampler, rng, cfg)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        yt = torch.from_numpy(y)[:, None]
        loss = F.binary_cross_entropy_with_logits(net(xt), yt, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg["eval_every"] == 0 or step == last:
            table = score_probabilities(predict_all(net, val), val)
            thr = best_threshold(table)
            ev = table[thr]
            history.append({"step": step, "loss": float(loss.detach()), "threshold": thr, **ev,
                            "seconds": time.perf_counter() - t0})
            log(f"[damage-mask] step {step}: loss {float(loss.detach()):.4f}; val at {thr:.2f}: precision "
                f"{ev['precision']:.3f} recall {ev['recall']:.3f} F1 {ev['f1']:.3f} ({time.perf_counter() - t0:.0f} s)")
            if ev["f1"] > best["f1"]:
                best = {"step": step, "threshold": thr, **ev}
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if max_minutes and time.perf_counter() - t0 > max_minutes * 60:
                stopped = f"time budget {max_minutes} min"
                break
    net.load_state_dict(best_state)
    net.eval()
    train_seconds = time.perf_counter() - t0
    summary: Dict[str, object] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "steps": step, "stopped": stopped, "best": best, "train_seconds": train_seconds,
        "train_sources": len(train_names), "families_installed": fams, "history": history,
        "parameters": int(sum(p.numel() for p in net.parameters()))}
    if out_relpath:
        sd = dict(net.state_dict())
        sd["meta.threshold"] = torch.tensor([best["threshold"]], dtype=torch.float32)
        kw = {"models_dir": models_dir} if models_dir else {}
        summary["sha256"] = shipped_models.save_torch_weights(sd, out_relpath, **kw)
    summary["scores"] = evaluate(net, best["threshold"], quick=quick, log=log, tests=report_tests)
    if out_relpath:
        kw = {"models_dir": models_dir} if models_dir else {}
        path = shipped_models.model_path(out_relpath, **kw)
        with open(os.path.splitext(path)[0] + "_training.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    torch.set_num_threads(threads_before)
    summary["net"] = net
    return summary


def evaluate(net, threshold: float, quick: bool = False, log: Callable[[str], None] = print,
             tests: bool = True, classical: bool = True) -> Dict[str, object]:
    """Score the CNN at ``threshold`` and the classical detector (its threshold chosen on val) on the
    validation split and — when ``tests`` — the held-out sources (``test``) and held-out family
    (``test_family``), by level and by kind of mark."""
    from ..damage_mask import classical_mask

    splits = ["val"] + (["test", "test_family"] if tests else [])
    out: Dict[str, object] = {"cnn_threshold": threshold}
    # classical threshold: chosen on val only
    val = eval_pairs("val", max_side=64 if quick else 256, limit=3 if quick else None)
    cl_table = {}
    for t in (6.0, 10.0, 14.0, 20.0, 28.0, 40.0):
        c = sum(tolerant_counts(classical_mask(p["damaged"], t), p["params"]["mask"]) for p in val)
        cl_table[t] = precision_recall(c)
    cl_thr = best_threshold(cl_table) if classical else None
    out["classical_threshold"] = cl_thr
    out["classical_val_table"] = {str(k): v for k, v in cl_table.items()}
    for split in splits:
        pairs = eval_pairs(split, max_side=64 if quick else 256, limit=3 if quick else None)
        if not pairs:
            continue
        t0 = time.perf_counter()
        probs = predict_all(net, pairs)
        cnn = [p > threshold for p in probs]
        res = {"n_images": len(pairs), "n_sources": len({p["source"] for p in pairs}),
               "cnn": score_masks(cnn, pairs, by="level"), "cnn_by_kind": score_masks(cnn, pairs, by="kind"),
               "cnn_seconds": time.perf_counter() - t0}
        if classical:
            res["classical"] = score_masks([classical_mask(p["damaged"], cl_thr) for p in pairs], pairs, by="level")
        out[split] = res
        a = res["cnn"]["all"]
        log(f"[damage-mask] {split}: CNN precision {a['precision']:.3f} recall {a['recall']:.3f}"
            + (f"; classical precision {res['classical']['all']['precision']:.3f} recall "
               f"{res['classical']['all']['recall']:.3f}" if classical else ""))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="train the damage-mask detector")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (do not ship its output)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--stop-step", type=int, default=None, help="end training here (schedule still set by --steps)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--models-dir", default=None, help="write here instead of the pack's models/")
    a = ap.parse_args(argv)
    kw = {"steps": a.steps} if a.steps else {}
    if a.stop_step:
        kw["stop_step"] = a.stop_step
    res = train(models_dir=a.models_dir, quick=a.quick, max_minutes=a.max_minutes, **kw)
    print(json.dumps({k: v for k, v in res.items() if k not in ("net", "history")}, indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

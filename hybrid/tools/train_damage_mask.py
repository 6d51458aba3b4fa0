"""Training and evaluation of the damage-mask detector (:mod:`hybrid.damage_mask`).

Data: random crops of the ``train`` sources of :mod:`.sources` (variants of one picture count once),
damaged by recipe v2 of :mod:`.damage` at a random level; the target is the generator's true mask
(``info["mask"]``: scratches, cracks, dust, patches).  So that thin lines of the scene are *not*
learnt as damage, 50–70 % of the clean crops first get 1–3 :func:`.damage_marks.scene_lines` (wires,
twigs, brick / tile joints, hatching; softened like the rest of the scene), 15 % are made grey (old black-and-white photos) and
20 % get another plausible tone curve (:func:`.damage.vary_tone`).  Flips and 90° rotations.

Loss: binary cross-entropy on the logits with ``pos_weight`` (damaged pixels are rare).  Adam,
cosine learning-rate decay, seeded.  Every ``eval_every`` steps the detector is scored on fixed
validation pairs; the best step (F1 at its best threshold) is kept, and its threshold is stored in
the weights file as ``meta.threshold`` — the threshold of the ``plain`` mask that the inpaint gate and
the ``ml_guided`` forests were trained on.  The *detector's own* operating point, ``meta.mask_threshold``
(what :func:`..damage_mask.detect` and the Damage Analysis node's detector mask use), is chosen after
training on the same validation pairs by :func:`balanced_threshold`: the target is recall and precision
both ≥ 0.8, so the threshold where the smaller of the two is largest, not the one that meets precision
0.8 exactly on validation and falls below it on new images (:func:`rechoose_mask_threshold` redoes it
for a shipped file).

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
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import damage, damage_marks, sources

RELPATH = "hybrid/damage_mask.safetensors"
#: the shipped detector's settings.  ``stages``: ``(schedule steps, stop after, learning rate)`` — each
#: stage is a fresh Adam with a cosine decay over its schedule, starting from the best weights so far,
#: seeded with ``seed + stage index``, with its own share of crops given natural scene lines and their
#: kinds: stage 0 runs 1500 steps of a 3000-step schedule at 2e-3 with wires and twigs in half the
#: crops (the first run was cut there by its time budget), stage 1 fine-tunes 500 steps of a 1000-step
#: schedule at 5e-4 (cut there for time too) with every kind (also brick / tile joints and hatching) in
#: 70 % of the crops.
DEFAULTS = dict(widths=(16, 32, 48), crop=128, batch=12,
                stages=((3000, 1500, 2e-3, 0.5, ("wire", "twig")),
                        (1000, 500, 5e-4, 0.7, damage_marks.SCENE_LINE_KINDS),
                        # fine-tuning at a low rate (the validation F1 was still rising at the end of stage 1)
                        (2000, None, 2.5e-4, 0.7, damage_marks.SCENE_LINE_KINDS)),
                pos_weight=3.0, seed=0, sides=(256, 512), grey=0.15, tone=0.2,
                eval_every=500, val_per_level=1, val_side=256, threads=2)
QUICK = dict(widths=(8, 8, 8), crop=48, batch=2, stages=((6, None, 2e-3, 0.5, damage_marks.SCENE_LINE_KINDS),),
             eval_every=3, sides=(96,), val_side=64)
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


def sample_batch(sampler: sources.CropSampler, rng: np.random.Generator, cfg: Dict[str, object],
                 scene_p: float = 0.5, scene_kinds=("wire", "twig")):
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
        if rng.random() < scene_p:
            c = damage_marks.scene_lines(c, rng, int(rng.integers(1, 4)), tuple(scene_kinds))
        lv = damage.LEVEL_NAMES[int(rng.integers(0, 3))]
        d, info = damage.damage_image(c, lv, int(rng.integers(0, 2**31 - 1)))
        d, m = _augment(rng, d, info["mask"].astype(np.float32))
        xs.append(d)
        ys.append(m)
    return np.stack(xs), np.stack(ys)


def balanced_threshold(table: Dict[float, Dict[str, float]]) -> float:
    """The threshold whose smaller of precision and recall is largest (ties: the higher F1, then the
    higher threshold) — the operating point for a goal on both."""
    return max(table, key=lambda t: (round(min(table[t]["precision"], table[t]["recall"]), 4),
                                     round(table[t]["f1"], 4), t))


def choose_mask_threshold(net, max_side: int = 256, limit: Optional[int] = None) -> Tuple[float, Dict[float, Dict[str, float]]]:
    """The detector's operating point on the validation pairs (:func:`balanced_threshold` over
    :data:`THRESHOLDS`) and the table it was chosen from."""
    val = eval_pairs("val", max_side=max_side, limit=limit)
    table = score_probabilities(predict_all(net, val), val)
    return balanced_threshold(table), table


def _save(state, threshold: float, relpath: str, models_dir: Optional[str],
          mask_threshold: Optional[float] = None) -> str:
    """Weights plus ``meta.threshold`` (and ``meta.mask_threshold`` when given) as safetensors with its
    sha256; returns the digest."""
    import torch

    from ...scripts import shipped_models

    from ..damage_mask import load_shipped, shipped_fingerprint

    # a file written here may be read back in this process (restorekit retrain: the gate next)
    load_shipped.cache_clear()
    shipped_fingerprint.cache_clear()
    sd = {k: v for k, v in state.items() if k != "meta.mask_threshold"}
    sd["meta.threshold"] = torch.tensor([float(threshold)], dtype=torch.float32)
    if mask_threshold is not None:
        sd["meta.mask_threshold"] = torch.tensor([float(mask_threshold)], dtype=torch.float32)
    return shipped_models.save_torch_weights(sd, relpath, **({"models_dir": models_dir} if models_dir else {}))


def predict_all(net, pairs, device: str = "cpu") -> List[np.ndarray]:
    from ..damage_mask import cnn_probability

    net.eval()
    return [cnn_probability(p["damaged"], net, device=device) for p in pairs]


def train(out_relpath: Optional[str] = RELPATH, *, models_dir: Optional[str] = None, quick: bool = False,
          log: Callable[[str], None] = print, max_minutes: Optional[float] = None,
          report_tests: bool = True, init=None, start_stage: int = 0, **overrides) -> Dict[str, object]:
    """Train the CNN detector, choose its threshold on validation, save it (with sha256) and score
    it — and the classical detector — on the validation and both test splits.  Returns a summary
    (also written beside the weights as ``damage_mask_training.json``).

    ``init`` (a state dict, e.g. a saved stage) and ``start_stage`` resume the schedule: stages before
    ``start_stage`` are skipped and training starts from ``init``."""
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

    torch.manual_seed(int(cfg["seed"]))
    net = build_net(cfg["widths"])
    pos_weight = torch.tensor([float(cfg["pos_weight"])])
    best = {"f1": -1.0}
    history = []
    if init is not None:  # the resumed weights are the score to beat
        from ..damage_mask import split_state

        net.load_state_dict(split_state(init)[0], strict=True)
        table = score_probabilities(predict_all(net, val), val)
        thr = best_threshold(table)
        best = {"stage": start_stage - 1, "step": "init", "threshold": thr, **table[thr]}
        log(f"[damage-mask] initial weights: val at {thr:.2f}: precision {best['precision']:.3f} "
            f"recall {best['recall']:.3f} F1 {best['f1']:.3f}")
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    stopped = "schedule complete"
    step = total = 0
    for si, (steps, stop, lr, scene_p, scene_kinds) in enumerate(cfg["stages"]):
        if si < start_stage:
            continue
        # each stage has its own seeds, so resuming from a saved stage gives the same result
        rng = np.random.default_rng(int(cfg["seed"]) + si)
        torch.manual_seed(int(cfg["seed"]) + si)
        net.load_state_dict(best_state)
        opt = torch.optim.Adam(net.parameters(), lr=float(lr))
        steps = int(steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, n=steps: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, n) / n)))
        last = min(steps, int(stop or steps))
        for step in range(1, last + 1):
            total += 1
            net.train()
            x, y = sample_batch(sampler, rng, cfg, scene_p, scene_kinds)
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
                history.append({"stage": si, "step": step, "loss": float(loss.detach()), "threshold": thr, **ev,
                                "seconds": time.perf_counter() - t0})
                log(f"[damage-mask] stage {si} step {step}: loss {float(loss.detach()):.4f}; val at {thr:.2f}: "
                    f"precision {ev['precision']:.3f} recall {ev['recall']:.3f} F1 {ev['f1']:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
                if ev["f1"] > best["f1"]:
                    best = {"stage": si, "step": step, "threshold": thr, **ev}
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    if out_relpath:  # keep the best so far on disk (a long run may be cut short)
                        _save(best_state, best["threshold"], out_relpath, models_dir)
                if max_minutes and time.perf_counter() - t0 > max_minutes * 60:
                    stopped = f"time budget {max_minutes} min"
                    break
        if stopped != "schedule complete":
            break
    net.load_state_dict(best_state)
    net.eval()
    train_seconds = time.perf_counter() - t0
    summary: Dict[str, object] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "steps": total, "stopped": stopped, "best": best, "start_stage": start_stage, "train_seconds": train_seconds,
        "train_sources": len(train_names), "families_installed": fams, "history": history,
        "parameters": int(sum(p.numel() for p in net.parameters()))}
    summary["mask_threshold"], _ = choose_mask_threshold(net, cfg["val_side"], limit=3 if quick else None)
    if out_relpath:
        summary["sha256"] = _save(net.state_dict(), best["threshold"], out_relpath, models_dir,
                                  summary["mask_threshold"])
    summary["scores"] = evaluate(net, summary["mask_threshold"], quick=quick, log=log, tests=report_tests)
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


def rechoose_mask_threshold(relpath: str = RELPATH, models_dir: Optional[str] = None,
                            log: Callable[[str], None] = print, tests: bool = True) -> Dict[str, object]:
    """Choose ``meta.mask_threshold`` of a saved detector on the validation pairs
    (:func:`balanced_threshold`), write it into the file (weights and ``meta.threshold`` unchanged) and
    score the detector there again (:func:`evaluate`); the training summary beside the file keeps
    its earlier scores under ``scores_at_threshold``."""
    from ..damage_mask import net_from_state
    from ...scripts import shipped_models

    kw = {"models_dir": models_dir} if models_dir else {}
    sd = shipped_models.load_torch_weights(relpath, **kw)  # read now, not from the process's cache
    net, meta = net_from_state(sd)
    thr, table = choose_mask_threshold(net)
    log(f"[damage-mask] operating point on validation: threshold {thr:g} (precision "
        f"{table[thr]['precision']:.3f}, recall {table[thr]['recall']:.3f}); the plain mask's stays {meta['threshold']:g}")
    digest = _save(sd, meta["threshold"], relpath, models_dir, thr)
    scores = evaluate(net, thr, log=log, tests=tests)
    path = os.path.splitext(shipped_models.model_path(relpath, **kw))[0] + "_training.json"
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        summary.setdefault("scores_at_threshold", summary.get("scores"))
        summary.update({"mask_threshold": thr, "scores": scores, "sha256": digest,
                        "mask_threshold_val_table": {str(k): v for k, v in table.items()}})
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return {"mask_threshold": thr, "val_table": table, "scores": scores, "sha256": digest}


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="train the damage-mask detector")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (do not ship its output)")
    ap.add_argument("--init", default=None, help="start from these weights (.safetensors), e.g. a saved stage")
    ap.add_argument("--start-stage", type=int, default=0, help="skip the stages before this one (with --init)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--models-dir", default=None, help="write here instead of the pack's models/")
    ap.add_argument("--mask-threshold-only", action="store_true",
                    help="no training: choose the shipped detector's operating point on validation again")
    a = ap.parse_args(argv)
    if a.mask_threshold_only:
        res = rechoose_mask_threshold(models_dir=a.models_dir)
        print(json.dumps({k: v for k, v in res.items() if k != "val_table"}, indent=1, default=str))
        return 0
    init = None
    if a.init:
        from safetensors.torch import load_file

        init = load_file(a.init)
    res = train(models_dir=a.models_dir, quick=a.quick, max_minutes=a.max_minutes, init=init,
                start_stage=a.start_stage)
    print(json.dumps({k: v for k, v in res.items() if k not in ("net", "history")}, indent=1, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Training of the hybrid restorer's models: the U-Net, the parameter predictor, and ``retrain_all``.

U-Net: pairs are generated on the fly from the training sources (:mod:`.damage`).  A random crop
of a clean source (random flips and 90° rotations) is damaged at a random level.  Two
augmentations teach the network when to leave an image alone:

* a fraction ``clean_fraction`` of the crops is left undamaged (target = input);
* a fraction ``tone_fraction`` of the clean crops is first given another plausible tone curve
  (:func:`.damage.vary_tone`: black point up to 0.2, white point down to 0.8, gamma 0.67–1.5).
  The network then meets clean images that are dark, light or low in contrast, and does not take
  every raised black point for fading.

Loss ``MSE + ssim_weight · (1 − SSIM)`` (SSIM of Wang et al. 2004 with an 11-tap Gaussian window,
sigma 1.5), Adam, gradient-norm clipping.  An exponential moving average of the weights (decay
``ema``, Polyak averaging) is what is evaluated, kept and shipped.  ``ReduceLROnPlateau`` and early
stopping watch the validation loss on fixed pairs from the validation sources.  Everything is
seeded: the same arguments give the same weights on the same machine (torch CPU kernels, one
thread).

Run all of it with ``restorekit retrain`` (``python -m restorekit.hybrid.tools.cli retrain``).
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import damage

UNET_DEFAULTS = dict(base=16, crop=128, batch=8, steps=10000, lr=1e-3, ssim_weight=0.2,
                     eval_every=500, patience=10, lr_patience=3, seed=0, train_sides=(256, 384),
                     val_side=160, val_per_level=4, clip_grad=0.5, clean_fraction=0.15,
                     tone_fraction=0.3, ema=0.999, sources="registry", val_limit=30)
#: the U-Net's second phase in ``restorekit retrain``: from the first phase's best weights, new crops
#: (another seed) at a lower learning rate — the first phase's validation PSNR was still rising at its
#: end (time budget); its summary is kept in the second's ``unet_training.json`` (``previous_phase``)
UNET_CONTINUE = dict(lr=4e-4, seed=1, steps=8000, patience=6)
#: ... and its third phase: from the second's best weights, 192 px crops (more context for the global
#: statistics and colour transform, which see the whole image at run time) at lr 3e-4 (the second
#: phase's validation PSNR was nearly flat at 128 px: 21.90 -> 21.91 over its last 1000 steps; this
#: phase took it to 22.19, still rising at its end)
UNET_PHASE3 = dict(lr=3e-4, seed=2, steps=8000, crop=192, patience=6)
QUICK_UNET = dict(base=8, crop=48, batch=4, steps=30, eval_every=10, patience=2, lr_patience=1,
                  train_sides=(128,), val_side=64, val_per_level=1, val_limit=3)


def _gauss_window(channels: int, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :])[None, None]
    return w.expand(channels, 1, size, size).contiguous()


def ssim_torch(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004; K1=0.01, K2=0.03, Gaussian 11×11 σ=1.5, valid region) ``[N,C,H,W]``."""
    c = x.shape[1]
    w = _gauss_window(c).to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x ** 2
    syy = F.conv2d(y * y, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    return np.ascontiguousarray(np.rot90(img, int(rng.integers(0, 4))))


def _to_tensor(batch: List[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()


def train_unet(out_relpath: Optional[str] = "hybrid/unet.safetensors", *, models_dir: Optional[str] = None,
               train_sources=None, val_sources=None, log: Callable[[str], None] = print,
               max_minutes: Optional[float] = None, init: Optional[Dict[str, torch.Tensor]] = None,
               previous: Optional[Dict[str, object]] = None, **overrides) -> Dict[str, object]:
    """Train the U-Net; save the best (lowest validation loss) weights to ``models/<out_relpath>``.

    ``init``: a state dict to start from (both the trained weights and their moving average), to
    continue a training run with another seed, learning rate or more steps (its first evaluation is
    the bar the continuation must beat); ``previous``: that run's summary, kept in this one's
    (``previous_phase``).

    ``overrides`` replace entries of :data:`UNET_DEFAULTS`.  ``out_relpath=None`` saves nothing.
    Returns a summary dict (steps, best validation loss/PSNR, seconds, the config).
    """
    from ..unet import RestoreUNet
    from ...scripts import shipped_models

    cfg = dict(UNET_DEFAULTS)
    cfg.update(overrides)
    rng = np.random.default_rng(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    if cfg["sources"] == "registry" and train_sources is None:
        # the source registry's training split (every installed family), validated on its val split
        from . import sources as _sources

        train_sources = _sources.split_names("train")
        pool = [_sources.load(n, s) for n in train_sources for s in cfg["train_sides"]]
        val = _sources.make_pairs("val", per_level=cfg["val_per_level"], max_side=cfg["val_side"], base_seed=1,
                                  limit=cfg["val_limit"])
        val_sources = sorted({p["source"] for p in val})
    else:  # the original 15 / 2 skimage sources (``sources="skimage"``) or the caller's lists
        train_sources = list(train_sources or damage.SPLITS["train"])
        val_sources = list(val_sources or damage.SPLITS["val"])
        pool = [damage.load_source(n, s) for n in train_sources for s in cfg["train_sides"]]
        val = damage.make_pairs("val", per_level=cfg["val_per_level"], max_side=cfg["val_side"],
                                sources=val_sources, base_seed=1)
    pool = [p for p in pool if min(p.shape[:2]) >= cfg["crop"]]
    vx = [_to_tensor([p["damaged"]]) for p in val]
    vy = [_to_tensor([p["clean"]]) for p in val]

    model = RestoreUNet(base=cfg["base"])
    # exponential moving average of the weights (Polyak averaging): evaluated, kept and shipped
    ema = RestoreUNet(base=cfg["base"])
    if init is not None:
        model.load_state_dict(init, strict=True)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5,
                                                       patience=cfg["lr_patience"])
    mult = RestoreUNet.size_multiple

    def evaluate() -> Dict[str, float]:
        ema.eval()
        losses, psnrs = [], []
        with torch.no_grad():
            for x, y in zip(vx, vy):
                h, w = x.shape[-2:]
                xp = F.pad(x, (0, (-w) % mult, 0, (-h) % mult), mode="reflect")
                out = ema(xp)[..., :h, :w].clamp(0, 1)
                mse = F.mse_loss(out, y)
                losses.append(float(mse + cfg["ssim_weight"] * (1 - ssim_torch(out, y))))
                psnrs.append(float(10 * torch.log10(1 / mse.clamp_min(1e-10))))
        return {"loss": float(np.mean(losses)), "psnr": float(np.mean(psnrs))}

    t0 = time.perf_counter()
    best = {"loss": math.inf, "psnr": 0.0, "step": 0}
    if init is not None:
        best = {**evaluate(), "step": 0}
        log(f"[unet] starting weights: val loss {best['loss']:.4f} val PSNR {best['psnr']:.2f} dB")
    best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    bad_evals = 0
    history = []
    step = 0
    stopped = "max steps"
    model.train()
    for step in range(1, cfg["steps"] + 1):
        xs, ys = [], []
        for _ in range(cfg["batch"]):
            src = pool[int(rng.integers(0, len(pool)))]
            c, d, _ = damage.random_crop_pair(src, rng, cfg["crop"], tone=cfg["tone_fraction"])
            if rng.random() < cfg["clean_fraction"]:
                d = c
            xs.append(d)
            ys.append(c)
        # apply one joint augmentation to both crops of each pair
        aug_seeds = rng.integers(0, 2**31 - 1, len(xs))
        xs = [_augment(d, np.random.default_rng(int(s))) for d, s in zip(xs, aug_seeds)]
        ys = [_augment(_c, np.random.default_rng(int(s))) for _c, s in zip(ys, aug_seeds)]
        x, y = _to_tensor(xs), _to_tensor(ys)
        out = model(x)
        loss = F.mse_loss(out, y) + cfg["ssim_weight"] * (1 - ssim_torch(out, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_grad"])
        opt.step()
        with torch.no_grad():  # warm-up so early averages are not dominated by the random start
            decay = min(cfg["ema"], (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        if step % cfg["eval_every"] == 0 or step == cfg["steps"]:
            ev = evaluate()
            sched.step(ev["loss"])
            history.append({"step": step, "train_loss": float(loss.detach()), **ev,
                            "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0})
            log(f"[unet] step {step}: train {float(loss.detach()):.4f} val loss {ev['loss']:.4f} "
                f"val PSNR {ev['psnr']:.2f} dB lr {opt.param_groups[0]['lr']:.1e} "
                f"({time.perf_counter() - t0:.0f} s)")
            if ev["loss"] < best["loss"] - 1e-5:
                best = {"loss": ev["loss"], "psnr": ev["psnr"], "step": step}
                best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                bad_evals = 0
                if out_relpath:
                    shipped_models.save_torch_weights(best_state, out_relpath,
                                                      **({"models_dir": models_dir} if models_dir else {}))
            else:
                bad_evals += 1
                if bad_evals >= cfg["patience"]:
                    stopped = f"early stopping (no improvement in {bad_evals} evaluations)"
                    break
            if max_minutes and time.perf_counter() - t0 > max_minutes * 60:
                stopped = f"time budget {max_minutes} min"
                break
    model = ema
    model.load_state_dict(best_state)
    if out_relpath:
        shipped_models.save_torch_weights(best_state, out_relpath,
                                          **({"models_dir": models_dir} if models_dir else {}))
    summary = {"steps": step, "stopped": stopped, "best_step": best["step"],
               "best_val_loss": best["loss"], "best_val_psnr": best["psnr"],
               "seconds": time.perf_counter() - t0,
               "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
               "train_sources": train_sources, "val_sources": val_sources, "history": history}
    if previous is not None:
        summary["previous_phase"] = {k: v for k, v in previous.items() if k not in ("model", "train_sources")}
    if out_relpath:
        from ...scripts.shipped_models import model_path

        path = model_path(out_relpath, **({"models_dir": models_dir} if models_dir else {}))
        with open(os.path.splitext(path)[0] + "_training.json", "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    summary["model"] = model
    return summary


# --- predictor ---------------------------------------------------------------------------------------
PREDICTOR_DEFAULTS = dict(per_level=6, max_sides=(192, 288), n_estimators=100, max_depth=12, folds=5,
                          seed=0, min_samples_leaf=3)
QUICK_PREDICTOR = dict(per_level=1, max_sides=(96,), n_estimators=10, max_depth=4, folds=2)


def train_predictor(out_relpath: Optional[str] = "hybrid/predictor.joblib", *,
                    models_dir: Optional[str] = None, train_sources=None,
                    log: Callable[[str], None] = print, **overrides) -> Dict[str, object]:
    """Grid-search the 40 classical combinations on the training pairs, cross-validate and fit.

    Pairs: every training source at each of ``max_sides`` × 3 levels × ``per_level`` variants.
    Saves the bundle (scaler + forest + metadata incl. CV metrics) with ``save_joblib``.
    """
    from .. import predictor

    cfg = dict(PREDICTOR_DEFAULTS)
    cfg.update(overrides)
    t0 = time.perf_counter()
    sources = list(train_sources or damage.SPLITS["train"])
    pairs = []
    for i, side in enumerate(cfg["max_sides"]):
        pairs += damage.make_pairs("train", per_level=cfg["per_level"], max_side=side, sources=sources,
                                   base_seed=100 + i + cfg["seed"])
    log(f"[predictor] {len(pairs)} training pairs from {len(sources)} sources")
    data = predictor.build_dataset(pairs, log=log)
    fit_kw = dict(n_estimators=cfg["n_estimators"], max_depth=cfg["max_depth"], seed=cfg["seed"],
                  min_samples_leaf=cfg.get("min_samples_leaf", 2))
    cv = predictor.cross_validate(data, folds=cfg["folds"], **fit_kw)
    log(f"[predictor] grouped {cv['folds']}-fold CV: " + ", ".join(
        f"{k} {v:.3f}" for k, v in cv.items() if isinstance(v, float)))
    bundle = predictor.fit(data, **fit_kw)
    bundle["cv"] = cv
    bundle["no_change_below_db"] = cv["no_change_below_db"]  # chosen by the grouped CV above
    bundle["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    bundle["train_sources"] = sources
    digest = None
    if out_relpath:
        digest = predictor.save(bundle, out_relpath, models_dir)
    return {"cv": cv, "n_pairs": len(pairs), "seconds": time.perf_counter() - t0, "sha256": digest,
            "bundle": bundle, "config": bundle["config"]}


# --- everything -----------------------------------------------------------------------------------------
def retrain_all(quick: bool = False, models_dir: Optional[str] = None, log: Callable[[str], None] = print,
                include_lbclahe: bool = True, unet_minutes: Optional[float] = None,
                include_damage_mask: bool = True) -> Dict[str, object]:
    """Retrain every shipped model from scratch: hybrid predictor, the damage-mask detector
    (:mod:`.train_damage_mask`), the inpaint gate on its masks (:mod:`.train_inpaint_gate`), hybrid
    U-Net, calibration of the engine's severity thresholds with the new predictor and U-Net, the
    ``ml_guided`` forests and ``auto``'s route margin (:mod:`.train_guided`, with the new U-Net and
    gate) and the LB-CLAHE predictor.  The optional tone prior is not part of it (not shipped; its own
    command is :mod:`.train_tone_prior`).

    ``quick``: tiny settings that finish in seconds (for tests / smoke runs); never use its output
    as the shipped models.  ``models_dir``: write there instead of the pack's ``models/``.
    """
    results: Dict[str, object] = {}
    log("[retrain] hybrid predictor")
    res = train_predictor(models_dir=models_dir, log=log, **(QUICK_PREDICTOR if quick else {}))
    results["predictor"] = {k: v for k, v in res.items() if k != "bundle"}
    from ..predictor import Predictor
    from ..unet import handle_from_module

    pred = Predictor(res["bundle"])
    if include_damage_mask:  # first: the inpaint gate and the forests read its masks
        from . import train_damage_mask

        log("[retrain] damage-mask detector")
        res = train_damage_mask.train(models_dir=models_dir, quick=quick, log=log, report_tests=not quick)
        results["damage_mask"] = {k: v for k, v in res.items() if k not in ("net", "history")}
    from . import train_inpaint_gate

    log("[retrain] inpaint gate (with the detector above)")
    res_ig = train_inpaint_gate.train(models_dir=models_dir, quick=quick, log=log,
                                      detector_models_dir=models_dir if include_damage_mask else None)
    results["inpaint_gate"] = {k: v for k, v in res_ig.items() if k not in ("gate", "grid")}
    log("[retrain] hybrid U-Net")
    res = train_unet(models_dir=models_dir, log=log, max_minutes=unet_minutes,
                     **(QUICK_UNET if quick else {}))
    for name, phase in ([] if quick else [("second phase (UNET_CONTINUE)", UNET_CONTINUE),
                                           ("third phase (UNET_PHASE3: 192 px crops)", UNET_PHASE3)]):
        log(f"[retrain] hybrid U-Net, {name}")
        res = train_unet(models_dir=models_dir, log=log, max_minutes=unet_minutes, previous=res,
                         init={k: v.detach().clone() for k, v in res["model"].state_dict().items()}, **phase)
    results["unet"] = {k: v for k, v in res.items() if k not in ("model", "history")}
    results["thresholds"] = calibrate_thresholds(pred, handle_from_module(res["model"]),
                                                 per_level=1 if quick else 10,
                                                 max_side=96 if quick else 256, log=log)
    log("[retrain] set CALIBRATED and DEFAULT_ESTIMATOR in hybrid/engine.py to the calibrated values")
    from . import train_guided

    log("[retrain] ml_guided forests and auto's route: margin, U-Net residual threshold, route forest "
        "(with the new U-Net and gate)")
    res_g = train_guided.train(models_dir=models_dir, quick=quick, unet=handle_from_module(res["model"]), log=log,
                               tone_prior=False, inpaint_gate=res_ig["gate"])
    results["guided"] = {"sha256": res_g["sha256"], "validation": res_g["validation"], "seconds": res_g["seconds"],
                         "route_margin_db": res_g["route"]["route_margin_db"],
                         "route_residual_db": res_g["route"]["route_residual_db"],
                         **{k: res_g["bundle"].get(k) for k in ("route_forest_risk", "route_forest_margin_db")}}
    if include_lbclahe:
        try:
            from ...scripts import lbclahe_train
        except ImportError as exc:
            log(f"[retrain] LB-CLAHE trainer not available ({exc}); skipped")
            results["lbclahe"] = "skipped: scripts/lbclahe_train.py not available"
        else:
            log("[retrain] LB-CLAHE predictor")
            results["lbclahe"] = lbclahe_train.train(output_dir=models_dir, quick=quick, log=log)
    return results


def calibrate_thresholds(pred=None, unet=None, per_level: int = 10, max_side: int = 256,
                         log: Callable[[str], None] = print, step_db: float = 0.25) -> Dict[str, object]:
    """Quality estimator and severity thresholds (dB) chosen on the validation split for the best
    restoration.

    Every validation pair is restored by each of the three methods (rule-based classical,
    ML-guided, U-Net), and both quality estimates are computed: the forest's ``q`` from the
    features and the U-Net residual ``PSNR(input, U-Net(input))``.  For each estimator the pair
    ``(light_min_db, severe_max_db)`` on a ``step_db`` grid that maximises the mean PSNR of the
    ``auto`` routing (``q ≥ light`` → classical, ``q < severe`` → U-Net, else ML-guided) is found
    (:func:`choose_thresholds`; among equal scores the fewest U-Net runs win); the estimator with the
    higher mean is returned.  The balanced accuracy with which the thresholds reproduce the
    generator's own light / moderate / severe labels is reported too.  These are the engine's
    defaults (:class:`.engine.Thresholds`).
    """
    from .. import analysis
    from ..engine import HybridRestorer, residual_quality_db
    from ...scripts.metrics import psnr
    from ..predictor import Predictor

    pred = pred or Predictor.load()
    restorer = HybridRestorer(predictor=pred, unet=unet, device="cpu")
    pairs = damage.make_pairs("val", per_level=per_level, max_side=max_side, base_seed=7)
    lv = np.array([damage.LEVEL_NAMES.index(p["level"]) for p in pairs])
    methods = ("classical", "ml_guided", "deep_learning")
    scores, q = [], {"forest": [], "unet": []}
    for p in pairs:
        outs = [restorer.restore(p["damaged"], m)[0] for m in methods]
        scores.append([psnr(o, p["clean"]) for o in outs])  # severity order light / moderate / severe
        q["forest"].append(pred.quality_db(analysis.analyze(p["damaged"])))
        q["unet"].append(residual_quality_db(p["damaged"], outs[2]))
    scores = np.array(scores)
    per_method = {m: float(v) for m, v in zip(methods, scores.mean(axis=0))}
    per_estimator = {}
    for name, qs in q.items():
        hi, lo, mean, acc = choose_thresholds(np.array(qs), scores, lv, step_db)
        per_estimator[name] = {"auto_psnr_db": mean, "light_min_db": hi, "severe_max_db": lo,
                               "balanced_accuracy": acc,
                               "quality_vs_true_correlation": float(np.corrcoef(
                                   qs, [psnr(p["damaged"], p["clean"]) for p in pairs])[0, 1])}
        log(f"[calibrate] {name} estimate: auto {mean:.2f} dB with light >= {hi:.2f} dB, severe < {lo:.2f} dB; "
            f"level balanced accuracy {acc:.3f}")
    best = max(per_estimator, key=lambda k: per_estimator[k]["auto_psnr_db"])
    b = per_estimator[best]
    log(f"[calibrate] on {len(pairs)} validation pairs: classical {per_method['classical']:.2f}, "
        f"ml_guided {per_method['ml_guided']:.2f}, U-Net {per_method['deep_learning']:.2f} dB; best: the {best} "
        f"estimate, auto {b['auto_psnr_db']:.2f} dB")
    return {"objective": "mean validation PSNR of auto", "estimator": best, **b,
            "method_psnr_db": per_method, "estimators": per_estimator, "n": int(len(pairs))}


def choose_thresholds(q: np.ndarray, scores: np.ndarray, levels: Optional[np.ndarray] = None,
                      step_db: float = 0.25):
    """The threshold pair that maximises the mean score of the routing.

    ``q [n]``: quality estimates (dB); ``scores [n, 3]``: each image's PSNR after classical,
    ML-guided and U-Net (severity order light / moderate / severe); ``levels [n]``: optional true
    level indices 0..2 for the balanced accuracy.  Grid: ``step_db`` steps from below ``min(q)`` to
    above ``max(q)``; ties go to the fewest U-Net runs, then to the first pair found.  Returns
    ``(light_min_db, severe_max_db, mean_score, balanced_accuracy or nan)``.
    """
    q = np.asarray(q, np.float64)
    scores = np.asarray(scores, np.float64)
    grid = np.arange(np.floor(q.min()) - step_db, np.ceil(q.max()) + 2 * step_db, step_db)
    rows = np.arange(len(q))
    best = None
    for hi in grid:
        for lo in grid[grid <= hi]:
            cls = np.where(q >= hi, 0, np.where(q < lo, 2, 1))
            mean = float(scores[rows, cls].mean())
            key = (round(mean, 6), -int(np.sum(cls == 2)))
            if best is None or key > best[0]:
                acc = float("nan")
                if levels is not None:
                    lv = np.asarray(levels)
                    acc = float(np.mean([np.mean(cls[lv == k] == k) for k in range(3) if np.any(lv == k)]))
                best = (key, float(hi), float(lo), mean, acc)
    return best[1], best[2], best[3], best[4]

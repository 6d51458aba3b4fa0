"""Train the inpainting gate (:mod:`..inpaint_gate`) and choose its margin on the validation split.

    python -m restorekit.hybrid.tools.train_inpaint_gate      # also run by `restorekit retrain`

Rows: the pairs of :func:`.train_guided.guided_pairs` (per training source one damaged image per level,
one single-defect image and one clean or tone-varied clean image) for ``seeds`` damage draws.  Per row
the shipped detector's probability map gives the candidate masks; the target is the PSNR gain (dB,
clipped to −6 … +12; a clean image's PSNR counts as 60 dB) of Telea-inpainting each candidate, exactly
as the plan's inpaint stage runs it.  The gate must be retrained whenever the detector is (the bundle
records the detector's sha256).

Margin and risk (validation split only): the gate inpaints when the forest's prediction less ``risk``
times its trees' spread exceeds the margin.  The pair that maximises the mean realised gain over the
damaged validation images wins among the pairs that keep every light image within ``LIGHT_WORST_DB``
and touch at most ``MAX_CLEAN_CHANGED`` of the clean ones; when no pair keeps every light image, the
one with the fewest light images below it (then the best mean).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import defects as _defects, inpaint_gate as _gate, plan as _plan
from . import train_guided

DEFAULTS = dict(seeds=(0, 1), sides=(192, 256), n_estimators=150, min_samples_leaf=4, max_features=0.5,
                margins=(0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0), risks=(0.0, 0.5, 1.0))
QUICK = dict(seeds=(0,), sides=(128,), n_estimators=8, limit=3, val_limit=3)
LIGHT_WORST_DB = -1.0
MAX_CLEAN_CHANGED = 0.05
GAIN_CLIP = train_guided.GAIN_CLIP_DB
CLEAN_PSNR = 60.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`scripts.metrics.psnr` capped at :data:`CLEAN_PSNR` (a clean image's own PSNR)."""
    from ...scripts.metrics import psnr

    return min(psnr(a, b), CLEAN_PSNR)


def inpaint(img: np.ndarray, mask: np.ndarray, rules: "_plan.Rules" = _plan.RULES) -> np.ndarray:
    return _plan.STAGES["inpaint"](img, _plan.inpaint_params(mask, rules))[0]


def build_rows(split: str, seeds: Sequence[int], sides=(192, 256), limit: Optional[int] = None,
               log: Callable[[str], None] = print, models_dir: Optional[str] = None) -> Dict[str, object]:
    """Rows of ``split`` with the detector of ``models_dir`` (default: the pack's)."""
    from ..damage_mask import cnn_probability, load_shipped, plain_threshold

    net, meta = load_shipped(models_dir=models_dir)
    thr = plain_threshold(meta)
    X, Y, info = [], [], []
    t0 = time.perf_counter()
    for seed in seeds:
        pairs = train_guided.guided_pairs(split, sides=sides, seed=seed, limit=limit)
        for p in pairs:
            dam, clean = p["damaged"], p["clean"]
            prob = cnn_probability(dam, net)
            masks = _gate.candidate_masks(prob, thr)
            rep = _defects.measure(dam)
            base = _psnr(dam, clean)
            gains = []
            for name in _gate.CANDIDATES:
                m = masks[name]
                g = _psnr(inpaint(dam, m), clean) - base if m.any() else 0.0
                gains.append(float(np.clip(g, *GAIN_CLIP)))
            X.append(_gate.features(prob, masks, rep))
            Y.append(gains)
            info.append({"source": p["source"], "level": p["level"], "kind": p["kind"], "seed": seed,
                         "any": [bool(masks[n].any()) for n in _gate.CANDIDATES]})
        log(f"[inpaint gate] {split} seed {seed}: {len(pairs)} pairs ({time.perf_counter() - t0:.0f} s)")
    return {"X": np.array(X), "Y": np.array(Y), "info": info, "threshold": thr}


def fit(X, Y, n_estimators=150, min_samples_leaf=4, max_features=0.5, seed=0):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                 max_features=max_features, random_state=seed, n_jobs=-1).fit(X, Y)


def score_margins(mean: np.ndarray, std: np.ndarray, Y: np.ndarray, info: List[Dict[str, object]], margins,
                  risks=(0.0,)) -> List[Dict[str, object]]:
    """Realised gains of the gate's decision on rows with true gains ``Y`` for each (margin, risk): the
    cautious prediction is ``mean - risk · std`` (the trees' spread)."""
    table = []
    for m, k in ((m, k) for k in risks for m in margins):
        pred = mean - k * std
        by: Dict[str, List[float]] = {"light": [], "moderate": [], "severe": []}
        clean_changed = []
        for pr, y, inf in zip(pred, Y, info):
            avail = [i for i, a in enumerate(inf["any"]) if a]
            if avail:
                best = max(avail, key=lambda i: pr[i])
                run = pr[best] > m
            else:
                run = False
            g = float(y[best]) if run else 0.0
            if inf["kind"] == "clean":
                clean_changed.append(run)
            else:
                by[inf["level"]].append(g)
        allg = [g for v in by.values() for g in v]
        table.append({"margin_db": m, "risk": k, "mean_gain_db": float(np.mean(allg)),
                      "light_losers": int(sum(g < LIGHT_WORST_DB for g in by["light"])),
                      **{f"{k}_gain_db": float(np.mean(v)) for k, v in by.items() if v},
                      "light_worst_db": float(min(by["light"])) if by["light"] else 0.0,
                      "clean_changed": float(np.mean(clean_changed)) if clean_changed else 0.0})
    return table


def choose(table: List[Dict[str, object]]) -> Dict[str, object]:
    """The best mean among the settings meeting both rules; when none does, the fewest light images
    below ``LIGHT_WORST_DB`` (then the best mean) among those touching few clean images."""
    ok = [r for r in table if r["light_worst_db"] >= LIGHT_WORST_DB and r["clean_changed"] <= MAX_CLEAN_CHANGED]
    if ok:
        return max(ok, key=lambda r: (r["mean_gain_db"], r["margin_db"], -r["risk"]))
    pool = [r for r in table if r["clean_changed"] <= MAX_CLEAN_CHANGED] or table
    return max(pool, key=lambda r: (-r["light_losers"], r["mean_gain_db"], r["margin_db"]))


def train(out_relpath: Optional[str] = _gate.RELPATH, *, models_dir: Optional[str] = None, quick: bool = False,
          log: Callable[[str], None] = print, detector_models_dir: Optional[str] = None,
          **overrides) -> Dict[str, object]:
    """Rows, fit, margin on validation, save into ``models_dir``; the detector is read from
    ``detector_models_dir`` (default: the pack's ``models/``)."""
    from ...scripts.shipped_models import model_path, save_joblib, sha256_file
    from ..damage_mask import WEIGHTS_RELPATH, shipped_fingerprint

    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(QUICK)
    cfg.update(overrides)
    t0 = time.perf_counter()
    tr = build_rows("train", cfg["seeds"], cfg["sides"], cfg.get("limit"), log, detector_models_dir)
    forest = fit(tr["X"], tr["Y"], cfg["n_estimators"], cfg["min_samples_leaf"], cfg["max_features"])
    va = build_rows("val", (0,), (256,), cfg.get("val_limit"), log, detector_models_dir)
    from ...scripts.forest import predict_spread

    mean, std = predict_spread(forest, va["X"])
    table = score_margins(mean, std, va["Y"], va["info"], cfg["margins"], cfg["risks"])
    best = choose(table)
    for r in table:
        log(f"[inpaint gate] margin {r['margin_db']:.2f} dB risk {r['risk']:.1f}: mean {r['mean_gain_db']:+.3f} (light {r.get('light_gain_db', 0):+.2f}, "
            f"moderate {r.get('moderate_gain_db', 0):+.2f}, severe {r.get('severe_gain_db', 0):+.2f}; light worst "
            f"{r['light_worst_db']:+.2f}; clean changed {100 * r['clean_changed']:.0f} %)")
    log(f"[inpaint gate] chosen margin {best['margin_db']} dB, risk {best['risk']}")
    bundle = {"version": _gate.BUNDLE_VERSION, "forest": forest, "candidates": list(_gate.CANDIDATES),
              "margin_db": float(best["margin_db"]), "risk": float(best["risk"]),
              "detector_sha256": sha256_file(model_path(WEIGHTS_RELPATH, **({"models_dir": detector_models_dir} if detector_models_dir else {}))),
              "detector_fingerprint": shipped_fingerprint(WEIGHTS_RELPATH, detector_models_dir),
              "meta": {"rows": len(tr["X"]), "val_rows": len(va["X"]), "choice": best, "grid": table,
                       "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}}
    sha = save_joblib(bundle, out_relpath, **({"models_dir": models_dir} if models_dir else {})) if out_relpath else None
    return {"sha256": sha, "choice": best, "grid": table, "rows": len(tr["X"]), "seconds": time.perf_counter() - t0,
            "gate": _gate.InpaintGate(bundle)}


def main(argv=None) -> int:
    from .trainer_cli import run

    return run(train, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

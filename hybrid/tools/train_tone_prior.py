"""Train the tone prior (:mod:`..tone_prior`) and choose its strength and gate on the validation split.

    python -m restorekit.hybrid.tools.train_tone_prior        # also run by `restorekit retrain`

Rows: the pairs of :func:`.train_guided.guided_pairs` (per training source: one damaged image per
level, one single-defect image, one clean or tone-varied clean image) for ``seeds`` different damage
draws; each row is ``tone_prior.training_row`` (the image's measurements → the change of its 33
percentiles towards the clean original).  No restoration runs, so rows are cheap (≈ 0.1 s each).

Choice (validation split only): the risk (how far each predicted coordinate is shrunk by the spread of
the trees), the strength and the minimum change (:attr:`TonePrior.min_change`) that maximise the mean
PSNR gain of the match applied to the damaged validation images, among the pairs
that keep every light image within ``LIGHT_WORST_DB`` of its input and change at most
``MAX_CLEAN_CHANGED`` of the clean images.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import defects as _defects, plan as _plan, tone_prior as _tp
from ...scripts.metrics import psnr
from . import train_guided

DEFAULTS = dict(seeds=(0, 1, 2), sides=(192, 256), n_estimators=80, min_samples_leaf=5, max_features=0.5,
                components=8,
                strengths=(0.5, 0.7, 0.85, 1.0), min_changes=(0.0, 0.01, 0.02, 0.03, 0.04, 0.05),
                risks=(0.0, 0.5, 1.0))
QUICK = dict(seeds=(0,), sides=(96,), n_estimators=8, limit=4, val_limit=3)
LIGHT_WORST_DB = -1.0
MAX_CLEAN_CHANGED = 0.2


def build_rows(split: str, seeds: Sequence[int], sides=(192, 256), limit: Optional[int] = None,
               log: Callable[[str], None] = print, keep_pairs: bool = False) -> Dict[str, object]:
    """Feature / target rows of ``split`` (and, with ``keep_pairs``, the pairs and their reports)."""
    X, Y, meta, kept = [], [], [], []
    t0 = time.perf_counter()
    for seed in seeds:
        pairs = train_guided.guided_pairs(split, sides=sides, seed=seed, limit=limit)
        for i, p in enumerate(pairs):
            rd = _defects.measure(p["damaged"])
            rc = rd if p["kind"] == "clean" else _defects.measure(p["clean"])
            x, y = _tp.training_row(rd, rc)
            X.append(x)
            Y.append(y)
            meta.append({"source": p["source"], "level": p["level"], "kind": p["kind"], "seed": seed})
            if keep_pairs:
                kept.append((p, rd))
        log(f"[tone prior] {split} seed {seed}: {len(pairs)} pairs ({time.perf_counter() - t0:.0f} s)")
    return {"X": np.array(X), "Y": np.array(Y), "meta": meta, "pairs": kept}


def fit(X: np.ndarray, Y: np.ndarray, n_estimators: int = 80, min_samples_leaf: int = 5,
        max_features: float = 0.5, seed: int = 0, components: int = 8):
    """``(forest, basis)``: the forest predicts the coordinates of the 33 percentile changes along their
    ``components`` leading principal directions (``basis["components"]``; uncentred, so that zero
    coordinates are no change and shrinking a coordinate moves towards leaving the image alone)."""
    from sklearn.ensemble import RandomForestRegressor

    _u, _s, vt = np.linalg.svd(Y, full_matrices=False)
    comps = vt[:min(components, vt.shape[0])]
    Z = Y @ comps.T
    forest = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=min_samples_leaf,
                                   max_features=max_features, random_state=seed, n_jobs=-1).fit(X, Z)
    return forest, {"components": comps.astype(np.float32).tolist()}


def score_grid(prior: "_tp.TonePrior", val_pairs, strengths, min_changes, risks=(0.0,)) -> List[Dict[str, object]]:
    """Per (risk, strength, min change): mean gain on damaged pairs, by level, worst light gain, the
    share of clean images changed."""
    table = []
    for k in risks:
        outs = {}
        for s in strengths:
            for p, rep in val_pairs:  # one match per (risk, strength); the minimum change only selects
                params, _ = prior.decide(rep, strength=s, min_change=0.0, risk=k)
                rms = float(np.sqrt(np.mean((s * prior.predict(rep, k)) ** 2)))
                out = _plan._tone(p["damaged"], {"ops": [("match", params)]})[0] if params else p["damaged"]
                outs[(s, id(p))] = (rms, out)
        for s in strengths:
            for tau in min_changes:
                gains: Dict[str, List[float]] = {"light": [], "moderate": [], "severe": []}
                clean_changed = []
                for p, rep in val_pairs:
                    rms, out = outs[(s, id(p))]
                    res = out if rms >= tau and rms > 0 else p["damaged"]
                    if p["kind"] == "clean":
                        clean_changed.append(res is not p["damaged"])
                        continue
                    gains[p["level"]].append(psnr(res, p["clean"]) - psnr(p["damaged"], p["clean"]))
                allg = [g for v in gains.values() for g in v]
                table.append({"risk": k, "strength": s, "min_change": tau, "mean_gain_db": float(np.mean(allg)),
                              **{f"{lv}_gain_db": float(np.mean(v)) for lv, v in gains.items() if v},
                              "light_worst_db": float(min(gains["light"])) if gains["light"] else 0.0,
                              "clean_changed": float(np.mean(clean_changed)) if clean_changed else 0.0})
    return table


def choose(table: List[Dict[str, object]]) -> Dict[str, object]:
    ok = [r for r in table if r["light_worst_db"] >= LIGHT_WORST_DB and r["clean_changed"] <= MAX_CLEAN_CHANGED]
    pool = ok or table
    return max(pool, key=lambda r: (r["mean_gain_db"], r["min_change"], r["risk"]))


def train(out_relpath: Optional[str] = _tp.RELPATH, *, models_dir: Optional[str] = None, quick: bool = False,
          log: Callable[[str], None] = print, **overrides) -> Dict[str, object]:
    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(QUICK)
    cfg.update(overrides)
    t0 = time.perf_counter()
    tr = build_rows("train", cfg["seeds"], cfg["sides"], cfg.get("limit"), log)
    forest, basis = fit(tr["X"], tr["Y"], cfg["n_estimators"], cfg["min_samples_leaf"], cfg["max_features"],
                        components=cfg["components"])
    log(f"[tone prior] fitted {len(tr['X'])} rows ({time.perf_counter() - t0:.0f} s)")
    bundle = {"version": _tp.BUNDLE_VERSION, "forest": forest, "basis": basis, "percentiles": list(_tp.PERCENTILES),
              "strength": 1.0, "min_change": 0.0}
    prior = _tp.TonePrior(bundle)
    va = build_rows("val", (0,), (256,), cfg.get("val_limit"), log, keep_pairs=True)
    table = score_grid(prior, va["pairs"], cfg["strengths"], cfg["min_changes"], cfg["risks"])
    best = choose(table)
    bundle.update(strength=float(best["strength"]), min_change=float(best["min_change"]), risk=float(best["risk"]),
                  meta={"rows": len(tr["X"]), "train_sources": sorted({m["source"] for m in tr["meta"]}),
                        "val_rows": len(va["meta"]), "choice": best, "grid": table,
                        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}})
    for r in table:
        log(f"[tone prior] risk {r['risk']:.1f} strength {r['strength']:.2f} min change {r['min_change']:.3f}: mean {r['mean_gain_db']:+.2f} dB "
            f"(light {r.get('light_gain_db', 0):+.2f}, moderate {r.get('moderate_gain_db', 0):+.2f}, severe "
            f"{r.get('severe_gain_db', 0):+.2f}; light worst {r['light_worst_db']:+.2f}; clean changed {100 * r['clean_changed']:.0f} %)")
    log(f"[tone prior] chosen: risk {best['risk']}, strength {best['strength']}, min change {best['min_change']}")
    sha = None
    if out_relpath:
        from ...scripts.shipped_models import save_joblib

        sha = save_joblib(bundle, out_relpath, **({"models_dir": models_dir} if models_dir else {}))
    return {"sha256": sha, "choice": best, "grid": table, "rows": len(tr["X"]),
            "seconds": time.perf_counter() - t0, "prior": _tp.TonePrior(bundle)}


def main(argv=None) -> int:
    from .trainer_cli import run

    return run(train, __doc__.split("\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())

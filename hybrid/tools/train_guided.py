"""Training of the ``ml_guided`` forests (:mod:`..guided`) and the choice of their margins.

1. Pairs (:func:`guided_pairs`): for every source of a split, at a longer side of 192 or 256 px (by
   source): one pair per damage level (generator v2, several defects at once), one single-defect pair
   (a random defect of :data:`.damage.DEFECTS` at a random level) and one undamaged image — the source
   itself or a tone-varied copy (:func:`.damage.vary_tone`, a plausible clean photograph that is dark,
   light or low in contrast), so the forests learn when *not* to act.
2. Along the plan's stages (:func:`chain_rows`): measure the damaged image once, detect its damage mask,
   then for each stage apply every candidate that applies to the current image and score it against
   the clean image (PSNR gain, dB); the best candidate is kept when it gains (greedy oracle) and the
   next stage starts from it.  The ``deep_learning`` path (:func:`..guided.deep_plan`, then the U-Net)
   is scored too.  Denoising uses the DFT Wiener backend here (BM3D costs ~6 s per 256 px image): the
   gains learnt are those of the weaker denoiser, a conservative estimate.
3. Forests (:func:`fit`): one ``RandomForestRegressor`` per stage (multi-output: one gain per candidate;
   inapplicable candidates scored 0) and one for the deep path's gain.
4. Margins (:func:`choose_margins`): on the validation split's rows, per stage the margin of a grid
   that maximises the mean gain actually obtained (run the predicted best candidate when its predicted
   gain exceeds the margin).  ``restorekit retrain`` runs all of it; ``python -m
   restorekit.hybrid.tools.train_guided`` alone too.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import numpy as np

from . import damage
from .. import defects as _defects, guided as _guided, plan as _plan

DEFAULTS = dict(sides=(192, 256), n_estimators=80, max_depth=10, min_samples_leaf=4, seed=0, limit=110,
                val_limit=36, route_limit=30)
QUICK = dict(sides=(96,), n_estimators=8, max_depth=4, min_samples_leaf=2, limit=3, val_limit=2, route_limit=2)
#: gains are clipped to this range (dB) for fitting and scoring: an undamaged image's PSNR is infinite
#: (capped at 100 dB), so any change "loses" 40–80 dB, which would swamp every other row
GAIN_CLIP_DB = (-6.0, 12.0)
MARGIN_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


def guided_pairs(split: str, sides=(192, 256), seed: int = 0, limit: Optional[int] = None) -> List[Dict[str, object]]:
    """The training / validation pairs of :mod:`..guided` for a split of the source registry."""
    from . import sources

    names = sources.split_names(split)
    if limit is not None and len(names) > limit:
        idx = np.linspace(0, len(names) - 1, int(limit)).round().astype(int)
        names = [names[i] for i in sorted(set(idx))]
    out = []
    for k, name in enumerate(names):
        side = sides[k % len(sides)]
        clean = sources.load(name, side)
        rng = np.random.default_rng([seed, k, 11])
        for level in damage.LEVEL_NAMES:
            s = damage.pair_seed(name, level, 0, 300 + seed)
            d, _ = damage.damage_image(clean, level, s)
            out.append({"source": name, "level": level, "clean": clean, "damaged": d, "kind": "mixed"})
        only = damage.DEFECTS[int(rng.integers(0, len(damage.DEFECTS)))]
        lv = damage.LEVEL_NAMES[int(rng.integers(0, 3))]
        d, _ = damage.damage_image(clean, lv, int(rng.integers(0, 2**31 - 1)), only=(only,))
        out.append({"source": name, "level": lv, "clean": clean, "damaged": d, "kind": f"only {only}"})
        c = clean if k % 2 == 0 else damage.vary_tone(clean, rng)
        out.append({"source": name, "level": "clean", "clean": c, "damaged": c.copy(), "kind": "clean"})
    return out


def chain_rows(pair: Dict[str, object], unet=None) -> Dict[str, object]:
    """The rows one pair gives: per stage ``(x, gains)`` along the greedy-oracle chain; the deep path's
    ``(x, gain)``; the input PSNR."""
    from ...scripts.metrics import psnr

    clean, dam = pair["clean"], pair["damaged"]
    rep = _defects.measure(dam)
    mask, source = _plan.detect_mask(dam, gated=False)
    frac = 0.0 if mask is None else float(mask.mean())
    base = psnr(dam, clean)
    cur, cur_psnr = dam, base
    ran: Dict[str, bool] = {}
    rows = {}
    for stage in _guided.STAGES:
        avail = _guided.candidates(stage, rep, mask, _guided.residual_after(ran, rep), "wiener")
        if not avail:
            continue
        x = _guided.feature_vector(rep, frac, [s for s, v in ran.items() if v])
        g = np.zeros(len(_guided.CANDIDATES[stage]))
        best, best_out, best_gain = None, None, 0.0
        for j, name in enumerate(_guided.CANDIDATES[stage]):
            if name not in avail:
                continue
            out, _ = _plan.STAGES[stage](cur, avail[name][0])
            g[j] = psnr(out, clean) - cur_psnr
            if g[j] > best_gain:
                best, best_out, best_gain = name, out, g[j]
        rows[stage] = (x, g, np.array([n in avail for n in _guided.CANDIDATES[stage]]))
        if best is not None:
            cur, cur_psnr = best_out, cur_psnr + best_gain
            ran[stage] = True
    deep_gain = np.nan
    if unet is not None:
        dp = _guided.deep_plan(rep, mask, "wiener", mask_source=source, mask_detected=mask is not None)
        pre, _ = _plan.execute(dam, dp)
        from ..unet import run

        out, _ = run(unet, pre, device="cpu")
        deep_gain = psnr(out, clean) - base
    return {"rows": rows, "deep": (_guided.feature_vector(rep, frac), deep_gain), "input_psnr": base,
            "oracle_psnr": cur_psnr, "source": pair["source"], "level": pair["level"], "kind": pair["kind"]}


def build(pairs: List[Dict[str, object]], unet=None, log: Callable[[str], None] = print) -> List[Dict[str, object]]:
    t0 = time.perf_counter()
    out = []
    for i, p in enumerate(pairs):
        out.append(chain_rows(p, unet))
        if (i + 1) % 25 == 0 or i + 1 == len(pairs):
            log(f"[guided] {i + 1}/{len(pairs)} pairs ({time.perf_counter() - t0:.0f} s)")
    return out


def _stack(data: List[Dict[str, object]], stage: str):
    items = [d["rows"][stage] for d in data if stage in d["rows"]]
    if not items:
        return None, None, None
    return (np.stack([i[0] for i in items]), np.clip(np.stack([i[1] for i in items]), *GAIN_CLIP_DB),
            np.stack([i[2] for i in items]))


def fit(data: List[Dict[str, object]], n_estimators: int = 80, max_depth: Optional[int] = 10,
        min_samples_leaf: int = 4, seed: int = 0) -> Dict[str, object]:
    """One forest per stage and one for the deep path (see the module docstring); the bundle dict."""
    from sklearn.ensemble import RandomForestRegressor

    def forest():
        return RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                     max_features=0.5, random_state=seed, n_jobs=1)

    forests, counts = {}, {}
    for stage in _guided.STAGES:
        X, G, _A = _stack(data, stage)
        counts[stage] = 0 if X is None else int(len(X))
        if X is not None and len(X) >= 4:
            forests[stage] = forest().fit(X, G)
    deep = [(d["deep"][0], float(np.clip(d["deep"][1], *GAIN_CLIP_DB))) for d in data if np.isfinite(d["deep"][1])]
    if len(deep) >= 4:
        forests["deep"] = forest().fit(np.stack([x for x, _ in deep]), np.array([g for _, g in deep]))
    counts["deep"] = len(deep)
    return {"version": _guided.BUNDLE_VERSION, "forests": forests, "feature_names": list(_guided.FEATURE_NAMES),
            "candidates": {k: list(v) for k, v in _guided.CANDIDATES.items()}, "rows": counts,
            "margins": {s: 0.0 for s in _guided.STAGES}, "route_margin_db": 0.0}


def choose_margins(bundle: Dict[str, object], val: List[Dict[str, object]]) -> Dict[str, Dict[str, float]]:
    """Per stage, the margin of :data:`MARGIN_GRID` with the highest mean obtained gain on ``val`` rows."""
    from ...scripts.forest import predict

    res = {}
    for stage in _guided.STAGES:
        X, G, A = _stack(val, stage)
        model = bundle["forests"].get(stage)
        if X is None or model is None:
            res[stage] = {"margin": 0.0, "gain_db": 0.0, "oracle_db": 0.0, "n": 0}
            continue
        P = np.asarray(predict(model, X)).reshape(len(X), -1)
        P = np.where(A, P, -np.inf)
        j = P.argmax(axis=1)
        pg = P[np.arange(len(X)), j]
        tg = G[np.arange(len(X)), j]
        scores = {m: float(np.where(pg > m, tg, 0.0).mean()) for m in MARGIN_GRID}
        m = max(scores, key=lambda k: (round(scores[k], 4), k))
        res[stage] = {"margin": float(m), "gain_db": scores[m], "oracle_db": float(np.maximum(G.max(axis=1), 0).mean()),
                      "run_fraction": float(np.mean(pg > m)), "n": int(len(X)),
                      "worst_db": float(np.where(pg > m, tg, 0.0).min())}
    return res


ROUTE_MARGIN_GRID = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 100.0)


def route_rows(guide, pairs: List[Dict[str, object]], unet=None, denoiser: str = "wiener",
               log: Callable[[str], None] = print, tone_prior=None, inpaint_gate=None) -> List[Dict[str, object]]:
    """For each pair: input PSNR, PSNR after ``ml_guided``, ``deep_learning`` and ``classical``, and the
    forests' predicted gains of the plan and of the U-Net path (what ``auto`` compares).  ``denoiser``:
    the plan's denoiser here (the DFT Wiener filter by default: BM3D would cost minutes per pair set);
    ``tone_prior`` / ``inpaint_gate``: the engine's (default: the shipped ones)."""
    from ..engine import HybridRestorer
    from ...scripts.metrics import psnr

    r = HybridRestorer(guide=guide, unet=unet, device="cpu", denoiser=denoiser, tone_prior=tone_prior,
                       inpaint_gate=inpaint_gate)
    rows = []
    t0 = time.perf_counter()
    for i, p in enumerate(pairs):
        row = {"level": p["level"], "input": psnr(p["damaged"], p["clean"])}
        for m in ("ml_guided", "deep_learning", "classical"):
            out, info = r.restore(p["damaged"], m)
            row[m] = psnr(out, p["clean"])
        rep = _defects.measure(p["damaged"])
        masked = r._masks(p["damaged"], rep, None)
        row["pred_plan"] = r._guided_plan(rep, masked)[1]
        row["pred_deep"] = guide.deep_gain(rep, masked.plain_fraction)
        rows.append(row)
        if (i + 1) % 10 == 0:
            log(f"[guided] route calibration {i + 1}/{len(pairs)} ({time.perf_counter() - t0:.0f} s)")
    return rows


def choose_route(rows: List[Dict[str, object]]) -> Dict[str, object]:
    """The route margin of ``auto`` (see :func:`calibrate_route`) from :func:`route_rows`."""
    lv = np.array([x["level"] for x in rows])
    inp = np.array([x["input"] for x in rows])
    light = lv == "light"
    scores = {}
    for m in ROUTE_MARGIN_GRID:
        deep = np.array([x["pred_deep"] > x["pred_plan"] + m for x in rows])
        got = np.where(deep, [x["deep_learning"] for x in rows], [x["ml_guided"] for x in rows])
        ok = (not light.any()) or (float((got - inp)[light].mean()) >= -0.2 and float((got - inp)[light].min()) >= -1.0)
        scores[m] = {"psnr_db": float(got.mean()), "light_ok": bool(ok), "deep_fraction": float(deep.mean())}
    allowed = [m for m in ROUTE_MARGIN_GRID if scores[m]["light_ok"]] or [max(ROUTE_MARGIN_GRID)]
    best = max(allowed, key=lambda m: (round(scores[m]["psnr_db"], 3), m))
    means = {k: float(np.mean([x[k] for x in rows])) for k in ("input", "ml_guided", "deep_learning", "classical")}
    return {"route_margin_db": float(best), "by_margin": {str(k): v for k, v in scores.items()}, "means": means,
            "n": len(rows)}


def calibrate_route(guide, unet=None, per_level: int = 1, max_side: int = 256, limit: Optional[int] = None,
                    log: Callable[[str], None] = print, tone_prior=None, inpaint_gate=None) -> Dict[str, object]:
    """The route margin of ``auto`` chosen on the validation split: every pair (registry split ``val``,
    recipe v2) is restored by ``ml_guided``, ``deep_learning`` and ``classical`` (:func:`route_rows`);
    for each margin of :data:`ROUTE_MARGIN_GRID` (U-Net path when its predicted gain exceeds the plan's
    by the margin) the mean PSNR of the routing is computed; the best margin among those meeting the
    light-damage rule (mean ≥ input − 0.2 dB, no image below input − 1 dB) wins, ties to the larger
    margin (fewer U-Net runs)."""
    from . import sources

    pairs = sources.make_pairs("val", per_level=per_level, max_side=max_side, base_seed=7, limit=limit)
    res = choose_route(route_rows(guide, pairs, unet, log=log, tone_prior=tone_prior, inpaint_gate=inpaint_gate))
    best, m = res["route_margin_db"], res["means"]
    log(f"[guided] route margin {best:+.2f} dB: auto {res['by_margin'][str(best)]['psnr_db']:.2f} dB on {res['n']} "
        f"validation pairs (input {m['input']:.2f}, ml_guided {m['ml_guided']:.2f}, U-Net path "
        f"{m['deep_learning']:.2f}, classical {m['classical']:.2f})")
    return res


def train(out_relpath: Optional[str] = _guided.RELPATH, *, models_dir: Optional[str] = None, quick: bool = False,
          unet=None, log: Callable[[str], None] = print, tone_prior=None, inpaint_gate=None,
          **overrides) -> Dict[str, object]:
    """Build the train / validation rows, fit, choose the margins, save; returns the bundle and scores.
    ``tone_prior`` / ``inpaint_gate``: what the engine runs during the route calibration (default: shipped)."""
    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(QUICK)
    cfg.update(overrides)
    t0 = time.perf_counter()
    if unet is None:
        from ..unet import load_shipped

        unet = load_shipped()
    tr_pairs = guided_pairs("train", cfg["sides"], cfg["seed"], cfg["limit"])
    log(f"[guided] {len(tr_pairs)} training pairs")
    tr = build(tr_pairs, unet, log)
    va_pairs = guided_pairs("val", cfg["sides"], cfg["seed"] + 1, cfg["val_limit"])
    log(f"[guided] {len(va_pairs)} validation pairs")
    va = build(va_pairs, unet, log)
    bundle = fit(tr, cfg["n_estimators"], cfg["max_depth"], cfg["min_samples_leaf"], cfg["seed"])
    margins = choose_margins(bundle, va)
    bundle["margins"] = {s: v["margin"] for s, v in margins.items()}
    bundle["validation"] = margins
    bundle["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    bundle["seconds"] = time.perf_counter() - t0
    for s, v in margins.items():
        log(f"[guided] {s}: margin {v['margin']:+.2f} dB, validation gain {v['gain_db']:+.3f} dB "
            f"(oracle {v['oracle_db']:+.3f}) over {v['n']} rows")
    route = calibrate_route(_guided.Guide(bundle), unet, per_level=1, max_side=96 if quick else 256,
                            limit=cfg["route_limit"], log=log, tone_prior=tone_prior, inpaint_gate=inpaint_gate)
    bundle["route_margin_db"] = route["route_margin_db"]
    bundle["route_validation"] = route
    digest = _guided.save(bundle, out_relpath, models_dir) if out_relpath else None
    return {"bundle": bundle, "sha256": digest, "validation": margins, "route": route, "train_rows": tr, "val_rows": va,
            "seconds": bundle["seconds"]}


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cache", help="pickle the train / val rows here (for margin and routing studies)")
    a = ap.parse_args()
    r = train(quick=a.quick)
    if a.cache:
        import pickle

        with open(a.cache, "wb") as f:
            pickle.dump({"train": r["train_rows"], "val": r["val_rows"]}, f)

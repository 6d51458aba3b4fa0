"""Optimal-parameter search and the random-forest parameter predictor.

Training data: for every training pair the 40 combinations of :data:`.classical.GRID` are applied
to the damaged image and scored by PSNR against the clean one.  The model (scikit-learn
``RandomForestRegressor``, multi-output, after a ``StandardScaler`` on the 14 features of
:mod:`.analysis`) predicts 41 numbers: the PSNR *gain* (dB) of each of the 40 combinations over the
damaged input, and the input's own PSNR (dB) against its unknown clean original — the engine's
quality estimate.  At inference the combination with the highest predicted gain is applied, or
nothing at all ("no change") when no combination is predicted to gain (best gain ≤ 0 dB): on lightly
damaged images every sharpening / stretch of the grid tends to lower PSNR.

The bundle (scaler, forest, grid, feature names, metadata) is saved with
``scripts.shipped_models.save_joblib`` to ``models/hybrid/predictor.joblib`` with its sha256, and
loaded only through ``load_joblib`` (hash-checked, only from the pack's ``models/``).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..scripts.metrics import psnr
from . import analysis, classical

RELPATH = "hybrid/predictor.joblib"
BUNDLE_VERSION = 1
#: the ML-guided method leaves the image unchanged when the best predicted gain is at most this
#: margin (dB); a trained bundle carries its own margin, chosen by cross-validation from
#: :data:`MARGINS_DB` (``no_change_below_db``); this is the default for bundles without one
NO_CHANGE_BELOW_DB = 0.0
MARGINS_DB = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


def grid_scores(damaged: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each of the 40 grid combinations applied to ``damaged``, against ``clean``."""
    cc = classical.colour_correct(damaged)
    out = np.empty(len(classical.GRID), np.float64)
    for i, (colour, sigma, strength) in enumerate(classical.GRID):
        out[i] = psnr(classical.sharpen(cc if colour else damaged, sigma, strength), clean)
    return out


def build_dataset(pairs: Sequence[Dict[str, object]], log: Callable[[str], None] = print) -> Dict[str, np.ndarray]:
    """Features ``X [n,14]``, grid PSNRs ``S [n,40]``, input PSNR ``q [n]``, group labels (source)."""
    X, S, q, groups, levels = [], [], [], [], []
    t0 = time.perf_counter()
    for i, p in enumerate(pairs):
        X.append(analysis.feature_vector(analysis.analyze(p["damaged"])))
        S.append(grid_scores(p["damaged"], p["clean"]))
        q.append(psnr(p["damaged"], p["clean"]))
        groups.append(p["source"])
        levels.append(p["level"])
        if (i + 1) % 50 == 0:
            log(f"[predictor] grid search {i + 1}/{len(pairs)} ({time.perf_counter() - t0:.0f} s)")
    return {"X": np.array(X), "S": np.array(S), "q": np.array(q), "groups": np.array(groups),
            "levels": np.array(levels)}


def _targets(data: Dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([data["S"] - data["q"][:, None], data["q"][:, None]], axis=1)


def fit(data: Dict[str, np.ndarray], n_estimators: int = 200, max_depth: Optional[int] = 12,
        seed: int = 0, min_samples_leaf: int = 2) -> Dict[str, object]:
    """Fit scaler + forest on a dataset from :func:`build_dataset`; returns the bundle dict."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(data["X"])
    forest = RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                   random_state=seed, n_jobs=1)
    forest.fit(scaler.transform(data["X"]), _targets(data))
    return {"version": BUNDLE_VERSION, "scaler": scaler, "forest": forest,
            "grid": list(classical.GRID), "feature_names": list(analysis.FEATURE_NAMES),
            "n_train": int(len(data["X"]))}


def cross_validate(data: Dict[str, np.ndarray], folds: int = 5, **fit_kw) -> Dict[str, float]:
    """Grouped (by source image) k-fold CV of the predictor.

    Returns: R² of the gains and of the quality estimate, mean PSNR reached by the predicted
    combination, by the oracle (best of 40) and by the rule-based choice, and the quality MAE (dB).
    """
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold

    k = min(folds, len(set(data["groups"].tolist())))
    T = _targets(data)
    pred = np.zeros_like(T)
    for tr, te in GroupKFold(n_splits=k).split(data["X"], T, data["groups"]):
        sub = {key: v[tr] for key, v in data.items()}
        b = fit(sub, **fit_kw)
        pred[te] = b["forest"].predict(b["scaler"].transform(data["X"][te]))
    chosen = pred[:, :-1].argmax(axis=1)
    rows = np.arange(len(chosen))
    best_gain = pred[rows, chosen]
    # the "no change" choice of Predictor.predict, for each candidate margin; the best margin is kept
    by_margin = {float(m): float(np.where(best_gain <= m, data["q"], data["S"][rows, chosen]).mean())
                 for m in MARGINS_DB}
    margin = max(by_margin, key=lambda m: (round(by_margin[m], 9), m))
    keep = best_gain <= margin
    with_no_change = np.where(keep, data["q"], data["S"][rows, chosen])
    rule = []
    for x in data["X"]:
        p = classical.rule_parameters(dict(zip(analysis.FEATURE_NAMES, x)))
        rule.append(_nearest_grid(p["colour_correction"], p["sigma"], p["strength"]))
    return {
        "folds": int(k), "r2_gains": float(r2_score(T[:, :-1], pred[:, :-1])),
        "r2_quality": float(r2_score(T[:, -1], pred[:, -1])),
        "quality_mae_db": float(np.mean(np.abs(T[:, -1] - pred[:, -1]))),
        "psnr_input": float(data["q"].mean()),
        "psnr_predicted_combo": float(data["S"][rows, chosen].mean()),
        "psnr_predicted_or_no_change": float(with_no_change.mean()),
        "no_change_below_db": float(margin),
        "psnr_by_no_change_margin": by_margin,
        "no_change_fraction": float(keep.mean()),
        "psnr_oracle_combo": float(data["S"].max(axis=1).mean()),
        "psnr_rule_combo": float(data["S"][rows, np.array(rule)].mean()),
        "n": int(len(T)),
    }


def _nearest_grid(colour: bool, sigma: float, strength: float) -> int:
    best, best_d = 0, np.inf
    for i, (c, s, a) in enumerate(classical.GRID):
        d = (c != colour) * 100 + abs(s - sigma) + abs(a - strength)
        if d < best_d:
            best, best_d = i, d
    return best


def save(bundle: Dict[str, object], relpath: str = RELPATH, models_dir: Optional[str] = None) -> str:
    from ..scripts.shipped_models import save_joblib

    return save_joblib(bundle, relpath, **({"models_dir": models_dir} if models_dir else {}))


class Predictor:
    """The trained bundle with the two questions the engine asks."""

    def __init__(self, bundle: Dict[str, object], source: str = ""):
        if not isinstance(bundle, dict) or "forest" not in bundle or "scaler" not in bundle:
            raise ValueError(f"{source or 'predictor'}: not a RestoreKit hybrid predictor bundle")
        if list(bundle.get("feature_names", [])) != list(analysis.FEATURE_NAMES):
            raise ValueError(f"{source or 'predictor'}: trained on different features; retrain it")
        self.bundle = bundle
        self.source = source
        self.no_change_below_db = float(bundle.get("no_change_below_db", NO_CHANGE_BELOW_DB))

    @classmethod
    def load(cls, relpath: str = RELPATH, models_dir: Optional[str] = None) -> "Predictor":
        """Load from the pack's ``models/`` only, after the sha256 check (``load_joblib``)."""
        from ..scripts.shipped_models import load_joblib

        return cls(load_joblib(relpath, **({"models_dir": models_dir} if models_dir else {})), relpath)

    def _predict(self, features: Dict[str, float]) -> np.ndarray:
        from ..scripts.forest import predict

        x = analysis.feature_vector(features)[None]
        return predict(self.bundle["forest"], self.bundle["scaler"].transform(x))[0]

    def predict(self, features: Dict[str, float]) -> Dict[str, object]:
        """Best grid combination and the quality estimate for an :func:`analysis.analyze` result.

        When no combination is predicted to gain more than the bundle's cross-validated margin
        (``no_change_below_db``, default :data:`NO_CHANGE_BELOW_DB`), the answer is "no change"
        (``colour_correction`` False, ``strength`` 0, ``no_change`` True).
        """
        y = self._predict(features)
        gains = y[:-1]
        i = int(np.argmax(gains))
        colour, sigma, strength = self.bundle["grid"][i]
        out = {"colour_correction": bool(colour), "sigma": float(sigma), "strength": float(strength),
               "predicted_gain_db": float(gains[i]), "quality_db": float(y[-1]), "no_change": False}
        if gains[i] <= self.no_change_below_db:
            out.update(colour_correction=False, strength=0.0, no_change=True,
                       best_combination={"colour_correction": bool(colour), "sigma": float(sigma),
                                         "strength": float(strength)})
        return out

    def quality_db(self, features: Dict[str, float]) -> float:
        """Estimated PSNR (dB) of the image against its undamaged original."""
        return float(self._predict(features)[-1])

"""Fast single-image prediction with a fitted scikit-learn random forest.

``RandomForestRegressor.predict`` validates its input and dispatches every tree through joblib, a
fixed cost per tree even for one sample.  :func:`predict` averages the trees' own
``tree_.predict`` directly, which is what scikit-learn computes (the mean of the trees' leaf
values), without that overhead (``benchmarks/bench_hybrid.py`` times the routed restore that uses
it).  Anything that is not a fitted forest of regression trees goes through its own ``predict``.
"""
from __future__ import annotations

import numpy as np


def predict(model, X) -> np.ndarray:
    """``model.predict(X)`` for a fitted forest regressor, computed tree by tree without joblib.

    ``X``: ``[n, n_features]``.  Returns ``[n]`` (one output) or ``[n, n_outputs]``, float64,
    equal to ``model.predict(X)`` (the trees' mean; tested against it).
    """
    trees = getattr(model, "estimators_", None)
    if not trees or not all(hasattr(t, "tree_") for t in trees) or getattr(model, "n_outputs_", None) is None:
        return np.asarray(model.predict(X), np.float64)
    x = np.ascontiguousarray(np.asarray(X, np.float32).reshape(len(X), -1))
    acc = np.zeros((x.shape[0], model.n_outputs_), np.float64)
    for t in trees:
        acc += t.tree_.predict(x).reshape(x.shape[0], model.n_outputs_)
    acc /= len(trees)
    return acc[:, 0] if model.n_outputs_ == 1 else acc


def predict_spread(model, X) -> "tuple[np.ndarray, np.ndarray]":
    """``(mean, std)`` over the forest's trees for ``X`` ``[n, n_features]``, each ``[n, n_outputs]``
    (the mean equals :func:`predict`; the std across trees is a measure of how sure the forest is).
    Anything that is not a forest of regression trees gives its ``predict`` and a zero spread."""
    trees = getattr(model, "estimators_", None)
    x = np.ascontiguousarray(np.asarray(X, np.float32).reshape(len(X), -1))
    if not trees or not all(hasattr(t, "tree_") for t in trees) or getattr(model, "n_outputs_", None) is None:
        m = np.asarray(model.predict(x), np.float64).reshape(len(x), -1)
        return m, np.zeros_like(m)
    per = np.stack([t.tree_.predict(x).reshape(x.shape[0], model.n_outputs_) for t in trees]).astype(np.float64)
    return per.mean(0), per.std(0)


def predict_proba(model, X) -> np.ndarray:
    """``model.predict_proba(X)`` for a fitted single-output forest classifier, computed tree by tree
    without joblib (each tree's class fractions normalised, then averaged, as scikit-learn does).

    ``X``: ``[n, n_features]``.  Returns ``[n, n_classes]`` float64 in the order of ``model.classes_``
    (tested against ``model.predict_proba``).  Anything else goes through its own ``predict_proba``."""
    trees = getattr(model, "estimators_", None)
    if (not trees or not all(hasattr(t, "tree_") for t in trees) or getattr(model, "n_outputs_", None) != 1
            or not hasattr(model, "classes_")):
        return np.asarray(model.predict_proba(X), np.float64)
    x = np.ascontiguousarray(np.asarray(X, np.float32).reshape(len(X), -1))
    acc = np.zeros((x.shape[0], len(model.classes_)), np.float64)
    for t in trees:
        v = t.tree_.predict(x)[:, : acc.shape[1]].astype(np.float64)
        s = v.sum(axis=1, keepdims=True)
        acc += v / np.where(s > 0, s, 1.0)
    return acc / len(trees)

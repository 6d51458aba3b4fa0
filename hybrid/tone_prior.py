"""The learned tone prior: the undamaged image's per-channel tone distribution, predicted from the
damaged image's measurements, and the tone stage that matches it.

Fading, yellowing, casts and a lifted or crushed tone curve are the largest part of the PSNR an old
photo loses, and the one no local filter can undo: nothing in one image says where its own black point
*was*.  On validation pairs of the damage generator, matching each channel's percentiles to the true
undamaged ones after the plan's other stages would add +6 / +4.5 / +3.7 dB (light / moderate /
severe) — more than all the other stages together.  A clean photograph's percentiles follow a prior
that many photographs share; a random forest learns it.

Model (``models/hybrid/tone_prior.joblib``, built by :mod:`.tools.train_tone_prior`): a multi-output
random forest (predicting the leading principal components of the change, which keeps the file small)
from the image's measurements (the 57 inputs of the ``ml_guided`` forests,
:func:`.guided.feature_vector`, plus the 33 per-channel percentiles of :attr:`.defects.ToneMeasure.
percentiles`) to the *change* of those 33 percentiles that takes the image to its undamaged original
(percentiles are read on the area-downscaled, lightly smoothed copy of :func:`.defects.measure_tone`,
so noise barely moves them).  Training pairs: the training split of the source registry, damaged by
the generator at every level, single defects, clean and tone-varied clean images (the prior must also
learn what a clean image's tone looks like, or every clean photo would be "corrected").

Use (:func:`decide`): the predicted change, times the strength, is applied only when its RMS over the
33 percentiles is at least ``min_change`` (both chosen on the validation split, stored in the
bundle); below it the tone stage is skipped with the prediction as the reason.  The stage
(:func:`.plan._match_percentiles`) maps each channel through the monotone piecewise-linear curve that
takes the image's *current* percentiles (after inpainting, denoising and deblurring) to the targets,
so it replaces the levels / per-channel levels / cast stages, which it contains as special cases.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from . import defects as _defects

RELPATH = "hybrid/tone_prior.joblib"
BUNDLE_VERSION = 1
PERCENTILES = _defects.PERCENTILES
#: a knot of the matching curve moves at most this far (0..1 units): a bound against a wild prediction
MAX_SHIFT = 0.35


def percentile_matrix(report: "_defects.DefectReport") -> np.ndarray:
    """``[3, K]`` per-channel percentiles (a grey image's one channel repeated)."""
    p = np.asarray(report.tone.percentiles, np.float64)
    if p.ndim != 2 or p.shape[1] != len(PERCENTILES):
        raise ValueError("the defect report has no tone percentiles (measured by an older version?)")
    return np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p[:3]


def features(report: "_defects.DefectReport") -> np.ndarray:
    """The prior's input: :func:`.guided.feature_vector` (mask fraction 0, no stage run) and the
    flattened :func:`percentile_matrix`."""
    from .guided import feature_vector

    return np.concatenate([feature_vector(report, 0.0), percentile_matrix(report).ravel()])


class TonePrior:
    """The trained forest and the choice it supports (:meth:`predict`, :meth:`decide`)."""

    def __init__(self, bundle: Dict[str, object], source: str = ""):
        if not isinstance(bundle, dict) or "forest" not in bundle:
            raise ValueError(f"{source or 'tone prior'}: not a RestoreKit tone-prior bundle")
        if tuple(bundle.get("percentiles", ())) != tuple(PERCENTILES):
            raise ValueError(f"{source or 'tone prior'}: trained on other percentiles; retrain it (restorekit retrain)")
        self.bundle = bundle
        self.source = source
        self.strength = float(bundle.get("strength", 1.0))
        self.min_change = float(bundle.get("min_change", 0.0))
        self.risk = float(bundle.get("risk", 0.0))

    @classmethod
    def load(cls, relpath: str = RELPATH, models_dir: Optional[str] = None) -> "TonePrior":
        """Load from the pack's ``models/`` only, after the sha256 check."""
        from ..scripts.shipped_models import load_joblib

        return cls(load_joblib(relpath, **({"models_dir": models_dir} if models_dir else {})), relpath)

    def predict(self, report: "_defects.DefectReport", risk: Optional[float] = None) -> np.ndarray:
        """Predicted change ``[3, K]`` of the per-channel percentiles (0..1 units) towards the original.

        Cautious: each predicted coordinate is shrunk towards zero by ``risk`` (default the bundle's)
        times the spread of the forest's trees (soft thresholding), so only what the trees agree on is
        applied."""
        from ..scripts.forest import predict_spread

        k = self.risk if risk is None else float(risk)
        mean, std = predict_spread(self.bundle["forest"], features(report)[None])
        z = np.sign(mean[0]) * np.maximum(np.abs(mean[0]) - k * std[0], 0.0)
        basis = self.bundle.get("basis")
        if basis is not None:  # coordinates along the principal directions of the changes (uncentred:
            z = z @ np.asarray(basis["components"], np.float64)  # a zero coordinate is no change)
        d = z.reshape(3, len(PERCENTILES))
        return np.clip(d, -MAX_SHIFT, MAX_SHIFT)

    def decide(self, report: "_defects.DefectReport", strength: Optional[float] = None,
               min_change: Optional[float] = None, risk: Optional[float] = None) -> Tuple[Optional[Dict[str, object]], str]:
        """``(parameters of the tone stage's "match" operation, why)``, or ``(None, why not)``."""
        s = self.strength if strength is None else float(strength)
        tau = self.min_change if min_change is None else float(min_change)
        cur = percentile_matrix(report)
        delta = s * self.predict(report, risk)
        rms = float(np.sqrt(np.mean(delta ** 2)))
        if rms < tau or s <= 0:
            return None, (f"the tone prior predicts the tone is close to undamaged (percentile change RMS "
                          f"{rms:.3f} < {tau:.3f})")
        targets = cur + delta
        if report.channels == 1:
            targets = targets.mean(0, keepdims=True)
        low, mid, high = (targets[:, i].mean() - cur[:, i].mean() for i in (0, len(PERCENTILES) // 2, -1))
        why = (f"tone prior: percentiles move RMS {rms:.3f} ≥ {tau:.3f} (mean shift: dark {low:+.3f}, "
               f"middle {mid:+.3f}, light {high:+.3f})")
        return {"percentiles": list(PERCENTILES), "targets": [[float(v) for v in row] for row in targets]}, why


def amend(plan, report: "_defects.DefectReport", prior: Optional[TonePrior]):
    """``plan`` with its tone and colour stages replaced by the prior's percentile match (or by a skip
    saying why not).  Without a prior the plan is returned as it is."""
    from . import plan as _plan

    if prior is None:
        return plan
    params, why = prior.decide(report)
    steps = [s for s in plan.steps if s.stage not in ("tone", "colour")]
    skipped = [s for s in plan.skipped if s.stage not in ("tone", "colour")]
    if params is None:
        skipped.append(_plan.Skip("tone", why))
    else:
        steps.append(_plan.Step("tone", {"ops": [("match", params)]}, why))
    skipped.append(_plan.Skip("colour", "done by the tone prior's per-channel match" if params is not None
                              else "left to the tone prior (it includes casts)"))
    order = {s: i for i, s in enumerate(_plan.ORDER)}
    steps.sort(key=lambda s: order[s.stage])
    skipped.sort(key=lambda s: order[s.stage])
    return _plan.Plan(steps, skipped, plan.source)


def load_shipped() -> Tuple[Optional[TonePrior], str]:
    """The shipped prior, or ``(None, why)`` when it is absent."""
    try:
        return TonePrior.load(), ""
    except FileNotFoundError as exc:
        return None, f"no tone prior ({exc})"


def training_row(damaged_report: "_defects.DefectReport", clean_report: "_defects.DefectReport") -> Tuple[np.ndarray, np.ndarray]:
    """``(features, target)`` of one pair: the target is the change of the 33 percentiles."""
    return features(damaged_report), (percentile_matrix(clean_report) - percentile_matrix(damaged_report)).ravel()



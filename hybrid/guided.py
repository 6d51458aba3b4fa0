"""The ``ml_guided`` plan: the stages of :mod:`.plan`, each gated and parametrised by random forests.

The same six stages and executors as the ``classical`` plan (:data:`.plan.ORDER`, :data:`.plan.STAGES`),
but instead of fixed thresholds, one forest per stage predicts the PSNR gain (dB) of each of the stage's
*candidates* (a few parameter choices, :func:`candidates`) from the image's measurements
(:func:`feature_vector`: the 14 FFT features, the defect measurements of :mod:`.defects` with their
units, the detected damage-mask fraction, and which earlier stages were chosen).  A stage runs the
candidate with the highest predicted gain when that gain is above the stage's margin (chosen on the
validation split, :mod:`.tools.train_guided`); otherwise it is skipped, with the prediction as the
reason.  An image for which every stage is skipped comes back unchanged (bit-identical).

A further forest predicts the gain of the ``deep_learning`` path (:func:`deep_plan` then the U-Net),
and the route forest (:attr:`Guide.route_forest`) predicts the U-Net path's advantage over the plan from
the measurements, both predicted gains and how much the U-Net changes the image's :data:`ROUTE_SIDE`-px
copy (:func:`route_vector`); ``auto`` follows it — and also takes the U-Net path when the level forest
(:attr:`Guide.level_forest`, a classifier of the damage generator's levels on the same inputs) finds the
damage unlikely to be light or none (:meth:`Guide.light_probability` below
:attr:`Guide.route_level_threshold`).  Bundles without a route forest compare the two
predicted gains (route margin) and the U-Net residual with :attr:`Guide.route_residual_db`.  All chosen
on validation by :mod:`.tools.train_guided`.

Training (:mod:`.tools.train_guided`): damaged / clean pairs of the training split (damage generator v2:
several defects at once, every level, plus single-defect pairs, clean images and tone-varied clean
images); along the chain the gain of every candidate is measured against the clean image, and the best
candidate (when it gains) is applied before the next stage (greedy oracle), so every stage learns on
the images it will meet.  The bundle (``models/hybrid/guided.joblib``: scikit-learn forests, feature
names, candidate names, margins, metadata) is loaded only through the sha256 check of
:func:`scripts.shipped_models.load_joblib`.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import analysis, defects as _defects, plan as _plan

RELPATH = "hybrid/guided.joblib"
BUNDLE_VERSION = 1
#: the stages the forests gate, in plan order
STAGES = _plan.ORDER
#: measurement features (beside the 14 FFT features), in this order
MEASURE_NAMES = ("noise_sigma", "noise_rho", "noise_floor", "noise_chroma_ratio", "noise_gaussianity",
                 "noise_structure", "noise_grain", "blur_sigma", "blur_excess", "blur_found",
                 "motion_anisotropy", "motion_confidence", "motion_length", "motion_present",
                 "black_point", "white_point", "contrast", "rms_contrast", "tone_mean",
                 "channel_low_spread", "channel_high_spread", "cast_a", "cast_b", "cast_magnitude",
                 "cast_spread", "chroma", "illumination_stops", "jpeg_blockiness", "mask_fraction",
                 "log_pixels", "grey")
FEATURE_NAMES = tuple(analysis.FEATURE_NAMES) + MEASURE_NAMES + tuple(f"ran_{s}" for s in STAGES)
#: a denoise candidate exists from this measured σ (below it nothing could gain)
MIN_NOISE_SIGMA = 0.002
#: a Gaussian deblur / sharpen candidate exists from this excess blur (px)
MIN_BLUR_EXCESS = 0.25
#: the deep_learning path denoises first (the U-Net was trained on lighter noise) from this σ
HEAVY_NOISE_SIGMA = 0.03


def feature_vector(report: "_defects.DefectReport", mask_fraction: float = 0.0,
                   ran: Sequence[str] = ()) -> np.ndarray:
    """The forests' input (:data:`FEATURE_NAMES`): 14 FFT features, measurements, the damage-mask
    fraction (0..1) and 0/1 flags for the stages already chosen (``ran``)."""
    f = report.features
    n, b, mo, t, c = report.noise, report.blur, report.motion, report.tone, report.colour
    h, w = report.shape
    m = [n.sigma, n.rho, n.floor, n.chroma_ratio, n.gaussianity, min(n.structure, 50.0), float(n.kind == "grain"),
         -1.0 if b.sigma is None else b.sigma, b.excess, float(b.sigma is not None),
         mo.anisotropy, mo.confidence, mo.length, float(mo.present),
         t.black_point, t.white_point, t.contrast, t.rms_contrast, t.mean,
         float(np.ptp(t.channel_low)), float(np.ptp(t.channel_high)),
         0.0 if c is None else c.cast_a, 0.0 if c is None else c.cast_b, 0.0 if c is None else c.magnitude,
         0.0 if c is None else c.spread, 0.0 if c is None else c.chroma,
         report.illumination.variation_stops, report.jpeg.blockiness, float(mask_fraction),
         math.log10(max(h * w, 1)), float(c is None)]
    flags = [float(s in ran) for s in STAGES]
    x = np.array([float(f[k]) for k in analysis.FEATURE_NAMES] + m + flags, np.float64)
    return np.nan_to_num(x, nan=0.0, posinf=1e3, neginf=-1e3)  # features only, never image data


# --- candidates --------------------------------------------------------------------------------------------
#: candidate names per stage (the forests' outputs, in this order); a candidate that does not apply to
#: an image (no mask, no edges, grey image, ...) is absent from :func:`candidates` and never chosen
CANDIDATES: Dict[str, Tuple[str, ...]] = {
    "inpaint": ("telea",),
    "denoise": ("strength_0.7", "strength_1.0"),
    "deblur": ("gaussian_0.5", "gaussian_0.8", "motion"),
    "tone": ("levels_0.5", "levels_1.0", "channel_levels_0.5", "channel_levels_1.0", "flatfield"),
    "colour": ("cast_0.6", "cast_1.0"),
    "sharpen": ("amount_0.6", "amount_1.2"),
}


def candidates(stage: str, report: "_defects.DefectReport", mask: Optional[np.ndarray],
               residual_sigma: float, denoiser: str = "auto",
               rules: "_plan.Rules" = _plan.RULES) -> Dict[str, Tuple[Dict[str, object], str]]:
    """``{candidate: (parameters for plan.STAGES[stage], description)}`` of the candidates that apply."""
    out: Dict[str, Tuple[Dict[str, object], str]] = {}
    n, b, mo, t = report.noise, report.blur, report.motion, report.tone
    if stage == "inpaint":
        if mask is not None and np.any(mask):
            out["telea"] = (_plan.inpaint_params(mask, rules), f"{100 * float(np.mean(mask)):.2f} % of the pixels marked")
    elif stage == "denoise":
        if n.sigma >= MIN_NOISE_SIGMA and n.acf is not None:
            for s in (0.7, 1.0):
                out[f"strength_{s}"] = ({"sigma": n.sigma, "kind": n.kind, "rho": n.rho, "chroma_ratio": n.chroma_ratio,
                                         "strength": s, "noise_acf": n.acf, "backend": denoiser},
                                        f"noise σ {n.sigma:.4f} ({n.kind}), strength {s}")
    elif stage == "deblur":
        common = {"iterations": rules.rl_iterations, "damping": rules.rl_damping, "noise_sigma": residual_sigma}
        if b.sigma is not None and b.excess >= MIN_BLUR_EXCESS:
            for s in (0.5, 0.8):
                out[f"gaussian_{s}"] = (dict(common, kernel="gaussian", sigma=s * b.excess),
                                        f"Gaussian σ {s * b.excess:.2f} px ({s} × excess blur {b.excess:.2f})")
        if mo.estimated and mo.length >= _defects.MOTION_MIN_LENGTH:
            out["motion"] = (dict(common, kernel="motion", length=mo.length, angle=mo.angle),
                             f"linear motion {mo.length:.1f} px at {mo.angle:.0f}° (confidence {mo.confidence:.2f})")
    elif stage == "tone":
        bi, wi = t.black_point, t.white_point
        if wi - bi > 0.05:
            bo, wo = min(bi, rules.black_target), max(wi, rules.white_target)
            if bo != bi or wo != wi:
                for s in (0.5, 1.0):
                    out[f"levels_{s}"] = ({"ops": [("levels", {"black_in": bi, "white_in": wi,
                                                               "black_out": bi + s * (bo - bi),
                                                               "white_out": wi + s * (wo - wi)})]},
                                          f"levels {bi:.3f}..{wi:.3f} → {bi + s * (bo - bi):.3f}..{wi + s * (wo - wi):.3f}")
        lo, hi = list(map(float, t.channel_low)), list(map(float, t.channel_high))
        if min(h_ - l_ for h_, l_ in zip(hi, lo)) > 0.05:
            for s in (0.5, 1.0):
                out[f"channel_levels_{s}"] = ({"ops": [("channel_levels", {"low": lo, "high": hi, "strength": s})]},
                                              f"per-channel 0.5–99.5 % stretch, strength {s}")
        if report.illumination.surface is not None and report.illumination.variation_stops > 0.05:
            out["flatfield"] = ({"ops": [("flatfield", {"surface": report.illumination.surface})]},
                                f"flat-field ({report.illumination.variation_stops:.2f} stops)")
    elif stage == "colour":
        c = report.colour
        if c is not None and c.magnitude > 0.002:
            for s in (0.6, 1.0):
                out[f"cast_{s}"] = ({"measured_a": c.cast_a, "measured_b": c.cast_b, "strength": s},
                                    f"cast ({c.cast_a:+.3f}, {c.cast_b:+.3f}) Oklab, strength {s}")
    elif stage == "sharpen":
        if b.sigma is not None:
            e = max(b.excess, 0.5)
            for a in (0.6, 1.2):
                out[f"amount_{a}"] = ({"amount": a * e, "radius": max(0.8, 1.2 * e), "noise_sigma": residual_sigma},
                                      f"amount {a * e:.2f}, radius {max(0.8, 1.2 * e):.2f} px")
    else:
        raise ValueError(f"unknown stage '{stage}'")
    return out


def residual_after(stage_ran: Dict[str, bool], report: "_defects.DefectReport") -> float:
    """The noise σ the later stages' noise guards assume (what a denoiser typically leaves)."""
    return 0.25 * report.noise.sigma if stage_ran.get("denoise") else report.noise.sigma


#: the longer side (px) of the area-downscaled copy on which ``auto`` measures the U-Net's residual for
#: :attr:`Guide.route_residual_db` (the size of the pairs it was calibrated on)
ROUTE_SIDE = 256
#: ... and the longer side (px) of the coarse copies (of that copy and of its U-Net output) whose PSNR
#: is the residual: large-scale tone and colour only, so texture the U-Net smooths does not count
ROUTE_RESIDUAL_SIDE = 64


#: the route forest's inputs: :data:`FEATURE_NAMES` and these
ROUTE_EXTRA_FEATURES = ("pred_plan_gain_db", "pred_deep_gain_db", "pred_deep_spread_db", "unet_coarse_residual_db",
                        "unet_fine_residual_db")


#: the level forest's classes (:attr:`Guide.level_forest`): the damage generator's levels and undamaged
LEVEL_CLASSES = ("clean", "light", "moderate", "severe")


def route_vector(x: np.ndarray, pred_plan: float, pred_deep: float, pred_deep_std: float, coarse_db: float,
                 fine_db: float) -> np.ndarray:
    """The route forest's input: the forests' feature vector ``x`` (:func:`feature_vector`), their
    predicted gains (dB) of the plan and of the U-Net path with the deep trees' spread, and the U-Net
    residuals (dB, :meth:`..engine.HybridRestorer.unet_residuals`)."""
    return np.concatenate([np.asarray(x, np.float64).ravel(),
                           [pred_plan, pred_deep, pred_deep_std, coarse_db, fine_db]])


def light_probability(model, X: np.ndarray) -> np.ndarray:
    """``P(clean) + P(light)`` per row of ``X`` ``[n, n_features]`` from a fitted classifier over
    :data:`LEVEL_CLASSES` (classes it never saw count 0)."""
    from ..scripts.forest import predict_proba

    proba = predict_proba(model, np.asarray(X, np.float64))
    classes = [str(c) for c in model.classes_]
    return sum((proba[:, classes.index(c)] for c in ("clean", "light") if c in classes), np.zeros(len(proba)))


# --- the bundle --------------------------------------------------------------------------------------------
class Guide:
    """The trained forests with the questions the engine asks (:meth:`plan`, :meth:`deep_gain`)."""

    def __init__(self, bundle: Dict[str, object], source: str = ""):
        if not isinstance(bundle, dict) or "forests" not in bundle:
            raise ValueError(f"{source or 'guide'}: not a RestoreKit ml_guided bundle")
        if tuple(bundle.get("feature_names", ())) != FEATURE_NAMES:
            raise ValueError(f"{source or 'guide'}: trained on different features; retrain it (restorekit retrain)")
        if {k: tuple(v) for k, v in bundle.get("candidates", {}).items()} != CANDIDATES:
            raise ValueError(f"{source or 'guide'}: trained on different candidates; retrain it")
        self.bundle = bundle
        self.source = source
        self.margins: Dict[str, float] = dict(bundle.get("margins", {}))
        self.route_margin = float(bundle.get("route_margin_db", 0.0))
        #: the U-Net path's predicted gain is taken less this many times the spread of the deep forest's
        #: trees (a cautious estimate; 0 in bundles from before it existed)
        self.route_risk = float(bundle.get("route_risk", 0.0))
        #: ``auto`` also takes the U-Net path when the U-Net changes the image's :data:`ROUTE_SIDE`-px
        #: copy by more than this: the PSNR (dB) of its :data:`ROUTE_RESIDUAL_SIDE`-px coarse copy
        #: against that of the U-Net's output is below it (−inf: off, as in bundles from before it
        #: existed).  Chosen on validation.
        self.route_residual_db = float(bundle.get("route_residual_db", float("-inf")))
        #: the route forest (when the bundle has one: it then decides ``auto``'s route alone): the
        #: advantage (dB) of the U-Net path over the ``ml_guided`` plan, predicted from
        #: :func:`route_vector`; the U-Net path runs when the prediction less ``route_forest_risk`` × the
        #: trees' spread exceeds ``route_forest_margin_db`` (both chosen on validation)
        self.route_forest = bundle.get("route_forest")
        self.route_forest_risk = float(bundle.get("route_forest_risk", 0.0))
        self.route_forest_margin = float(bundle.get("route_forest_margin_db", 0.0))
        #: ... and only where the deep forest's predicted gain less the plan's is at least this (dB): the
        #: lowest such difference among the validation images the route forest sends to the U-Net, less a
        #: safety margin — beyond it the forest would extrapolate (−inf in bundles before it existed)
        self.route_forest_floor = float(bundle.get("route_forest_floor_db", float("-inf")))
        #: the level forest (a classifier over :data:`LEVEL_CLASSES` on :func:`route_vector`, or None in
        #: bundles before it existed) and the probability of light-or-no damage below which ``auto``
        #: takes the U-Net path whatever the route forest says (chosen on validation)
        self.level_forest = bundle.get("level_forest")
        self.route_level_threshold = float(bundle.get("route_level_threshold", 0.0))
        #: the U-Net's weight in ``auto``'s output when its plan (not the U-Net path) changed the image:
        #: :func:`.blend.weight_for` of the route's predicted advantage with these ``max_weight``,
        #: ``centre_db`` and ``scale_db`` (chosen on validation; largest weight 0: off, as in bundles from
        #: before it existed)
        self.blend = {"max_weight": 0.0, "centre_db": 0.0, "scale_db": 10.0, **dict(bundle.get("blend", {}))}

    @classmethod
    def load(cls, relpath: str = RELPATH, models_dir: Optional[str] = None) -> "Guide":
        """Load from the pack's ``models/`` only, after the sha256 check (``load_joblib``)."""
        from ..scripts.shipped_models import load_joblib

        return cls(load_joblib(relpath, **({"models_dir": models_dir} if models_dir else {})), relpath)

    def _predict(self, key: str, x: np.ndarray) -> np.ndarray:
        from ..scripts.forest import predict

        model = self.bundle["forests"].get(key)
        if model is None:
            return np.zeros(len(CANDIDATES.get(key, (0,))))
        return np.atleast_1d(predict(model, x[None])[0])

    def gains(self, stage: str, x: np.ndarray) -> Dict[str, float]:
        """Predicted PSNR gain (dB) of each candidate of ``stage`` for feature vector ``x``."""
        return dict(zip(CANDIDATES[stage], map(float, self._predict(stage, x))))

    def deep_gain(self, report: "_defects.DefectReport", mask_fraction: float, risk: Optional[float] = None) -> float:
        """Predicted PSNR gain (dB) of the ``deep_learning`` path on this image, less ``risk`` (default
        :attr:`route_risk`) times the spread of the deep forest's trees."""
        mean, std = self.deep_gain_spread(report, mask_fraction)
        return mean - (self.route_risk if risk is None else float(risk)) * std

    def deep_gain_spread(self, report: "_defects.DefectReport", mask_fraction: float) -> Tuple[float, float]:
        """``(mean, std)`` over the deep forest's trees of the U-Net path's predicted gain (dB)."""
        from ..scripts.forest import predict_spread

        model = self.bundle["forests"].get("deep")
        if model is None:
            return 0.0, 0.0
        mean, std = predict_spread(model, feature_vector(report, mask_fraction)[None])
        return float(mean[0, 0]), float(std[0, 0])

    def route_advantage(self, v: np.ndarray) -> Tuple[float, float]:
        """``(mean, std)`` over the route forest's trees of the U-Net path's predicted advantage (dB)
        over the plan, for a :func:`route_vector` ``v``."""
        from ..scripts.forest import predict_spread

        mean, std = predict_spread(self.route_forest, np.asarray(v, np.float64)[None])
        return float(mean[0, 0]), float(std[0, 0])

    def light_probability(self, v: np.ndarray) -> float:
        """The level forest's probability (0..1) that the image holds light damage or none, for a
        :func:`route_vector` ``v``; 1 when the bundle has no level forest."""
        if self.level_forest is None:
            return 1.0
        return float(light_probability(self.level_forest, np.asarray(v, np.float64)[None])[0])

    def plan(self, report: "_defects.DefectReport", mask: Optional[np.ndarray] = None, denoiser: str = "auto",
             rules: "_plan.Rules" = _plan.RULES, mask_source: str = "") -> Tuple["_plan.Plan", float]:
        """The ``ml_guided`` plan and its total predicted gain (dB)."""
        m = None if mask is None else np.asarray(mask, bool)
        if m is not None and m.shape != tuple(report.shape):
            raise ValueError(f"the damage mask is {m.shape[1]}×{m.shape[0]} px, the image {report.shape[1]}×{report.shape[0]}")
        frac = 0.0 if m is None else float(m.mean())
        steps: List[_plan.Step] = []
        skipped: List[_plan.Skip] = []
        ran: Dict[str, bool] = {}
        total = 0.0
        for stage in STAGES:
            avail = candidates(stage, report, m, residual_after(ran, report), denoiser, rules)
            if not avail:
                skipped.append(_plan.Skip(stage, _nothing_to_do(stage, report, m, mask_source)))
                continue
            x = feature_vector(report, frac, [s for s, v in ran.items() if v])
            g = self.gains(stage, x)
            best = max(avail, key=lambda k: g[k])
            margin = self.margins.get(stage, 0.0)
            if g[best] > margin:
                params, desc = avail[best]
                steps.append(_plan.Step(stage, params, f"{desc}: predicted gain {g[best]:+.2f} dB > margin {margin:.2f}"
                                        + (f" ({mask_source})" if stage == "inpaint" and mask_source else "")))
                ran[stage] = True
                total += g[best]
            else:
                skipped.append(_plan.Skip(stage, f"best candidate {best} predicted {g[best]:+.2f} dB, not above the "
                                                 f"margin {margin:.2f} dB"))
        return _plan.Plan(steps, skipped, "forest"), total


def _nothing_to_do(stage: str, report: "_defects.DefectReport", mask, mask_source: str) -> str:
    if stage == "inpaint":
        return "no damaged pixels marked" + (f" ({mask_source})" if mask_source else "")
    if stage == "denoise":
        return f"noise σ {report.noise.sigma:.4f} < {MIN_NOISE_SIGMA}"
    if stage in ("deblur", "sharpen"):
        b = report.blur
        return "no usable edges to measure blur" if b.sigma is None else f"excess blur {b.excess:.2f} px < {MIN_BLUR_EXCESS}"
    if stage == "colour":
        return "greyscale image" if report.colour is None else "no measurable cast"
    return "no tonal range to adjust"


def deep_plan(report: "_defects.DefectReport", mask: Optional[np.ndarray], denoiser: str = "auto",
              rules: "_plan.Rules" = _plan.RULES, mask_source: str = "", mask_detected: bool = False) -> "_plan.Plan":
    """What the ``deep_learning`` path runs before the U-Net: the plan's inpainting of the mask (a
    detected mask only from ``rules.mask_min_fraction``, as in the classical plan) and its denoising of
    heavy noise (σ ≥ :data:`HEAVY_NOISE_SIGMA` with a noise floor); the U-Net does the rest."""
    heavy = _plan.Rules(**{**vars(rules), "noise_min": max(HEAVY_NOISE_SIGMA, rules.noise_min),
                           "blur_min": float("inf"), "sharpen_min": float("inf"), "black_max": 1.0,
                           "white_min": 0.0, "illumination_min": float("inf"), "cast_min": 1.0})
    p = _plan.plan_from_rules(report, mask, heavy, denoiser, mask_source=mask_source, mask_detected=mask_detected)
    keep = [s for s in p.steps if s.stage in ("inpaint", "denoise")]
    skipped = [s for s in p.skipped if s.stage in ("inpaint", "denoise")]
    if not any(s.stage == "denoise" for s in keep) and not any(s.stage == "denoise" for s in skipped):
        skipped.append(_plan.Skip("denoise", "left to the U-Net"))
    return _plan.Plan(keep, skipped, "deep_learning")


def save(bundle: Dict[str, object], relpath: str = RELPATH, models_dir: Optional[str] = None) -> str:
    from ..scripts.shipped_models import save_joblib

    return save_joblib(bundle, relpath, **({"models_dir": models_dir} if models_dir else {}))

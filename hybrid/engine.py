"""Decision engine: measure the image's defects, then restore it with the method predicted to do best.

Every image is first measured (:func:`.defects.measure`: the 14 FFT features plus noise, blur,
motion, tone, colour cast, illumination and JPEG blockiness, with units), and its damage masks are
detected (:func:`.inpaint_gate.choose_masks`, when the detector is installed and the image is within
its size limits: the detector's plain mask for the forests' features, and the inpaint gate's choice of
what to inpaint, for every strategy; a mask passed in is used instead).  Strategies:

* ``classical``: the plan by fixed rules (:func:`.plan.plan_from_rules`) — inpaint / denoise / deblur /
  tone / colour / sharpen over the pack's own tools, each stage only when its defect is measured above
  its threshold.
* ``ml_guided``: the same plan and executors, each stage gated and parametrised by random forests
  (:mod:`.guided`: the predicted PSNR gain of each candidate must exceed the stage's margin chosen on
  the validation split).  Here tone, per-channel levels, colour cast and flat-field can run, which
  fixed thresholds could not do without harming clean images.
* ``deep_learning``: the stages the U-Net cannot do — inpainting of the mask and denoising of heavy
  noise (:func:`.guided.deep_plan`) — then the shipped U-Net.
* ``auto``: the route forest of the ``ml_guided`` bundle predicts the U-Net path's PSNR advantage over
  the ``ml_guided`` plan from the measurements, the forests' predicted gains of both paths and how much
  the U-Net changes the image's ≤ 256-px area-downscaled copy (:meth:`HybridRestorer.unet_residuals`:
  one U-Net run on at most 256 × 256 px, whatever the image size); the U-Net path runs when that
  advantage, less the bundle's risk × the trees' spread, exceeds its margin (both chosen on the
  validation split so that no light validation image loses more than 1 dB and no undamaged one is
  sent to the U-Net).  It also runs when the bundle's level forest (a classifier of the damage
  generator's levels on the same inputs) gives light-or-no damage a probability below the bundle's
  threshold: moderate and severe damage, where the U-Net path is the best single method.  Bundles
  without a route forest compare the deep forest's predicted gain with
  the plan's (route margin) and the U-Net residual with a threshold.  Otherwise the ``ml_guided`` plan
  — or, when the forests' plan has no step, the ``classical`` rule plan (the forests are cautious on
  damage unlike their training mix, such as one clean-cut blur or grain; the rules were chosen on such
  pairs) — whose result, when it changed the image, is mixed with the U-Net's (:mod:`.blend`; the
  weight grows with the route forest's predicted advantage).  Without the ``ml_guided`` bundle, the
  older severity routing below is used.

An image for which every stage is skipped comes back unchanged (bit-identical), with the reason.

Severity (reported; it routes ``auto`` only without the ``ml_guided`` bundle): the quality estimate
``q`` (dB, an estimate of the image's PSNR against its undamaged original) and the thresholds
(:class:`Thresholds`): ``light`` and ``moderate`` → the plan, ``severe`` (``q < severe_max_db``) → the
U-Net.  The quality estimate (``Thresholds.estimator``):

* ``forest`` (default): the random-forest predictor's estimate from the 14 analysis features
  (:mod:`.predictor`), ~1 ms; without a predictor a documented fallback formula on the two
  detections (:func:`fallback_quality_db`).
* ``unet``: the PSNR of the input against the U-Net's restoration of it (the restoration stands in
  for the unknown original); it costs one U-Net run, reused when the image is routed to the U-Net.

``HybridRestorer.restore(image_or_path, strategy)`` returns ``(image, RestoreReport)``.  Arrays may be uint8
(0..255), uint16 (0..65535) or float (0..1), ``[H, W]`` or ``[H, W, C]`` with C = 1, 3 or 4; the
result has the input's dtype, scale and channel count (grey is processed as one channel by the plan;
alpha is kept and reattached).  File I/O lives in :mod:`scripts.image_io`, folder batching in
:mod:`.tools.batch`.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import analysis, defects, inpaint_gate as _inpaint_gate, plan as _plan, tone_prior as _tone_prior
from ..scripts import image_io
from ..scripts.finite import check_finite

STRATEGIES = ("auto", "classical", "ml_guided", "deep_learning")
#: what each strategy does, for the node's tooltip and the CLI's --strategy help (one text, two places)
STRATEGY_HELP = (
    "auto (default): measure each image's defects; a route forest predicts whether the U-Net path beats the "
    "ml_guided plan, from the measurements, the forests' predicted gains and how much the U-Net changes a 256-px "
    "copy of the image (its margin chosen on validation images so that light damage and clean images are not "
    "harmed), and the better one runs; a level forest also sends images it finds moderately or severely damaged "
    "to the U-Net path; when the forests' plan has no step, the classical rules decide; a plan "
    "that changed the image is then mixed with the U-Net's output (more U-Net where it is predicted to do better). "
    "classical: the plan over the "
    "pack's own tools (inpaint, denoise, deblur, tone, colour, sharpen) with fixed thresholds. ml_guided: the "
    "same plan, each stage and its parameters chosen by random forests (a stage runs only when its predicted "
    "gain is above a margin). deep_learning: inpainting and heavy-noise denoising from the plan, then the "
    "shipped U-Net. An image in which nothing is done comes back unchanged, and the report says why.")
ESTIMATORS = ("unet", "forest")
#: ceiling of the U-Net-residual estimate (an unchanged image would otherwise be infinite dB)
MAX_QUALITY_DB = 60.0
METHOD_FOR_SEVERITY = {"light": "classical", "moderate": "classical", "severe": "deep_learning"}


#: thresholds ``(light_min_db, severe_max_db)`` per estimator.  ``forest``: severe_max_db chosen on the
#: validation split for the plan (``classical``) vs U-Net routing (see :class:`Thresholds`);
#: light_min_db only labels the report (light and moderate both go to the plan).  ``unet``: the values
#: of the earlier calibration (:func:`.train.calibrate_thresholds`, ``restorekit calibrate``), kept for
#: users who choose that estimator
CALIBRATED = {"unet": (45.0, 26.25), "forest": (37.25, 16.5)}
#: the estimator ``auto`` uses by default: the forest's estimate costs ~1 ms and no network run
DEFAULT_ESTIMATOR = "forest"


@dataclass
class Thresholds:
    """Severity thresholds on the quality estimate, dB (``severe_max_db ≤ light_min_db``), and
    the ``estimator`` they apply to (``unet`` or ``forest``, see the module docstring).

    Defaults: :data:`CALIBRATED` for :data:`DEFAULT_ESTIMATOR`.  ``severe_max_db = 16.5`` dB (forest
    estimate) was chosen on 40 validation sources of the source registry (one pair per level and
    recipe v1/v2 each, plus the clean images; 256 px): the threshold with the highest mean PSNR of
    ``auto`` (the U-Net below it, the plan above) among those that keep every light image within 1 dB of
    its input (21.95 dB; 16.0 → 21.76, 18.0 → 22.19 but a light
    image 5.3 dB worse).  The plan alone gave 21.48 dB there, the U-Net alone 21.27 dB.
    """

    light_min_db: float = CALIBRATED[DEFAULT_ESTIMATOR][0]
    severe_max_db: float = CALIBRATED[DEFAULT_ESTIMATOR][1]
    estimator: str = DEFAULT_ESTIMATOR

    @classmethod
    def calibrated(cls, estimator: str = DEFAULT_ESTIMATOR) -> "Thresholds":
        """The calibrated thresholds of ``estimator`` (:data:`CALIBRATED`)."""
        if estimator not in CALIBRATED:
            raise ValueError(f"unknown quality estimator '{estimator}' (expected one of {', '.join(ESTIMATORS)})")
        light, severe = CALIBRATED[estimator]
        return cls(light, severe, estimator)

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown quality estimator '{self.estimator}' (expected one of {', '.join(ESTIMATORS)})")
        if not np.isfinite(self.light_min_db) or not np.isfinite(self.severe_max_db):
            raise ValueError("thresholds must be finite numbers (dB)")
        if self.severe_max_db > self.light_min_db:
            raise ValueError(f"severe_max_db ({self.severe_max_db}) must not exceed light_min_db "
                             f"({self.light_min_db})")


def fallback_quality_db(features: Dict[str, float]) -> float:
    """Quality estimate without a trained predictor: ``34 − 12·sharpening_need − 8·colour_balance_need``."""
    return 34.0 - 12.0 * float(features["sharpening_need"]) - 8.0 * float(features["colour_balance_need"])


def residual_quality_db(image: np.ndarray, restored: np.ndarray) -> float:
    """PSNR (dB, peak 1, :func:`scripts.metrics.psnr`) of ``image`` against its restoration, capped
    at :data:`MAX_QUALITY_DB`."""
    from ..scripts.metrics import psnr

    return float(min(MAX_QUALITY_DB, psnr(image, restored)))


def classify(quality_db: float, thresholds: Thresholds) -> str:
    """``light`` / ``moderate`` / ``severe`` for a quality estimate (see the module docstring)."""
    if quality_db >= thresholds.light_min_db:
        return "light"
    if quality_db < thresholds.severe_max_db:
        return "severe"
    return "moderate"


class _Mapping:
    """Dict-style read access (``report["method"]``) for code written against the reports' old dict
    form (the CLI, tools); new code reads the attributes."""

    def __getitem__(self, key: str):
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default=None):
        return getattr(self, key, default)


@dataclass
class Analysis(_Mapping):
    """Damage analysis of one image: the 14 features, the quality estimate (dB, see the module
    docstring) and where it came from, the forest's estimate, the severity and the thresholds; the
    defect measurements (:meth:`.defects.DefectReport.to_dict`) and their one-line summary."""

    features: Dict[str, float]
    spectral_slopes: Dict[str, float]
    quality_db: float
    quality_source: str
    forest_quality_db: float
    severity: str
    thresholds: Dict[str, object]
    analysis_seconds: float
    defects: Dict[str, object] = None
    defect_summary: str = ""

    def info_fields(self) -> dict:
        return {"severity": self.severity, "quality estimate (dB)": f"{self.quality_db:.2f}",
                "estimated by": self.quality_source, "defects": self.defect_summary or None}


@dataclass
class RestoreReport(_Mapping):
    """What :meth:`HybridRestorer.restore` did with one image: the method and its parameters (for the
    plan: its steps with parameters and why, the stages skipped and why, the execution report),
    ``stages`` that ran, and ``unchanged`` with the ``reason`` when the image came back as it was.
    ``mask``: bool ``[H, W]`` of the pixels the plan inpainted (given or detected; None when no
    inpainting ran) — the nodes output it as a MASK; not part of the text or JSON report."""

    method: str
    severity: str
    strategy: str
    analysis: Analysis
    parameters: Dict[str, object]
    notes: List[str]
    seconds: float
    unchanged: bool = False
    reason: str = ""
    stages: List[str] = None
    mask: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def info_fields(self) -> dict:
        params = {k: v for k, v in self.parameters.items() if k not in ("runner", "model", "execution")}
        out = {"method": self.method, "severity": self.severity,
               "quality estimate (dB)": f"{self.analysis.quality_db:.2f} ({self.analysis.quality_source})",
               "stages": " -> ".join(self.stages or []) or f"none: unchanged ({self.reason})",
               "defects": self.analysis.defect_summary or None,
               "parameters": params or None}
        runner = self.parameters.get("runner")
        if runner is not None:
            f = runner.info_fields()
            out["U-Net run"] = f"{f['device']}, {f['tile']}, {f['precision']}, {f['runner time']}"
        out["notes"] = self.notes or "shipped models (models/hybrid) used"
        return out


_SHARED: Dict[tuple, "HybridRestorer"] = {}


def shared_restorer(thresholds: Optional["Thresholds"] = None, device: str = "auto", tile: int = 0) -> "HybridRestorer":
    """The restorer for these thresholds, device and tile, kept between calls (the nodes' and the
    Python API's cache); restorers made later share the predictor and U-Net already loaded."""
    th = thresholds or Thresholds()
    key = (th.light_min_db, th.severe_max_db, th.estimator, device, int(tile))
    if key not in _SHARED:
        r = HybridRestorer(thresholds=th, device=device, tile=tile)
        previous = next(iter(_SHARED.values()), None)
        if previous is not None:
            r._predictor, r._unet = previous._predictor, previous._unet
            r._guide, r._guide_tried = previous._guide, previous._guide_tried
        _SHARED[key] = r
    return _SHARED[key]


class HybridRestorer:
    """Defect measurement → severity → the plan (classical) / ML-guided / U-Net.

    ``predictor`` and ``unet`` default to the shipped models (loaded lazily, on first use);
    pass objects to override (``predictor``: :class:`.predictor.Predictor`; ``unet``: a
    ModelHandle; ``guide``: :class:`.guided.Guide`, the ``ml_guided`` forests, or False for none).  ``device`` / ``tile`` go to the memory-safe runner for the U-Net; ``progress``
    shows a per-tile progress bar while the U-Net runs (useful on large images).  ``rules``: the
    plan's thresholds (:class:`.plan.Rules`); ``denoiser``: the plan's denoiser
    (:data:`.plan.DENOISERS`); ``detect_damage``: find the damage mask to inpaint with
    ``hybrid.damage_mask`` when that detector is installed.
    """

    def __init__(self, thresholds: Optional[Thresholds] = None, predictor=None, unet=None,
                 device: str = "auto", tile: int = 0, use_shipped: bool = True, progress: bool = False,
                 rules: Optional["_plan.Rules"] = None, denoiser: str = "auto", detect_damage: bool = True,
                 guide=None, tone_prior=None, inpaint_gate=None):
        self.thresholds = thresholds or Thresholds()
        self.rules = rules or _plan.RULES
        if denoiser not in _plan.DENOISERS:
            raise ValueError(f"unknown denoiser '{denoiser}' (expected one of {', '.join(_plan.DENOISERS)})")
        self.denoiser = denoiser
        self.detect_damage = bool(detect_damage)
        self._predictor = predictor
        self._unet = unet
        self._guide = guide or None  # False: no forests (ml_guided = the rule plan, auto by severity)
        self._guide_tried = guide is not None or not use_shipped
        self._tone_prior = tone_prior or None  # False: no learned tone stage
        self._tone_prior_tried = tone_prior is not None or not use_shipped
        self._inpaint_gate = inpaint_gate or None  # False: no gate (the hysteresis mask, the forests decide)
        self._inpaint_gate_tried = inpaint_gate is not None or not use_shipped
        self.device = device
        self.tile = int(tile)
        self.progress = bool(progress)
        self.use_shipped = use_shipped
        self.notes: List[str] = []

    # --- models ---------------------------------------------------------------------------
    @property
    def predictor(self):
        if self._predictor is None and self.use_shipped:
            from .predictor import Predictor

            try:
                self._predictor = Predictor.load()
            except Exception as exc:  # missing or failing its hash: fall back, and say so
                self.notes.append(f"predictor unavailable ({exc}); fallback formulas used")
                self.use_shipped = False
        return self._predictor

    @property
    def guide(self):
        """The ``ml_guided`` forests (:class:`.guided.Guide`), or None when the bundle is missing or
        fails its hash (then ``ml_guided`` runs the rule plan and ``auto`` the severity routing, with a note)."""
        if self._guide is None and not self._guide_tried:
            self._guide_tried = True
            from .guided import Guide

            try:
                self._guide = Guide.load()
            except Exception as exc:
                self.notes.append(f"ml_guided forests unavailable ({exc}); the rule plan is used instead")
        return self._guide

    @property
    def tone_prior(self):
        """The learned tone prior (:class:`.tone_prior.TonePrior`) when ``models/hybrid/tone_prior.joblib``
        exists — an optional model, not shipped (it gained too little on validation and changed a clean
        held-out photo; MODEL_CARD.md) — else None: the plans' own tone and colour stages decide."""
        if self._tone_prior is None and not self._tone_prior_tried:
            self._tone_prior_tried = True
            from ..scripts.shipped_models import model_path

            if not os.path.isfile(model_path(_tone_prior.RELPATH)):
                return None  # an optional model, not shipped (MODEL_CARD.md): the plans' own stages decide
            try:
                self._tone_prior = _tone_prior.TonePrior.load()
            except Exception as exc:
                self.notes.append(f"tone prior unavailable ({exc}); the plans' own tone and colour stages decide")
        return self._tone_prior

    @property
    def inpaint_gate(self):
        """The inpainting gate (:class:`.inpaint_gate.InpaintGate`), or None when its bundle is missing,
        fails its hash or was trained with another damage-mask detector (then the hysteresis mask is
        inpainted by the rule plan and the forests decide for theirs, with a note)."""
        if self._inpaint_gate is None and not self._inpaint_gate_tried:
            self._inpaint_gate_tried = True
            try:
                gate = _inpaint_gate.InpaintGate.load()
                if not gate.matches_detector():
                    raise ValueError("it was trained with another damage-mask detector; retrain it")
                self._inpaint_gate = gate
            except Exception as exc:
                self.notes.append(f"inpaint gate unavailable ({exc}); the hysteresis mask is used")
        return self._inpaint_gate

    @property
    def unet(self):
        if self._unet is None:
            from .unet import load_shipped

            self._unet = load_shipped()
        return self._unet

    # --- steps ------------------------------------------------------------------------------
    def analyse(self, rgb: np.ndarray, estimator: Optional[str] = None) -> Analysis:
        """Features, defect measurements, quality estimate and severity of an image (``[H, W, C]``,
        C = 1 or 3, 0..1).  ``estimator``: ``unet`` / ``forest``; default the thresholds' own.  Arrays
        are taken in as :meth:`restore` takes them (:func:`scripts.image_io.to_float01`: uint8/uint16
        scaled, float clipped to 0..1, a float maximum above 2 refused as mis-scaled data)."""
        arr, _kind, _notes = image_io.to_float01(rgb, "analyse")
        img = defects.as_image(arr)
        return self._analyse(img, defects.measure(img), estimator)[0]

    def _analyse(self, img: np.ndarray, report: "defects.DefectReport", estimator: Optional[str] = None):
        """``(Analysis, (U-Net output, its parameters) or None)``; the output is kept for reuse."""
        feats = report.features
        pred = self.predictor
        if pred is not None:
            q_forest = float(pred.quality_db(feats))
            forest_source = "random-forest predictor"
        else:
            q_forest = float(fallback_quality_db(feats))
            forest_source = "fallback formula (no predictor)"
        estimator = estimator or self.thresholds.estimator
        deep = None
        if estimator == "unet":
            deep = self._unet_run(img)
            q = residual_quality_db(img, deep[0])
            q_source = "U-Net residual (PSNR of the input against its U-Net restoration)"
        else:
            q, q_source = q_forest, forest_source
        severity = classify(q, self.thresholds)
        return Analysis(features={k: feats[k] for k in analysis.FEATURE_NAMES},
                        spectral_slopes={"alpha_mid": feats["alpha_mid"], "alpha_high": feats["alpha_high"]},
                        quality_db=float(q), quality_source=q_source, forest_quality_db=q_forest,
                        severity=severity, thresholds=asdict(self.thresholds),
                        analysis_seconds=report.seconds["total"], defects=report.to_dict(),
                        defect_summary=report.summary()), deep

    def _masks(self, img: np.ndarray, report: "defects.DefectReport", mask) -> "_inpaint_gate.MaskChoice":
        """The given mask, or the detector's masks (when ``detect_damage``) from one run of it: the plain
        one for the forests' features, and the one to inpaint chosen by the inpaint gate
        (:func:`.inpaint_gate.choose_masks`)."""
        return _inpaint_gate.choose_masks(img, report, self.inpaint_gate if mask is None and self.detect_damage else None,
                                          given=mask, detect=self.detect_damage)

    def inpaint_mask(self, rgb: np.ndarray) -> "_inpaint_gate.MaskChoice":
        """What :meth:`restore` would inpaint in ``rgb`` (``[H, W, C]``, C = 1 or 3, 0..1) by itself: the
        detector's masks and the inpaint gate's choice among them, with the reason.  Arrays are taken in
        as :meth:`analyse` takes them."""
        arr, _kind, _notes = image_io.to_float01(rgb, "inpaint_mask")
        img = defects.as_image(arr)
        return self._masks(img, defects.measure(img), None)

    def _plan(self, img: np.ndarray, report: "defects.DefectReport", masked, progress=None, learned_tone: bool = False):
        """The ``classical`` strategy: measurements → rules → plan → execution (``learned_tone``: the
        tone prior replaces the rules' tone and colour stages, as in ``auto``)."""
        p = _plan.plan_from_rules(report, masked.inpaint, self.rules, self.denoiser,
                                  mask_source=masked.why if masked.detected else masked.source,
                                  mask_detected=masked.detected)
        if masked.inpaint is None and masked.detected and masked.why:
            p = _inpaint_gate.amend(p, masked, self.rules)
        if learned_tone:
            p = _tone_prior.amend(p, report, self.tone_prior)
        return self._execute(img, p, "rules on the measured defects (hybrid/plan.py)", progress)

    @staticmethod
    def _execute(img, p: "_plan.Plan", why: str, progress=None, **extra):
        out, ex = _plan.execute(img, p, progress)
        inpainted = next((s.params["mask"] for s in p.steps if s.stage == "inpaint"), None)
        return out, {"plan": p.to_dict(), "execution": ex.to_dict(), "summary": ex.summary(), "why": why,
                     "inpainted_mask": inpainted, **extra}

    def _guided_plan(self, report: "defects.DefectReport", masked) -> Tuple[Optional["_plan.Plan"], float]:
        """The forests' plan and its predicted gain (dB), or ``(None, 0)`` without the bundle."""
        g = self.guide
        if g is None:
            return None, 0.0
        p, gain = g.plan(report, masked.plain if masked.detected else masked.inpaint, self.denoiser, self.rules,
                         mask_source=masked.source)
        given = not masked.detected and masked.inpaint is not None and masked.inpaint.any()
        if given or (masked.detected and self.inpaint_gate is not None):
            # a mask the caller drew is always inpainted; with the gate, it (not the forest) decides inpainting
            p = _inpaint_gate.amend(p, masked, self.rules)
        return p, gain

    def _ml_guided(self, img, report, masked, progress=None, planned=None) -> Tuple[np.ndarray, Dict[str, object]]:
        p, gain = planned if planned is not None else self._guided_plan(report, masked)
        if p is None:
            out, params = self._plan(img, report, masked, progress, learned_tone=True)
            params["why"] = "ml_guided forests unavailable: the rule plan ran instead"
            return out, params
        p = _tone_prior.amend(p, report, self.tone_prior)
        return self._execute(img, p, "random forests: each stage's predicted PSNR gain against its margin "
                             "(hybrid/guided.py)", progress, predicted_gain_db=round(gain, 3))

    def _unet_run(self, img) -> Tuple[np.ndarray, Dict[str, object]]:
        """The shipped U-Net on ``img`` (grey is run as RGB and averaged back)."""
        from .unet import run

        rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
        out, report = run(self.unet, rgb, device=self.device, tile=self.tile, progress=self.progress)
        if img.shape[-1] == 1:
            out = out.mean(axis=-1, keepdims=True)
        return out, {"model": getattr(self.unet, "source", ""), "runner": report}

    def _deep(self, img, report=None, masked=None, progress=None,
              unet_out=None) -> Tuple[np.ndarray, Dict[str, object]]:
        """The ``deep_learning`` path: :func:`.guided.deep_plan` (inpaint the mask, denoise heavy noise),
        then the U-Net (``unet_out``: its output on ``img``, reused when no stage ran before it)."""
        from .guided import deep_plan

        if report is None:
            report = defects.measure(img)
        if masked is None:
            masked = _inpaint_gate.MaskChoice(None, None, "", False, "")
        p = deep_plan(report, masked.inpaint, self.denoiser, self.rules,
                      mask_source=masked.why if masked.detected else masked.source, mask_detected=masked.detected)
        pre, params = self._execute(img, p, "the stages the U-Net cannot do, then the U-Net", progress)
        if unet_out is not None and p.unchanged:
            out, u = unet_out
        else:
            out, u = self._unet_run(pre)
        params.update(u)
        return out, params

    def _blend(self, img, out, params, inpainted, unet_out):
        """``auto``'s output ensemble (:mod:`.blend`): when the plan changed the image and the bundle has
        a blend weight, ``(weight × U-Net(img) + (1 − weight) × out, its parameters)`` with the plan's
        pixels kept in and around ``inpainted``; else ``(out, None)``.  ``unet_out``: the U-Net's output
        on ``img`` when the route already ran it at full size."""
        from .blend import blend, route_advantage_db, weight_for

        g = self.guide
        if g is None or self.unet is None or params["execution"]["unchanged"] or g.blend["max_weight"] <= 0.0:
            return out, None
        adv = route_advantage_db(params.get("route", {}))
        w = round(weight_for(adv, g.blend["max_weight"], g.blend["centre_db"], g.blend["scale_db"]), 3)
        if w <= 0.0:
            return out, None
        if unet_out is None or np.shape(unet_out[0]) != img.shape:
            unet_out = self._unet_run(img)
        res = blend(out, unet_out[0], w, inpainted)
        return res, {"weight": w, "model": unet_out[1].get("model", ""), "runner": unet_out[1].get("runner"),
                     "predicted_advantage_db": round(float(adv), 3),
                     "why": (f"the plan's result mixed with the U-Net's ({w:g} U-Net for a predicted U-Net advantage "
                             f"of {adv:+.2f} dB: their errors differ, so the mix is closer to the original; "
                             "hybrid/blend.py)"
                             + ("; the inpainted pixels are the plan's" if inpainted is not None and np.any(inpainted)
                                else ""))}

    def unet_residuals(self, img: np.ndarray) -> Tuple[Dict[str, float], Optional[Tuple[np.ndarray, Dict[str, object]]]]:
        """How much the U-Net changes the image.  The U-Net runs on the area-downscaled copy (longer
        side ≤ :data:`.guided.ROUTE_SIDE`); ``fine_db`` is the PSNR (dB, :func:`residual_quality_db`) of
        that copy against the output, ``coarse_db`` the same after both are area-downscaled again to ≤
        :data:`.guided.ROUTE_RESIDUAL_SIDE` px — large-scale tone and colour only.  ``coarse_db`` is low
        for damage the U-Net undoes (fading, casts, stains, uneven light) and high for an image it leaves
        nearly as it is — and for texture it only smooths (brick, grass: a fine-scale change the coarse
        copies average out; ``fine_db`` counts it).  One U-Net run on ≤ 256 × 256 px whatever the image
        size.  Returns ``({"coarse_db", "fine_db"}, (output, parameters))``; the output is that of the
        image itself when it was not downscaled (then reused by the U-Net path), else ``None``."""
        from .guided import ROUTE_RESIDUAL_SIDE, ROUTE_SIDE

        small = defects.downscale(img, ROUTE_SIDE)
        out = self._unet_run(small)
        res = np.asarray(out[0], np.float32)
        q = {"coarse_db": residual_quality_db(defects.downscale(small, ROUTE_RESIDUAL_SIDE),
                                              defects.downscale(res, ROUTE_RESIDUAL_SIDE)),
             "fine_db": residual_quality_db(small, res)}
        return q, (out if small.shape == img.shape else None)

    def unet_residual_db(self, img: np.ndarray) -> Tuple[float, Optional[Tuple[np.ndarray, Dict[str, object]]]]:
        """``coarse_db`` of :meth:`unet_residuals` (what :attr:`.guided.Guide.route_residual_db` is
        compared with) and the reusable output."""
        q, out = self.unet_residuals(img)
        return q["coarse_db"], out

    def _route(self, img: np.ndarray, report: "defects.DefectReport", masked, severity: str):
        """``auto``: ``(method, the ml_guided plan or None, why, U-Net output to reuse or None)``.  With
        the forests: when the bundle has a route forest, the U-Net path when its predicted advantage over
        the plan (from the measurements, both predicted gains and :meth:`unet_residuals`), less the
        trees' spread × risk, exceeds its margin; in older bundles, when the deep forest's predicted gain
        exceeds the plan's by the route margin or the U-Net changes the image more than the residual
        threshold allows (:meth:`unet_residual_db` below :attr:`.guided.Guide.route_residual_db`).
        Otherwise the forests' plan, or the rule plan when the forests' plan has no step.  Without the
        forests the severity routing."""
        g = self.guide
        if g is None:
            return METHOD_FOR_SEVERITY[severity], None, {"by": "severity", "severity": severity}, None
        planned = self._guided_plan(report, masked)
        deep_mean, deep_std = g.deep_gain_spread(report, masked.plain_fraction)
        deep_gain = deep_mean - g.route_risk * deep_std  # Guide.deep_gain
        plan_gain = planned[1]
        use_deep = deep_gain > plan_gain + g.route_margin
        why = {"by": "forest-predicted gains", "deep_learning_gain_db": round(deep_gain, 3),
               "ml_guided_gain_db": round(plan_gain, 3), "route_margin_db": g.route_margin,
               "route_risk": g.route_risk,
               "chosen": "deep_learning" if use_deep else "ml_guided"}
        unet_out = None
        if g.route_forest is not None and self.unet is not None:
            from .guided import feature_vector, route_vector

            q, unet_out = self.unet_residuals(img)
            v = route_vector(feature_vector(report, masked.plain_fraction), plan_gain, deep_mean, deep_std,
                             q["coarse_db"], q["fine_db"])
            adv, spread = g.route_advantage(v)
            use_deep = adv - g.route_forest_risk * spread > g.route_forest_margin
            disagreement = deep_mean - plan_gain
            outside = use_deep and disagreement < g.route_forest_floor
            use_deep = use_deep and not outside
            why.update({"by": "route forest", "unet_residual_db": round(q["coarse_db"], 3),
                        "unet_fine_residual_db": round(q["fine_db"], 3),
                        "predicted_advantage_db": round(adv, 3), "advantage_spread_db": round(spread, 3),
                        "route_forest_risk": g.route_forest_risk, "route_forest_margin_db": g.route_forest_margin,
                        "route_forest_floor_db": g.route_forest_floor if np.isfinite(g.route_forest_floor) else None,
                        "chosen": "deep_learning" if use_deep else "ml_guided"})
            if use_deep:
                why["because"] = (f"the route forest predicts the U-Net path {adv:+.2f} dB over the plan "
                                  f"(less {g.route_forest_risk:g} × spread {spread:.2f} > {g.route_forest_margin:g} dB)")
            elif outside:
                why["because"] = (f"the route forest predicts the U-Net path {adv:+.2f} dB over the plan, but the deep "
                                  f"forest predicts it {disagreement:+.2f} dB against the plan, below the "
                                  f"{g.route_forest_floor:+.2f} dB floor of the images the route was validated on: "
                                  "outside its domain, the plan runs")
            if g.level_forest is not None:
                p_light = g.light_probability(v)
                why.update({"light_probability": round(p_light, 3),
                            "route_level_threshold": g.route_level_threshold})
                if not use_deep and p_light < g.route_level_threshold:
                    use_deep = True
                    why["by"] = "level forest"
                    why["chosen"] = "deep_learning"
                    why["because"] = (f"the level forest finds light damage or none unlikely ({p_light:.0%}, below "
                                      f"{g.route_level_threshold:.0%}): moderate or severe damage, which the U-Net "
                                      "path restores best")
        elif not use_deep and np.isfinite(g.route_residual_db) and self.unet is not None:
            q, unet_out = self.unet_residual_db(img)
            why["unet_residual_db"] = round(q, 3)
            why["route_residual_db"] = g.route_residual_db
            if q < g.route_residual_db:
                use_deep = True
                why["by"] = "U-Net residual"
                why["chosen"] = "deep_learning"
                why["because"] = (f"the U-Net changes the image's tone and colour a lot (PSNR {q:.1f} dB of "
                                  f"the coarse copies, below {g.route_residual_db:g} dB): damage it undoes")
        if use_deep:
            return "deep_learning", None, why, unet_out
        if planned[0] is not None and planned[0].unchanged:
            # the forests are cautious far from their training damage (a single clean-cut defect: the
            # shipped examples' motion blur, defocus, grain); the rules were chosen on exactly such
            # pairs.  On validation (14 sources × 3 levels) this gains +0.14 / +1.12 / +2.12 dB against
            # +0.20 / +0.82 / +1.97 for the forests alone and +0.30 / +1.19 / +0.77 for the rules alone,
            # with no light image more than 0.9 dB worse
            why["chosen"] = "classical"
            why["because"] = "the forests' plan has no step: the rule plan decides"
            return "classical", None, why, None
        return "ml_guided", planned, why, None

    # --- API ----------------------------------------------------------------------------------
    def restore(self, image_or_path, strategy: str = "auto", mask: Optional[np.ndarray] = None,
                progress=None) -> Tuple[np.ndarray, RestoreReport]:
        """Restore one image: an array ``[H,W]`` / ``[H,W,C]`` (C = 1, 3 or 4) or a file path.

        Arrays: ``uint8`` is read as 0..255, ``uint16`` as 0..65535, float as 0..1 (values outside
        are clipped with a note in ``info["notes"]``; a float maximum above 2 is refused as
        mis-scaled data).  The result has the input's dtype, scale and channel count.  A path is
        read with :func:`scripts.image_io.read_image` (orientation applied) and gives float32 0..1.

        Returns ``(image, RestoreReport)``: ``method``, ``severity``, ``strategy``, ``analysis``
        (features, defect measurements, the quality estimate, thresholds), ``parameters`` of the
        method that ran (for the plan: the steps with their parameters and why, the stages skipped
        and why), ``unchanged`` and ``reason`` (why an image came back as it was: then it is
        bit-identical), ``stages``, ``notes`` and ``seconds``.  ``mask``: bool ``[H, W]`` of damaged
        pixels for the plan to inpaint (default: the damage-mask detector when present).
        ``progress(done, total, stage)`` is called between the plan's stages (it may raise to abort).
        A NaN or infinite result is an error (:class:`scripts.finite.NonFiniteError`), never hidden.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}' (expected one of {', '.join(STRATEGIES)})")
        t0 = time.perf_counter()
        if isinstance(image_or_path, (str, os.PathLike)):
            arr, kind, intake_notes = image_io.read_image(os.fspath(image_or_path)).pixels, "float", []
        else:
            arr, kind, intake_notes = image_io.to_float01(image_or_path, "restore")
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape:
            raise ValueError(f"restore expects an [H, W, C] image with 1, 3 or 4 channels, got {arr.shape}")
        channels = arr.shape[-1]
        alpha = arr[..., 3] if channels == 4 else None
        img = defects.as_image(arr[..., :3] if channels == 4 else arr)
        report = defects.measure(img)
        # a forced classical / ML-guided run does not pay for a U-Net estimate it would not use
        estimator = "forest" if strategy in ("classical", "ml_guided") else None
        info_an, unet_out = self._analyse(img, report, estimator)
        severity = info_an.severity
        masked = self._masks(img, report, mask)
        planned = route = None
        if strategy == "auto":
            method, planned, route, routed_out = self._route(img, report, masked, severity)
            unet_out = unet_out or routed_out
        else:
            method = strategy
        if method == "classical":
            out, params = self._plan(img, report, masked, progress, learned_tone=strategy == "auto")
        elif method == "ml_guided":
            out, params = self._ml_guided(img, report, masked, progress, planned)
        else:
            out, params = self._deep(img, report, masked, progress, unet_out)
        mask_used = params.pop("inpainted_mask", None)
        blended = None
        if route is not None:
            params["route"] = route
            if method != "deep_learning":
                out, blended = self._blend(img, out, params, mask_used, unet_out)
                if blended is not None:
                    params["runner"] = blended.pop("runner")
                    params["blend"] = blended
        unchanged = params["execution"]["unchanged"] and method != "deep_learning"
        reason = params["execution"]["reason"] if unchanged else ""
        stages = ([f"{st['stage']}" for st in params["execution"]["stages"]] + (["U-Net"] if method == "deep_learning" else [])
                  + ([f"U-Net blend ({blended['weight']:g})"] if blended is not None else []))
        out = np.asarray(out, np.float32)
        check_finite(out, "Hybrid restore", method)
        if not unchanged:
            out = np.clip(out, 0.0, 1.0)
        if channels == 4:
            out = np.concatenate([out, alpha[..., None].astype(np.float32)], axis=-1)
        if squeeze:
            out = out[..., 0]
        report = RestoreReport(method, severity, strategy, info_an, params, list(self.notes) + intake_notes,
                               time.perf_counter() - t0, bool(unchanged), reason, stages, mask_used)
        return image_io.from_float01(out, kind), report

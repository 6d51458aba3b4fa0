"""Decision engine: analyse an image, judge its severity, send it to the cheapest adequate method.

Severity comes from the quality estimate ``q`` (dB), an estimate of the image's PSNR against its
undamaged original.  Two estimators (``Thresholds.estimator``):

* ``unet`` (default): the PSNR of the input against the U-Net's restoration of it.  If the U-Net
  restores well, its output stands in for the unknown original, so this *is* an estimate of the
  input's PSNR; when the image is routed to the U-Net its output is reused, so the estimate costs
  one U-Net run (``benchmarks/bench_hybrid.py`` measures its cost per megapixel) only for images
  that end up elsewhere.
* ``forest``: the random-forest predictor's estimate from the 14 analysis features
  (:mod:`.predictor`), far cheaper; without a predictor a documented fallback formula on the two
  detections (:func:`fallback_quality_db`).

With the configurable thresholds (:class:`Thresholds`):

* ``q ≥ light_min_db``                    → ``light``    → ``classical`` (rule-based colour + unsharp mask)
* ``severe_max_db ≤ q < light_min_db``   → ``moderate`` → ``ml_guided`` (predicted grid parameters)
* ``q < severe_max_db``                   → ``severe``   → ``deep_learning`` (the U-Net)

Strategies: ``auto`` (the routing above) or one method forced for every image.

``HybridRestorer.restore(image_or_path, strategy)`` returns ``(image, RestoreReport)``.  Arrays may be uint8
(0..255), uint16 (0..65535) or float (0..1), ``[H, W]`` or ``[H, W, C]`` with C = 1, 3 or 4; the
result has the input's dtype, scale and channel count (grey is replicated for the analysis and
averaged back; alpha is kept and reattached).  File I/O lives in :mod:`scripts.image_io`, folder
batching in :mod:`.tools.batch`.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import analysis, classical
from ..scripts import image_io
from ..scripts.finite import check_finite

STRATEGIES = ("auto", "classical", "ml_guided", "deep_learning")
ESTIMATORS = ("unet", "forest")
#: ceiling of the U-Net-residual estimate (an unchanged image would otherwise be infinite dB)
MAX_QUALITY_DB = 60.0
METHOD_FOR_SEVERITY = {"light": "classical", "moderate": "ml_guided", "severe": "deep_learning"}


#: thresholds ``(light_min_db, severe_max_db)`` calibrated for each estimator by
#: :func:`.train.calibrate_thresholds` (``restorekit calibrate``) with the shipped models
CALIBRATED = {"unet": (45.0, 26.25), "forest": (37.25, 20.75)}
#: the estimator with the higher validation PSNR of ``auto`` in that calibration
DEFAULT_ESTIMATOR = "unet"


@dataclass
class Thresholds:
    """Severity thresholds on the quality estimate, dB (``severe_max_db ≤ light_min_db``), and
    the ``estimator`` they apply to (``unet`` or ``forest``, see the module docstring).

    Defaults: :data:`CALIBRATED` for :data:`DEFAULT_ESTIMATOR`, chosen on the validation split by
    :func:`.train.calibrate_thresholds` (``restorekit calibrate``): the estimator and threshold pair
    that maximise the mean restored PSNR of ``auto`` there (27.29 dB on 60 validation pairs with the
    U-Net estimate, 27.11 dB with the forest's, against 25.47 dB for the U-Net alone and 24.65 dB for
    ML-guided alone).  With the U-Net estimate almost no image reaches 45 dB, so ``auto`` sends an
    image to the U-Net when the PSNR between the image and the U-Net's output is below 26.25 dB,
    and otherwise to ML-guided (which leaves it unchanged unless a setting is predicted to help).
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
    docstring) and where it came from, the forest's estimate, the severity and the thresholds."""

    features: Dict[str, float]
    spectral_slopes: Dict[str, float]
    quality_db: float
    quality_source: str
    forest_quality_db: float
    severity: str
    thresholds: Dict[str, object]
    analysis_seconds: float

    def info_fields(self) -> dict:
        return {"severity": self.severity, "quality estimate (dB)": f"{self.quality_db:.2f}",
                "estimated by": self.quality_source}


@dataclass
class RestoreReport(_Mapping):
    """What :meth:`HybridRestorer.restore` did with one image."""

    method: str
    severity: str
    strategy: str
    analysis: Analysis
    parameters: Dict[str, object]
    notes: List[str]
    seconds: float

    def info_fields(self) -> dict:
        params = {k: v for k, v in self.parameters.items() if k not in ("runner", "model")}
        out = {"method": self.method, "severity": self.severity,
               "quality estimate (dB)": f"{self.analysis.quality_db:.2f} ({self.analysis.quality_source})",
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
        _SHARED[key] = r
    return _SHARED[key]


class HybridRestorer:
    """Analysis → severity → classical / ML-guided classical / U-Net.

    ``predictor`` and ``unet`` default to the shipped models (loaded lazily, on first use);
    pass objects to override (``predictor``: :class:`.predictor.Predictor`; ``unet``: a
    ModelHandle).  ``device`` / ``tile`` go to the memory-safe runner for the U-Net; ``progress``
    shows a per-tile progress bar while the U-Net runs (useful on large images).
    """

    def __init__(self, thresholds: Optional[Thresholds] = None, predictor=None, unet=None,
                 device: str = "auto", tile: int = 0, use_shipped: bool = True, progress: bool = False):
        self.thresholds = thresholds or Thresholds()
        self._predictor = predictor
        self._unet = unet
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
    def unet(self):
        if self._unet is None:
            from .unet import load_shipped

            self._unet = load_shipped()
        return self._unet

    # --- steps ------------------------------------------------------------------------------
    def analyse(self, rgb: np.ndarray, estimator: Optional[str] = None) -> Analysis:
        """Features, quality estimate and severity of an RGB 0..1 image.

        ``estimator``: ``unet`` / ``forest``; default the thresholds' own.  Arrays are taken in as
        :meth:`restore` takes them (:func:`scripts.image_io.to_float01`: uint8/uint16 scaled, float
        clipped to 0..1, a float maximum above 2 refused as mis-scaled data).
        """
        rgb, _kind, _notes = image_io.to_float01(rgb, "analyse")
        return self._analyse(rgb, estimator)[0]

    def _analyse(self, rgb: np.ndarray, estimator: Optional[str] = None):
        """``(Analysis, (U-Net output, its parameters) or None)``; the output is kept for reuse."""
        feats = analysis.analyze(rgb)
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
            deep = self._deep(rgb)
            q = residual_quality_db(rgb, deep[0])
            q_source = "U-Net residual (PSNR of the input against its U-Net restoration)"
        else:
            q, q_source = q_forest, forest_source
        severity = classify(q, self.thresholds)
        return Analysis(features={k: feats[k] for k in analysis.FEATURE_NAMES},
                        spectral_slopes={"alpha_mid": feats["alpha_mid"], "alpha_high": feats["alpha_high"]},
                        quality_db=float(q), quality_source=q_source, forest_quality_db=q_forest,
                        severity=severity, thresholds=asdict(self.thresholds),
                        analysis_seconds=feats["seconds"]), deep

    def _classical(self, rgb, feats) -> Tuple[np.ndarray, Dict[str, object]]:
        p = classical.rule_parameters(feats)
        return classical.apply(rgb, p["colour_correction"], p["sigma"], p["strength"]), p

    def _ml_guided(self, rgb, feats) -> Tuple[np.ndarray, Dict[str, object]]:
        pred = self.predictor
        if pred is None:
            out, p = self._classical(rgb, feats)
            p = dict(p, why="predictor unavailable: rule-based parameters")
            return out, p
        p = pred.predict(feats)
        p["why"] = ("random forest: no grid combination is predicted to gain, image left unchanged"
                    if p.get("no_change") else
                    "random forest: grid combination with the highest predicted PSNR gain")
        return classical.apply(rgb, p["colour_correction"], p["sigma"], p["strength"]), p

    def _deep(self, rgb) -> Tuple[np.ndarray, Dict[str, object]]:
        from .unet import run

        out, report = run(self.unet, rgb, device=self.device, tile=self.tile, progress=self.progress)
        return out, {"model": getattr(self.unet, "source", ""), "runner": report}

    # --- API ----------------------------------------------------------------------------------
    def restore(self, image_or_path, strategy: str = "auto") -> Tuple[np.ndarray, RestoreReport]:
        """Restore one image: an array ``[H,W]`` / ``[H,W,C]`` (C = 1, 3 or 4) or a file path.

        Arrays: ``uint8`` is read as 0..255, ``uint16`` as 0..65535, float as 0..1 (values outside
        are clipped with a note in ``info["notes"]``; a float maximum above 2 is refused as
        mis-scaled data).  The result has the input's dtype, scale and channel count.  A path is
        read with :func:`scripts.image_io.read_image` (orientation applied) and gives float32 0..1.

        Returns ``(image, RestoreReport)``: ``method``, ``severity``, ``strategy``, ``analysis`` (all
        features, the quality estimate, thresholds), ``parameters`` of the method that ran, ``notes``
        and ``seconds``.  A NaN or infinite result is an error (:class:`scripts.finite.NonFiniteError`),
        never hidden.
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
        rgb = np.repeat(arr, 3, axis=-1) if channels == 1 else arr[..., :3]
        # a forced classical / ML-guided run does not pay for a U-Net estimate it would not use
        estimator = "forest" if strategy in ("classical", "ml_guided") else None
        info_an, deep = self._analyse(rgb, estimator)
        severity = info_an.severity
        method = METHOD_FOR_SEVERITY[severity] if strategy == "auto" else strategy
        feats = info_an.features
        if method == "classical":
            out, params = self._classical(rgb, feats)
        elif method == "ml_guided":
            out, params = self._ml_guided(rgb, feats)
        else:
            out, params = deep if deep is not None else self._deep(rgb)
        check_finite(out, "Hybrid restore", method)
        out = np.clip(out, 0, 1).astype(np.float32)
        if channels == 1:
            out = out.mean(axis=-1, keepdims=True)
        elif channels == 4:
            out = np.concatenate([out, alpha[..., None].astype(np.float32)], axis=-1)
        if squeeze:
            out = out[..., 0]
        report = RestoreReport(method, severity, strategy, info_an, params, list(self.notes) + intake_notes,
                               time.perf_counter() - t0)
        return image_io.from_float01(out, kind), report

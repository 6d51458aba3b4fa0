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

``HybridRestorer.restore(image_or_path, strategy)`` returns ``(image, RestoreReport)``; images are float32
RGB ``[H, W, 3]`` in 0..1 (grey and RGBA inputs are accepted: grey is replicated, alpha is kept
and reattached).  :meth:`HybridRestorer.batch_restore` processes a folder.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import analysis, classical
from ..scripts.batch import check_finite

STRATEGIES = ("auto", "classical", "ml_guided", "deep_learning")
ESTIMATORS = ("unet", "forest")
#: ceiling of the U-Net-residual estimate (an unchanged image would otherwise be infinite dB)
MAX_QUALITY_DB = 60.0
METHOD_FOR_SEVERITY = {"light": "classical", "moderate": "ml_guided", "severe": "deep_learning"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


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


def read_image(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Read an image file as float32 RGB 0..1 plus its alpha (or None).  ValueError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            alpha = None
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                arr = np.asarray(im, np.float32) / 255.0
                return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, np.float32) / (65535.0 if im.mode.startswith("I;16") else 255.0)
                arr = np.clip(arr, 0, 1)
                return np.repeat(arr[..., None], 3, axis=-1), alpha
            arr = np.asarray(im.convert("RGB"), np.float32) / 255.0
            return arr, alpha
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read '{os.path.basename(path)}' as an image: {exc}") from exc


def write_image(path: str, rgb: np.ndarray, alpha: Optional[np.ndarray] = None) -> None:
    from PIL import Image

    u8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    if alpha is not None:
        u8 = np.concatenate([u8, np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)[..., None]], -1)
    Image.fromarray(u8).save(path)


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


def shared_restorer(light_min_db: float, severe_max_db: float, device: str = "auto",
                    estimator: str = DEFAULT_ESTIMATOR) -> "HybridRestorer":
    """The restorer for these thresholds and device, kept between calls (the nodes' cache): the
    loaded predictor and U-Net are handed on when the settings change."""
    th = Thresholds(light_min_db=float(light_min_db), severe_max_db=float(severe_max_db), estimator=estimator)
    key = (th.light_min_db, th.severe_max_db, th.estimator, device)
    if key not in _SHARED:
        previous = next(iter(_SHARED.values()), None)
        r = HybridRestorer(thresholds=th, device=device)
        if previous is not None:  # share the loaded models between threshold settings
            r._predictor, r._unet = previous._predictor, previous._unet
        _SHARED.clear()
        _SHARED[key] = r
    return _SHARED[key]


class HybridRestorer:
    """Analysis → severity → classical / ML-guided classical / U-Net.

    ``predictor`` and ``unet`` default to the shipped models (loaded lazily, on first use);
    pass objects to override (``predictor``: :class:`.predictor.Predictor`; ``unet``: a
    ModelHandle).  ``device`` / ``tile`` go to the memory-safe runner for the U-Net.
    """

    def __init__(self, thresholds: Optional[Thresholds] = None, predictor=None, unet=None,
                 device: str = "auto", tile: int = 0, use_shipped: bool = True):
        self.thresholds = thresholds or Thresholds()
        self._predictor = predictor
        self._unet = unet
        self.device = device
        self.tile = int(tile)
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

        ``estimator``: ``unet`` / ``forest``; default the thresholds' own.
        """
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

        out, report = run(self.unet, rgb, device=self.device, tile=self.tile, progress=False)
        return out, {"model": getattr(self.unet, "source", ""), "runner": report}

    # --- API ----------------------------------------------------------------------------------
    def restore(self, image_or_path, strategy: str = "auto") -> Tuple[np.ndarray, RestoreReport]:
        """Restore one image (array ``[H,W,C]`` 0..1, C = 1/3/4, or a file path).

        Returns ``(float32 image [H,W,C] with the input's channel count, RestoreReport)``: ``method``,
        ``severity``, ``strategy``, ``analysis`` (all features, the quality estimate, thresholds),
        ``parameters`` of the method that ran and ``seconds``.  A NaN or infinite result is an
        error (:class:`scripts.batch.NonFiniteError`), never hidden.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}' (expected one of {', '.join(STRATEGIES)})")
        t0 = time.perf_counter()
        alpha = None
        if isinstance(image_or_path, (str, os.PathLike)):
            rgb, alpha = read_image(os.fspath(image_or_path))
            channels = 4 if alpha is not None else 3
        else:
            arr = np.asarray(image_or_path, np.float32)
            if arr.ndim == 2:
                arr = arr[..., None]
            if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
                raise ValueError(f"restore expects an [H, W, C] image with 1, 3 or 4 channels, got {arr.shape}")
            if not np.isfinite(arr.sum(dtype=np.float64)):
                raise ValueError("restore: the image contains NaN or infinite values")
            channels = arr.shape[-1]
            if channels == 4:
                alpha = arr[..., 3]
            rgb = np.repeat(arr, 3, axis=-1) if channels == 1 else arr[..., :3]
            rgb = np.clip(rgb, 0, 1)
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
        return out, RestoreReport(method, severity, strategy, info_an, params, list(self.notes),
                                  time.perf_counter() - t0)

    def batch_restore(self, inputs, output_dir: str, strategy: str = "auto", progress: bool = True,
                      report_name: str = "restore_report.json") -> Dict[str, object]:
        """Restore every image in ``inputs`` (a folder, a file, or a list of both) into ``output_dir``.

        Outputs are PNG ``<stem>_restored.png``; an existing file is never overwritten (a numeric
        suffix is added) and an output path equal to an input is refused.  Unreadable files are
        skipped with the reason.  A per-file report is written to ``output_dir/report_name`` and
        returned: ``{"files": [...], "restored": n, "skipped": n, "report": path}``.
        """
        files = list(_collect(inputs))
        os.makedirs(output_dir, exist_ok=True)
        inputs_real = {os.path.realpath(f) for f in files}
        rows: List[Dict[str, object]] = []
        bar = None
        if progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=len(files), desc="restoring", unit="img")
            except Exception:
                bar = None
        for path in files:
            row: Dict[str, object] = {"input": path}
            try:
                out, info = self.restore(path, strategy)
                stem = os.path.splitext(os.path.basename(path))[0]
                target = _free_name(os.path.join(output_dir, f"{stem}_restored.png"), inputs_real)
                write_image(target, out[..., :3], out[..., 3] if out.shape[-1] == 4 else None)
                row.update(status="restored", output=target, method=info["method"],
                           severity=info["severity"], quality_db=round(info["analysis"]["quality_db"], 2),
                           seconds=round(info["seconds"], 3))
            except ValueError as exc:
                row.update(status="skipped", reason=str(exc))
            rows.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{os.path.basename(path)}: {row.get('method', row['status'])}")
        if bar is not None:
            bar.close()
        report_path = _free_name(os.path.join(output_dir, report_name), inputs_real)
        summary = {"files": rows, "restored": sum(r["status"] == "restored" for r in rows),
                   "skipped": sum(r["status"] == "skipped" for r in rows), "report": report_path,
                   "strategy": strategy, "thresholds": asdict(self.thresholds)}
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)
        return summary


def _collect(inputs) -> Iterable[str]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            for name in sorted(os.listdir(item)):
                p = os.path.join(item, name)
                if os.path.isfile(p) and not name.startswith("."):
                    yield p
        elif os.path.isfile(item):
            yield item
        else:
            raise FileNotFoundError(f"'{item}' is neither a file nor a folder")


def _free_name(path: str, forbidden: set) -> str:
    """``path`` or ``stem_1.ext``, ``stem_2.ext``… — never an existing file, never an input."""
    stem, ext = os.path.splitext(path)
    cand, i = path, 0
    while os.path.exists(cand) or os.path.realpath(cand) in forbidden:
        i += 1
        cand = f"{stem}_{i}{ext}"
    return cand

"""Decision engine: measure the image's defects, then restore it with the cheapest adequate method.

Every image is first measured (:func:`.defects.measure`: the 14 FFT features plus noise, blur,
motion, tone, colour cast, illumination and JPEG blockiness, with units), and a restoration plan is
built from those measurements by fixed rules (:mod:`.plan`).  Strategies:

* ``classical``: the plan — inpaint / denoise / deblur / tone / colour / sharpen over the pack's own
  tools, each stage only when its defect is measured above its threshold; an image in which nothing
  passes comes back unchanged (bit-identical), with the reason.
* ``ml_guided``: the random forest picks unsharp-mask / colour-stretch parameters from the 14
  features (:mod:`.predictor`; the forest-guided plan is the next step of issue #15).
* ``deep_learning``: the shipped U-Net.
* ``auto``: severity from the quality estimate ``q`` (dB, an estimate of the image's PSNR against its
  undamaged original); ``light`` and ``moderate`` → the plan (``classical``), ``severe`` → the U-Net.

The quality estimate (``Thresholds.estimator``):

* ``forest`` (default): the random-forest predictor's estimate from the 14 analysis features
  (:mod:`.predictor`), ~1 ms; without a predictor a documented fallback formula on the two
  detections (:func:`fallback_quality_db`).  No network runs to decide.
* ``unet``: the PSNR of the input against the U-Net's restoration of it (the restoration stands in
  for the unknown original); it costs one U-Net run, reused when the image is routed to the U-Net.

``HybridRestorer.restore(image_or_path, strategy)`` returns ``(image, info)``; arrays are
``[H, W, C]`` with C = 1 (grey, processed as one channel and returned as one), 3 or 4 (alpha kept and
reattached), float 0..1 or uint8 / uint16 (scaled by 1/255 / 1/65535; a float array outside 0..1 is
refused, never clipped).  :meth:`HybridRestorer.batch_restore` processes a folder.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import analysis, classical, defects, plan as _plan

STRATEGIES = ("auto", "classical", "ml_guided", "deep_learning")
ESTIMATORS = ("unet", "forest")
#: ceiling of the U-Net-residual estimate (an unchanged image would otherwise be infinite dB)
MAX_QUALITY_DB = 60.0
METHOD_FOR_SEVERITY = {"light": "classical", "moderate": "classical", "severe": "deep_learning"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


#: thresholds ``(light_min_db, severe_max_db)`` calibrated for each estimator by
#: :func:`.train.calibrate_thresholds` (``restorekit calibrate``) with the shipped models
CALIBRATED = {"unet": (45.0, 26.25), "forest": (37.25, 20.75)}
#: the estimator with the higher validation PSNR of ``auto`` in that calibration
DEFAULT_ESTIMATOR = "forest"


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
    """PSNR (dB, peak 1) of ``image`` against its restoration, capped at :data:`MAX_QUALITY_DB`."""
    diff = np.asarray(image, np.float64) - np.asarray(restored, np.float64)
    mse = float(np.mean(diff * diff))
    return float(min(MAX_QUALITY_DB, 10.0 * np.log10(1.0 / max(mse, 1e-12))))


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


class HybridRestorer:
    """Defect measurement → severity → the plan (classical) / ML-guided / U-Net.

    ``predictor`` and ``unet`` default to the shipped models (loaded lazily, on first use);
    pass objects to override (``predictor``: :class:`.predictor.Predictor`; ``unet``: a
    ModelHandle).  ``device`` / ``tile`` go to the memory-safe runner for the U-Net.  ``rules``:
    the plan's thresholds (:class:`.plan.Rules`); ``denoiser``: the plan's denoiser
    (:data:`.plan.DENOISERS`); ``detect_damage``: find the damage mask to inpaint with
    ``hybrid.damage_mask`` when that detector is installed.
    """

    def __init__(self, thresholds: Optional[Thresholds] = None, predictor=None, unet=None,
                 device: str = "auto", tile: int = 0, use_shipped: bool = True,
                 rules: Optional["_plan.Rules"] = None, denoiser: str = "auto", detect_damage: bool = True):
        self.thresholds = thresholds or Thresholds()
        self.rules = rules or _plan.RULES
        if denoiser not in _plan.DENOISERS:
            raise ValueError(f"unknown denoiser '{denoiser}' (expected one of {', '.join(_plan.DENOISERS)})")
        self.denoiser = denoiser
        self.detect_damage = bool(detect_damage)
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
    def analyse(self, rgb: np.ndarray, estimator: Optional[str] = None) -> Dict[str, object]:
        """Features, defect measurements, quality estimate and severity of an image (``[H, W, C]``,
        C = 1 or 3, 0..1).  ``estimator``: ``unet`` / ``forest``; default the thresholds' own."""
        img = defects.as_image(rgb)
        return self._analyse(img, defects.measure(img), estimator)[0]

    def _analyse(self, img: np.ndarray, report: "defects.DefectReport", estimator: Optional[str] = None):
        """``(analysis dict, (U-Net output, its parameters) or None)``; the output is kept for reuse."""
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
            deep = self._deep(img)
            q = residual_quality_db(img, deep[0])
            q_source = "U-Net residual (PSNR of the input against its U-Net restoration)"
        else:
            q, q_source = q_forest, forest_source
        severity = classify(q, self.thresholds)
        return {"features": {k: feats[k] for k in analysis.FEATURE_NAMES},
                "spectral_slopes": {"alpha_mid": feats["alpha_mid"], "alpha_high": feats["alpha_high"]},
                "defects": report.to_dict(), "defect_summary": report.summary(),
                "quality_db": float(q), "quality_source": q_source, "forest_quality_db": q_forest,
                "severity": severity, "thresholds": asdict(self.thresholds),
                "analysis_seconds": report.seconds["total"]}, deep

    def _plan(self, img: np.ndarray, report: "defects.DefectReport", mask=None, progress=None):
        """The ``classical`` strategy: measurements → rules → plan → execution."""
        source = "given mask" if mask is not None else ""
        if mask is None and self.detect_damage:
            mask, source = _plan.detect_mask(img)
        p = _plan.plan_from_rules(report, mask, self.rules, self.denoiser, mask_source=source)
        out, ex = _plan.execute(img, p, progress)
        return out, {"plan": p.to_dict(), "execution": ex.to_dict(), "summary": ex.summary(),
                     "why": "rules on the measured defects (hybrid/plan.py)"}

    def _classical(self, rgb, feats) -> Tuple[np.ndarray, Dict[str, object]]:
        """The seed's rule-based colour stretch + unsharp mask (kept as the ml_guided fallback)."""
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
        if p.get("no_change"):
            return np.array(rgb, copy=True), p
        return classical.apply(rgb, p["colour_correction"], p["sigma"], p["strength"]), p

    def _deep(self, img) -> Tuple[np.ndarray, Dict[str, object]]:
        from .unet import run

        rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
        out, report = run(self.unet, rgb, device=self.device, tile=self.tile, progress=False)
        if img.shape[-1] == 1:
            out = out.mean(axis=-1, keepdims=True)
        return out, {"model": getattr(self.unet, "source", ""), "runner": report}

    # --- API ----------------------------------------------------------------------------------
    def restore(self, image_or_path, strategy: str = "auto", mask: Optional[np.ndarray] = None,
                progress=None) -> Tuple[np.ndarray, Dict[str, object]]:
        """Restore one image (array ``[H,W]`` / ``[H,W,C]``, C = 1/3/4, float 0..1 or uint8/uint16;
        or a file path).

        Returns ``(float32 image [H,W,C] with the input's channel count, info)``; info has
        ``method``, ``severity``, ``strategy``, ``analysis`` (features, defect measurements, the
        quality estimate, thresholds), ``parameters`` of the method that ran (for the plan: the
        steps, their parameters and why, the stages skipped and why), ``unchanged`` and ``reason``
        (why an image came back as it was), ``stages`` and ``seconds``.  ``mask``: bool ``[H, W]``
        of damaged pixels for the plan to inpaint (default: the damage-mask detector when present).
        ``progress(done, total, stage)`` is called between the plan's stages (it may raise to abort).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}' (expected one of {', '.join(STRATEGIES)})")
        t0 = time.perf_counter()
        alpha = None
        if isinstance(image_or_path, (str, os.PathLike)):
            rgb, alpha = read_image(os.fspath(image_or_path))
            img = defects.as_image(rgb)
            channels = 4 if alpha is not None else 3
        else:
            arr = np.asarray(image_or_path)
            channels = 1 if arr.ndim == 2 else (arr.shape[-1] if arr.ndim == 3 else 0)
            if channels not in (1, 3, 4):
                raise ValueError(f"restore expects an [H, W, C] image with 1, 3 or 4 channels, got {arr.shape}")
            img = defects.as_image(arr)  # uint8/uint16 scaled; float outside 0..1 refused; alpha dropped
            if channels == 4:
                alpha = defects.as_image(arr[..., 3:4])[..., 0]
        report = defects.measure(img)
        # a forced classical / ML-guided run does not pay for a U-Net estimate it would not use
        estimator = "forest" if strategy in ("classical", "ml_guided") else None
        info_an, deep = self._analyse(img, report, estimator)
        severity = info_an["severity"]
        method = METHOD_FOR_SEVERITY[severity] if strategy == "auto" else strategy
        feats = info_an["features"]
        rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
        if method == "classical":
            out, params = self._plan(img, report, mask, progress)
            unchanged = params["execution"]["unchanged"]
            reason = params["execution"]["reason"]
            stages = [f"{st['stage']}" for st in params["execution"]["stages"]]
        elif method == "ml_guided":
            out, params = self._ml_guided(rgb, feats)
            if img.shape[-1] == 1:
                out = out.mean(axis=-1, keepdims=True) if not params.get("no_change") else np.array(img, copy=True)
            unchanged = bool(params.get("no_change"))
            reason = params["why"] if unchanged else ""
            stages = [] if unchanged else ["colour stretch" if params["colour_correction"] else "", "unsharp mask"]
            stages = [x for x in stages if x]
        else:
            out, params = deep if deep is not None else self._deep(img)
            unchanged, reason, stages = False, "", ["U-Net"]
        out = np.asarray(out, np.float32)
        if not np.isfinite(out).all():
            raise RuntimeError(f"the {method} method produced NaN or infinite values")
        if not unchanged:
            out = np.clip(out, 0.0, 1.0)
        if channels == 4:
            out = np.concatenate([out, alpha[..., None].astype(np.float32)], axis=-1)
        info = {"method": method, "severity": severity, "strategy": strategy,
                "analysis": info_an, "parameters": params, "unchanged": bool(unchanged), "reason": reason,
                "stages": stages, "notes": list(self.notes), "seconds": time.perf_counter() - t0}
        return out, info

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

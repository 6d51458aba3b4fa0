"""Learning-based CLAHE (LB-CLAHE): predict CLAHE's clip limit and tile grid from image features.

Campos, Castro, Yamada, Almeida, Berbeglia, "Learning-Based Contrast Limited Adaptive Histogram
Equalization" (LB-CLAHE), EURASIP Journal on Image and Video Processing 2019:59.  As in the paper:
one global (clip limit, tile grid) per image; the training target is the pair that maximises SSIM
between CLAHE of a contrast-distorted image and the pristine image, found by an offline grid search;
a regressor (random forest here) learns the map from histogram and gradient statistics of the
distorted image to that pair.  The training pipeline is ``scripts/lbclahe_train.py``; the trained
predictor ships as ``models/lbclahe/predictor.joblib`` and is loaded only through
:func:`scripts.shipped_models.load_joblib` (sha256-checked before unpickling).

Units: planes are float 0..1 ``[H,W]`` (Oklab L by default, see :mod:`scripts.clahe`); clip limits
are in OpenCV's convention (multiple of the mean bin height, 1 = almost identity); the grid is the
number of tiles per side.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import clahe as _clahe
from .finite import all_finite, check_finite
from .metrics import ssim

PREDICTOR_PATH = "lbclahe/predictor.joblib"

#: the search space of the offline grid search (and the range predictions are clamped to)
CLIP_VALUES: Tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 14.0)
GRID_VALUES: Tuple[int, ...] = (2, 3, 4, 6, 8, 12, 16)
CLIP_RANGE = (CLIP_VALUES[0], CLIP_VALUES[-1])
GRID_RANGE = (GRID_VALUES[0], GRID_VALUES[-1])

#: features are computed on the plane area-downsampled to at most this many pixels per side
FEATURE_SIDE = 256

FEATURE_NAMES: Tuple[str, ...] = (
    "mean", "std", "skewness", "kurtosis", "entropy", "energy", "occupied_bins",
    "p01", "p05", "p25", "p50", "p75", "p95", "p99", "range_01_99", "iqr",
    "hist8_0", "hist8_1", "hist8_2", "hist8_3", "hist8_4", "hist8_5", "hist8_6", "hist8_7",
    "grad_mean", "grad_std", "grad_p50", "grad_p90", "grad_p99", "edge_fraction", "grad_over_std",
    "local_std_mean", "local_std_std", "block_mean_std", "size_log2",
)


# --- targets <-> normalised regression outputs ---------------------------------------------------
def encode_params(clip: float, grid: float) -> Tuple[float, float]:
    """(clip, grid) -> normalised targets in 0..1 (log scale for both)."""
    c = math.log(clip / CLIP_RANGE[0]) / math.log(CLIP_RANGE[1] / CLIP_RANGE[0])
    g = math.log(grid / GRID_RANGE[0]) / math.log(GRID_RANGE[1] / GRID_RANGE[0])
    return c, g


def decode_params(c: float, g: float) -> Tuple[float, int]:
    """Normalised outputs -> (clip limit rounded to 0.1, integer grid), clamped to the search range."""
    c = float(np.clip(c, 0.0, 1.0))
    g = float(np.clip(g, 0.0, 1.0))
    clip = CLIP_RANGE[0] * (CLIP_RANGE[1] / CLIP_RANGE[0]) ** c
    grid = GRID_RANGE[0] * (GRID_RANGE[1] / GRID_RANGE[0]) ** g
    return round(clip, 1), int(round(grid))


# --- features --------------------------------------------------------------------------------------
def _small_plane(plane: np.ndarray) -> np.ndarray:
    import cv2

    p = np.asarray(plane, dtype=np.float32)
    h, w = p.shape
    s = max(h, w)
    if s > FEATURE_SIDE:
        f = FEATURE_SIDE / s
        p = cv2.resize(p, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return p


def features(plane: np.ndarray) -> np.ndarray:
    """Histogram and gradient statistics of a float plane 0..1 ``[H,W]`` (any size), float64 vector.

    Computed on the plane area-downsampled to <= 256 px per side, so they cost the same at any
    size and barely depend on it.  Order: :data:`FEATURE_NAMES`.  Finite by construction (flat or
    1x1 planes give zeros for the undefined moments); a plane with NaN/inf values is a ``ValueError``.
    """
    import cv2

    full_shape = np.shape(plane)
    if not all_finite(plane):
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(plane))))
        raise ValueError(f"LB-CLAHE features: the plane has {bad} NaN or infinite value(s)")
    p = np.clip(_small_plane(plane), 0.0, 1.0)
    v = p.ravel().astype(np.float64)
    mean = v.mean()
    std = v.std()
    if std > 1e-6:
        z = (v - mean) / std
        skew = float(np.mean(z ** 3))
        kurt = float(np.mean(z ** 4) - 3.0)
    else:
        skew = kurt = 0.0
    hist = np.bincount(np.minimum((v * 255.0 + 0.5).astype(np.int64), 255), minlength=256) / v.size
    nz = hist[hist > 0]
    entropy = float(-(nz * np.log2(nz)).sum()) / 8.0
    energy = float((hist ** 2).sum())
    occupied = float((hist > 0).sum()) / 256.0
    pct = np.percentile(v, [1, 5, 25, 50, 75, 95, 99])
    hist8 = hist.reshape(8, 32).sum(axis=1)

    if min(p.shape) >= 3:
        gx = cv2.Sobel(p, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        gy = cv2.Sobel(p, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        g = np.sqrt(gx * gx + gy * gy).ravel().astype(np.float64)
        m1 = cv2.blur(p, (7, 7), borderType=cv2.BORDER_REFLECT)
        m2 = cv2.blur(p * p, (7, 7), borderType=cv2.BORDER_REFLECT)
        lstd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0)).ravel().astype(np.float64)
        k = max(1, min(p.shape) // 8)
        blocks = cv2.resize(p, (max(1, p.shape[1] // k), max(1, p.shape[0] // k)), interpolation=cv2.INTER_AREA)
        block_std = float(blocks.std())
    else:
        g = np.zeros(1)
        lstd = np.zeros(1)
        block_std = 0.0
    gp = np.percentile(g, [50, 90, 99])
    feats = [
        mean, std, skew, kurt, entropy, energy, occupied,
        *pct, pct[6] - pct[0], pct[4] - pct[2],
        *hist8,
        g.mean(), g.std(), *gp, float((g > 0.02).mean()), g.mean() / max(std, 1e-3),
        lstd.mean(), lstd.std(), block_std, math.log2(max(1, full_shape[0] * full_shape[1])) / 24.0,
    ]
    out = np.asarray(feats, dtype=np.float64)
    check_finite(out, "Learning-Based CLAHE", "feature extraction")
    return out




def grid_search(distorted: np.ndarray, pristine: np.ndarray, clips: Sequence[float] = CLIP_VALUES,
                grids: Sequence[int] = GRID_VALUES, smooth: bool = True) -> Dict[str, object]:
    """SSIM to ``pristine`` of CLAHE(distorted) for every (clip, grid); returns the table and best.

    Both planes float 0..1 ``[H,W]``.  The SSIM surface is flat near its top, so its raw arg-max
    jumps between neighbours on small changes; with ``smooth`` the chosen pair is the arg-max of
    the table averaged over each cell's 3x3 neighbourhood (edges replicated), a more learnable
    target that costs about 0.002 SSIM on average (at most 0.03) on the training set.
    Result: ``{"table": ndarray [len(clips), len(grids)], "clip", "grid": the chosen pair,
    "ssim": its SSIM, "ssim_max": the raw table maximum}``.
    """
    d8 = _clahe.to_u8(distorted)
    table = np.zeros((len(clips), len(grids)))
    for i, c in enumerate(clips):
        for j, g in enumerate(grids):
            out = _clahe.clahe_u8(d8, c, g).astype(np.float32) / 255.0
            table[i, j] = ssim(out, pristine)
    score = table
    if smooth:
        from scipy.ndimage import uniform_filter

        score = uniform_filter(table, size=3, mode="nearest")
    i, j = np.unravel_index(int(np.argmax(score)), table.shape)
    return {"table": table, "clip": float(clips[i]), "grid": int(grids[j]), "ssim": float(table[i, j]),
            "ssim_max": float(table.max())}


# --- predictor -------------------------------------------------------------------------------------
_CACHE: Dict[str, object] = {}
_LOCK = threading.Lock()


def load_predictor(relpath: str = PREDICTOR_PATH, models_dir: Optional[str] = None):
    """The predictor bundle (dict with "model", "feature_names", ...) from the pack's ``models/``.

    Loaded with :func:`scripts.shipped_models.load_joblib` (sha256 check first) and cached per file
    and hash.  Raises ``ShippedModelError`` when missing or tampered with, ``ValueError`` when the
    bundle does not match this code's features.
    """
    from . import shipped_models

    kwargs = {} if models_dir is None else {"models_dir": models_dir}
    path = shipped_models.model_path(relpath, **kwargs)
    hash_file = path + ".sha256"
    try:
        with open(hash_file, "r", encoding="utf-8") as f:
            key = path + ":" + f.read().split()[0]
    except OSError:
        key = None
    with _LOCK:
        if key is not None and key in _CACHE:
            return _CACHE[key]
        try:
            bundle = shipped_models.load_joblib(relpath, **kwargs)
        except shipped_models.ShippedModelError:
            raise
        except Exception as exc:  # e.g. a scikit-learn too different from the one that trained it
            import sklearn

            raise ValueError(
                f"{relpath}: the LB-CLAHE predictor could not be loaded with scikit-learn "
                f"{sklearn.__version__} ({type(exc).__name__}: {exc}); retrain it with "
                "scripts/lbclahe_train.py, or set clip_limit and grid by hand"
            ) from exc
        if not isinstance(bundle, dict) or "model" not in bundle:
            raise ValueError(f"{relpath}: not an LB-CLAHE predictor bundle")
        if tuple(bundle.get("feature_names", ())) != FEATURE_NAMES:
            raise ValueError(
                f"{relpath}: trained on different features than this version computes; retrain it "
                "with scripts/lbclahe_train.py"
            )
        if key is not None:
            _CACHE[key] = bundle
        return bundle


def predict_params(plane: np.ndarray, bundle=None) -> Tuple[float, int]:
    """Predicted (clip limit, grid) for a float plane 0..1 ``[H,W]``."""
    if bundle is None:
        bundle = load_predictor()
    from .forest import predict

    x = features(plane)[None, :]
    c, g = predict(bundle["model"], x).reshape(-1)[:2]
    return decode_params(c, g)


@dataclass
class LBClaheReport:
    """The CLAHE parameters used (clip limit in OpenCV's convention, grid = tiles per side), whether
    each was predicted or given, and the working channel (:data:`.clahe.CHANNELS`)."""

    channel: str
    clip_source: str
    grid_source: str
    clip: float = 0.0
    grid: int = 0

    @property
    def predicted(self) -> bool:
        return "predicted" in (self.clip_source, self.grid_source)

    def info_fields(self) -> dict:
        names = {v: k for k, v in _clahe.CHANNEL_NAMES.items()}
        return {
            "channel": names.get(self.channel, self.channel),
            "clip limit (OpenCV)": f"{self.clip:.1f} ({self.clip_source})",
            "grid": f"{self.grid}x{self.grid} ({self.grid_source})",
            "why": ("predicted per image from histogram/gradient features by the shipped LB-CLAHE random forest "
                    "(target: SSIM to pristine images)" if self.predicted else "manual values"),
            "predictor": f"models/{PREDICTOR_PATH} (sha256 checked)" if self.predicted else "not used",
        }


def lb_clahe(image, channel: str = "oklab", clip_limit: Optional[float] = None,
             grid: Optional[int] = None, bundle=None):
    """LB-CLAHE of an image ``[H,W]``, ``[H,W,1]`` or ``[H,W,3]`` (float 0..1).

    ``clip_limit`` / ``grid`` None (or <= 0) are predicted from the working channel (for "rgb" the
    BT.601 luma); given values override the prediction.  Returns ``(out float32 0..1,
    LBClaheReport)``.
    """
    img = _clahe.as_unit_float(image)
    want_clip = clip_limit is None or clip_limit <= 0
    want_grid = grid is None or grid <= 0
    report = LBClaheReport(channel=channel, clip_source="predicted" if want_clip else "manual",
                           grid_source="predicted" if want_grid else "manual")
    colour_plane = img.ndim == 3 and img.shape[-1] == 3 and channel != "rgb"
    if colour_plane and (want_clip or want_grid):
        # convert once: predict on the working plane, then equalise that same plane
        planes, rest = _clahe.split_channel(img, channel)
        pc, pg = predict_params(planes[0], bundle)
        clip_limit = pc if want_clip else clip_limit
        grid = pg if want_grid else grid
        report.clip, report.grid = float(clip_limit), int(grid)
        out = [_clahe.clahe_channel(p, clip_limit, grid) for p in planes]
        return _clahe.merge_channel(out, rest, channel, img), report
    if want_clip or want_grid:
        pc, pg = predict_params(_clahe.working_channel(img, channel), bundle)
        clip_limit = pc if want_clip else clip_limit
        grid = pg if want_grid else grid
    report.clip, report.grid = float(clip_limit), int(grid)
    return _clahe.clahe(img, clip_limit, grid, channel), report

"""Damage-mask detector: scratches, cracks / craquelure, dust specks and missing patches.

``detect(rgb) -> (mask, report)``: ``rgb`` float32 ``[H, W, 3]`` (or ``[H, W]`` / ``[H, W, 1]``
grey, ``[H, W, 4]`` RGBA: alpha ignored) in 0..1; ``mask`` bool ``[H, W]`` (True = damaged pixel,
to be inpainted); ``report`` a :class:`DamageMaskReport`.  The input is never modified.

Two detectors:

* ``cnn`` (default when the shipped weights are present): :class:`DamageMaskNet`, a small
  encoder–decoder (96 k parameters) working on a 2× space-to-depth of the image, trained on the
  damage generator's true masks (``hybrid/tools/train_damage_mask.py``; data, command and scores in
  ``models/hybrid/MODEL_CARD.md``).  Weights ``models/hybrid/damage_mask.safetensors``, sha256-checked,
  loaded without unpickling; the probability threshold chosen on the validation split is stored with
  them.  Large images run in overlapping tiles so memory stays bounded.
* ``classical``: thin dark / bright structures from morphological black / white top-hats of the
  luminance (Soille 2003, ch. 4), scaled by a robust noise estimate (MAD of the 3×3-median residual),
  thresholded, and kept only as line- or spot-shaped connected components.  No training; used when
  the weights are missing and as the baseline the CNN is compared with.

The mask's connected components are classified by shape for the report: long and thin → a line
(scratch or crack), small and compact → a spot (dust), larger and compact → a patch (loss).
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

#: shipped weights of the CNN detector (models/hybrid/, sha256-checked)
WEIGHTS_RELPATH = "hybrid/damage_mask.safetensors"
METHODS = ("auto", "cnn", "classical")
#: default threshold of the classical detector's score (noise-normalised top-hat), chosen on val (F1)
CLASSICAL_THRESHOLD = 28.0
#: CNN tiles: side and overlap in px (the network sees about ±60 px around a pixel)
TILE, OVERLAP = 1024, 64
#: spots are components of at most this many px; larger compact ones are patches
SPOT_MAX_PX = 80


@dataclass
class DamageMaskReport:
    """What :func:`detect` found.

    ``fraction``: share of pixels in the mask (0..1); ``lines`` / ``spots`` / ``patches``: connected
    components of the mask classified by shape (long thin → line: scratch or crack; small compact →
    spot: dust; larger compact → patch: loss), with their pixel counts in ``*_px``; ``method``:
    ``"cnn"`` or ``"classical"``; ``threshold``: the threshold used (CNN: probability 0..1;
    classical: score in noise units); ``seconds``: wall time; ``note``: anything the caller should
    know (e.g. why a fallback ran).
    """

    fraction: float = 0.0
    lines: int = 0
    spots: int = 0
    patches: int = 0
    line_px: int = 0
    spot_px: int = 0
    patch_px: int = 0
    method: str = ""
    threshold: float = 0.5
    seconds: float = 0.0
    note: str = ""
    extra: Dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        if self.fraction == 0:
            return f"damage mask ({self.method}): nothing found"
        return (f"damage mask ({self.method}): {100 * self.fraction:.2f} % of pixels — {self.lines} line(s) "
                f"{self.line_px} px, {self.spots} spot(s) {self.spot_px} px, {self.patches} patch(es) "
                f"{self.patch_px} px")


def as_rgb(image) -> np.ndarray:
    """Validate and convert to float32 RGB ``[H, W, 3]`` (grey replicated, alpha dropped; uint8 /
    uint16 scaled by 255 / 65535)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"damage mask: expected an [H, W, C] image with 1, 3 or 4 channels, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"damage mask: empty image of shape {a.shape}")
    if a.dtype == np.uint8 or a.dtype == np.uint16:  # integer images are scaled, not clipped
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    elif a.dtype.kind != "f":
        raise ValueError(f"damage mask: expected float 0..1, uint8 or uint16, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a.sum(dtype=np.float64)):
        raise ValueError("damage mask: the image contains NaN or infinite values")
    a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


# --- shape classification ----------------------------------------------------------------------------------
def classify_components(mask: np.ndarray) -> Dict[str, int]:
    """Count the mask's 8-connected components by shape: ``lines`` (bounding-box elongation ≥ 3 or
    fill of the box ≤ 0.3 with a side ≥ 15 px), ``spots`` (≤ :data:`SPOT_MAX_PX` px) and
    ``patches`` (the rest), with their pixel totals."""
    import cv2

    out = {"lines": 0, "spots": 0, "patches": 0, "line_px": 0, "spot_px": 0, "patch_px": 0}
    if not mask.any():
        return out
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    for i in range(1, n):
        w, h, area = int(stats[i, 2]), int(stats[i, 3]), int(stats[i, 4])
        elong = max(w, h) / max(1, min(w, h))
        fill = area / max(1, w * h)
        if elong >= 3 or (fill <= 0.3 and max(w, h) >= 15):
            kind = "line"
        elif area <= SPOT_MAX_PX:
            kind = "spot"
        else:
            kind = "patch"
        out[{"line": "lines", "spot": "spots", "patch": "patches"}[kind]] += 1
        out[kind + "_px"] += area
    return out


# --- the CNN ---------------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def build_net(widths=(24, 48, 64)):
    """:class:`DamageMaskNet` with encoder widths ``(c1, c2, c3)`` (built lazily: torch is imported here)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    def conv(i, o, dil=1, stride=1):
        return nn.Conv2d(i, o, 3, stride, padding=dil, dilation=dil)

    class DamageMaskNet(nn.Module):
        """Input ``[N, 3, H, W]`` in 0..1 (H, W multiples of 8) → logits ``[N, 1, H, W]``.

        2× space-to-depth (12 channels at H/2), three encoder levels (H/2, H/4, H/8; dilated 3×3
        convolutions at the coarse levels for about ±60 px of context), additive skip connections,
        a 1×1 head to 4 channels and depth-to-space back to full resolution.
        """

        size_multiple = 8

        def __init__(self, c1: int, c2: int, c3: int):
            super().__init__()
            self.widths = (c1, c2, c3)
            r = nn.ReLU(inplace=True)
            self.e1 = nn.Sequential(conv(12, c1), r, conv(c1, c1), r)
            self.e2 = nn.Sequential(conv(c1, c2, stride=2), r, conv(c2, c2), r, conv(c2, c2, 2), r)
            self.e3 = nn.Sequential(conv(c2, c3, stride=2), r, conv(c3, c3, 2), r, conv(c3, c3, 4), r)
            self.r3 = nn.Conv2d(c3, c2, 1)
            self.d2 = nn.Sequential(conv(c2, c2), r)
            self.r2 = nn.Conv2d(c2, c1, 1)
            self.d1 = nn.Sequential(conv(c1, c1), r)
            self.head = nn.Conv2d(c1, 4, 1)

        def forward(self, x):
            x = F.pixel_unshuffle(x - 0.5, 2)
            e1 = self.e1(x)
            e2 = self.e2(e1)
            e3 = self.e3(e2)
            d2 = self.d2(e2 + F.interpolate(self.r3(e3), size=e2.shape[-2:], mode="bilinear", align_corners=False))
            d1 = self.d1(e1 + F.interpolate(self.r2(d2), size=e1.shape[-2:], mode="bilinear", align_corners=False))
            return F.pixel_shuffle(self.head(d1), 2)

    return DamageMaskNet(*widths)


def split_state(sd) -> Tuple[dict, Dict[str, float]]:
    """Separate the network weights from the ``meta.*`` scalars stored beside them."""
    weights = {k: v for k, v in sd.items() if not k.startswith("meta.")}
    meta = {k[5:]: float(v.reshape(-1)[0]) for k, v in sd.items() if k.startswith("meta.")}
    return weights, meta


def net_from_state(sd):
    """Build the network for a state dict (widths read from its shapes) and load it strictly."""
    weights, meta = split_state(sd)
    widths = (int(weights["e1.0.weight"].shape[0]), int(weights["e2.0.weight"].shape[0]),
              int(weights["e3.0.weight"].shape[0]))
    net = build_net(widths)
    net.load_state_dict(weights, strict=True)
    net.eval()
    return net, meta


@functools.lru_cache(maxsize=2)
def load_shipped(relpath: str = WEIGHTS_RELPATH, models_dir: Optional[str] = None):
    """``(net, meta)`` from the pack's models folder (sha256-checked safetensors); cached."""
    from ..scripts import shipped_models

    sd = shipped_models.load_torch_weights(relpath, **({"models_dir": models_dir} if models_dir else {}))
    return net_from_state(sd)


def _tiles(n: int, tile: int, overlap: int):
    if n <= tile:
        return [(0, n)]
    step = tile - 2 * overlap
    starts = list(range(0, n - tile, step)) + [n - tile]
    return [(s, s + tile) for s in starts]


def cnn_probability(rgb: np.ndarray, net, device: str = "cpu", tile: int = TILE,
                    overlap: int = OVERLAP) -> np.ndarray:
    """Per-pixel damage probability ``[H, W]`` float32 from the CNN, in overlapping tiles (each
    tile's outer ``overlap`` px are discarded except at the image border)."""
    torch = _torch()
    F = torch.nn.functional
    h, w = rgb.shape[:2]
    m = 8
    prob = np.zeros((h, w), np.float32)
    with torch.no_grad():
        for y0, y1 in _tiles(h, tile, overlap):
            for x0, x1 in _tiles(w, tile, overlap):
                t = torch.from_numpy(np.ascontiguousarray(rgb[y0:y1, x0:x1])).permute(2, 0, 1)[None].to(device)
                th, tw = t.shape[-2:]
                ph, pw = (-th) % m, (-tw) % m
                if ph or pw:
                    mode = "reflect" if (th > ph and tw > pw) else "replicate"
                    t = F.pad(t, (0, pw, 0, ph), mode=mode)
                p = torch.sigmoid(net(t))[0, 0, :th, :tw].float().cpu().numpy()
                # keep the centre of each tile; the border only where the tile touches the image edge
                ky0 = y0 + (overlap if y0 > 0 else 0)
                kx0 = x0 + (overlap if x0 > 0 else 0)
                ky1 = y1 - (overlap if y1 < h else 0)
                kx1 = x1 - (overlap if x1 < w else 0)
                prob[ky0:ky1, kx0:kx1] = p[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0]
    return prob


# --- the mask the restoration plan inpaints ------------------------------------------------------------
#: hysteresis thresholds of :func:`detect_for_inpainting` (CNN probability) and the share of the image the
#: confident seeds must cover.  Chosen on the validation split (20 sources × 3 levels × 2, 256 px, v2
#: generator; the test splits never looked at): seeds > 0.95 grown into > 0.5 and inpainted when the
#: seeds cover ≥ 0.5 % gained +0.45 / +0.52 / +0.57 dB (light / moderate / severe) with no image worse
#: and no clean image touched, against 0 / ≈ 0.1 / 0.56 dB for the earlier rule (the 0.3 mask when it
#: covers ≥ 10 %); a single 0.9 threshold already lost 3.7 dB on one light image
SEED_PROBABILITY = 0.95
GROW_PROBABILITY = 0.5
MIN_SEED_FRACTION = 0.005


def inpainting_mask(prob: np.ndarray, *, seed: float = SEED_PROBABILITY, grow: float = GROW_PROBABILITY,
                    min_seed_fraction: float = MIN_SEED_FRACTION) -> Tuple[np.ndarray, str, float]:
    """The hysteresis mask of :func:`detect_for_inpainting` from a probability map: ``(mask, note,
    seed_fraction)`` (an empty mask, with the note saying why, when the seeds are too few)."""
    from skimage.filters import apply_hysteresis_threshold

    seed_fraction = float((prob > seed).mean())
    if seed_fraction >= min_seed_fraction:
        return apply_hysteresis_threshold(prob, grow, seed), "", seed_fraction
    return np.zeros(prob.shape, bool), (f"confident damage on {100 * seed_fraction:.2f} % of the pixels, under "
                                        f"{100 * min_seed_fraction:g} %: not inpainted (scene detail is not told "
                                        "from damage there)"), seed_fraction


def detect_for_inpainting(rgb: np.ndarray, *, seed: float = SEED_PROBABILITY, grow: float = GROW_PROBABILITY,
                          min_seed_fraction: float = MIN_SEED_FRACTION,
                          device: str = "cpu") -> Tuple[np.ndarray, DamageMaskReport]:
    """The mask worth inpainting without a human check: pixels the CNN is sure of (probability >
    ``seed``), grown along connected pixels above ``grow`` (hysteresis thresholding, as Canny's edge
    linking), and only when the seeds cover at least ``min_seed_fraction`` of the image — otherwise an
    empty mask and a report saying why.  Without the CNN's weights: the classical detector's mask
    (:func:`detect` with ``method="classical"``).  Returns ``(mask bool [H, W], DamageMaskReport)``;
    ``report.extra`` holds ``seed_fraction`` and the thresholds."""
    if not (0.0 < grow <= seed < 1.0):
        raise ValueError(f"damage mask: need 0 < grow ≤ seed < 1, got grow {grow}, seed {seed}")
    t0 = time.perf_counter()
    img = as_rgb(rgb)
    try:
        net, _meta = load_shipped()
    except Exception as exc:  # missing / corrupt weights, or torch absent
        mask, rep = detect(img, method="classical")
        rep.note = f"CNN weights unavailable ({exc}); classical detector used"
        return mask, rep
    prob = cnn_probability(img, net, device=device)
    mask, note, seed_fraction = inpainting_mask(prob, seed=seed, grow=grow, min_seed_fraction=min_seed_fraction)
    rep = DamageMaskReport(fraction=float(mask.mean()), method="cnn", threshold=grow, note=note,
                           extra={"seed_fraction": seed_fraction, "seed": seed, "grow": grow},
                           **classify_components(mask))
    rep.seconds = time.perf_counter() - t0
    return mask, rep


# --- the classical detector -------------------------------------------------------------------------------
def classical_score(rgb: np.ndarray, size: int = 7) -> np.ndarray:
    """Thin-structure score in noise units: ``max(black top-hat, white top-hat)`` of the luminance
    with a ``size``-px elliptical element, divided by ``1.4826 · MAD`` of the 3×3-median residual
    (a robust noise estimate; floor 0.004)."""
    import cv2

    from .analysis import luminance

    y = luminance(rgb)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    dark = cv2.morphologyEx(y, cv2.MORPH_BLACKHAT, k)
    bright = cv2.morphologyEx(y, cv2.MORPH_TOPHAT, k)
    resid = y - cv2.medianBlur(y, 3)
    sigma = max(0.004, 1.4826 * float(np.median(np.abs(resid - np.median(resid)))))
    return (np.maximum(dark, bright) / sigma).astype(np.float32)


def classical_mask(rgb: np.ndarray, threshold: float = CLASSICAL_THRESHOLD) -> np.ndarray:
    """Classical mask: score above ``threshold``, then only line-shaped components (elongation ≥ 3,
    at least 12 px long) and small spots (≤ :data:`SPOT_MAX_PX` px, compact) are kept."""
    import cv2

    cand = classical_score(rgb) > threshold
    if not cand.any():
        return cand
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    for i in range(1, n):
        w, h, area = int(stats[i, 2]), int(stats[i, 3]), int(stats[i, 4])
        elong = max(w, h) / max(1, min(w, h))
        fill = area / max(1, w * h)
        line = (elong >= 3 or fill <= 0.3) and max(w, h) >= 12
        spot = area <= SPOT_MAX_PX and elong < 3 and fill > 0.3
        keep[i] = line or spot
    return keep[lab]


# --- entry point ------------------------------------------------------------------------------------------------
def fingerprint(sd) -> str:
    """sha256 over the network weights (names, shapes, float32 values) and ``meta.threshold`` of a
    detector state dict: what the inpaint gate and the ``ml_guided`` forests depend on — their masks
    are the probabilities cut at that threshold — and not the operating point ``meta.mask_threshold``,
    which can be chosen again without retraining them."""
    import hashlib

    weights, meta = split_state(sd)
    h = hashlib.sha256()
    for k in sorted(weights):
        t = weights[k].detach().cpu().float().contiguous()
        h.update(f"{k}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    h.update(f"threshold={meta.get('threshold', 0.5):.6f}".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def shipped_fingerprint(relpath: str = WEIGHTS_RELPATH, models_dir: Optional[str] = None) -> str:
    """:func:`fingerprint` of the shipped detector (sha256-checked; cached)."""
    from ..scripts import shipped_models

    return fingerprint(shipped_models.load_torch_weights(relpath, **({"models_dir": models_dir} if models_dir else {})))


def plain_threshold(meta: Dict[str, float]) -> float:
    """The CNN probability of the ``plain`` mask: the one the inpaint gate's candidates and the
    ``ml_guided`` forests' mask fraction were trained with (``meta.threshold``)."""
    return float(meta.get("threshold", 0.5))


def operating_threshold(meta: Dict[str, float]) -> float:
    """The CNN probability above which :func:`detect` marks a pixel by default: the weights file's
    ``mask_threshold`` (precision and recall balanced on validation), else its ``threshold`` (that of the
    ``plain`` mask the inpaint gate and the forests read, which files before it also used here)."""
    return float(meta.get("mask_threshold", plain_threshold(meta)))


def detect(rgb: np.ndarray, *, threshold: Optional[float] = None, method: str = "auto",
           device: str = "cpu", plain: bool = False) -> Tuple[np.ndarray, DamageMaskReport]:
    """Detect line and spot damage.  Returns ``(mask bool [H, W], DamageMaskReport)``.

    ``threshold``: CNN probability (0..1) or classical score above which a pixel is damaged
    (default: the operating point chosen on the validation split, stored with the weights:
    :func:`operating_threshold`; with ``plain``, the CNN's :func:`plain_threshold`, the mask the
    inpaint gate and the ``ml_guided`` forests were trained on); ``method``:
    ``"auto"`` (the shipped CNN, else the classical detector — the report says which ran and why),
    ``"cnn"`` (error if the weights are missing) or ``"classical"``; ``device``: torch device.
    """
    if method not in METHODS:
        raise ValueError(f"damage mask: unknown method '{method}' (expected one of {METHODS})")
    t0 = time.perf_counter()
    img = as_rgb(rgb)
    note = ""
    used = method
    net = meta = None
    if method in ("auto", "cnn"):
        try:
            net, meta = load_shipped()
            used = "cnn"
        except Exception as exc:  # missing / corrupt weights, or torch absent
            if method == "cnn":
                raise
            used = "classical"
            note = f"CNN weights unavailable ({exc}); classical detector used"
    if used == "cnn":
        if threshold is not None:
            thr = float(threshold)
        else:
            thr = plain_threshold(meta) if plain else operating_threshold(meta)
        if not 0.0 < thr < 1.0:
            raise ValueError(f"damage mask: the CNN threshold is a probability in (0, 1), got {thr}")
        mask = cnn_probability(img, net, device=device) > thr
    else:
        thr = CLASSICAL_THRESHOLD if threshold is None else float(threshold)
        if not thr > 0:
            raise ValueError(f"damage mask: the classical threshold must be > 0, got {thr}")
        mask = classical_mask(img, thr)
    comp = classify_components(mask)
    rep = DamageMaskReport(fraction=float(mask.mean()), method=used, threshold=thr, note=note, **comp)
    rep.seconds = time.perf_counter() - t0
    return mask, rep

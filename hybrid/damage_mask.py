"""Damage-mask detector: scratches, cracks / craquelure, dust specks and missing patches.

``detect(rgb) -> (mask, report)``: ``rgb`` float32 ``[H, W, 3]`` (or ``[H, W]`` / ``[H, W, 1]``
grey, ``[H, W, 4]`` RGBA: alpha ignored) in 0..1; ``mask`` bool ``[H, W]`` (True = damaged pixel,
to be inpainted); ``report`` a :class:`DamageMaskReport`.  The input is never modified.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

#: shipped weights of the CNN detector (models/hybrid/, sha256-checked)
WEIGHTS_RELPATH = "hybrid/damage_mask.safetensors"


@dataclass
class DamageMaskReport:
    """What :func:`detect` found.

    ``fraction``: share of pixels in the mask (0..1); ``lines`` / ``spots`` / ``patches``: connected
    components of the mask classified by shape (long thin → line: scratch or crack; small compact →
    spot: dust; larger compact → patch: loss), with their pixel counts in ``*_px``; ``method``:
    ``"cnn"`` or ``"classical"``; ``threshold``: the probability threshold used; ``seconds``: wall
    time; ``note``: anything the caller should know (e.g. why a fallback ran).
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
    """Validate and convert to float32 RGB ``[H, W, 3]`` (grey replicated, alpha dropped)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"damage mask: expected an [H, W, C] image with 1, 3 or 4 channels, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"damage mask: empty image of shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a.sum(dtype=np.float64)):
        raise ValueError("damage mask: the image contains NaN or infinite values")
    a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def detect(rgb: np.ndarray, *, threshold: Optional[float] = None, method: str = "auto",
           device: str = "cpu") -> Tuple[np.ndarray, DamageMaskReport]:
    """Detect line and spot damage.  Returns ``(mask bool [H, W], DamageMaskReport)``.

    ``threshold``: probability above which a pixel is damaged (default: the value chosen on the
    validation split, stored with the weights); ``method``: ``"auto"`` (the shipped CNN, else the
    classical detector), ``"cnn"`` or ``"classical"``.
    """
    t0 = time.perf_counter()
    img = as_rgb(rgb)
    mask = np.zeros(img.shape[:2], bool)
    rep = DamageMaskReport(method="none", threshold=0.5 if threshold is None else float(threshold),
                           note="detector not trained yet (interface only)")
    rep.seconds = time.perf_counter() - t0
    return mask, rep

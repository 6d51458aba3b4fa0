"""The inpainting gate: which of the damage-mask detector's masks to inpaint, if any, judged per image.

Inpainting is the plan's riskiest stage.  Where the detector is right it gains several dB; where it
takes scene lines for scratches (text, line art, wires, brick joints) Telea's fill wipes real detail
and a lightly damaged image can lose 3–12 dB.  The detector's per-pixel probabilities alone do not
say which case an image is, but the *shape* of its probability map over the whole image, with the
image's own measurements, does much better: how much is confident (> 0.95) against how much is merely
plausible (> 0.3), how many components, lines against spots, the noise and contrast of the scene.

Candidates (:data:`CANDIDATES`, masks from one probability map): ``plain`` (probability above the
detector's own threshold), ``hysteresis`` (seeds > 0.95 grown into > 0.5) and ``confident`` (seeds
> 0.98 grown into > 0.7).  A random forest (``models/hybrid/inpaint_gate.joblib``, built by
:mod:`.tools.train_inpaint_gate`) predicts the PSNR gain (dB) of inpainting each candidate from
:func:`features`; the cautious estimate is that prediction less ``risk`` times the spread of its
trees.  The best candidate runs when its cautious gain is above the margin (margin and risk chosen
on the validation split, stored in the bundle), else inpainting is skipped with the reason.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # the report type of MaskChoice.report, imported there at run time
    from .damage_mask import DamageMaskReport

RELPATH = "hybrid/inpaint_gate.joblib"
BUNDLE_VERSION = 1
#: candidate masks: (seed, grow) probabilities of the hysteresis, or (None, None) for the plain threshold
CANDIDATES: Dict[str, Tuple[Optional[float], Optional[float]]] = {
    "plain": (None, None), "hysteresis": (0.95, 0.5), "confident": (0.98, 0.7)}
#: probability levels whose covered share is a feature
LEVELS = (0.3, 0.5, 0.7, 0.9, 0.95, 0.98)


def candidate_masks(prob: np.ndarray, threshold: float) -> Dict[str, np.ndarray]:
    """The candidate masks (bool ``[H, W]``) of a probability map; ``threshold``: the detector's own."""
    from skimage.filters import apply_hysteresis_threshold

    out = {}
    for name, (seed, grow) in CANDIDATES.items():
        out[name] = prob > threshold if seed is None else apply_hysteresis_threshold(prob, grow, seed)
    return out


def _mask_stats(m: np.ndarray) -> list:
    from .damage_mask import classify_components

    c = classify_components(m)
    n = m.size
    return [float(m.mean()), math.log1p(c["lines"]), math.log1p(c["spots"]), math.log1p(c["patches"]),
            c["line_px"] / n, c["spot_px"] / n, c["patch_px"] / n]


def features(prob: np.ndarray, masks: Dict[str, np.ndarray], report) -> np.ndarray:
    """The gate's input: shares of the image above each of :data:`LEVELS`, the mean probability inside
    the plain mask, per candidate its share and its components by shape (:func:`._mask_stats`), and
    the image's measurements (:func:`.guided.feature_vector`, mask fraction 0)."""
    from .guided import feature_vector

    shares = [float((prob > t).mean()) for t in LEVELS]
    plain = masks["plain"]
    inside = float(prob[plain].mean()) if plain.any() else 0.0
    stats = [v for name in CANDIDATES for v in _mask_stats(masks[name])]
    return np.concatenate([np.array(shares + [inside] + stats, np.float64), feature_vector(report, 0.0)])


class InpaintGate:
    """The trained forest and the decision (:meth:`decide`)."""

    def __init__(self, bundle: Dict[str, object], source: str = ""):
        if not isinstance(bundle, dict) or "forest" not in bundle:
            raise ValueError(f"{source or 'inpaint gate'}: not a RestoreKit inpaint-gate bundle")
        if tuple(bundle.get("candidates", ())) != tuple(CANDIDATES):
            raise ValueError(f"{source or 'inpaint gate'}: trained on other candidates; retrain it")
        self.bundle = bundle
        self.source = source
        self.margin = float(bundle.get("margin_db", 0.0))
        self.risk = float(bundle.get("risk", 0.0))
        self.detector_sha256 = str(bundle.get("detector_sha256", ""))
        #: :func:`.damage_mask.fingerprint` of the detector it was trained with (bundles before it: none,
        #: then the detector file's sha256 must match)
        self.detector_fingerprint = str(bundle.get("detector_fingerprint", ""))

    def matches_detector(self, relpath: Optional[str] = None, models_dir: Optional[str] = None) -> bool:
        """Whether the installed detector is the one this gate was trained with: the same weights and
        plain threshold (its operating point may differ)."""
        from . import damage_mask
        from ..scripts.shipped_models import model_path, sha256_file

        relpath = relpath or damage_mask.WEIGHTS_RELPATH
        if self.detector_fingerprint:
            return self.detector_fingerprint == damage_mask.shipped_fingerprint(relpath, models_dir)
        kw = {"models_dir": models_dir} if models_dir else {}
        return self.detector_sha256 == sha256_file(model_path(relpath, **kw))

    @classmethod
    def load(cls, relpath: str = RELPATH, models_dir: Optional[str] = None) -> "InpaintGate":
        from ..scripts.shipped_models import load_joblib

        return cls(load_joblib(relpath, **({"models_dir": models_dir} if models_dir else {})), relpath)

    def gains(self, prob: np.ndarray, masks: Dict[str, np.ndarray], report,
              risk: Optional[float] = None) -> Dict[str, float]:
        """Predicted PSNR gain (dB) of inpainting each candidate, less ``risk`` (default the bundle's)
        times the spread of the forest's trees: a cautious (lower-bound) estimate."""
        from ..scripts.forest import predict_spread

        k = self.risk if risk is None else float(risk)
        mean, std = predict_spread(self.bundle["forest"], features(prob, masks, report)[None])
        return dict(zip(CANDIDATES, map(float, mean[0] - k * std[0])))

    def decide(self, prob: np.ndarray, threshold: float, report, margin: Optional[float] = None,
               risk: Optional[float] = None) -> Tuple[Optional[np.ndarray], str, Dict[str, float]]:
        """``(mask to inpaint or None, why, cautious predicted gains)``."""
        masks = candidate_masks(prob, threshold)
        margin = self.margin if margin is None else float(margin)
        avail = {k: m for k, m in masks.items() if m.any()}
        if not avail:
            return None, "the damage-mask detector found nothing", {}
        g = self.gains(prob, masks, report, risk)
        best = max(avail, key=lambda k: g[k])
        if g[best] <= margin:
            return None, (f"inpaint gate: best mask '{best}' ({100 * masks[best].mean():.2f} % of the pixels) "
                          f"predicted {g[best]:+.2f} dB (cautious), not above the margin {margin:.2f} dB"), g
        return masks[best], (f"inpaint gate: mask '{best}', {100 * masks[best].mean():.2f} % of the pixels, "
                             f"predicted {g[best]:+.2f} dB (cautious) > margin {margin:.2f} dB"), g


@dataclass
class MaskChoice:
    """The masks of one image: ``plain`` (the detector's thresholded mask: what the ``ml_guided``
    forests read as their mask fraction), ``inpaint`` (what the plan inpaints, or None), who made them
    (``source``), whether they were detected (False: the caller's mask), and why ``inpaint`` is what it is."""

    plain: Optional[np.ndarray]
    inpaint: Optional[np.ndarray]
    source: str
    detected: bool
    why: str
    gains: Dict[str, float] = field(default_factory=dict)

    @property
    def plain_fraction(self) -> float:
        return 0.0 if self.plain is None else float(self.plain.mean())

    def report(self, shape) -> "DamageMaskReport":
        """The inpainted mask as a :class:`.damage_mask.DamageMaskReport` (``shape``: the image's
        ``(H, W)``; the note says why this mask, or why none)."""
        from .damage_mask import DamageMaskReport, classify_components

        m = self.inpaint if self.inpaint is not None else np.zeros(tuple(shape), bool)
        method = "cnn" if "(cnn)" in self.source else ("classical" if "classical" in self.source else "")
        return DamageMaskReport(fraction=float(m.mean()), method=method, note=self.why,
                                extra={k: round(v, 3) for k, v in self.gains.items()}, **classify_components(m))


def choose_masks(img: np.ndarray, report, gate: Optional[InpaintGate] = None, given=None,
                 detect: bool = True, device: str = "cpu") -> MaskChoice:
    """The masks for ``img`` (float32 ``[H, W, C]``, C = 1 or 3) from one run of the detector.

    ``given``: the caller's mask (always inpainted).  Otherwise, with the CNN detector: ``plain`` is its
    thresholded mask, and ``inpaint`` the ``gate``'s choice (:meth:`InpaintGate.decide`) or, without a
    gate, the hysteresis mask of :func:`.damage_mask.inpainting_mask`.  Without the CNN's weights the
    classical detector's mask is both."""
    from . import plan as _plan

    if given is not None:
        m = np.asarray(given, bool)
        return MaskChoice(m, m, "given mask", False, "the given mask")
    if not detect:
        return MaskChoice(None, None, "", False, "damage detection off")
    try:
        from . import damage_mask
    except ImportError:
        return MaskChoice(None, None, "", True, "no damage-mask detector installed")
    skip = _plan.detector_skip_reason(img)
    if skip:
        return MaskChoice(None, None, skip, True, skip)
    rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    try:
        net, meta = damage_mask.load_shipped()
    except Exception as exc:  # missing / corrupt weights, or torch absent: the classical detector
        m, rep = damage_mask.detect(rgb, method="classical")
        src = "damage-mask detector (classical)"
        why = f"CNN weights unavailable ({exc}); classical detector used"
        return MaskChoice(m if m.any() else None, m if m.any() else None, src, True, why)
    prob = damage_mask.cnn_probability(rgb, net, device=device)
    thr = damage_mask.plain_threshold(meta)
    plain = prob > thr
    src = "damage-mask detector (cnn)"
    if gate is not None:
        m, why, gains = gate.decide(prob, thr, report)
        return MaskChoice(plain if plain.any() else None, m, src, True, why, gains)
    m, note, _seeds = damage_mask.inpainting_mask(prob)
    return MaskChoice(plain if plain.any() else None, m if m.any() else None, src, True,
                      note or f"hysteresis mask (seeds > {damage_mask.SEED_PROBABILITY}, grown into > "
                              f"{damage_mask.GROW_PROBABILITY})")


def amend(plan, masks: MaskChoice, rules=None):
    """``plan`` with its inpaint stage set by ``masks``: a step inpainting ``masks.inpaint`` (Telea,
    the rules' radius and dilation), or a skip saying why not."""
    from . import plan as _plan

    steps = [s for s in plan.steps if s.stage != "inpaint"]
    skipped = [s for s in plan.skipped if s.stage != "inpaint"]
    if masks.inpaint is not None and masks.inpaint.any():
        steps.insert(0, _plan.Step("inpaint", _plan.inpaint_params(masks.inpaint, rules),
                                   f"{100 * masks.inpaint.mean():.2f} % of the pixels marked by {masks.why}"))
    else:
        skipped.insert(0, _plan.Skip("inpaint", masks.why or "no damaged pixels marked"))
    return _plan.Plan(steps, skipped, plan.source)

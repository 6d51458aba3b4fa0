"""The restoration plan: the pack's own tools composed in a fixed physical order, each stage run only
when its measured defect is present.

A plan is data — a list of :class:`Step` ``(stage, parameters, why)`` plus the stages skipped and
why — so it can be built by fixed rules from the measurements (:func:`plan_from_rules`, the
``classical`` strategy) or by a predictor (``ml_guided``: any code that fills the same parameters),
and then run by :func:`execute`.  Stages, in this order (the reverse of how the damage arose: the
scan's marks and noise come last in the life of a print, the camera's blur first, and tone and
colour are judged best on a clean, sharp image):

==========  ============================================================================================
inpaint     masked damage (scratches, cracks, dust, losses) filled by OpenCV's fast-marching method
            (Telea, J. Graphics Tools 9, 2004) or Navier–Stokes (Bertalmio et al., CVPR 2001), per channel
denoise     in an orthonormal opponent colour space with the measured noise spectrum: a real pretrained
            denoiser (DRUNet / FFDNet through ``scripts.pretrained``) for white noise when its weights are
            installed, else BM3D with the PSD (the optional ``bm3d`` package, Mäkinen et al. 2020) for
            images up to :data:`BM3D_MAX_PIXELS`, else the pack's two-stage sliding-window DFT Wiener filter
            (:func:`scripts.bm3d_denoise.fallback_denoise`, the same PSD)
deblur      Richardson–Lucy on the luma with the measured Gaussian (or linear-motion) kernel, White's
            damping at 2 σ of the residual noise and an iteration cap (:mod:`scripts.deconvolution`); the
            luma change is added to R, G and B
tone        levels: the same affine map on R, G and B taking the measured black / white points to their
            targets (undoes fading without shifting hue); flat-field: division by the measured smooth
            illumination surface (quadratic fit of the lightness envelope); per-channel levels (the
            measured 0.5 / 99.5 % percentiles of R, G, B stretched towards 0 / 1); percentile match (each
            channel's monotone curve from its current percentiles to targets — the learned tone prior's
            prediction of the undamaged ones, :mod:`.tone_prior`); LB-CLAHE (Campos et al. 2019)
            or multi-scale Retinex (Jobson et al. 1997) when a plan asks for them
colour      cast removal in Oklab (Ottosson 2020): the neutral axis ``(a, b) = c₀ + c₁·L`` is fitted on the
            near-neutral pixels of the stage's input and subtracted (a constant shift removes a tint, the
            L-proportional part a channel-gain cast)
sharpen     artifact-aware unsharp mask on Oklab L (:mod:`scripts.sharpen`: halo clamp, noise coring)
==========  ============================================================================================

Do no harm: a stage runs only when its defect is measured above a threshold (:class:`Rules`, chosen on
the training sources: the smallest strength from which the stage gains on average, and above what
clean photographs measure).  A plan without steps is "unchanged": :func:`execute` returns the input
array itself, bit-identical, with the reasons every stage was skipped.

Greyscale images (``[H, W, 1]``) are processed as one channel throughout (the colour stage is skipped).
Every stage report says what ran with which parameters and how long it took; ``progress(done, total,
stage)`` is called before each stage and after the last (it may raise to abort: ComfyUI's interrupt).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import defects as _defects

ORDER = ("inpaint", "denoise", "deblur", "tone", "colour", "sharpen")
DENOISERS = ("auto", "pretrained", "bm3d", "wiener")
#: BM3D (≈ 30 s/MP per channel on one core) only runs on images up to this size; larger ones use the
#: DFT Wiener filter (≈ 1.5 s/MP per channel, 0.5–1 dB behind BM3D)
BM3D_MAX_PIXELS = 150_000
#: a pretrained denoiser on the CPU (FFDNet ≈ 15 s/MP on two busy cores) only up to this size; on a
#: GPU at any size
PRETRAINED_CPU_MAX_PIXELS = 250_000
#: the pretrained networks remove noise independent in R, G and B: they run when the chroma opponent
#: channels carry at least this share of the luma-like channel's noise σ
PRETRAINED_MIN_CHROMA_RATIO = 0.7
#: the Wiener filter's block step: 4 px (16 overlapping blocks per pixel) up to this size, else 8 px
#: and the two chroma opponent channels at half resolution (the chroma of a scene is smooth: what is
#: lost there is mostly noise), which together cut the cost about sixfold
WIENER_FINE_MAX_PIXELS = 2_000_000
#: Richardson–Lucy iterations: the cap; above RL_MAX_PIXELS a single Wiener deconvolution (two FFTs
#: instead of two per iteration) with the noise-to-signal ratio WIENER_BALANCE
RL_MAX_ITERATIONS = 20
RL_MAX_PIXELS = 2_000_000
WIENER_BALANCE = 0.01


@dataclass
class Rules:
    """Thresholds and factors of the ``classical`` strategy (units as in :mod:`.defects`).

    Chosen on training sources only (40 train sources of the source registry, 256 px, the damage
    generator with one defect at a time, three levels; plus the clean images): each threshold is where
    its stage's mean PSNR gain is positive with no large loss, above what clean photographs measure.

    * denoise: gains +3.7 dB on average over noise-only pairs from σ ≥ 0.006; strength 0.8 (+0.1 dB
      over 1.0: σ is over-read on textured images); the noise-floor gate keeps most clean textures
      (microscopy, fine render detail) from being smoothed — a stationary texture such as grass still
      reads as noise.
    * deblur: RL with 0.7 × the measured excess blur gains +1.25 dB (worst −0.16) from 0.5 px on
      Gaussian/disk blur; linear motion (confidence ≥ 0.5) gains +2.5–5 dB on every motion pair.
    * sharpen: smart sharpen never lost (+0.7–0.9 dB) between 0.5 px and the RL threshold.
    * tone (levels), colour (cast) and the flat-field are OFF by default: the clean sources' own black
      points (median 0.065, 90th percentile 0.28), white points (median 0.85) and neutral tints
      (median 0.029 Oklab, 90th percentile 0.08) overlap the generator's fading and casts, so every
      threshold tried lost PSNR on average or changed 25–60 % of the clean images; the illumination
      envelope of a scene (1–2 stops) swamps the generator's 0.1–0.8 stops.  They run when a plan
      sets them (``black_max``/``white_min``, ``cast_min``, ``illumination_min``) — the measurements
      are reported either way, and a learned (``ml_guided``) plan can use them.
    """

    noise_min: float = 0.008          #: σ (0..1) from which the image is denoised ...
    noise_floor_min: float = 0.45     #: ... when the noise floor is this sharp (texture is not noise)
    noise_strength: float = 0.8       #: the noise PSD is scaled by strength² for the denoiser
    blur_min: float = 0.8             #: Gaussian-equivalent excess blur (px) from which RL runs
    blur_shrink: float = 0.7          #: RL kernel σ = shrink × measured excess (under-deblurring is safer)
    rl_iterations: int = 15           #: RL iterations (≤ RL_MAX_ITERATIONS)
    rl_damping: float = 2.0           #: White's damping threshold in residual-noise σ
    sharpen_min: float = 0.5          #: excess blur (px) from which a smart sharpen runs (when RL does not)
    sharpen_amount: float = 0.6       #: unsharp amount per px of excess blur
    black_max: float = 1.0            #: luma black point above which the tone is stretched (fading) ...
    white_min: float = 0.0            #: ... luma white point below which it is stretched (both off: see
                                      #: the class docstring)
    black_target: float = 0.02        #: where a lifted black point is taken (luma)
    white_target: float = 0.95        #: where a lowered white point is taken (luma)
    tone_strength: float = 0.5        #: fraction of the levels correction applied
    illumination_min: float = float("inf")  #: envelope variation (stops) from which the flat-field runs (off)
    cast_min: float = 1.0             #: Oklab cast magnitude from which the colour stage runs (off)
    cast_spread_max: float = 1.0      #: ... and only if the neutrals' spread ≤ this × the magnitude
    inpaint_radius: float = 3.0
    inpaint_dilate: int = 1
    #: a mask from the damage-mask detector is inpainted only when it covers at least this share of the
    #: image (a mask passed in by the caller always is).  0: the detector's own gate decides
    #: (:func:`hybrid.damage_mask.detect_for_inpainting`: confident seeds grown by hysteresis, which
    #: on validation gained on every level with no image worse, where this gate at 10 % left light and
    #: moderate damage untouched)
    mask_min_fraction: float = 0.0


RULES = Rules()

#: a luma black point from which, or a contrast (white − black point) up to which, an image looks faded:
#: rarer than one in ten undamaged photographs (of the 242 train / validation sources of the registry,
#: 10 % have a black point ≥ 0.23 and 5 % a contrast ≤ 0.44).  The rules still leave its tone alone
#: (the rest overlap the generator's fading), so the skip names the pack's tone nodes instead
FADED_BLACK_MIN = 0.25
FADED_CONTRAST_MAX = 0.45


def faded_hint(black: float, white: float) -> str:
    """A pointer to the tone nodes when the measured black / white points look faded, else ``""``."""
    if black < FADED_BLACK_MIN and white - black > FADED_CONTRAST_MAX:
        return ""
    return (f" — it looks faded (black point ≥ {FADED_BLACK_MIN:g} or contrast ≤ {FADED_CONTRAST_MAX:g}, rare in "
            "undamaged photographs, but not proof of damage): for a deliberate contrast fix use the RestoreKit "
            "LB-CLAHE or Retinex node")


@dataclass
class Step:
    """One stage to run: its name (:data:`ORDER`), parameters and the reason it runs."""

    stage: str
    params: Dict[str, object]
    why: str


@dataclass
class Skip:
    stage: str
    why: str


@dataclass
class Plan:
    """The steps to run (in :data:`ORDER`), the stages skipped with their reasons, who built it."""

    steps: List[Step]
    skipped: List[Skip]
    source: str = "rules"

    @property
    def unchanged(self) -> bool:
        return not self.steps

    def reason(self) -> str:
        """Why the image is left unchanged ("" when it is not)."""
        if self.steps:
            return ""
        return "no defect above its threshold: " + "; ".join(f"{s.stage}: {s.why}" for s in self.skipped)

    def to_dict(self) -> Dict[str, object]:
        return {"source": self.source, "unchanged": self.unchanged,
                "steps": [{"stage": s.stage, "params": _jsonable(s.params), "why": s.why} for s in self.steps],
                "skipped": [{"stage": s.stage, "why": s.why} for s in self.skipped]}


_jsonable = _defects.jsonable


def inpaint_params(mask: np.ndarray, rules: "Rules" = None) -> Dict[str, object]:
    """The inpaint stage's parameters for ``mask`` (bool ``[H, W]``): Telea with the rules' radius and
    dilation — what every plan builder (rules, forests, inpaint gate) asks for."""
    r = rules or RULES
    return {"mask": np.asarray(mask, bool), "method": "telea", "radius": r.inpaint_radius, "dilate": r.inpaint_dilate}


# --- planning by rules -----------------------------------------------------------------------------
def plan_from_rules(report: "_defects.DefectReport", mask: Optional[np.ndarray] = None,
                    rules: Rules = RULES, denoiser: str = "auto", mask_source: str = "",
                    mask_detected: bool = False) -> Plan:
    """The ``classical`` plan: every stage whose measured defect passes its threshold in ``rules``.

    ``mask``: bool ``[H, W]`` of damaged pixels to inpaint (None or empty: no inpainting);
    ``mask_detected``: it comes from the damage-mask detector (then it must cover at least
    ``rules.mask_min_fraction`` of the image).  ``denoiser``: one of :data:`DENOISERS`.
    """
    if denoiser not in DENOISERS:
        raise ValueError(f"unknown denoiser '{denoiser}' (expected one of {', '.join(DENOISERS)})")
    r = rules
    steps: List[Step] = []
    skipped: List[Skip] = []

    def run(stage, params, why):
        steps.append(Step(stage, params, why))

    def skip(stage, why):
        skipped.append(Skip(stage, why))

    # inpaint
    m = None if mask is None else np.asarray(mask, bool)
    if m is not None and m.shape != tuple(report.shape):
        raise ValueError(f"the damage mask is {m.shape[1]}×{m.shape[0]} px, the image {report.shape[1]}×{report.shape[0]}")
    if m is not None and mask_detected and 0 < m.mean() < r.mask_min_fraction:
        skip("inpaint", f"the {mask_source or 'detector'} marked {100 * m.mean():.2f} % of the pixels, under "
                        f"{100 * r.mask_min_fraction:g} %: too little to tell damage from scene detail")
    elif m is not None and m.any():
        run("inpaint", inpaint_params(m, r),
            f"{100 * m.mean():.2f} % of the pixels marked damaged{' by ' + mask_source if mask_source else ''}")
    else:
        skip("inpaint", "no damaged pixels marked" + (f" ({mask_source})" if mask_source else ""))

    # denoise
    n = report.noise
    if n.sigma >= r.noise_min and n.floor >= r.noise_floor_min:
        run("denoise", {"sigma": n.sigma, "kind": n.kind, "rho": n.rho, "chroma_ratio": n.chroma_ratio,
                        "strength": r.noise_strength, "noise_acf": n.acf, "backend": denoiser},
            f"noise σ {n.sigma:.4f} ≥ {r.noise_min} ({n.kind}, lag-1 correlation {n.rho:.2f})")
        residual = 0.25 * n.sigma  # what a denoiser typically leaves, for the later stages' noise guards
    elif n.sigma >= r.noise_min:
        skip("denoise", f"noise σ {n.sigma:.4f} but no noise floor ({n.floor:.2f} < {r.noise_floor_min}): "
                        "fine texture, not noise")
        residual = 0.0
    else:
        skip("denoise", f"noise σ {n.sigma:.4f} < {r.noise_min}")
        residual = n.sigma

    # deblur
    b, mo = report.blur, report.motion
    deblurred = False
    if mo.present:
        run("deblur", {"kernel": "motion", "length": mo.length, "angle": mo.angle,
                       "iterations": r.rl_iterations, "damping": r.rl_damping, "noise_sigma": residual},
            f"linear motion {mo.length:.1f} px at {mo.angle:.0f}° (confidence {mo.confidence:.2f})")
        deblurred = True
    elif b.sigma is not None and b.excess >= r.blur_min:
        run("deblur", {"kernel": "gaussian", "sigma": r.blur_shrink * b.excess, "iterations": r.rl_iterations,
                       "damping": r.rl_damping, "noise_sigma": residual},
            f"edge blur {b.excess:.2f} px above sharp ≥ {r.blur_min}")
        deblurred = True
    else:
        skip("deblur", "no usable edges to measure blur" if b.sigma is None else
             f"excess blur {b.excess:.2f} px < {r.blur_min}" + ("" if not mo.estimated else
                                                               f"; motion confidence {mo.confidence:.2f} too low"))

    # tone
    t = report.tone
    tone_ops = []
    bi, wi = t.black_point, t.white_point
    bo = r.black_target if bi > r.black_max else bi
    wo = r.white_target if wi < r.white_min else wi
    if (bo != bi or wo != wi) and wi - bi > 0.05:
        s = r.tone_strength
        tone_ops.append(("levels", {"black_in": bi, "white_in": wi, "black_out": bi + s * (bo - bi),
                                    "white_out": wi + s * (wo - wi)}))
    illum = report.illumination
    if illum.variation_stops >= r.illumination_min and illum.surface is not None:
        tone_ops.append(("flatfield", {"surface": illum.surface}))
    if tone_ops:
        why = []
        if bo != bi:
            why.append(f"black point {bi:.3f} > {r.black_max}")
        if wo != wi:
            why.append(f"white point {wi:.3f} < {r.white_min}")
        if any(op == "flatfield" for op, _ in tone_ops):
            why.append(f"illumination varies {illum.variation_stops:.2f} stops ≥ {r.illumination_min}")
        run("tone", {"ops": tone_ops}, "; ".join(why))
    elif r.black_max >= 1.0 and r.white_min <= 0.0 and not np.isfinite(r.illumination_min):
        skip("tone", f"off in these rules (measured: black point {bi:.3f}, white point {wi:.3f}, "
                     f"illumination {illum.variation_stops:.2f} stops)" + faded_hint(bi, wi))
    else:
        skip("tone", f"black point {bi:.3f} ≤ {r.black_max}, white point {wi:.3f} ≥ {r.white_min}, "
                     f"illumination {illum.variation_stops:.2f} stops < {r.illumination_min}")

    # colour
    c = report.colour
    if c is None:
        skip("colour", "greyscale image")
    elif c.magnitude >= r.cast_min and c.spread <= r.cast_spread_max * c.magnitude:
        run("colour", {"measured_a": c.cast_a, "measured_b": c.cast_b, "strength": 1.0},
            f"cast ({c.cast_a:+.3f}, {c.cast_b:+.3f}) Oklab, magnitude {c.magnitude:.3f} ≥ {r.cast_min}")
    elif c.magnitude >= r.cast_min:
        skip("colour", f"cast magnitude {c.magnitude:.3f} but the near-neutral pixels spread {c.spread:.3f} "
                       f"(> {r.cast_spread_max} × the cast): a colourful scene, not a cast")
    elif r.cast_min >= 1.0:
        skip("colour", f"off in these rules (measured cast ({c.cast_a:+.3f}, {c.cast_b:+.3f}) Oklab)")
    else:
        skip("colour", f"cast magnitude {c.magnitude:.3f} < {r.cast_min}")

    # sharpen
    if deblurred:
        skip("sharpen", "deblurred instead")
    elif b.sigma is not None and b.excess >= r.sharpen_min:
        run("sharpen", {"amount": r.sharpen_amount * b.excess, "radius": max(0.8, 1.2 * b.excess),
                        "noise_sigma": residual},
            f"excess blur {b.excess:.2f} px ≥ {r.sharpen_min}")
    else:
        skip("sharpen", "no usable edges" if b.sigma is None else f"excess blur {b.excess:.2f} px < {r.sharpen_min}")
    return Plan(steps, skipped, "rules")


# --- stages -------------------------------------------------------------------------------------------
def _inpaint(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    import cv2

    m = np.asarray(p["mask"], bool)
    d = int(p.get("dilate", 0))
    if d > 0:
        m = cv2.dilate(m.astype(np.uint8), np.ones((2 * d + 1, 2 * d + 1), np.uint8)) > 0
    flag = cv2.INPAINT_TELEA if p.get("method", "telea") == "telea" else cv2.INPAINT_NS
    m8 = m.astype(np.uint8)
    out = img.copy()
    # OpenCV inpaints 1-channel 16-bit planes at full precision (its float path assumes 0..255 values);
    # only the masked pixels are taken from the result, every other pixel stays bit-identical
    for ch in range(img.shape[-1]):
        u16 = np.round(np.clip(img[..., ch], 0.0, 1.0) * 65535.0).astype(np.uint16)
        filled = cv2.inpaint(u16, m8, float(p.get("radius", 3.0)), flag).astype(np.float32) / 65535.0
        out[..., ch] = np.where(m, filled, img[..., ch])
    return out, {"pixels": int(m.sum()), "fraction": float(m.mean()), "method": p.get("method", "telea")}


def _pretrained_denoiser(pixels: int):
    """``scripts.pretrained.denoise_pretrained`` when that module exists, a network is installed and
    the image is within :data:`PRETRAINED_CPU_MAX_PIXELS` (or a GPU is there); else ``(None, why)``."""
    try:
        from ..scripts import pretrained
    except ImportError:
        return None, "no pretrained-denoiser module"
    try:
        if not any(m.available for m in pretrained.denoisers()):
            return None, "no pretrained denoiser installed"
    except Exception as exc:  # a broken installation must not stop the classical path
        return None, f"pretrained denoisers unavailable ({exc})"
    if pixels > PRETRAINED_CPU_MAX_PIXELS:
        import torch

        if not torch.cuda.is_available():
            return None, f"image above {PRETRAINED_CPU_MAX_PIXELS} px for the pretrained denoiser on the CPU"
    return pretrained.denoise_pretrained, ""


def _denoise(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    """Denoise with the measured noise spectrum: a pretrained network for channel-independent white
    noise in colour images (when installed and affordable), else BM3D (small images, ``bm3d``
    installed), else the DFT Wiener filter; both of those per opponent channel with its own PSD."""
    from ..scripts.bm3d_denoise import bm3d_available, denoise as bm3d_denoise, fallback_denoise
    from ..scripts.grain import _psd_from_acf

    h, w, c = img.shape
    strength = float(p.get("strength", 1.0))
    acf = np.asarray(p["noise_acf"], np.float64) * strength ** 2
    backend = p.get("backend", "auto")
    notes = []
    independent = c == 3 and p.get("kind") == "white" and \
        float(p.get("chroma_ratio", 1.0)) >= PRETRAINED_MIN_CHROMA_RATIO
    if backend in ("auto", "pretrained") and independent:
        fn, why = _pretrained_denoiser(h * w)
        if fn is not None:
            out, rep = fn(img, float(p["sigma"]))
            return np.clip(np.asarray(out, np.float32), 0.0, 1.0), {
                "backend": f"pretrained {getattr(rep, 'model', '')}".strip(), "sigma": float(p["sigma"]),
                "licence": getattr(rep, "licence", ""), "notes": list(getattr(rep, "notes", []))}
        if backend == "pretrained":
            raise RuntimeError(f"the pretrained denoiser was asked for, but {why}")
        notes.append(why)
    elif backend == "pretrained":
        raise RuntimeError("the pretrained denoisers remove white noise independent in R, G and B; this noise is "
                           f"{p.get('kind')} (chroma ratio {float(p.get('chroma_ratio', 0)):.2f}) in {c} channel(s)")
    use_bm3d = backend == "bm3d" or (backend == "auto" and bm3d_available() and h * w <= BM3D_MAX_PIXELS)
    if backend == "bm3d" and not bm3d_available():
        raise RuntimeError("the bm3d denoiser was asked for, but the optional 'bm3d' package is not installed")
    import cv2

    planes = _defects._opponent(img.astype(np.float64)) if c == 3 else img.astype(np.float64)
    out = np.empty_like(planes)
    large = h * w > WIENER_FINE_MAX_PIXELS
    step = 8 if large else 4
    for ch in range(planes.shape[-1]):
        if use_bm3d:
            psd = _psd_from_acf(acf[ch], (h, w))
            out[..., ch] = bm3d_denoise(planes[..., ch], psd=psd, method="bm3d").image
        elif large and ch > 0:  # chroma at half resolution: 2×2 means carry a quarter of the noise power
            half = cv2.resize(planes[..., ch], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            psd = _psd_from_acf(acf[ch], (64, 64)) / 4.0
            den = fallback_denoise(half, psd=psd, step=4)
            out[..., ch] = cv2.resize(den, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            psd = _psd_from_acf(acf[ch], (64, 64))
            out[..., ch] = fallback_denoise(planes[..., ch], psd=psd, step=step)
    res = out @ _defects.OPPONENT if c == 3 else out
    name = "bm3d (opponent channels, measured PSD)" if use_bm3d else \
        f"DFT Wiener (opponent channels, measured PSD, step {step} px" + \
        (", chroma at half resolution)" if large and c == 3 else ")")
    if not use_bm3d and backend == "auto":
        notes.append("bm3d not installed" if not bm3d_available() else f"image above {BM3D_MAX_PIXELS} px for bm3d")
    return np.clip(res, 0.0, 1.0).astype(np.float32), {"backend": name, "strength": strength, "notes": notes}


def _deblur(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    from ..scripts.deconvolution import deconvolve
    from ..scripts.kernels import gaussian_kernel, motion_kernel

    if p["kernel"] == "motion":
        k = motion_kernel(float(p["length"]), float(p["angle"]))
    else:
        k = gaussian_kernel(float(p["sigma"]))
    y = _defects.luma(img)
    h, w = y.shape
    if h * w > RL_MAX_PIXELS:
        out, rep = deconvolve(y, k, method="wiener", balance=WIENER_BALANCE, clip=False)
        method = f"Wiener deconvolution on luma (balance {WIENER_BALANCE}; image above {RL_MAX_PIXELS} px for RL)"
    else:
        # damping: corrections below damping × σ of the residual noise are not fitted (White 1994)
        out, rep = deconvolve(y, k, method="richardson_lucy", iterations=int(p.get("iterations", RL_MAX_ITERATIONS)),
                              regularisation="damping", strength=float(p.get("damping", 2.0)), clip=False)
        method = "Richardson–Lucy on luma, damped"
    dy = (out - y)[..., None]
    res = np.clip(img + dy, 0.0, 1.0).astype(np.float32)
    return res, {"kernel": p["kernel"], "kernel_px": list(k.shape), "iterations": int(getattr(rep, "iterations_run", 0)),
                 "method": method}


def _levels(img: np.ndarray, q: Dict[str, float]) -> np.ndarray:
    bi, wi, bo, wo = (float(q[k]) for k in ("black_in", "white_in", "black_out", "white_out"))
    gain = (wo - bo) / max(wi - bi, 1e-3)
    return np.clip((img - bi) * gain + bo, 0.0, 1.0)


def _channel_levels(img: np.ndarray, q: Dict[str, object]) -> np.ndarray:
    """Per-channel levels: each channel's measured low / high percentile (``low`` / ``high``, one value
    per channel) moved ``strength`` of the way to 0 / 1 (at strength 1 the auto-levels stretch, which
    also removes a channel-gain cast)."""
    lo = np.asarray(q["low"], np.float32)[: img.shape[-1]]
    hi = np.asarray(q["high"], np.float32)[: img.shape[-1]]
    s = np.float32(q.get("strength", 1.0))
    lo_out, hi_out = lo * (1 - s), hi + s * (1 - hi)
    gain = (hi_out - lo_out) / np.maximum(hi - lo, 1e-3)
    return np.clip((img - lo) * gain + lo_out, 0.0, 1.0)


#: the percentile match's curve is at most this steep (and never falling): a bound on noise amplification
MATCH_MAX_SLOPE = 4.0


def match_curve(x_knots: np.ndarray, y_knots: np.ndarray, max_slope: float = MATCH_MAX_SLOPE) -> Tuple[np.ndarray, np.ndarray]:
    """A monotone piecewise-linear curve through ``(x_knots, y_knots)``: the x strictly increasing (1e-3
    apart), every segment's slope clamped to ``[0, max_slope]`` outwards from the middle knot (which
    keeps its place).  Returns the knots ``(x, y)``."""
    x = np.maximum.accumulate(np.asarray(x_knots, np.float64) + 1e-3 * np.arange(len(x_knots)))
    y = np.array(y_knots, np.float64)
    mid = len(y) // 2
    for k in range(mid + 1, len(y)):
        y[k] = y[k - 1] + np.clip(y[k] - y[k - 1], 0.0, max_slope * (x[k] - x[k - 1]))
    for k in range(mid - 1, -1, -1):
        y[k] = y[k + 1] - np.clip(y[k + 1] - y[k], 0.0, max_slope * (x[k + 1] - x[k]))
    return x, y


def _match_percentiles(img: np.ndarray, q: Dict[str, object]) -> np.ndarray:
    """Per channel, the monotone curve (:func:`match_curve`) taking the image's current percentiles
    ``q["percentiles"]`` (read as :func:`.defects.measure_tone` reads them) to ``q["targets"]`` (one row
    per channel); beyond the outer knots it continues with the outer segments' slopes."""
    probs = np.asarray(q["percentiles"], np.float64)
    targets = np.asarray(q["targets"], np.float64)
    small = _defects.smooth(_defects.downscale(img, _defects.TONE_SIDE), _defects.TONE_SMOOTH_SIGMA)
    cur = np.percentile(small.reshape(-1, img.shape[-1]), probs, axis=0).T  # [C, K]
    out = np.empty_like(img, dtype=np.float32)
    for c in range(img.shape[-1]):
        x, y = match_curve(cur[c], targets[min(c, len(targets) - 1)])
        v = img[..., c].astype(np.float64)
        r = np.interp(v, x, y)
        s0 = (y[1] - y[0]) / (x[1] - x[0])
        s1 = (y[-1] - y[-2]) / (x[-1] - x[-2])
        r = np.where(v < x[0], y[0] + (v - x[0]) * s0, r)
        r = np.where(v > x[-1], y[-1] + (v - x[-1]) * s1, r)
        out[..., c] = r
    return np.clip(out, 0.0, 1.0)


def _flatfield(img: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Divide by the smooth illumination (the log2 envelope surface, upsampled), keeping the mean."""
    import cv2

    h, w = img.shape[:2]
    s = np.asarray(surface, np.float32)
    s = s - float(s.mean())
    gain = cv2.resize(np.exp2(-s), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img * gain[..., None], 0.0, 1.0)


def _tone(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    out = img
    done = []
    for op, q in p["ops"]:
        if op == "levels":
            out = _levels(out, q)
        elif op == "channel_levels":
            out = _channel_levels(out, q)
        elif op == "flatfield":
            out = _flatfield(out, q["surface"])
        elif op == "match":
            out = _match_percentiles(out, q)
        elif op == "lbclahe":
            from ..scripts.lbclahe import lb_clahe

            out, rep = lb_clahe(out if out.shape[-1] == 3 else out[..., 0])
            out = out.reshape(img.shape)
            q = dict(q, clip=float(rep.clip), grid=int(rep.grid))
        elif op == "retinex":
            from ..scripts.retinex import retinex

            out, _rep = retinex(out, mode="MSR-intensity")
            out = out.reshape(img.shape)
        else:
            raise ValueError(f"unknown tone operation '{op}'")
        done.append({"op": op, **{k: v for k, v in q.items() if k not in ("surface", "percentiles")}})
    return out.astype(np.float32), {"ops": done}


def neutral_axis_fit(lab: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """Least-squares ``a = a₀ + a₁ L`` and ``b = b₀ + b₁ L`` on the near-neutral pixels of an Oklab
    ``[N, 3]`` array (:func:`.defects.neutral_axis`); returns the two coefficient pairs and the count."""
    ca, cb, sel = _defects.neutral_axis(lab)
    L = lab[sel, 0]
    A = np.stack([np.ones_like(L), L], 1)
    if L.size < 20 or float(L.std()) < 0.05:  # too few or too narrow in L: a constant shift only
        return np.array([ca, 0.0]), np.array([cb, 0.0]), int(sel.sum())
    ka, *_ = np.linalg.lstsq(A, lab[sel, 1], rcond=None)
    kb, *_ = np.linalg.lstsq(A, lab[sel, 2], rcond=None)
    return ka, kb, int(sel.sum())


def _colour(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    from ..scripts.clahe import oklab_to_srgb_fast, srgb_to_oklab_fast

    small = _defects.downscale(img, _defects.TONE_SIDE)
    lab_s = srgb_to_oklab_fast(np.ascontiguousarray(small, np.float32)).reshape(-1, 3).astype(np.float64)
    ka, kb, n = neutral_axis_fit(lab_s)
    s = float(p.get("strength", 1.0))
    lab = srgb_to_oklab_fast(np.ascontiguousarray(img, np.float32))
    L = lab[..., 0]
    lab[..., 1] -= np.float32(s) * (np.float32(ka[0]) + np.float32(ka[1]) * L)
    lab[..., 2] -= np.float32(s) * (np.float32(kb[0]) + np.float32(kb[1]) * L)
    out = oklab_to_srgb_fast(lab)
    return out.astype(np.float32), {"neutral_a": [float(v) for v in ka], "neutral_b": [float(v) for v in kb],
                                    "neutral_pixels": n, "strength": s,
                                    "model": "a = a0 + a1 L, b = b0 + b1 L on near-neutral pixels, subtracted"}


def _sharpen(img: np.ndarray, p: Dict[str, object]) -> Tuple[np.ndarray, Dict[str, object]]:
    from ..scripts.sharpen import sharpen

    x = img[..., 0] if img.shape[-1] == 1 else img
    out, rep = sharpen(x, amount=float(p["amount"]), radius=float(p["radius"]),
                       noise_sigma=float(p.get("noise_sigma", 0.0)), space="oklab")
    out = np.clip(np.asarray(out, np.float32).reshape(img.shape), 0.0, 1.0)
    return out, {"amount": rep.amount, "radius": rep.radius, "noise_sigma": rep.noise_sigma, "space": rep.space}


STAGES: Dict[str, Callable] = {"inpaint": _inpaint, "denoise": _denoise, "deblur": _deblur, "tone": _tone,
                               "colour": _colour, "sharpen": _sharpen}


# --- execution ------------------------------------------------------------------------------------------
@dataclass
class StageReport:
    stage: str
    params: Dict[str, object]
    why: str
    result: Dict[str, object]
    seconds: float
    change_rms: float


@dataclass
class ExecutionReport:
    unchanged: bool
    reason: str
    stages: List[StageReport] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        return {"unchanged": self.unchanged, "reason": self.reason, "seconds": round(self.seconds, 4),
                "stages": [{"stage": s.stage, "params": _jsonable(s.params), "why": s.why,
                            "result": _jsonable(s.result), "seconds": round(s.seconds, 4),
                            "change_rms": round(s.change_rms, 5)} for s in self.stages],
                "skipped": self.skipped}

    def summary(self) -> str:
        if self.unchanged:
            return "unchanged (" + self.reason + ")"
        return " → ".join(f"{s.stage}" for s in self.stages)


def execute(image: np.ndarray, plan: Plan,
            progress: Optional[Callable[[int, int, str], None]] = None) -> Tuple[np.ndarray, ExecutionReport]:
    """Run ``plan`` on ``image`` (float32 ``[H, W, C]``, C = 1 or 3, 0..1).

    Returns ``(out, ExecutionReport)``.  An empty plan returns a bit-identical copy of ``image``.
    The input is never modified.
    """
    t0 = time.perf_counter()
    skipped = [{"stage": s.stage, "why": s.why} for s in plan.skipped]
    if plan.unchanged:
        if progress is not None:
            progress(1, 1, "unchanged")
        return np.array(image, copy=True), ExecutionReport(True, plan.reason(), [], skipped, time.perf_counter() - t0)
    unknown = [s.stage for s in plan.steps if s.stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown plan stage(s) {unknown} (expected {', '.join(ORDER)})")
    x = np.asarray(image, np.float32)
    reports = []
    total = len(plan.steps)
    for i, st in enumerate(plan.steps):
        if progress is not None:
            progress(i, total, st.stage)
        ts = time.perf_counter()
        y, res = STAGES[st.stage](x, st.params)
        if y.shape != x.shape:
            raise RuntimeError(f"plan stage '{st.stage}' changed the image shape {x.shape} → {y.shape}")
        if not np.isfinite(y).all():
            raise RuntimeError(f"plan stage '{st.stage}' produced NaN or infinite values")
        change = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)))
        reports.append(StageReport(st.stage, st.params, st.why, res, time.perf_counter() - ts, change))
        x = y
    if progress is not None:
        progress(total, total, "done")
    return x, ExecutionReport(False, "", reports, skipped, time.perf_counter() - t0)


#: the damage-mask CNN costs ≈ 1.5 s/MP on two CPU cores: above this size it runs only on a GPU
DETECT_CPU_MAX_PIXELS = 4_000_000
#: below this side (px) the shipped detector's false alarms on clean photographs rise sharply (median
#: 6 % of the pixels at 96 px, 2.8 % at 256 px on training images): it is not run
DETECT_MIN_SIDE = 128


def detector_skip_reason(img: np.ndarray) -> str:
    """Why the damage-mask detector does not run on ``img`` ("" when it does): too small, or above
    :data:`DETECT_CPU_MAX_PIXELS` without a GPU."""
    if min(img.shape[:2]) < DETECT_MIN_SIDE:
        return f"damage-mask detector not run: image under {DETECT_MIN_SIDE} px"
    if img.shape[0] * img.shape[1] > DETECT_CPU_MAX_PIXELS:
        import torch

        if not torch.cuda.is_available():
            return (f"damage-mask detector skipped: image above {DETECT_CPU_MAX_PIXELS / 1e6:g} MP on the CPU; "
                    "pass a mask to inpaint")
    return ""


def detect_mask(img: np.ndarray, gated: bool = True) -> Tuple[Optional[np.ndarray], str]:
    """The damage mask from ``hybrid.damage_mask.detect_for_inpainting`` (``gated``; else the detector's
    plain thresholded mask, ``detect``: what the ``ml_guided`` forests were trained with) when that
    detector exists (and the image is within :data:`DETECT_CPU_MAX_PIXELS` or a GPU is there), else
    ``(None, why)``."""
    try:
        from . import damage_mask
    except ImportError:
        return None, "no damage-mask detector installed"
    why = detector_skip_reason(img)
    if why:
        return None, why
    rgb = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    # ungated: the forests' mask, cut at the plain threshold they were trained with
    mask, rep = damage_mask.detect_for_inpainting(rgb) if gated else damage_mask.detect(rgb, plain=True)
    if not mask.any() and rep.note:
        return None, f"damage-mask detector ({rep.method}): {rep.note}"
    return np.asarray(mask, bool), f"damage-mask detector ({rep.method})"


def restore(image, mask=None, rules: Rules = RULES, denoiser: str = "auto", detect: bool = True,
            progress: Optional[Callable[[int, int, str], None]] = None):
    """Measure, plan by rules and execute: ``(out, info)`` with the defect report, the plan and the
    execution report.  ``image``: ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` float 0..1 (or uint8 /
    uint16, scaled); the output has the input's channel count (float32).  ``mask``: bool ``[H, W]``
    of damaged pixels (None: the damage-mask detector when ``detect`` and it is available)."""
    img = _defects.as_image(image)
    report = _defects.measure(img)
    source = "given mask" if mask is not None else ""
    detected = mask is None and detect
    if detected:
        mask, source = detect_mask(img)
    plan = plan_from_rules(report, mask, rules, denoiser, mask_source=source, mask_detected=detected)
    out, ex = execute(img, plan, progress)
    if np.asarray(image).ndim == 2:
        out = out[..., 0]
    return out, {"defects": report, "plan": plan, "execution": ex}

"""Paired training data: synthetic old-photo / painting damage applied to clean source images.

Every damage is a pure function of the clean image and a seeded :class:`numpy.random.Generator`, so a
pair is fully determined by ``(source name, level, seed)``.  Images are float32 RGB ``[H, W, 3]``
in 0..1 (display-referred sRGB).  Clean sources come from :mod:`.sources` (images shipped in wheels;
the reserved evaluation images are excluded there).

Recipe ``v2`` (the default, :func:`damage_image`) applies, each with a level-dependent probability
and in this physical order (camera → aged print → scan):

==============  ======================================================================================
blur            camera defocus or shake: Gaussian (``blur_sigma``), uniform disk (``blur_radius``) or
                linear motion (``motion_length`` px at ``motion_angle``°; convention of
                :mod:`scripts.kernels`: counter-clockwise from +x, y up)
fading          tone curve ``y = bp + (wp - bp) · x^gamma`` on all channels (``black_point``,
                ``white_point``, ``gamma``)
colour cast     constant Oklab shift ``(cast_a, cast_b)`` at unchanged L: ``yellowing`` (b > 0, a ≥ −)
                or a ``cast`` in any direction (Ottosson 2020 Oklab, :mod:`scripts.colour`)
stains          soft brownish blobs with tide lines (multiplicative), ``stains`` count
marks           scratches, cracks (random walks or a craquelure network), dust specks and hairs,
                missing patches (:mod:`.damage_marks`), drawn with their TRUE mask
paper texture   multiplicative fibrous paper / canvas texture of the scan (``paper_texture`` = its std)
illumination    uneven scan lighting: multiplicative ``vignette`` or linear ``gradient`` gain field
                from ``illumination_min`` to ``illumination_max``
noise / grain   ``white`` (independent per channel), ``luminance`` (same white noise in every channel),
                ``chroma`` (independent per channel, low-passed: colour blotches) or ``film_grain``
                (monochrome, Gaussian low-pass of ``grain_size`` px); ``noise_sigma`` is the std of the
                added noise in each channel (0..1 units, before clipping)
JPEG            re-encoding at ``jpeg_quality`` (OpenCV's encoder)
==============  ======================================================================================

The returned ``info`` dict (:data:`INFO_FIELDS`) carries every one of these parameters — with its
neutral value when the defect was not applied (``blur_kind "none"``, ``noise_sigma 0``,
``black_point 0``, ``white_point 1``, ``gamma 1``, ``cast_a = cast_b = 0``, illumination gains 1,
``jpeg_quality None``) — so measurements can be scored against the truth, plus ``mask`` (``[H, W]``
bool: pixels covered by scratches, cracks, dust or patches where the mark visibly changed the image,
i.e. footprint coverage ≥ 0.5 and a change ≥ :data:`VISIBLE_CHANGE` in some channel) and
``mask_kinds`` (the same split by kind).

Recipe ``v1`` (``recipe="v1"``) is the original generator the shipped U-Net and predictor were trained
on; it is kept bit-identical for their tests and the shipped example images.

Levels ``light`` / ``moderate`` / ``severe`` set the parameter ranges (:data:`LEVELS`).
"""
from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import damage_marks
from . import sources as _sources

LEVEL_NAMES = ("light", "moderate", "severe")
RECIPES = ("v1", "v2")

#: the split of the shipped models (skimage / sklearn sources only, by source image).  The registry
#: in :mod:`.sources` keeps exactly these assignments for these sources and adds many more
#: (``sources.split_names``).
SPLITS: Dict[str, Tuple[str, ...]] = {
    "train": ("astronaut", "camera", "coffee", "hubble_deep_field", "retina", "grass", "gravel",
              "page", "text", "china", "coins", "immunohistochemistry", "clock", "cell", "motorcycle"),
    "val": ("flower", "moon"),
    "test": ("chelsea", "rocket", "brick"),
}
ALL_SOURCES = SPLITS["train"] + SPLITS["val"] + SPLITS["test"]

#: recipe v1 per level: probability each damage is applied and its parameter ranges (uniform)
LEVELS_V1: Dict[str, Dict[str, object]] = {
    "light": dict(p=0.45, fade=(0.03, 0.12), yellow=(0.02, 0.08), cast=0.03, blur=(0.3, 0.8),
                  noise=(0.004, 0.015), grain=(0.0, 0.01), stains=(1, 1), stain_strength=(0.05, 0.12),
                  cracks=(0, 0), scratches=(1, 2), patches=(0, 0), patch_frac=(0.0, 0.0),
                  jpeg=(80, 95)),
    "moderate": dict(p=0.65, fade=(0.12, 0.25), yellow=(0.08, 0.18), cast=0.07, blur=(0.8, 1.4),
                     noise=(0.015, 0.035), grain=(0.01, 0.025), stains=(1, 2),
                     stain_strength=(0.1, 0.22), cracks=(4, 10), scratches=(2, 5), patches=(1, 1),
                     patch_frac=(0.002, 0.006), jpeg=(50, 80)),
    "severe": dict(p=0.85, fade=(0.25, 0.4), yellow=(0.18, 0.3), cast=0.12, blur=(1.4, 2.2),
                   noise=(0.035, 0.06), grain=(0.02, 0.04), stains=(2, 4),
                   stain_strength=(0.2, 0.35), cracks=(10, 25), scratches=(4, 10), patches=(1, 3),
                   patch_frac=(0.004, 0.012), jpeg=(25, 50)),
}

#: the recipe v2 (default) per level: probability of each defect and its parameter ranges (uniform)
LEVELS: Dict[str, Dict[str, object]] = {
    "light": dict(
        p=dict(blur=0.45, fade=0.5, cast=0.45, stains=0.15, scratches=0.4, cracks=0.15, dust=0.5,
               patches=0.05, paper=0.2, illumination=0.3, noise=0.6, jpeg=0.45),
        blur_sigma=(0.4, 1.0), blur_radius=(0.8, 1.8), motion_length=(2.0, 5.0),
        black_point=(0.0, 0.06), white_point=(0.94, 1.0), log_gamma=(-0.12, 0.12),
        cast=(0.005, 0.02), stains=(1, 1), stain_strength=(0.05, 0.12),
        scratches=(1, 2), cracks=(1, 2), dust=(3, 15), patches=(1, 1), patch_frac=(0.0005, 0.002),
        paper=(0.004, 0.012), illumination=(0.05, 0.15), noise_sigma=(0.006, 0.02), jpeg=(75, 95)),
    "moderate": dict(
        p=dict(blur=0.6, fade=0.65, cast=0.6, stains=0.35, scratches=0.6, cracks=0.4, dust=0.6,
               patches=0.35, paper=0.35, illumination=0.45, noise=0.7, jpeg=0.55),
        blur_sigma=(0.8, 1.6), blur_radius=(1.5, 3.0), motion_length=(4.0, 10.0),
        black_point=(0.04, 0.15), white_point=(0.82, 0.96), log_gamma=(-0.25, 0.25),
        cast=(0.015, 0.045), stains=(1, 2), stain_strength=(0.1, 0.22),
        scratches=(2, 5), cracks=(2, 5), dust=(10, 40), patches=(1, 2), patch_frac=(0.001, 0.005),
        paper=(0.01, 0.025), illumination=(0.1, 0.3), noise_sigma=(0.015, 0.04), jpeg=(45, 80)),
    "severe": dict(
        p=dict(blur=0.75, fade=0.8, cast=0.75, stains=0.5, scratches=0.8, cracks=0.6, dust=0.75,
               patches=0.6, paper=0.5, illumination=0.6, noise=0.85, jpeg=0.65),
        blur_sigma=(1.4, 2.5), blur_radius=(2.5, 4.5), motion_length=(8.0, 18.0),
        black_point=(0.12, 0.3), white_point=(0.65, 0.88), log_gamma=(-0.4, 0.4),
        cast=(0.03, 0.08), stains=(2, 4), stain_strength=(0.2, 0.35),
        scratches=(4, 10), cracks=(4, 10), dust=(30, 120), patches=(1, 3), patch_frac=(0.002, 0.01),
        paper=(0.02, 0.04), illumination=(0.2, 0.45), noise_sigma=(0.035, 0.08), jpeg=(20, 50)),
}
#: the kinds of defect of recipe v2, in the order they are applied
DEFECTS = ("blur", "fade", "cast", "stains", "cracks", "scratches", "dust", "patches", "paper",
           "illumination", "noise", "jpeg")
MARK_KINDS = ("scratches", "cracks", "dust", "patches")
NOISE_KINDS = ("white", "luminance", "chroma", "film_grain")
BLUR_KINDS = ("gaussian", "disk", "motion")
#: smallest change (0..1, in some channel) for a mark pixel to count in the true mask
VISIBLE_CHANGE = 0.03
#: image area at which mark counts are as in LEVELS; counts scale with the area (dust) or its root
REFERENCE_AREA = 256 * 256

#: every key of the ``info`` dict returned by recipe v2, with its unit / meaning
INFO_FIELDS: Dict[str, str] = {
    "level": "light | moderate | severe", "seed": "int", "recipe": "'v2'",
    "defects": "list of the defects applied, in order (names of DEFECTS)",
    "blur_kind": "none | gaussian | disk | motion",
    "blur_sigma": "px: std of the PSF (Gaussian sigma; disk radius/2; motion length/sqrt(12) along the motion)",
    "blur_radius": "px, disk radius (0 unless disk)",
    "motion_length": "px (0 unless motion)", "motion_angle": "degrees, CCW from +x, y up (0 unless motion)",
    "black_point": "0..1, output of input 0", "white_point": "0..1, output of input 1",
    "gamma": "exponent of the tone curve", "cast_kind": "none | yellowing | cast",
    "cast_a": "Oklab a shift", "cast_b": "Oklab b shift",
    "stains": "count", "stain_strength": "0..1 multiplicative depth",
    "scratches": "count", "cracks": "count (random-walk cracks or craquelure patches)",
    "crack_kind": "none | walk | craquelure", "dust": "count of specks", "patches": "count",
    "mask": "bool [H, W]: true damage mask (scratches, cracks, dust, patches)",
    "mask_kinds": "dict kind -> bool [H, W]", "mask_fraction": "fraction of pixels in mask",
    "paper_texture": "std of the multiplicative paper texture (0 = none)",
    "illumination_kind": "none | vignette | gradient",
    "illumination_min": "smallest gain of the lighting field", "illumination_max": "largest gain",
    "noise_kind": "none | white | luminance | chroma | film_grain",
    "noise_sigma": "std of the added noise per channel, 0..1 units", "grain_size": "px, low-pass sigma (0 = white)",
    "jpeg_quality": "1..100 or None",
}


# --- sources ----------------------------------------------------------------------------------
def load_source(name: str, max_side: Optional[int] = 384) -> np.ndarray:
    """A clean source image as float32 RGB 0..1, downscaled (area) so its longer side ≤ max_side.

    ``name`` is any name of the registry in :mod:`.sources` (e.g. a ``skimage.data`` function name,
    ``motorcycle``, ``china`` / ``flower``, ``tpl-image/<stem>``).  Greyscale sources are replicated
    to three channels.  Reserved evaluation images are refused (:class:`.sources.ReservedImageError`).
    """
    return _sources.load(name, max_side)


def pair_seed(source: str, level: str, index: int, base_seed: int = 0) -> int:
    """Deterministic 32-bit seed for (source, level, variant index) — stable across runs/platforms."""
    return zlib.crc32(f"{base_seed}:{source}:{level}:{index}".encode()) & 0x7FFFFFFF


_PAPER = damage_marks.PAPER  # aged paper tone, sRGB


# --- individual damages (both recipes; the marks of recipe v1) ----------------------------------
def fade(img: np.ndarray, amount: float) -> np.ndarray:
    """Contrast loss towards the paper tone: ``(1-amount) x + amount * paper``; amount 0..1."""
    return img * (1 - amount) + amount * _PAPER


def yellow(img: np.ndarray, amount: float) -> np.ndarray:
    """Yellowing: blue gain ``1-amount``, green ``1-amount/3``, red slightly lifted; amount 0..0.5."""
    gains = np.array([1.0 + 0.05 * amount, 1.0 - amount / 3.0, 1.0 - amount], np.float32)
    return img * gains + np.array([0.0, 0.0, 0.0], np.float32)


def colour_cast(img: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Per-channel gains drawn uniformly in ``1 ± spread`` (mean gain kept at 1)."""
    g = 1.0 + rng.uniform(-spread, spread, 3)
    g = g / g.mean()
    return img * g.astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, ``sigma`` in px (OpenCV, reflected borders)."""
    import cv2

    if sigma <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def noise_grain(img: np.ndarray, rng: np.random.Generator, sigma: float, grain: float) -> np.ndarray:
    """Additive white Gaussian noise (std ``sigma``) plus monochrome low-pass grain (std ``grain``)."""
    import cv2

    out = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    if grain > 0:
        g = rng.normal(0, 1, img.shape[:2]).astype(np.float32)
        g = cv2.GaussianBlur(g, (0, 0), 0.8)
        g *= grain / (g.std() + 1e-8)
        out = out + g[..., None]
    return out


def stains(img: np.ndarray, rng: np.random.Generator, count: int, strength: float) -> np.ndarray:
    """``count`` soft brown blobs: multiplicative darkening towards a sepia tone, depth ``strength``."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.05, 0.2) * min(h, w)
        ax = rng.uniform(0.6, 1.4)
        d2 = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * ax)) ** 2
        blob = np.exp(-d2 * 2.0)
        ring = np.exp(-((np.sqrt(d2) - 0.9) ** 2) / 0.01) * 0.6  # tide line of a water stain
        mask = np.maximum(mask, np.clip(blob + ring, 0, 1))
    tint = np.array([0.75, 0.6, 0.4], np.float32)
    m = (mask * strength)[..., None]
    return img * (1 - m) + img * tint * m


def _draw_polyline(canvas: np.ndarray, pts: np.ndarray, value: float, thickness: int) -> None:
    import cv2

    cv2.polylines(canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, float(value),
                  thickness=thickness, lineType=cv2.LINE_AA)


def cracks(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Craquelure: ``count`` random-walk polylines with short branches, darkened multiplicatively."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    for _ in range(count):
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        angle = rng.uniform(0, 2 * np.pi)
        pts = [p.copy()]
        for _ in range(int(rng.integers(6, 20))):
            angle += rng.normal(0, 0.5)
            p = p + rng.uniform(3, 9) * np.array([np.cos(angle), np.sin(angle)])
            pts.append(p.copy())
            if rng.random() < 0.15:  # a branch
                q, a = p.copy(), angle + rng.choice([-1, 1]) * rng.uniform(0.8, 1.6)
                br = [q.copy()]
                for _ in range(int(rng.integers(2, 6))):
                    a += rng.normal(0, 0.4)
                    q = q + rng.uniform(3, 7) * np.array([np.cos(a), np.sin(a)])
                    br.append(q.copy())
                _draw_polyline(mask, np.array(br), 0.7, 1)
        _draw_polyline(mask, np.array(pts), 1.0, 1)
    depth = rng.uniform(0.45, 0.75)
    return img * (1 - depth * np.clip(mask, 0, 1))[..., None]


def scratches(img: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` thin near-vertical lines, bright (emulsion scratched off) or dark, partly faded."""
    h, w = img.shape[:2]
    out = img.copy()
    for _ in range(count):
        x0 = rng.uniform(0, w)
        y0, y1 = sorted(rng.uniform(-0.2 * h, 1.2 * h, 2))
        x1 = x0 + rng.normal(0, 0.05) * (y1 - y0)
        n = 8
        ys = np.linspace(y0, y1, n)
        xs = np.linspace(x0, x1, n) + np.cumsum(rng.normal(0, 0.6, n))
        mask = np.zeros((h, w), np.float32)
        _draw_polyline(mask, np.stack([xs, ys], 1), 1.0, int(rng.integers(1, 3)))
        value = 0.95 if rng.random() < 0.6 else 0.1
        a = (mask * rng.uniform(0.5, 0.9))[..., None]
        out = out * (1 - a) + value * a
    return out


def missing_patches(img: np.ndarray, rng: np.random.Generator, count: int,
                    frac: Tuple[float, float]) -> np.ndarray:
    """``count`` irregular losses, each ``frac`` of the image area, filled with the paper tone."""
    import cv2

    h, w = img.shape[:2]
    out = img.copy()
    for _ in range(count):
        area = rng.uniform(*frac) * h * w
        r = max(2.0, np.sqrt(area / np.pi))
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = r * rng.uniform(0.6, 1.3, 9)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        mask = np.zeros((h, w), np.float32)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
        out = out * (1 - mask[..., None]) + _PAPER * mask[..., None]
    return out


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through OpenCV's JPEG encoder at ``quality`` (1..100)."""
    import cv2

    u8 = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:  # pragma: no cover
        return img
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return dec.astype(np.float32) / 255.0


# --- recipe v1 (frozen: the shipped models were trained on it) ----------------------------------------
def _damage_image_v1(img: np.ndarray, level: str, seed: int) -> Tuple[np.ndarray, Dict[str, object]]:
    """The original generator: returns ``(damaged, params)``, params listing what was applied."""
    cfg = LEVELS_V1[level]
    rng = np.random.default_rng(seed)
    p = float(cfg["p"])
    x = np.asarray(img, np.float32)[..., :3].copy()
    params: Dict[str, object] = {"level": level, "seed": int(seed)}

    def use() -> bool:
        return bool(rng.random() < p)

    def uni(key):
        lo, hi = cfg[key]
        return float(rng.uniform(lo, hi))

    def cnt(key):
        lo, hi = cfg[key]
        return int(rng.integers(lo, hi + 1))

    # draw every decision up front so one damage's randomness never shifts another's
    flags = {k: use() for k in ("fade", "yellow", "cast", "blur", "noise", "stains", "cracks",
                                "scratches", "patches", "jpeg")}
    if not any(flags.values()):
        flags["blur"] = True
    if flags["fade"]:
        params["fade"] = uni("fade")
        x = fade(x, params["fade"])
    if flags["yellow"]:
        params["yellow"] = uni("yellow")
        x = yellow(x, params["yellow"])
    if flags["cast"]:
        params["cast"] = float(cfg["cast"])
        x = colour_cast(x, rng, params["cast"])
    if flags["blur"]:
        params["blur_sigma"] = uni("blur")
        x = blur(x, params["blur_sigma"])
    if flags["stains"] and cfg["stains"][1] > 0:
        params["stains"] = cnt("stains")
        x = stains(x, rng, params["stains"], uni("stain_strength"))
    if flags["cracks"] and cfg["cracks"][1] > 0:
        params["cracks"] = cnt("cracks")
        x = cracks(x, rng, params["cracks"])
    if flags["scratches"] and cfg["scratches"][1] > 0:
        params["scratches"] = cnt("scratches")
        x = scratches(x, rng, params["scratches"])
    if flags["patches"] and cfg["patches"][1] > 0:
        params["patches"] = cnt("patches")
        x = missing_patches(x, rng, params["patches"], cfg["patch_frac"])
    if flags["noise"]:
        params["noise_sigma"] = uni("noise")
        params["grain"] = uni("grain")
        x = noise_grain(x, rng, params["noise_sigma"], params["grain"])
    x = np.clip(x, 0, 1).astype(np.float32)
    if flags["jpeg"]:
        params["jpeg_quality"] = cnt("jpeg")
        x = jpeg(x, params["jpeg_quality"])
    return x, params


# --- recipe v2: global defects ---------------------------------------------------------------------------
def tone_curve(img: np.ndarray, black_point: float, white_point: float, gamma: float) -> np.ndarray:
    """Fading: ``bp + (wp - bp) · x^gamma`` on every channel (x clipped to 0..1 first)."""
    x = np.power(np.clip(img, 0, 1), gamma)
    return (black_point + (white_point - black_point) * x).astype(np.float32)


def oklab_cast(img: np.ndarray, da: float, db: float) -> np.ndarray:
    """Colour cast: add ``(da, db)`` to Oklab a/b at unchanged L (result not clipped)."""
    from ...scripts.colour import oklab_to_srgb, srgb_to_oklab

    lab = np.asarray(srgb_to_oklab(np.clip(img, 0, 1)), np.float32).copy()
    lab[..., 1] += da
    lab[..., 2] += db
    return np.asarray(oklab_to_srgb(lab), np.float32)


def psf_blur(img: np.ndarray, kind: str, size: float, angle: float = 0.0) -> np.ndarray:
    """Blur with a Gaussian (``size`` = sigma px), disk (``size`` = radius px) or linear motion
    (``size`` = length px, ``angle`` degrees) PSF from :mod:`scripts.kernels`; reflected borders."""
    import cv2

    from ...scripts import kernels

    if kind == "gaussian":
        return blur(img, size)
    k = kernels.disk_kernel(size) if kind == "disk" else kernels.motion_kernel(size, angle)
    return cv2.filter2D(img, -1, k.astype(np.float32), borderType=cv2.BORDER_REFLECT)


def paper_texture(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiplicative paper / canvas texture of std ``strength``: fine fibres (noise stretched 3–6×
    along a random direction) plus a coarser cloudy component."""
    import cv2

    h, w = img.shape[:2]
    fine = rng.normal(0, 1, (h, w)).astype(np.float32)
    ang = rng.uniform(0, 180)
    stretch = rng.uniform(3, 6)
    k = np.zeros((15, 15), np.float32)
    cv2.ellipse(k, (7, 7), (int(min(7, stretch)), 1), ang, 0, 360, 1.0, -1)
    fine = cv2.filter2D(fine, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    coarse = damage_marks._smooth_noise(rng, (h, w), rng.uniform(4, 10))
    t = (fine - fine.mean()) / (fine.std() + 1e-8) + 0.7 * coarse
    t = t / (t.std() + 1e-8)
    return img * (1 + strength * t)[..., None]


def illumination(img: np.ndarray, rng: np.random.Generator, drop: float) -> Tuple[np.ndarray, str, float, float]:
    """Uneven lighting: a ``vignette`` (radial fall-off around an off-centre point) or a linear
    ``gradient``, gain from 1 down to ``1 - drop``.  Returns ``(image, kind, min gain, max gain)``."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1), xx / max(w - 1, 1)
    if rng.random() < 0.5:
        kind = "vignette"
        cy, cx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        f = (yy - cy) ** 2 + (xx - cx) ** 2
    else:
        kind = "gradient"
        a = rng.uniform(0, 2 * np.pi)
        f = np.cos(a) * xx + np.sin(a) * yy
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6)
    gain = (1 - drop * f).astype(np.float32)
    return img * gain[..., None], kind, float(gain.min()), float(gain.max())


def add_noise(img: np.ndarray, rng: np.random.Generator, kind: str, sigma: float,
              grain_size: float = 0.0) -> np.ndarray:
    """Additive zero-mean noise of std ``sigma`` in every channel (see the module docstring for the
    kinds); ``grain_size`` (px) is the low-pass sigma of ``chroma`` and ``film_grain``."""
    import cv2

    h, w = img.shape[:2]

    def lowpass(n):
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=grain_size, borderType=cv2.BORDER_REFLECT)
        return n / (n.std(axis=(0, 1), keepdims=True) + 1e-8)

    if kind == "white":
        n = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    elif kind == "luminance":
        n = np.repeat(rng.normal(0, 1, (h, w, 1)).astype(np.float32), 3, axis=-1)
    elif kind == "chroma":
        n = lowpass(rng.normal(0, 1, (h, w, 3)).astype(np.float32))
    elif kind == "film_grain":
        n = np.repeat(lowpass(rng.normal(0, 1, (h, w)).astype(np.float32))[..., None], 3, axis=-1)
    else:
        raise ValueError(f"unknown noise kind '{kind}' (expected one of {NOISE_KINDS})")
    return img + sigma * n


# --- recipe v2: the generator --------------------------------------------------------------------------
def _neutral_info(level: str, seed: int, shape) -> Dict[str, object]:
    h, w = shape[:2]
    return {"level": level, "seed": int(seed), "recipe": "v2", "defects": [],
            "blur_kind": "none", "blur_sigma": 0.0, "blur_radius": 0.0, "motion_length": 0.0,
            "motion_angle": 0.0, "black_point": 0.0, "white_point": 1.0, "gamma": 1.0,
            "cast_kind": "none", "cast_a": 0.0, "cast_b": 0.0, "stains": 0, "stain_strength": 0.0,
            "scratches": 0, "cracks": 0, "crack_kind": "none", "dust": 0, "patches": 0,
            "mask": np.zeros((h, w), bool), "mask_kinds": {k: np.zeros((h, w), bool) for k in MARK_KINDS},
            "mask_fraction": 0.0, "paper_texture": 0.0, "illumination_kind": "none",
            "illumination_min": 1.0, "illumination_max": 1.0, "noise_kind": "none", "noise_sigma": 0.0,
            "grain_size": 0.0, "jpeg_quality": None}


def _damage_image_v2(img: np.ndarray, level: str, seed: int,
                     only: Optional[Tuple[str, ...]] = None) -> Tuple[np.ndarray, Dict[str, object]]:
    cfg = LEVELS[level]
    prob = cfg["p"]
    x = np.asarray(img, np.float32)[..., :3].copy()
    h, w = x.shape[:2]
    info = _neutral_info(level, seed, x.shape)
    # one independent stream per defect (and one for the decisions), so switching a defect on or off
    # never changes another one's randomness
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 2])
    streams = dict(zip(("decide",) + DEFECTS, (np.random.default_rng(s) for s in ss.spawn(len(DEFECTS) + 1))))
    dec = streams["decide"]
    draws = dec.random(len(DEFECTS))
    flags = {d: bool(u < prob[d]) for d, u in zip(DEFECTS, draws)}
    forced = DEFECTS[int(dec.integers(0, len(DEFECTS)))]
    if only is not None:
        flags = {d: flags[d] and d in only for d in DEFECTS}
        forced = [d for d in DEFECTS if d in only][int(dec.integers(0, len(only)))] if only else None
    if not any(flags.values()) and forced:
        flags[forced] = True
    area_scale = h * w / REFERENCE_AREA

    def uni(r, key):
        lo, hi = cfg[key]
        return float(r.uniform(lo, hi))

    def count(r, key, power):
        lo, hi = cfg[key]
        n = int(r.integers(lo, hi + 1))
        return max(1, int(round(n * area_scale ** power)))

    if flags["blur"]:
        r = streams["blur"]
        kind = BLUR_KINDS[int(r.integers(0, 3))]
        info["blur_kind"] = kind
        if kind == "gaussian":
            info["blur_sigma"] = uni(r, "blur_sigma")
            x = psf_blur(x, kind, info["blur_sigma"])
        elif kind == "disk":
            info["blur_radius"] = uni(r, "blur_radius")
            info["blur_sigma"] = info["blur_radius"] / 2.0
            x = psf_blur(x, kind, info["blur_radius"])
        else:
            info["motion_length"] = uni(r, "motion_length")
            info["motion_angle"] = float(r.uniform(0, 180))
            info["blur_sigma"] = info["motion_length"] / np.sqrt(12.0)
            x = psf_blur(x, kind, info["motion_length"], info["motion_angle"])
    if flags["fade"]:
        r = streams["fade"]
        info["black_point"], info["white_point"] = uni(r, "black_point"), uni(r, "white_point")
        info["gamma"] = float(np.exp(uni(r, "log_gamma")))
        x = tone_curve(x, info["black_point"], info["white_point"], info["gamma"])
    if flags["cast"]:
        r = streams["cast"]
        mag = uni(r, "cast")
        if r.random() < 0.6:
            info["cast_kind"] = "yellowing"
            ang = r.uniform(np.deg2rad(60), np.deg2rad(110))  # b > 0, a slightly either way
        else:
            info["cast_kind"] = "cast"
            ang = r.uniform(0, 2 * np.pi)
        info["cast_a"], info["cast_b"] = float(mag * np.cos(ang)), float(mag * np.sin(ang))
        x = np.clip(oklab_cast(x, info["cast_a"], info["cast_b"]), 0, 1)
    if flags["stains"]:
        r = streams["stains"]
        info["stains"] = int(r.integers(cfg["stains"][0], cfg["stains"][1] + 1))
        info["stain_strength"] = uni(r, "stain_strength")
        x = stains(x, r, info["stains"], info["stain_strength"])
    before_marks = x
    cov = {}
    if flags["cracks"]:
        r = streams["cracks"]
        info["cracks"] = count(r, "cracks", 0.5)
        if r.random() < 0.5:
            info["crack_kind"] = "craquelure"
            x, cov["cracks"] = damage_marks.craquelure(x, r, max(1, (info["cracks"] + 1) // 2))
        else:
            info["crack_kind"] = "walk"
            x, cov["cracks"] = damage_marks.crack_walk(x, r, info["cracks"])
    if flags["scratches"]:
        r = streams["scratches"]
        info["scratches"] = count(r, "scratches", 0.5)
        x, cov["scratches"] = damage_marks.scratches(x, r, info["scratches"])
    if flags["dust"]:
        r = streams["dust"]
        info["dust"] = count(r, "dust", 1.0)
        x, cov["dust"] = damage_marks.dust(x, r, info["dust"])
    if flags["patches"]:
        r = streams["patches"]
        info["patches"] = int(r.integers(cfg["patches"][0], cfg["patches"][1] + 1))
        x, cov["patches"] = damage_marks.patches(x, r, info["patches"], cfg["patch_frac"])
    if cov:
        visible = np.abs(np.clip(x, 0, 1) - np.clip(before_marks, 0, 1)).max(-1) >= VISIBLE_CHANGE
        for k, c in cov.items():
            info["mask_kinds"][k] = (c >= 0.5) & visible
        info["mask"] = np.any(np.stack(list(info["mask_kinds"].values())), axis=0)
        info["mask_fraction"] = float(info["mask"].mean())
    if flags["paper"]:
        r = streams["paper"]
        info["paper_texture"] = uni(r, "paper")
        x = paper_texture(x, r, info["paper_texture"])
    if flags["illumination"]:
        r = streams["illumination"]
        x, info["illumination_kind"], info["illumination_min"], info["illumination_max"] = \
            illumination(x, r, uni(r, "illumination"))
    if flags["noise"]:
        r = streams["noise"]
        kind = NOISE_KINDS[int(r.integers(0, len(NOISE_KINDS)))]
        info["noise_kind"], info["noise_sigma"] = kind, uni(r, "noise_sigma")
        if kind == "chroma":
            info["grain_size"] = float(r.uniform(1.0, 2.5))
        elif kind == "film_grain":
            info["grain_size"] = float(r.uniform(0.5, 2.0))
        x = add_noise(x, r, kind, info["noise_sigma"], info["grain_size"])
    x = np.clip(x, 0, 1).astype(np.float32)
    if flags["jpeg"]:
        r = streams["jpeg"]
        info["jpeg_quality"] = int(r.integers(cfg["jpeg"][0], cfg["jpeg"][1] + 1))
        x = jpeg(x, info["jpeg_quality"])
    info["defects"] = [d for d in DEFECTS if flags[d]]
    return x, info


def damage_image(img: np.ndarray, level: str, seed: int, recipe: str = "v2",
                 only: Optional[Tuple[str, ...]] = None) -> Tuple[np.ndarray, Dict[str, object]]:
    """Apply a random mix of damages at ``level`` to ``img`` (float RGB 0..1); deterministic in
    ``(img, level, seed, recipe)``.  The input is never modified.

    Returns ``(damaged float32 [H,W,3] 0..1, info)``.  For recipe ``v2`` ``info`` has every key of
    :data:`INFO_FIELDS` (true parameters, ``mask``); recipe ``v1`` returns the original parameter
    dict.  ``only`` (v2): restrict the defects to these names of :data:`DEFECTS` (each still drawn
    with its level probability, at least one applied) — e.g. ``("scratches", "dust")``.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown damage level '{level}' (expected one of {LEVEL_NAMES})")
    if recipe == "v1":
        return _damage_image_v1(img, level, seed)
    if recipe != "v2":
        raise ValueError(f"unknown damage recipe '{recipe}' (expected one of {RECIPES})")
    if only is not None:
        bad = [d for d in only if d not in DEFECTS]
        if bad:
            raise ValueError(f"unknown defect(s) {bad} (expected names of {DEFECTS})")
    return _damage_image_v2(img, level, seed, tuple(only) if only is not None else None)


def make_pairs(split: str, per_level: int = 4, max_side: int = 256, levels=LEVEL_NAMES,
               base_seed: int = 0, sources: Optional[List[str]] = None,
               recipe: str = "v2") -> List[Dict[str, object]]:
    """Deterministic list of pairs: ``per_level`` variants per (source, level).

    ``sources``: names from the registry (:mod:`.sources`); default the legacy :data:`SPLITS`
    ``[split]`` (for the registry split use :func:`.sources.make_pairs`).  Each item:
    ``{"source", "level", "seed", "clean", "damaged", "params"}`` (float32 images; ``params`` is the
    generator's ``info``).
    """
    names = list(sources) if sources is not None else list(SPLITS[split])
    out = []
    for name in names:
        clean = load_source(name, max_side)
        for level in levels:
            for i in range(per_level):
                seed = pair_seed(name, level, i, base_seed)
                damaged, params = damage_image(clean, level, seed, recipe=recipe)
                out.append({"source": name, "level": level, "seed": seed, "clean": clean,
                            "damaged": damaged, "params": params})
    return out


def vary_tone(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible *undamaged* tonal variant of ``img``: ``lo + (hi - lo) · x^gamma``.

    ``gamma = exp(U(-0.4, 0.4))``, black point ``lo ~ U(0, 0.2)``, white point ``hi ~ U(0.8, 1)``,
    the same for all channels (no cast).  Used as training augmentation of the *clean* image, so the
    U-Net meets clean images that are low in contrast, dark or light (a grey wall, a night scene) and
    does not take every raised black point for fading.
    """
    gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
    lo, hi = float(rng.uniform(0.0, 0.2)), float(rng.uniform(0.8, 1.0))
    return (lo + (hi - lo) * np.power(np.clip(img, 0, 1), gamma)).astype(np.float32)


def random_crop_pair(clean: np.ndarray, rng: np.random.Generator, size: int,
                     level: Optional[str] = None, tone: float = 0.0,
                     recipe: str = "v2") -> Tuple[np.ndarray, np.ndarray, str]:
    """A random ``size``² crop of ``clean`` and its damaged version (damage applied to the crop).

    With probability ``tone`` the clean crop is first replaced by a :func:`vary_tone` variant (which
    is then the target).
    """
    h, w = clean.shape[:2]
    y = int(rng.integers(0, max(1, h - size + 1)))
    x = int(rng.integers(0, max(1, w - size + 1)))
    c = clean[y:y + size, x:x + size]
    if tone > 0 and rng.random() < tone:
        c = vary_tone(c, rng)
    lv = level or LEVEL_NAMES[int(rng.integers(0, 3))]
    d, _ = damage_image(c, lv, int(rng.integers(0, 2**31 - 1)), recipe=recipe)
    return c, d, lv


#: the sample inputs shipped in examples/images, made with the default recipe (v2):
#: file -> (source, level, seed, defects or None for the level's full mix).  The four ``hybrid_*``
#: files keep the names saved workflows and benchmarks load (skimage's chelsea and rocket, the pack's
#: own sample photographs); ``old_photo_scratched.png`` is a train-split source (skimage astronaut)
#: with the damage of a handled old print: scratches, dust, fading, a cast, paper texture and grain.
EXAMPLES: Dict[str, Tuple[str, str, int, Optional[Tuple[str, ...]]]] = {
    "hybrid_chelsea_light.png": ("chelsea", "light", 11, None),
    "hybrid_rocket_moderate.png": ("rocket", "moderate", 12, None),
    "hybrid_chelsea_severe.png": ("chelsea", "severe", 19, None),
    "hybrid_rocket_severe.png": ("rocket", "severe", 14, None),
    "old_photo_scratched.png": ("astronaut", "moderate", 21, ("scratches", "dust", "fade", "cast", "paper", "noise")),
}


def make_examples(out_dir: str, max_side: int = 384) -> List[str]:
    """Write the old-photo-like sample inputs of :data:`EXAMPLES` (8-bit PNG) into ``out_dir``."""
    import os

    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fname, (src, level, seed, only) in EXAMPLES.items():
        img, _ = damage_image(load_source(src, max_side), level, seed, only=only)
        p = os.path.join(out_dir, fname)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths

"""Paired training data: synthetic art / old-photo damage applied to images shipped inside wheels.

Every damage is a pure function of the clean image and a :class:`numpy.random.Generator`, so a
pair is fully determined by ``(source name, level, seed)``.  Images are float32 RGB ``[H, W, 3]``
in 0..1 (display-referred sRGB).

Damage types (each applied with a level-dependent probability, in this order):

=============  =====================================================================================
fading         contrast loss towards a light paper tone: ``x <- (1-f) x + f * paper``
yellowing      blue (and a little green) absorbed, as in aged varnish / paper: per-channel gains
colour cast    random per-channel gain around 1 (dye fading of old colour prints)
blur           Gaussian blur, sigma in px
noise / grain  additive Gaussian noise plus low-pass film grain (luminance-correlated)
stains         soft brownish blobs (multiplicative), e.g. water or foxing stains
cracks         craquelure: a random-walk network of thin dark lines
scratches      thin long near-vertical bright or dark lines (film scratches)
patches        small missing regions filled with the paper tone (losses of paint / emulsion)
JPEG           re-encoding at a given quality (OpenCV's encoder)
=============  =====================================================================================

Levels ``light`` / ``moderate`` / ``severe`` set the parameter ranges (:data:`LEVELS`).

The split (:data:`SPLITS`) is by *source image*: no crop of a validation or test source is ever
seen in training.
"""
from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np

LEVEL_NAMES = ("light", "moderate", "severe")

#: train / validation / test split by source image (never by crop)
SPLITS: Dict[str, Tuple[str, ...]] = {
    "train": ("astronaut", "camera", "coffee", "hubble_deep_field", "retina", "grass", "gravel",
              "page", "text", "china", "coins", "immunohistochemistry", "clock", "cell", "motorcycle"),
    "val": ("flower", "moon"),
    "test": ("chelsea", "rocket", "brick"),
}
ALL_SOURCES = SPLITS["train"] + SPLITS["val"] + SPLITS["test"]

#: per level: probability each damage is applied and its parameter ranges (uniform)
LEVELS: Dict[str, Dict[str, object]] = {
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

_PAPER = np.array([0.93, 0.89, 0.80], np.float32)  # aged paper tone, sRGB


# --- sources ----------------------------------------------------------------------------------
def load_source(name: str, max_side: Optional[int] = 384) -> np.ndarray:
    """A clean source image as float32 RGB 0..1, downscaled (area) so its longer side ≤ max_side.

    ``name`` is a ``skimage.data`` function name, ``motorcycle`` (the left view of
    ``skimage.data.stereo_motorcycle``) or ``china`` / ``flower`` (sklearn sample images).
    Greyscale sources are replicated to three channels.
    """
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        if name not in ALL_SOURCES:
            raise ValueError(f"unknown source image '{name}' (expected one of {ALL_SOURCES})")
        arr = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    arr = arr[..., :3].astype(np.float32) / 255.0
    if max_side and max(arr.shape[:2]) > max_side:
        import cv2

        s = max_side / max(arr.shape[:2])
        size = (max(1, round(arr.shape[1] * s)), max(1, round(arr.shape[0] * s)))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return np.clip(arr, 0, 1).astype(np.float32)


def pair_seed(source: str, level: str, index: int, base_seed: int = 0) -> int:
    """Deterministic 32-bit seed for (source, level, variant index) — stable across runs/platforms."""
    return zlib.crc32(f"{base_seed}:{source}:{level}:{index}".encode()) & 0x7FFFFFFF


# --- individual damages -------------------------------------------------------------------------
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


# --- the generator --------------------------------------------------------------------------------
def damage_image(img: np.ndarray, level: str, seed: int) -> Tuple[np.ndarray, Dict[str, object]]:
    """Apply a random mix of damages at ``level`` to ``img``; deterministic in ``seed``.

    Returns ``(damaged float32 [H,W,3] 0..1, params)`` where ``params`` lists what was applied.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown damage level '{level}' (expected one of {LEVEL_NAMES})")
    cfg = LEVELS[level]
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


def make_pairs(split: str, per_level: int = 4, max_side: int = 256, levels=LEVEL_NAMES,
               base_seed: int = 0, sources: Optional[List[str]] = None) -> List[Dict[str, object]]:
    """Deterministic list of pairs for a split: ``per_level`` variants per (source, level).

    Each item: ``{"source", "level", "seed", "clean", "damaged", "params"}`` (float32 images).
    """
    names = list(sources) if sources is not None else list(SPLITS[split])
    out = []
    for name in names:
        clean = load_source(name, max_side)
        for level in levels:
            for i in range(per_level):
                seed = pair_seed(name, level, i, base_seed)
                damaged, params = damage_image(clean, level, seed)
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
                     level: Optional[str] = None, tone: float = 0.0) -> Tuple[np.ndarray, np.ndarray, str]:
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
    d, _ = damage_image(c, lv, int(rng.integers(0, 2**31 - 1)))
    return c, d, lv


#: the sample inputs shipped in examples/images (test-split sources only): file -> (source, level, seed)
EXAMPLES = {
    "hybrid_chelsea_light.png": ("chelsea", "light", 11),
    "hybrid_rocket_moderate.png": ("rocket", "moderate", 12),
    "hybrid_chelsea_severe.png": ("chelsea", "severe", 13),
    "hybrid_rocket_severe.png": ("rocket", "severe", 14),
}


def make_examples(out_dir: str, max_side: int = 384) -> List[str]:
    """Write the old-photo-like sample inputs of :data:`EXAMPLES` (8-bit PNG) into ``out_dir``."""
    import os

    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fname, (src, level, seed) in EXAMPLES.items():
        img, _ = damage_image(load_source(src, max_side), level, seed)
        p = os.path.join(out_dir, fname)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths

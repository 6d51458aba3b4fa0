"""Line and spot damage drawn with its true footprint: scratches, cracks / craquelure, dust, losses.

Every function takes a float32 RGB image ``[H, W, 3]`` in 0..1 and a :class:`numpy.random.Generator`
and returns ``(out, coverage)``: the marked image (not clipped; callers clip) and the float32
coverage ``[H, W]`` in 0..1 of the marks drawn (anti-aliased geometric footprint, 1 inside a mark).
The damage generator (:mod:`.damage`) turns coverage into the true damage mask (coverage ≥ 0.5
where the mark visibly changed the pixel).  Sizes are in pixels; the mark *counts* are chosen by the
caller.

:func:`scene_lines` is the opposite: thin dark lines that belong to the scene (wires, twigs), drawn
soft like everything the camera saw.  The mask detector's training adds them to the *clean* image
so that it learns not to flag every thin line.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

#: aged paper tone (sRGB) shown by losses of emulsion or paint
PAPER = np.array([0.93, 0.89, 0.80], np.float32)
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel precision for drawing
_SCALE = float(1 << _SHIFT)


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy, np.float64) * _SCALE).astype(np.int32).reshape(-1, 1, 2)


def _polyline(canvas: np.ndarray, xy: np.ndarray, thickness: int, value: float = 1.0) -> None:
    import cv2

    cv2.polylines(canvas, [_pts(xy)], False, float(value), thickness=int(max(1, thickness)),
                  lineType=cv2.LINE_AA, shift=_SHIFT)


def _composite(img: np.ndarray, alpha: np.ndarray, value) -> np.ndarray:
    a = alpha[..., None]
    return img * (1 - a) + np.asarray(value, np.float32) * a


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise (correlation length ``sigma`` px)."""
    import cv2

    n = rng.normal(0, 1, shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigmaX=max(0.3, sigma), borderType=cv2.BORDER_REFLECT)
    return (n - n.mean()) / (n.std() + 1e-8)


# --- scratches ---------------------------------------------------------------------------------------
def scratches(img: np.ndarray, rng: np.random.Generator, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` long thin lines: 60 % near-vertical film scratches (angle 90° ± 4°), the rest at any
    angle; slightly bent, 1–3 px wide, 0.3–1.5 × the longer side long, with gaps (about 1 piece in 7
    left out).  Bright (emulsion scratched off, value 0.82–1) in 60 % of cases, else dark (0–0.2);
    opacity 0.55–0.95."""
    h, w = img.shape[:2]
    out = img.copy()
    cov_all = np.zeros((h, w), np.float32)
    for _ in range(int(count)):
        vertical = rng.random() < 0.6
        ang = np.deg2rad(90 + rng.normal(0, 4) if vertical else rng.uniform(0, 180))
        d = np.array([np.cos(ang), np.sin(ang)])
        nrm = np.array([-d[1], d[0]])
        length = rng.uniform(0.3, 1.5) * max(h, w)
        c = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        bend = rng.normal(0, 0.02) * length
        n = 24
        t = np.linspace(-0.5, 0.5, n)
        jitter = np.cumsum(rng.normal(0, 0.25, n))
        xy = c + t[:, None] * length * d + ((1 - 4 * t ** 2) * bend + jitter)[:, None] * nrm
        thick = int(rng.choice([1, 1, 2, 2, 3]))
        keep = rng.random(n - 1) > 0.14
        cov = np.zeros((h, w), np.float32)
        for i in range(n - 1):
            if keep[i]:
                _polyline(cov, xy[i:i + 2], thick)
        cov = np.clip(cov, 0, 1)
        value = rng.uniform(0.82, 1.0) if rng.random() < 0.6 else rng.uniform(0.0, 0.2)
        out = _composite(out, cov * rng.uniform(0.55, 0.95), value)
        cov_all = np.maximum(cov_all, cov)
    return out, cov_all


# --- cracks --------------------------------------------------------------------------------------------
def _crack_value(img: np.ndarray, rng: np.random.Generator, cov: np.ndarray) -> np.ndarray:
    """Dark cracks (multiplicative, depth 0.35–0.8) in 75 % of cases, else light ones (ground showing)."""
    if rng.random() < 0.75:
        depth = rng.uniform(0.35, 0.8)
        return img * (1 - depth * cov)[..., None]
    ground = np.clip(PAPER * rng.uniform(0.85, 1.05), 0, 1)
    return _composite(img, cov * rng.uniform(0.6, 0.95), ground)


def crack_walk(img: np.ndarray, rng: np.random.Generator, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` random-walk cracks (steps 3–9 px, turning by N(0, 0.5) rad) with short branches;
    1 px wide (2 px for 20 % of them)."""
    h, w = img.shape[:2]
    cov = np.zeros((h, w), np.float32)
    for _ in range(int(count)):
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        angle = rng.uniform(0, 2 * np.pi)
        thick = 2 if rng.random() < 0.2 else 1
        pts = [p.copy()]
        for _ in range(int(rng.integers(8, 30))):
            angle += rng.normal(0, 0.5)
            p = p + rng.uniform(3, 9) * np.array([np.cos(angle), np.sin(angle)])
            pts.append(p.copy())
            if rng.random() < 0.15:
                q, a = p.copy(), angle + rng.choice([-1, 1]) * rng.uniform(0.8, 1.6)
                br = [q.copy()]
                for _ in range(int(rng.integers(2, 6))):
                    a += rng.normal(0, 0.4)
                    q = q + rng.uniform(3, 7) * np.array([np.cos(a), np.sin(a)])
                    br.append(q.copy())
                _polyline(cov, np.array(br), 1)
        _polyline(cov, np.array(pts), thick)
    cov = np.clip(cov, 0, 1)
    return _crack_value(img, rng, cov), cov


def craquelure(img: np.ndarray, rng: np.random.Generator, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` patches of craquelure (the crack network of an aged paint layer): the edges of a
    jittered Voronoi tessellation with cells 8–35 px across, wiggled by a smooth displacement of
    1–3 px, inside a soft elliptical region 20–70 % of the shorter side across; 1 px wide."""
    from scipy.spatial import cKDTree

    h, w = img.shape[:2]
    cov = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(count)):
        cell = rng.uniform(8, 35)
        r = rng.uniform(0.1, 0.35) * min(h, w) + cell
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ax = rng.uniform(0.6, 1.6)
        y0, y1 = int(max(0, cy - r * 1.1)), int(min(h, cy + r * 1.1 + 1))
        x0, x1 = int(max(0, cx - r * ax * 1.1)), int(min(w, cx + r * ax * 1.1 + 1))
        if y1 - y0 < 3 or x1 - x0 < 3:
            continue
        gy = np.arange(y0 - cell, y1 + cell, cell)
        gx = np.arange(x0 - cell, x1 + cell, cell)
        seeds = np.stack(np.meshgrid(gy, gx, indexing="ij"), -1).reshape(-1, 2)
        seeds = seeds + rng.uniform(-0.45, 0.45, seeds.shape) * cell
        sub_y, sub_x = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        amp = rng.uniform(1.0, 3.0)
        dy = _smooth_noise(rng, sub_y.shape, cell / 4) * amp
        dx = _smooth_noise(rng, sub_y.shape, cell / 4) * amp
        _, lab = cKDTree(seeds).query(np.stack([sub_y + dy, sub_x + dx], -1).reshape(-1, 2))
        lab = lab.reshape(sub_y.shape)
        edge = np.zeros(lab.shape, bool)
        edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        region = ((sub_y - cy) / r) ** 2 + ((sub_x - cx) / (r * ax)) ** 2 < 1.0
        # leave some cell walls out so the network looks naturally incomplete
        walls = rng.random(int(lab.max()) + 1) < 0.85
        edge &= region & walls[lab]
        cov[y0:y1, x0:x1] = np.maximum(cov[y0:y1, x0:x1], edge.astype(np.float32))
    return _crack_value(img, rng, cov), cov


# --- dust and hairs ----------------------------------------------------------------------------------------
def dust(img: np.ndarray, rng: np.random.Generator, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` dust specks (irregular ellipses, radius 0.7–3.5 px, log-uniform) and about one
    hair/fibre per 15 specks (curved 1 px lines, 8–50 px long).  Dark (value 0–0.25) or bright
    (0.8–1, dust on a negative) with equal odds per image; opacity 0.6–1."""
    import cv2

    h, w = img.shape[:2]
    cov = np.zeros((h, w), np.float32)
    bright = rng.random() < 0.5
    for _ in range(int(count)):
        c = (rng.uniform(0, w), rng.uniform(0, h))
        r = float(np.exp(rng.uniform(np.log(0.7), np.log(3.5))))
        axes = (r * rng.uniform(0.6, 1.4), r * rng.uniform(0.6, 1.4))
        cv2.ellipse(cov, (int(c[0] * _SCALE), int(c[1] * _SCALE)),
                    (max(1, int(axes[0] * _SCALE)), max(1, int(axes[1] * _SCALE))),
                    float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.poisson(count / 15.0))):
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        a = rng.uniform(0, 2 * np.pi)
        pts = [p.copy()]
        for _ in range(int(rng.integers(4, 12))):
            a += rng.normal(0, 0.35)
            p = p + rng.uniform(2, 5) * np.array([np.cos(a), np.sin(a)])
            pts.append(p.copy())
        _polyline(cov, np.array(pts), 1)
    cov = np.clip(cov, 0, 1)
    value = rng.uniform(0.8, 1.0) if bright else rng.uniform(0.0, 0.25)
    return _composite(img, cov * rng.uniform(0.6, 1.0), value), cov


# --- losses ------------------------------------------------------------------------------------------------
def patches(img: np.ndarray, rng: np.random.Generator, count: int,
            frac: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` irregular losses of emulsion or paint, each ``frac`` (range) of the image area: a
    rough polygon (9–15 vertices, radius × 0.55–1.35), filled with textured paper tone (50 %),
    near-white (20 %) or a dark brown ground (30 %)."""
    import cv2

    h, w = img.shape[:2]
    out = img.copy()
    cov_all = np.zeros((h, w), np.float32)
    for _ in range(int(count)):
        area = rng.uniform(*frac) * h * w
        r = max(2.0, float(np.sqrt(area / np.pi)))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        k = int(rng.integers(9, 16))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radii = r * rng.uniform(0.55, 1.35, k)
        xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cov = np.zeros((h, w), np.float32)
        cv2.fillPoly(cov, [_pts(xy)], 1.0, lineType=cv2.LINE_AA, shift=_SHIFT)
        u = rng.random()
        if u < 0.5:
            fill = PAPER * rng.uniform(0.9, 1.05)
        elif u < 0.7:
            fill = np.full(3, rng.uniform(0.92, 1.0), np.float32)
        else:
            fill = np.array([0.32, 0.24, 0.16], np.float32) * rng.uniform(0.6, 1.1)
        tex = 1 + 0.03 * _smooth_noise(rng, (h, w), 1.5)[..., None]
        fill_img = np.clip(fill * tex, 0, 1)
        a = cov[..., None]
        out = out * (1 - a) + fill_img * a
        cov_all = np.maximum(cov_all, cov)
    return out, cov_all


# --- natural thin lines (not damage) ------------------------------------------------------------------------
#: kinds of :func:`scene_lines`
SCENE_LINE_KINDS = ("wire", "twig", "grid", "hatch")


def _scene_colour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark pixel of the image itself (1–20 % luminance quantile), so the line sits in its palette."""
    lum = img.mean(-1)
    dark = np.quantile(lum, rng.uniform(0.01, 0.2))
    ys, xs = np.nonzero(lum <= dark + 1e-6)
    if len(ys):
        i = int(rng.integers(0, len(ys)))
        return img[ys[i], xs[i]]
    return np.zeros(3, np.float32)


def scene_lines(img: np.ndarray, rng: np.random.Generator, count: int,
                kinds: Tuple[str, ...] = ("wire", "twig")) -> np.ndarray:
    """``count`` thin lines that belong to the scene, each of a kind drawn from ``kinds``:

    * ``wire``: a sagging wire across the frame (catenary-like arc, 1–3 px);
    * ``twig``: a tapering polyline with side branches;
    * ``grid``: a regular brick / tile pattern of joints (rows 8–30 px, bricks 1.5–3 × as long,
      alternate rows offset), rotated, over the whole crop or a band;
    * ``hatch``: 3–12 parallel gently waving lines (wood grain, fabric, railings).

    Drawn in a dark tone of the image's own colours and softened by a Gaussian like everything the
    camera saw (wire / twig: 0.5–1.0 px; grid / hatch: 0.7–1.5 px).  Returns the new *clean* image
    (clipped to 0..1)."""
    import cv2

    h, w = img.shape[:2]
    out = img.copy()
    for _ in range(int(count)):
        layer = np.zeros((h, w), np.float32)
        kind = kinds[int(rng.random() * len(kinds))]
        if kind == "wire":
            y0, y1 = rng.uniform(0, h, 2)
            sag = rng.uniform(0.0, 0.15) * h
            t = np.linspace(0, 1, 40)
            xy = np.stack([t * (w + 20) - 10, y0 + (y1 - y0) * t + sag * 4 * t * (1 - t)], 1)
            if rng.random() < 0.5:
                xy = xy[:, ::-1] * np.array([h / max(w, 1), w / max(h, 1)])
            _polyline(layer, xy, int(rng.choice([1, 1, 2, 3])))
        elif kind == "twig":
            p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            a = rng.uniform(0, 2 * np.pi)
            width = float(rng.uniform(1.5, 3.5))
            for _ in range(int(rng.integers(6, 18))):
                a += rng.normal(0, 0.25)
                q = p + rng.uniform(5, 14) * np.array([np.cos(a), np.sin(a)])
                _polyline(layer, np.stack([p, q]), max(1, int(round(width))))
                if rng.random() < 0.25:
                    b = a + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
                    _polyline(layer, np.stack([q, q + rng.uniform(6, 20) * np.array([np.cos(b), np.sin(b)])]), 1)
                p, width = q, max(1.0, width * 0.9)
        elif kind == "grid":
            row = rng.uniform(8, 30)
            brick = row * rng.uniform(1.5, 3.0)
            ang = rng.uniform(0, np.pi)
            c, s_ = np.cos(ang), np.sin(ang)
            thick = int(rng.choice([1, 1, 2]))
            big = 2 * max(h, w)
            cx, cy = w / 2, h / 2
            for k in range(-int(big / row), int(big / row) + 1):
                v = k * row
                a0 = np.array([cx - big * c - v * s_, cy - big * s_ + v * c])
                a1 = np.array([cx + big * c - v * s_, cy + big * s_ + v * c])
                _polyline(layer, np.stack([a0, a1]), thick)
                off = (k % 2) * brick / 2
                for m in range(-int(big / brick), int(big / brick) + 1):
                    u = m * brick + off
                    b0 = np.array([cx + u * c - v * s_, cy + u * s_ + v * c])
                    b1 = b0 + row * np.array([-s_, c])
                    _polyline(layer, np.stack([b0, b1]), thick)
            if rng.random() < 0.5:  # only a band of the crop
                yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
                d = (xx - rng.uniform(0, w)) * np.cos(ang + 1.0) + (yy - rng.uniform(0, h)) * np.sin(ang + 1.0)
                layer *= (np.abs(d) < rng.uniform(0.2, 0.5) * max(h, w)).astype(np.float32)
        else:  # hatch
            n = int(rng.integers(3, 13))
            gap = rng.uniform(3, 12)
            ang = rng.uniform(0, np.pi)
            d = np.array([np.cos(ang), np.sin(ang)])
            nrm = np.array([-d[1], d[0]])
            c0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            t = np.linspace(-1, 1, 30)[:, None] * max(h, w)
            wave = rng.uniform(0, 3) * np.sin(t / rng.uniform(10, 40) + rng.uniform(0, 6))
            for k in range(n):
                _polyline(layer, c0 + t * d + (k * gap + wave) * nrm, int(rng.choice([1, 1, 2])))
        soft = rng.uniform(0.5, 1.0) if kind in ("wire", "twig") else rng.uniform(0.7, 1.5)
        layer = cv2.GaussianBlur(np.clip(layer, 0, 1), (0, 0), sigmaX=float(soft))
        colour = _scene_colour(img, rng)
        a = (layer * rng.uniform(0.7, 1.0))[..., None]
        out = out * (1 - a) + colour * a
    return np.clip(out, 0, 1).astype(np.float32)

"""The output ensemble of ``auto``: the plan's result averaged with the U-Net's.

When ``auto`` does not take the U-Net path but its plan changed the image, the result is
``w · U-Net(input) + (1 − w) · plan(input)``.  The two restorations err in different ways — the plan
leaves fading and casts it did not measure, the U-Net smooths texture — so a mix is closer to the
original than either (Breiman, *Bagging predictors*, Machine Learning 24, 1996, for the same argument
over regressors).  For two estimates with uncorrelated errors of mean squared error ``m_p`` (plan) and
``m_u`` (U-Net) the mix with the least error gives the U-Net the weight ``m_p / (m_p + m_u) = 1 / (1 +
10^(−a/10))``, ``a = 10 log10(m_p / m_u)`` the U-Net's PSNR advantage in dB (inverse-variance
weighting).  ``auto`` does not know ``a``; the route forest predicts it (:meth:`.guided.Guide.route_advantage`),
noisily, so :func:`weight_for` takes that form with a centre and a scale (dB) and a largest weight, the
three chosen on validation pairs (:func:`hybrid.tools.train_guided.calibrate_blend`; largest weight 0,
the default of older bundles: off).  Shipped: largest weight 0.7, centre 0 dB, scale 3 dB — on the 61
validation sources × light / moderate / severe, ``auto`` gains +1.17 / +2.64 / +2.63 dB with the blend
against +0.93 / +1.68 / +2.11 without; the model card has the held-out tables.

Inside the inpainted mask (dilated by :data:`MASK_GUARD_PX`, feathered) the plan's pixels are kept: the
U-Net does not inpaint, and half a scratch would come back.  An image the plan left unchanged (judged
clean, or nothing predicted to help) is not blended: it comes back bit-identical.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: the largest weights, centres (dB) and scales (dB) of :func:`weight_for` tried on validation
MAX_WEIGHT_GRID = (0.0, 0.2, 0.3, 0.5, 0.7, 0.9)
CENTRE_GRID_DB = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
SCALE_GRID_DB = (3.0, 10.0)
#: px by which the inpainted mask is grown before the plan's pixels are kept there (the inpainting also
#: changes a rim around the mask), and the width (px) of the feathered edge after it
MASK_GUARD_PX = 3
MASK_FEATHER_PX = 2


def route_advantage_db(route: dict) -> float:
    """The U-Net's predicted PSNR advantage over the plan (dB) that ``auto``'s route report holds: the
    route forest's prediction, or in bundles without one the deep forest's gain less the plan's."""
    if "predicted_advantage_db" in route:
        return float(route["predicted_advantage_db"])
    return float(route.get("deep_learning_gain_db", 0.0) - route.get("ml_guided_gain_db", 0.0))


def weight_for(advantage_db: float, max_weight: float, centre_db: float = 0.0, scale_db: float = 10.0) -> float:
    """The U-Net's weight (0..``max_weight``) for a predicted PSNR advantage of the U-Net over the plan
    (dB): ``max_weight / (1 + 10^(−(advantage_db − centre_db) / scale_db))`` — with centre 0, scale
    10 dB and largest weight 1 the inverse-MSE weight of two estimates with uncorrelated errors."""
    if not 0.0 <= max_weight <= 1.0:
        raise ValueError(f"blend weight must be in 0..1, got {max_weight}")
    if not scale_db > 0:
        raise ValueError(f"blend scale must be > 0 dB, got {scale_db}")
    z = -(float(advantage_db) - centre_db) / scale_db
    return float(max_weight / (1.0 + 10.0 ** min(z, 30.0)))


def mse_terms(clean: np.ndarray, plan_out: np.ndarray, unet_out: np.ndarray,
              inpainted: Optional[np.ndarray] = None) -> tuple:
    """``(A, B, C)`` with ``MSE(w) = A + 2wB + w²C`` the mean squared error of :func:`blend` at weight
    ``w`` against ``clean`` (exact: a convex mix of two images in 0..1 needs no clipping) — so a
    calibration scores every weight from three numbers."""
    e = np.asarray(plan_out, np.float64) - np.asarray(clean, np.float64)
    d = weight_map(1.0, np.shape(plan_out), inpainted).astype(np.float64) * (
        np.asarray(unet_out, np.float64) - np.asarray(plan_out, np.float64))
    return float(np.mean(e * e)), float(np.mean(e * d)), float(np.mean(d * d))


def weight_map(weight: float, shape, inpainted: Optional[np.ndarray] = None) -> np.ndarray:
    """The U-Net's weight per pixel, ``[H, W, 1]`` float32 in 0..``weight``: ``weight`` everywhere but
    0 inside ``inpainted`` (bool ``[H, W]``) grown by :data:`MASK_GUARD_PX` px, rising to ``weight`` over
    :data:`MASK_FEATHER_PX` px."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in 0..1, got {weight}")
    h, w = shape[:2]
    wmap = np.full((h, w, 1), weight, np.float32)
    if inpainted is None or not np.any(inpainted):
        return wmap
    import cv2

    m = np.asarray(inpainted, bool)
    if m.shape != (h, w):
        raise ValueError(f"inpainted mask {m.shape} does not match the image {(h, w)}")
    # distance (px) of every pixel to the nearest masked one
    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
    ramp = np.clip((dist - MASK_GUARD_PX) / max(MASK_FEATHER_PX, 1), 0.0, 1.0)
    return (wmap[..., 0] * ramp.astype(np.float32))[..., None]


def blend(plan_out: np.ndarray, unet_out: np.ndarray, weight: float,
          inpainted: Optional[np.ndarray] = None) -> np.ndarray:
    """``weight`` × ``unet_out`` + (1 − ``weight``) × ``plan_out`` (both ``[H, W, C]`` float 0..1, same
    shape), the plan's pixels kept in and around ``inpainted`` (:func:`weight_map`); float32, clipped to
    0..1.  Neither input is changed."""
    plan_out = np.asarray(plan_out, np.float32)
    unet_out = np.asarray(unet_out, np.float32)
    if plan_out.shape != unet_out.shape:
        raise ValueError(f"blend: the plan's output {plan_out.shape} and the U-Net's {unet_out.shape} differ")
    wm = weight_map(weight, plan_out.shape, inpainted)
    return np.clip(plan_out + wm * (unet_out - plan_out), 0.0, 1.0).astype(np.float32)

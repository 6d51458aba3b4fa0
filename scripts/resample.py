"""Resampling images (float 0..1) to a new size; every channel given is resampled.

* :func:`bicubic` — a torch batch ``[B, H, W, C]``, antialiased bicubic (Keys a = −0.75;
  area-like when shrinking): the Real-ESRGAN node's ``output_scale``.
* :func:`lanczos` — one numpy image ``[H, W, C]``, Lanczos-4 (OpenCV ``INTER_LANCZOS4``, 8×8 taps):
  the classical stand-in when an upscaling model fails.

Both clip the result to 0..1.
"""
from __future__ import annotations

import numpy as np
import torch


def bicubic(image: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """``image`` resized to ``out_h x out_w`` (antialiased bicubic); unchanged when the size matches."""
    if image.shape[1] == out_h and image.shape[2] == out_w:
        return image
    x = image.permute(0, 3, 1, 2)
    y = torch.nn.functional.interpolate(x, size=(int(out_h), int(out_w)), mode="bicubic",
                                        align_corners=False, antialias=True)
    return y.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def lanczos(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """One image ``[H, W, C]`` resized to ``out_h x out_w`` with Lanczos-4 interpolation."""
    import cv2

    a = np.asarray(image, np.float32)
    out = cv2.resize(a, (int(out_w), int(out_h)), interpolation=cv2.INTER_LANCZOS4)
    return np.clip(out.reshape(int(out_h), int(out_w), a.shape[-1]), 0.0, 1.0)

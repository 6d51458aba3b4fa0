"""Write icon.png, the pack's square icon for the Comfy Registry (256 px, ``[tool.comfy] Icon``).

A crop of skimage's 'astronaut' (NASA photograph of Eileen Collins, public domain) split on the
diagonal: damaged (faded sepia, blurred, grainy, scratched) above, the original below, inside a rounded
dark frame.  Deterministic.  Run: ``.venv/bin/python tests/make_icon.py``.
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

SIDE = 256
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_icon(path: str = os.path.join(REPO, "icon.png")) -> str:
    photo = Image.fromarray(data.astronaut()[15:265, 115:365]).resize((SIDE - 32, SIDE - 32), Image.LANCZOS)
    clean = np.asarray(photo, np.float64) / 255.0
    blurred = np.asarray(photo.filter(ImageFilter.GaussianBlur(2.2)), np.float64) / 255.0
    grey = blurred @ np.array([0.299, 0.587, 0.114])
    sepia = np.stack([grey * 1.07, grey * 0.93, grey * 0.70], -1)
    damaged = 0.25 + 0.55 * (0.35 * blurred + 0.65 * sepia)
    damaged += np.random.default_rng(3).normal(0.0, 0.05, damaged.shape)
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for x0, slope in ((60, 0.15), (150, -0.1)):  # two scratches
        damaged[np.abs(xx - (x0 + slope * yy)) < 1.2] = 0.92
    upper = (xx + yy) < w  # above the anti-diagonal: damaged
    inner = np.where(upper[..., None], np.clip(damaged, 0, 1), clean)
    inner[np.abs(xx + yy - w) < 2] = 1.0  # the split line
    icon = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    frame = Image.new("L", (SIDE, SIDE), 0)
    ImageDraw.Draw(frame).rounded_rectangle([0, 0, SIDE - 1, SIDE - 1], radius=40, fill=255)
    icon.paste((24, 32, 48, 255), (0, 0), frame)
    pic = Image.fromarray((inner * 255 + 0.5).astype(np.uint8))
    mask = Image.new("L", pic.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, pic.size[0] - 1, pic.size[1] - 1], radius=28, fill=255)
    icon.paste(pic, (16, 16), mask)
    icon.save(path, optimize=True)
    return path


if __name__ == "__main__":
    print("wrote", make_icon())

"""Before/after thumbnails for the README's shell section, made by the commands the README shows.

For each tool: ``restorekit run NODE examples/images/X.png -o <tmp>`` (the node's defaults, or the
settings given), then ``docs/cli_<name>.jpg``: input | output side by side, 200 px high.
Run: ``.venv/bin/python tests/make_readme_images.py``.
"""
import os
import sys
import tempfile

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workflows as W  # noqa: E402

TOOLS = [  # (name, node, input image, extra arguments)
    ("lbclahe", "RestoreKitLBCLAHE", "coffee_low_contrast.png", []),
    ("retinex", "RestoreKitRetinex", "chelsea_uneven_light.png", ["--set", "mode=MSR-intensity"]),
    ("sharpen", "RestoreKitSmartSharpen", "soft_chelsea.png", []),
]
HEIGHT = 200


def side_by_side(before: str, after: str, path: str, height: int = HEIGHT, quality: int = 85) -> str:
    """``before | after`` (6 px white gap; file paths or PIL images), both scaled to ``height`` px, saved
    as JPEG ``path``."""
    a, b = ((p if isinstance(p, Image.Image) else Image.open(p)).convert("RGB") for p in (before, after))
    a, b = (im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in (a, b))
    canvas = Image.new("RGB", (a.width + b.width + 6, height), "white")
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + 6, 0))
    canvas.save(path, quality=quality, optimize=True)
    return path


def main() -> int:
    W.load_pack()
    from restorekit.hybrid.tools import cli

    docs = os.path.join(W.REPO, "docs")
    os.makedirs(docs, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, node, image, extra in TOOLS:
            src = os.path.join(W.IMAGES_DIR, image)
            assert cli.main(["run", node, src, "-o", tmp, "--no-progress", *extra]) == 0
            out = os.path.join(tmp, os.path.splitext(image)[0] + f"_{node[len('RestoreKit'):].lower()}.png")
            print("wrote", side_by_side(src, out, os.path.join(docs, f"cli_{name}.jpg")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

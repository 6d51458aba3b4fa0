"""Before/after of the README's main job: ``restorekit restore examples/images -o <tmp>``, shown.

Runs the main job exactly as the README gives it (the shipped models, strategy ``auto``), then writes

* ``docs/before_after_<stem>.jpg`` for every file the job changed: input | output side by side,
  140 px high (small JPEGs; earlier ones are deleted first, so the set always matches the run);
* the table of what happened to each file — the stages that ran with their parameters, or
  "unchanged" and why, from ``restore_report.json`` — and, for the damaged samples whose clean source
  is known (``hybrid.tools.damage.EXAMPLES``), PSNR against that source before and after;

and puts both into README.md between the ``before-after`` markers of the main-job section (also
printed).  Rerun it whenever the engine or the example images change:

    .venv/bin/python docs/make_before_after.py
"""
import glob
import json
import os
import re
import sys
import tempfile
import time

import numpy as np
from PIL import Image

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
sys.path.insert(0, os.path.join(REPO, "tests"))
from _repo import load_pack  # noqa: E402
from make_readme_images import side_by_side  # noqa: E402

HEIGHT = 140
START, END = "<!-- before-after:start -->", "<!-- before-after:end -->"


def _denoisers() -> str:
    """What the plan's denoise stage can use in this environment."""
    from restorekit.scripts.bm3d_denoise import bm3d_available
    from restorekit.scripts.pretrained import available_pretrained

    nets = [m.name for m in available_pretrained() if m.task == "denoise" and m.available]
    have = [f"pretrained {', '.join(nets)}"] if nets else []
    have += ["bm3d package"] if bm3d_available() else []
    return ", ".join(have + ["DFT Wiener filter"])


def _pixels(path: str) -> np.ndarray:
    """An image file as float32 ``[H, W, 3]`` 0..1 (any bit depth; grey replicated, alpha dropped)."""
    from restorekit.scripts import image_io

    px = image_io.read_image(path).pixels
    px = px[..., None] if px.ndim == 2 else px
    return np.repeat(px, 3, axis=-1) if px.shape[-1] == 1 else px[..., :3]


def _thumb_image(path: str) -> Image.Image:
    return Image.fromarray(np.round(np.clip(_pixels(path), 0, 1) * 255).astype(np.uint8))


def _psnr_pair(name: str, before: str, after: str):
    """PSNR (dB) of input and output against the clean source of a generated sample, else None."""
    from restorekit.hybrid.tools import damage
    from restorekit.scripts.metrics import psnr

    spec = damage.EXAMPLES.get(name)
    if spec is None:
        return None
    clean = damage.load_source(spec[0], 384)
    a, b = _pixels(before), _pixels(after)
    if a.shape != clean.shape:
        return None
    return psnr(a, clean), psnr(b, clean)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main() -> int:
    load_pack()
    from restorekit.hybrid.tools import cli
    from restorekit.hybrid.tools.batch import step_text

    images = os.path.join(REPO, "examples", "images")
    for old in glob.glob(os.path.join(DOCS, "before_after_*.jpg")):
        os.remove(old)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rc = cli.main(["restore", images, "-o", tmp, "--no-progress"])
        wall = time.perf_counter() - t0
        if rc not in (0, 1):
            return rc
        with open(os.path.join(tmp, "restore_report.json"), encoding="utf-8") as f:
            report = json.load(f)
        rows, thumbs = [], []
        for r in sorted(report["files"], key=lambda r: os.path.basename(r["input"])):
            name = os.path.basename(r["input"])
            if r["status"] not in ("restored", "unchanged"):
                continue
            out = r["outputs"][0]
            if r["status"] == "restored":
                what = " → ".join(step_text(s) for s in r.get("steps") or []) or ", ".join(r.get("stages") or [])
                thumb = os.path.join(DOCS, f"before_after_{os.path.splitext(name)[0]}.jpg")
                side_by_side(_thumb_image(r["input"]), _thumb_image(out), thumb, height=HEIGHT, quality=75)
                thumbs.append((name, os.path.relpath(thumb, REPO)))
            else:
                what = "unchanged: " + (r.get("category") or r.get("reason") or "")
            pair = _psnr_pair(name, r["input"], out)
            score = f"{pair[0]:.2f} → {pair[1]:.2f}" if pair else ""
            rows.append(f"| `{name}` | {r.get('severity', '')} → {r.get('method', '')} | {_cell(what)} | {score} | "
                        f"{r.get('seconds', '')} |")
    lines = [START,
             f"What the main job did with each sample (`docs/make_before_after.py`, {len(rows)} files, "
             f"{wall:.0f} s on this machine; PSNR against the clean source where the sample was generated from one). "
             f"Denoisers installed here: {_denoisers()}; without the optional `bm3d` package grain goes to the DFT "
             "Wiener filter, and without the `[weights]` extra white noise too (the `backend` column says which ran):",
             "", "| file | severity → method | stages and parameters, or why unchanged | PSNR in → out (dB) | s |",
             "|---|---|---|---|---|", *rows, ""]
    for i in range(0, len(thumbs), 3):
        part = thumbs[i:i + 3]
        lines.append("| " + " | ".join(f"`{n}`" for n, _ in part) + " |")
        lines.append("|" + "---|" * len(part))
        lines.append("| " + " | ".join(f"![{n} before and after]({p})" for n, p in part) + " |")
        lines.append("")
    lines.append(END)
    block = "\n".join(lines)
    print(block)
    readme_path = os.path.join(REPO, "README.md")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    if START in readme and END in readme:
        readme = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
        with open(readme_path, "w", encoding="utf-8") as f:
            f.write(readme)
    else:
        print(f"README.md has no {START} ... {END} markers: the block above was not inserted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

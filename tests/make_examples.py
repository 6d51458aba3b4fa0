"""Write the UI workflows and thumbnails of the examples from their API prompts.

For each examples/api/X.json: examples/X.json (UI format, what ComfyUI's Save writes; the Templates
browser lists it) and examples/X.jpg (thumbnail, <= 256 px: the output image of running X in-process
through the pack's own nodes; for examples that need model files, which run here with small
random-weight files, the input image instead, since a random network's output shows nothing; examples
whose models all ship with the pack show their real output).

    .venv/bin/python tests/make_examples.py [NAME ...]       # all examples, or only these
    .venv/bin/python tests/make_examples.py --check          # validate only, write nothing
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workflows as W  # noqa: E402


def make_old_photo(path: str) -> str:
    """examples/images/old_photo.png: a faded, blurred, noisy 160x160 crop of skimage's 'astronaut'
    (NASA photograph of Eileen Collins, public domain). Deterministic (seeded)."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from skimage import data, transform

    img = data.astronaut()[20:260, 120:360].astype(np.float64) / 255.0
    img = transform.resize(img, (160, 160), anti_aliasing=True)
    img = np.stack([gaussian_filter(img[..., c], 1.3) for c in range(3)], axis=-1)   # lens blur
    grey = img @ np.array([0.299, 0.587, 0.114])
    sepia = np.stack([grey * 1.07, grey * 0.95, grey * 0.74], axis=-1)
    img = 0.55 * img + 0.45 * sepia                                                  # faded dyes
    img = 0.22 + 0.6 * img                                                           # lost contrast
    img += np.random.default_rng(7).normal(0.0, 0.035, img.shape)                    # grain
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def make_scan16(path: str) -> str:
    """examples/images/scan16_grey.png: a 16-bit greyscale 'archive scan', 192x192: skimage's 'camera'
    (CC0) crop, resampled in float (so it holds thousands of grey levels, not 256), a faint vignette
    and scanner noise (std 0.012).  Deterministic (seeded)."""
    import cv2
    import numpy as np
    from skimage import data, transform

    img = data.camera()[40:424, 100:484].astype(np.float64) / 255.0
    img = transform.resize(img, (192, 192), anti_aliasing=True)
    yy, xx = np.mgrid[-1:1:192j, -1:1:192j]
    img = 0.08 + 0.84 * img * (1.0 - 0.18 * (xx ** 2 + yy ** 2))
    img += np.random.default_rng(16).normal(0.0, 0.012, img.shape)
    cv2.imwrite(path, np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="example names (default: all in examples/api)")
    ap.add_argument("--check", action="store_true", help="validate and run, write nothing")
    ap.add_argument("--wrap", action="store_true",
                    help="rewrite bare-prompt files in examples/api as POST bodies {\"prompt\": ..., \"_meta\": ...}")
    args = ap.parse_args(argv)
    W.load_pack()
    old_photo = os.path.join(W.IMAGES_DIR, "old_photo.png")
    if not os.path.exists(old_photo) and not args.check:
        os.makedirs(W.IMAGES_DIR, exist_ok=True)
        print("wrote", make_old_photo(old_photo))
    scan16 = os.path.join(W.IMAGES_DIR, "scan16_grey.png")
    if not os.path.exists(scan16) and not args.check:
        print("wrote", make_scan16(scan16))
    examples = [e for e in W.load_examples() if not args.names or e.name in args.names]
    if args.wrap:
        for ex in examples:
            if ex.plain:
                meta = dict(ex.meta)
                if ex.models and "models" not in meta:
                    meta["models"] = [{k: v for k, v in m.items() if k != "inferred"} for m in ex.models]
                body = {"prompt": ex.prompt, "_meta": meta}
                with open(ex.path, "w", encoding="utf-8") as f:
                    json.dump(body, f, indent=1)
                    f.write("\n")
                print(f"wrapped {ex.path}")
        examples = [W.read_example(e.path) for e in examples]
    classes = W.node_classes()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for ex in examples:
            t0 = time.perf_counter()
            try:
                for warning in W.validate_body(ex):  # file format: reported, fixed by --wrap
                    print(f"WARN {warning}")
                W.write_models(ex, os.path.join(tmp, "models"))
                problems = W.validate_prompt(ex.prompt, classes, where=ex.name)
                if problems:
                    raise ValueError("; ".join(problems))
                result = W.execute_prompt(ex.prompt, os.path.join(tmp, "out", ex.name), classes=classes)
                image = W.final_image(result)
                thumb_src = image
                if ex.models and not all(m.get("shipped") for m in ex.models):
                    # random weights give noise: show the input the real model restores
                    loads = [n for n in result.order if ex.prompt[n]["class_type"] == "LoadImage"]
                    thumb_src = result.outputs[loads[0]][0] if loads else image
                if not args.check:
                    with open(os.path.join(W.EXAMPLES_DIR, ex.name + ".json"), "w", encoding="utf-8") as f:
                        json.dump(W.api_to_ui(ex, classes), f, indent=2)
                        f.write("\n")
                    W.thumbnail(thumb_src, os.path.join(W.EXAMPLES_DIR, ex.name + ".jpg"))
                if not ex.description:
                    print(f"NOTE {ex.name}: no _meta.description (the template gets no explanatory note)")
                print(f"OK   {ex.name}: {len(ex.prompt)} nodes, output {tuple(image.shape)}, "
                      f"{time.perf_counter() - t0:.1f} s{'' if args.check else ', wrote ' + ex.name + '.json/.jpg'}")
            except Exception as exc:  # report every example, then fail
                failed += 1
                print(f"FAIL {ex.name}: {type(exc).__name__}: {exc}")
    print(f"{len(examples) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every API example in-process and save every node output, or compare two such snapshots.

A refactor that must keep behaviour identical runs this before and after and compares:

    python tests/snapshot_examples.py save OUT_DIR [--api-dir DIR] [NAME ...]
    python tests/snapshot_examples.py compare BEFORE_DIR AFTER_DIR

``save`` writes, per example, ``OUT_DIR/<example>.npz`` (each tensor output of each node as float32,
keyed ``<node id>_<output index>``) and ``OUT_DIR/<example>.json`` (the text outputs, e.g. ``info``).
The models an example names are the small seeded random-weight files of ``tests/_workflows.py``, so two
runs on one machine see the same weights.  ``compare`` prints the largest absolute difference of every
image output and whether each text output changed; exit status 1 when an image differs.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workflows as W  # noqa: E402


def save(out_dir: str, api_dir: str, names) -> int:
    import torch

    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    W.load_pack()
    classes = W.node_classes()
    examples = [e for e in W.load_examples(api_dir) if not names or e.name in names]
    with tempfile.TemporaryDirectory() as tmp:
        for ex in examples:
            W.write_models(ex, os.path.join(tmp, "models"))
            result = W.execute_prompt(ex.prompt, os.path.join(tmp, "out", ex.name), classes=classes)
            arrays, texts = {}, {}
            for nid, outs in result.outputs.items():
                for i, value in enumerate(outs):
                    if isinstance(value, torch.Tensor):
                        arrays[f"{nid}_{i}"] = value.detach().cpu().float().numpy()
                    elif isinstance(value, str):
                        texts[f"{nid}_{i}"] = value
            np.savez_compressed(os.path.join(out_dir, ex.name + ".npz"), **arrays)
            with open(os.path.join(out_dir, ex.name + ".json"), "w", encoding="utf-8") as f:
                json.dump(texts, f, indent=1, ensure_ascii=False)
            print(f"saved {ex.name}: {len(arrays)} image output(s), {len(texts)} text output(s)")
    return 0


#: info lines that change from run to run (timings, memory) and are left out of the text comparison
VOLATILE = re.compile(r"^(seconds|time|total time|runner time|time \\(s\\)|peak RAM|peak VRAM|plan|"
                      r"analysis_seconds)\b|\"seconds\": |\"analysis_seconds\": ")


def _stable_lines(text: str):
    return [line for line in str(text).splitlines() if not VOLATILE.search(line)]


def compare(before: str, after: str, verbose: bool = False) -> int:
    names = sorted(f[:-4] for f in os.listdir(before) if f.endswith(".npz"))
    differs = 0
    for name in names:
        a = np.load(os.path.join(before, name + ".npz"))
        path_b = os.path.join(after, name + ".npz")
        if not os.path.exists(path_b):
            print(f"{name}: missing in {after}")
            differs += 1
            continue
        b = np.load(path_b)
        for key in sorted(set(a.files) | set(b.files)):
            if key not in a.files or key not in b.files:
                print(f"{name} {key}: only in {'before' if key in a.files else 'after'}")
                differs += 1
                continue
            if a[key].shape != b[key].shape:
                print(f"{name} {key}: shape {a[key].shape} -> {b[key].shape}")
                differs += 1
                continue
            d = float(np.abs(a[key].astype(np.float64) - b[key]).max()) if a[key].size else 0.0
            differs += d > 0
            if d > 0 or verbose:
                print(f"{name} {key}: max |diff| {d:.3g}")
        with open(os.path.join(before, name + ".json"), encoding="utf-8") as f:
            ta = json.load(f)
        with open(os.path.join(after, name + ".json"), encoding="utf-8") as f:
            tb = json.load(f)
        for key in sorted(set(ta) | set(tb)):
            la, lb = _stable_lines(ta.get(key, "")), _stable_lines(tb.get(key, ""))
            if la != lb:
                print(f"{name} {key}: text changed")
                for line in difflib.unified_diff(la, lb, lineterm="", n=0):
                    if not line.startswith(("---", "+++", "@@")):
                        print("    " + line)
    print(f"{differs} image output(s) differ")
    return 1 if differs else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("out_dir")
    s.add_argument("--api-dir", default=W.API_DIR)
    s.add_argument("names", nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("-v", "--verbose", action="store_true", help="also list the outputs that are equal")
    args = ap.parse_args(argv)
    if args.cmd == "save":
        return save(args.out_dir, args.api_dir, args.names)
    return compare(args.before, args.after, args.verbose)


if __name__ == "__main__":
    sys.exit(main())

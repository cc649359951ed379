"""What several subcommands share: model-spec help, similarity modes, runtime flags,
`--force`, counted arguments and the report of unreadable images."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dalip.evaluation.suite_file import Suite
from dalip.inference.runtime import Runtime
from dalip.report.text import printable

MODES = ("fused", "first", "second", "default", "all")  # default: the mode the model answers with
ANSWER_HELP = "the model's own: stored with it by `dalip train`, else first"
MODEL_HELP = (
    "dalip checkpoint, local-dir:FOLDER or hf-hub:ORG/REPO (open_clip folders), or "
    "openclip:ARCH:WEIGHTS (file or tag); prefix NAME= to name it"
)


def count(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= minimum (argparse reports anything else, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def add_set_flag(parser: argparse.ArgumentParser, example: str) -> None:
    """--set FIELD=VALUE (repeatable) into `args.overrides`: a training config's field."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help=f"override a config field (repeatable), e.g. {example}",
    )


def add_force_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"replace {what} (a folder: only the files an earlier run of this command wrote)",
    )


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--batch-size", type=count(1), default=None, help="images per batch (default 64, or the suite's)"
    )
    group.add_argument(
        "--workers", type=count(0), default=None, help="DataLoader worker processes (default 0)"
    )
    group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16 autocast (GPU)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def runtime_from_flags(args: argparse.Namespace, suite: Suite | None = None) -> Runtime:
    """The runtime flags as a Runtime; unset sizes come from the suite (else 64 and 0)."""
    batch_size = args.batch_size or (suite.batch_size if suite else 64)
    workers = args.workers if args.workers is not None else (suite.workers if suite else 0)
    return Runtime(batch_size, workers, args.device, args.precision, show_progress(args))


def show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def report_unreadable(paths: list[str], used: list[str]) -> list[str]:
    """The images that could not be read, also said on stderr (results leave them out)."""
    kept = set(used)
    unreadable = [path for path in paths if path not in kept]
    if unreadable:
        shown = ", ".join(map(printable, unreadable[:5])) + (
            f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        )
        print(
            f"warning: {len(unreadable)} of {len(paths)} images could not be read and are left out: {shown}",
            file=sys.stderr,
        )
    return unreadable

"""The `dalip` command: one subcommand per job, each a thin layer over the library.

The command-line layer is this package: this module plus one module per subcommand, each
exposing `add_parsers(subparsers)`; library code never parses arguments. Library code raises `ValueError` / `FileNotFoundError` for mistakes a user
can make; `main` turns them into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from dalip import __version__
from dalip.cli import embed, export, interpolate, make_dataset, predict, quickstart, serve, train
from dalip.cli import eval as eval_command

Handler = Callable[[argparse.Namespace], int]

# Modules that add subcommands, in the order `dalip --help` lists them.
COMMAND_MODULES = (quickstart, make_dataset, train, eval_command, predict, embed, export, interpolate, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dalip",
        description="Distribution Alignment-based Language-Image Pre-training on OpenCLIP.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"dalip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dalip` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # open_clip logs its progress on the root logger: keep that at WARNING, ours at INFO.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s", force=True)
    logging.getLogger("dalip").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError) as error:
        print(f"dalip {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. no network for a pretrained tag, a full disk
        print(f"dalip {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"dalip {args.command}: interrupted", file=sys.stderr)
        return 130

"""The `dalip` command: one subcommand per job, each a thin layer over the library.

Only this module parses command lines. Library code raises `ValueError` /
`FileNotFoundError` for mistakes a user can make; `main` turns them into one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


class UsageError(ValueError):
    """A mistake on the command line itself (exit status 2)."""


def _add_make_dataset(subparsers: argparse._SubParsersAction) -> None:
    from dalip.data import cli_commands as data_cli

    data_cli.add_make_dataset_parser(subparsers)


# Each entry adds one subcommand; the parser's `handler` default names its function.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_make_dataset,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dalip",
        description="Distribution Alignment-based Language-Image Pre-training on OpenCLIP.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dalip` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
        print(f"dalip {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dalip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

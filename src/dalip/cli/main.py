"""The `dalip` command: one subcommand per job, each a thin layer over the library.

The command-line layer is this package: this module plus one module per subcommand, each
exposing `add_parsers(subparsers)`; library code never parses arguments. Library code
raises `ValueError` / `FileNotFoundError` for mistakes a user can make; `main` turns them
into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from dalip import __version__
from dalip.report.text import printable

Handler = Callable[[argparse.Namespace], int]

# Subcommand -> the module of this package that adds it, in the order `dalip --help` lists them.
# A command line loads only the module it names (all of them for --help or a mistake), so
# `dalip train` on every rank does not import the evaluation stack (scikit-learn, matplotlib):
# seconds of start-up.
COMMANDS = {
    "quickstart": "quickstart",
    "make-dataset": "make_dataset",
    "train": "train",
    "eval": "eval",
    "predict": "predict",
    "embed": "embed",
    "export": "export",
    "models": "models",
    "interpolate": "interpolate",
    "frontier": "frontier",
    "mixlaw": "mixlaw",
    "serve": "serve",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the usage is one --help away), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(' '.join(message.split()))} (see {self.prog} --help)\n")


class PrintableFormatter(logging.Formatter):
    """Log lines with the control characters of their message escaped (`printable`): a
    warning may quote a folder or file name from the user's data."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `dalip` parser; with `argv`, only the subcommand it names (when it names one)."""
    parser = OneLineParser(
        prog="dalip",
        description="Distribution Alignment-based Language-Image Pre-training on OpenCLIP.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"dalip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = next((token for token in argv or () if not token.startswith("-")), None)
    for command, module in COMMANDS.items():
        if named not in COMMANDS or command == named:
            importlib.import_module(f"dalip.cli.{module}").add_parsers(subparsers)
    return parser


# Mistakes a user can make (a wrong value, a missing or misplaced file, a folder that is
# not ours to write): one line on stderr and exit status 2. Other OSErrors (a full disk,
# no network) exit with 1; anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


# OSErrors that a path the user gave causes: a symbolic link loop, a name too long.
USER_ERRNOS = (errno.ELOOP, errno.ENAMETOOLONG)


def one_line(error: BaseException) -> str:
    """The error as one line, control characters escaped (`printable`); an OSError as
    "PATH: what went wrong" (no "[Errno N]")."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror.lower()}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
    else:
        text = str(error) or type(error).__name__
    if "Original Traceback" in text:  # raised in a DataLoader worker: keep the error itself
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return printable(" ".join(text.split()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dalip` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a usage mistake (one line already printed), --help or --version
        return stop.code if isinstance(stop.code, int) else 0
    # open_clip logs its progress on the root logger: keep that at WARNING, ours at INFO.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s", force=True
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(PrintableFormatter("%(message)s"))
    logging.getLogger("dalip").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # open_clip's feature gather calls an API torch 2.14 deprecates, warning at every step.
    warnings.filterwarnings(
        "ignore", r"torch\.distributed\.nn\.functional\.all_gather is deprecated", FutureWarning
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except USER_ERRORS as error:
        print(f"dalip {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. no network for a pretrained tag, a full disk
        print(f"dalip {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2 if error.errno in USER_ERRNOS else 1
    except KeyboardInterrupt:
        print(f"dalip {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        if not interrupted(error):
            raise
        print(f"dalip {args.command}: interrupted", file=sys.stderr)
        return 130


def interrupted(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the causes or contexts of `error`: Ctrl-C inside
    torch.save comes out as a RuntimeError ("unexpected pos ...") with the interrupt as context."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            return True
        cause = cause.__cause__ or cause.__context__
    return False

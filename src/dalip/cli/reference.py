"""The command-line reference, generated from the argparse parsers `dalip` itself runs, so that the
documentation and `dalip COMMAND --help` agree by construction. The documentation site builds its
page from `cli_reference()` (docs/hooks.py)."""

from __future__ import annotations

import argparse

from dalip.cli.main import COMMANDS, build_parser


def subcommand_parsers(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """{command: its parser}, in the order `dalip --help` lists them."""
    parser = parser or build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    choices = actions[0].choices
    return {name: choices[name] for name in COMMANDS}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        formatter = argparse.HelpFormatter("dalip")
        metavar = " " + formatter._format_args(action, action.dest.upper())
    return ", ".join(f"`{option}{metavar}`" for option in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], ""):
        return ""
    return f"`{action.default}`"


def command_reference(name: str, parser: argparse.ArgumentParser) -> str:
    """Markdown of one subcommand: what it does, its usage line, and a row per argument."""
    formatter = parser._get_formatter()
    lines = [f"## `dalip {name}`", "", _cell(parser.description or ""), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    lines += ["| argument | default | what |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        helptext = formatter._expand_help(action) if action.help else ""
        lines.append(f"| {_cell(_argument(action))} | {_default(action)} | {_cell(helptext)} |")
    return "\n".join(lines) + "\n"


def cli_reference() -> str:
    """Markdown of every subcommand, in `dalip --help`'s order."""
    return "\n".join(command_reference(name, parser) for name, parser in subcommand_parsers().items())

"""The documentation (README.md and docs/) against the code: every `dalip` command line in a shell
block parses with the real argument parser, every inline `dalip COMMAND --flag` names a real
command and flag, the generated references cover every option and argument, and README stays a
short page for users."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from dalip.cli.main import build_parser
from dalip.cli.reference import cli_reference, subcommand_parsers
from dalip.config import TrainConfig
from dalip.config_reference import FIELD_DOCS, config_reference, leaf_fields

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    blocks, language, body = [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if language is None:
                language, body = line.strip().strip("`").strip(), []
            else:
                blocks.append((language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def shell_commands(text: str) -> list[str]:
    """The `dalip ...` commands of the shell blocks: continuation lines joined, comments and the
    other commands of a `&&` chain left out."""
    commands = []
    for language, body in code_blocks(text):
        if language not in SHELL:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#", line)[0].strip()
            for part in re.split(r"&&|\|\||;|\|", line):
                if part.strip().startswith("dalip "):
                    commands.append(part.strip())
    return commands


def prose(text: str) -> str:
    """`text` without its fenced blocks."""
    return re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_line_parses_with_the_real_parser(page, capsys):
    for command in shell_commands(page.read_text()):
        args = shlex.split(command)[1:]
        try:
            build_parser(args).parse_args(args)
        except SystemExit as stop:
            assert not stop.code, f"{command!r} does not parse: {capsys.readouterr().err.strip()}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_commands_name_real_commands_and_flags(page):
    parsers = subcommand_parsers()
    for span in re.findall(r"`(dalip [^`]+)`", prose(page.read_text())):
        words = span.split()
        if words[1].startswith("-") or words[1].isupper():  # `dalip --help`, `dalip COMMAND ...`
            continue
        command = words[1].rstrip(":")
        assert command in parsers, f"{page.name}: `{span}` names no dalip command"
        known = {option for action in parsers[command]._actions for option in action.option_strings}
        for word in words[2:]:
            flag = word.split("=")[0].strip("[]()")
            assert not flag.startswith("--") or flag in known, f"{page.name}: `{span}`: no flag {flag}"


def test_the_parse_checks_catch_a_renamed_flag():
    text = "```bash\ndalip train --config a.yaml --sett x=1\n```\nand `dalip eval --zeroshott DIR`"
    args = shlex.split(shell_commands(text)[0])[1:]
    with pytest.raises(SystemExit):
        build_parser(args).parse_args(args)
    assert re.findall(r"`(dalip [^`]+)`", prose(text)) == ["dalip eval --zeroshott DIR"]


def test_the_configuration_reference_has_a_row_per_option_with_its_default():
    names = [name for name, _, _ in leaf_fields()]
    assert len(names) == len(set(names)) and set(names) == set(FIELD_DOCS)
    table = config_reference()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    assert list(rows) == names
    defaults = TrainConfig()
    for name in ("optim.lr", "batch_size", "model.alpha", "data.workers", "precision"):
        section, _, key = name.rpartition(".")
        value = getattr(getattr(defaults, section) if section else defaults, key)
        assert f"| `{value}` |" in rows[name], rows[name]
    assert "(> 0)" in rows["optim.lr"] and "one of `fp32`, `bf16`, `amp`" in rows["precision"]
    assert "*experimental*" in rows["model.weighting"] and "*experimental*" not in rows["model.alpha"]


def test_a_new_option_without_a_line_fails_the_reference(monkeypatch):
    @dataclasses.dataclass
    class Extra(TrainConfig):
        new_option: int = 1

    monkeypatch.setattr("dalip.config_reference.TrainConfig", Extra)
    with pytest.raises(KeyError, match="new_option"):
        config_reference()


def test_the_command_line_reference_lists_every_command_and_argument():
    text = cli_reference()
    for name, parser in subcommand_parsers().items():
        assert f"## `dalip {name}`" in text
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings or [action.metavar or action.dest]:
                assert f"`{option}" in text, (name, option)


def test_the_site_hook_fills_in_the_generated_pages():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    for page, rows in (("reference/cli.md", 40), ("reference/configuration.md", 40), ("benchmarks.md", 10)):
        markdown = (ROOT / "docs" / page).read_text()
        filled = hooks.on_page_markdown(markdown, page=None, config=None, files=None)
        assert "<!-- generated" not in filled and filled.count("\n| ") > rows, page
    home = hooks.on_page_markdown(
        (ROOT / "docs" / "index.md").read_text(), page=None, config=None, files=None
    )
    assert home.startswith("# dalip") and "](docs/" not in home and "## Documentation" not in home


def test_readme_is_short_and_free_of_dates():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link

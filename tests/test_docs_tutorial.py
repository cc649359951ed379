"""The tutorial (docs/getting-started/tutorial.md) runs as written: its files (the blocks with a
`title`) are written, and its `dalip` commands run in order, in one folder. The only changes are
the start model (a pretrained ViT-B-16 becomes the tiny test model, as tests never download) and
the run's size (steps, batch, precision, workers); `dalip serve`, a server, is parsed only."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from cli_helpers import saved_checkpoint
from test_docs import ROOT, code_blocks, shell_commands

from dalip.cli import main
from dalip.cli.main import build_parser

TUTORIAL = ROOT / "docs" / "getting-started" / "tutorial.md"
START = "openclip:ViT-B-16:openai"


def tiny(text: str, start: Path) -> str:
    """The tutorial's run config with the tiny start model and a run small enough for a test."""
    replacements = {
        "name: ViT-B-16": "name: test-tiny\n  heads: 2\n  reduced_dim: 8",
        "pretrained: openai": f"pretrained: {start}",
        "steps: 1000": "steps: 3",
        "batch_size: 128": "batch_size: 8",
        "precision: bf16": "precision: fp32",
        "workers: 4": "workers: 0",
        "warmup_steps: 100": "warmup_steps: 1",
    }
    for old, new in replacements.items():
        assert old in text, f"the tutorial no longer says {old!r}: update this test"
        text = text.replace(old, new)
    return text


def titled_files(text: str) -> dict[str, str]:
    """{file name: content} of the blocks with a `title="..."`."""
    files = {}
    for language, body in code_blocks(text):
        match = re.search(r'title="([^"]+)"', language)
        if match:
            files[match.group(1)] = body + "\n"
    return files


@pytest.mark.slow  # 10-15 s: the tutorial's dataset, a training run, two evaluations, a WiSE-FT sweep
def test_the_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    start, _, _ = saved_checkpoint(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    text = TUTORIAL.read_text()
    files = titled_files(text)
    assert set(files) == {"my-plants.yaml", "my-suite.yaml", "species.txt"}
    for name, content in files.items():
        Path(name).write_text(tiny(content, start) if name == "my-plants.yaml" else content)
    commands = shell_commands(text)
    assert [c.split()[1] for c in commands] == [
        "make-dataset", "train", "eval", "interpolate", "predict", "serve"
    ]  # fmt: skip
    for command in commands:
        args = shlex.split(command.replace(START, str(start)))[1:]
        if args[0] == "serve":
            build_parser(args).parse_args(args)
            continue
        assert main(args) == 0, f"{command}: {capsys.readouterr().err[-2000:]}"
    # what the tutorial says each step leaves
    assert Path("runs/my-plants/model.safetensors").is_file()
    assert "tuned" in Path("runs/my-plants/eval/results.md").read_text()
    assert Path("runs/my-plants/wiseft/interpolation.md").is_file()
    assert Path("runs/my-plants/wiseft/models/wise_ft_0.75.safetensors").is_file()
    species = files["species.txt"].split("\n")
    classes = Path("example/plant/train/classes.txt").read_text()
    assert all(name in classes for name in species if name)  # the example's own species
    printed = capsys.readouterr().out
    assert any(name in printed for name in species if name)  # predict's answers
    # the Python blocks of the tutorial and of README run too (README's photo is one of the example's)
    Path("photo.jpg").write_bytes(Path("example/plant/test/00_pelmum_phii/000000.jpg").read_bytes())
    for page in (TUTORIAL, ROOT / "README.md"):
        for language, body in code_blocks(page.read_text()):
            if language == "python":
                exec(compile(body, f"{page.name} (python block)", "exec"), {})
    assert capsys.readouterr().out.strip() in species  # the tutorial's block prints a species


@pytest.mark.parametrize("text", ["steps: 999", "name: ViT-L-14"])
def test_a_changed_tutorial_fails_loudly(text, tmp_path):
    config = titled_files(TUTORIAL.read_text())["my-plants.yaml"]
    changed = (
        config.replace("steps: 1000", text) if "steps" in text else config.replace("ViT-B-16", "ViT-L-14")
    )
    with pytest.raises(AssertionError, match="no longer says"):
        tiny(changed, tmp_path / "start.safetensors")

"""`dalip frontier` on sweeps it did not make: pairs must come from one start model (and
the report says which seeds were paired), and a hand-edited sweep with a repeated weight,
an accuracy that is not one, or a recipe with no seed of the baseline's is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import user_error

from dalip.cli import main

START, OTHER = "a" * 64, "b" * 64


def _results(general: list[float], start: str | None = START, weights=(0.0, 0.5, 1.0)) -> dict:
    """What `dalip interpolate` writes (the parts `frontier` reads): plant 0.1 -> 0.3."""
    plant = [0.1 + 0.2 * w for w in weights]
    points = [
        {"weight": w, "summary": {"fused": {"domains": {"plant": p, "general": g}, "overall": p}}}
        for w, p, g in zip(weights, plant, general)
    ]
    results: dict = {"interpolation": points, "tuned": {"spec": "tuned.safetensors", "sha256": "c" * 64}}
    if start is not None:
        results["start"] = {"spec": "/runs/start/model.safetensors", "sha256": start}
    return results


def _sweeps(tmp_path: Path, **named: dict) -> list[str]:
    """--sweep arguments: each `recipe_seed=results` written to its own folder."""
    arguments = []
    for name, results in named.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(results))
        arguments.append(f"{name.replace('_', '@')}={folder}")
    return arguments


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"frontier.json holds {constant}: not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_sweeps_from_different_start_models_are_refused(tmp_path, capsys):
    sweeps = _sweeps(
        tmp_path, clip_0=_results([0.5, 0.45, 0.4]), dalip_0=_results([0.5, 0.46, 0.41], start=OTHER)
    )
    line = user_error(capsys, "frontier", "--sweep", *sweeps, "--out", tmp_path / "f")
    assert "dalip@0" in line and "clip@0" in line and "start model" in line
    assert OTHER[:12] in line and START[:12] in line
    assert not (tmp_path / "f" / "frontier.json").exists()


def test_the_report_says_which_seeds_were_paired_and_from_which_start(tmp_path, capsys):
    sweeps = _sweeps(
        tmp_path,
        clip_0=_results([0.5, 0.45, 0.40]),
        clip_1=_results([0.5, 0.44, 0.38]),
        dalip_0=_results([0.5, 0.46, 0.41]),
        dalip_1=_results([0.5, 0.46, 0.40]),
        dalip_2=_results([0.5, 0.47, 0.42]),
    )
    assert main(["frontier", "--sweep", *sweeps, "--out", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    paired_line = next(line for line in out.splitlines() if line.startswith("Paired seeds"))
    assert START[:12] in paired_line and "dalip 0, 1 (not 2:" in paired_line
    report = _strict((tmp_path / "f" / "frontier.json").read_text())
    assert report["start"]["model"] == START and report["start"]["unrecorded"] == []
    assert report["paired"]["dalip"]["seeds"] == ["0", "1"]
    assert report["paired"]["dalip"]["unpaired"] == ["2"]
    assert [sweep["start_model"] for sweep in report["sweeps"]] == [START] * 5


def test_a_sweep_without_a_recorded_start_model_is_paired_but_said_unchecked(tmp_path, capsys):
    sweeps = _sweeps(tmp_path, clip_0=_results([0.5, 0.45, 0.4]), dalip_0=_results([0.5, 0.46, 0.41], None))
    assert main(["frontier", "--sweep", *sweeps, "--out", str(tmp_path / "f")]) == 0
    paired_line = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("Paired seeds")
    )
    assert "dalip@0" in paired_line and "no start model" in paired_line
    report = _strict((tmp_path / "f" / "frontier.json").read_text())
    assert report["start"]["model"] == START and report["start"]["unrecorded"] == ["dalip@0"]


def test_a_repeated_weight_is_refused_naming_the_file_and_the_weight(tmp_path, capsys):
    repeated = _results([0.5, 0.49, 0.45, 0.4], weights=(0.0, 0.0, 0.5, 1.0))
    sweeps = _sweeps(tmp_path, clip_0=_results([0.5, 0.45, 0.4]), dalip_0=repeated)
    line = user_error(capsys, "frontier", "--sweep", *sweeps, "--out", tmp_path / "f")
    assert str(tmp_path / "dalip_0" / "results.json") in line and "w=0 " in line and "repeated" in line


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 45.0, "0.4", None])
def test_an_accuracy_that_is_not_one_is_refused_naming_the_file_and_the_field(tmp_path, capsys, value):
    sweeps = _sweeps(tmp_path, clip_0=_results([0.5, 0.45, 0.4]), dalip_0=_results([0.5, value, 0.41]))
    line = user_error(capsys, "frontier", "--sweep", *sweeps, "--out", tmp_path / "f")
    assert str(tmp_path / "dalip_0" / "results.json") in line
    assert "interpolation[1]" in line and "summary.fused.domains.general" in line
    assert not (tmp_path / "f" / "frontier.json").exists()


def test_a_non_finite_weight_is_refused_naming_the_file(tmp_path, capsys):
    sweeps = _sweeps(tmp_path, clip_0=_results([0.5, 0.45, 0.4], weights=(0.0, float("nan"), 1.0)))
    line = user_error(capsys, "frontier", "--sweep", *sweeps, "--out", tmp_path / "f")
    assert str(tmp_path / "clip_0" / "results.json") in line and "interpolation[1].weight" in line


@pytest.mark.parametrize("seeds", [("0", "1", "1"), ("0", "0", "1")])
def test_a_recipe_sharing_no_seed_with_the_baseline_is_refused(tmp_path, capsys, seeds):
    named = {
        f"{recipe}_{seed}": _results([0.5, 0.45, 0.4])
        for recipe, seed in zip(("clip", "dalip", "lora"), seeds)
    }
    line = user_error(capsys, "frontier", "--sweep", *_sweeps(tmp_path, **named), "--out", tmp_path / "f")
    unpaired = "dalip" if seeds[1] != "0" else "lora"
    assert f"recipe {unpaired} shares no seed with the baseline recipe clip" in line

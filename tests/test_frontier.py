"""The gain-retention frontier: readings worked out by hand, the paired intervals, and
`dalip frontier` from earlier sweeps and from tuned models (whose sweeps are reused)."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import saved_checkpoint, user_error
from scipy import stats

import dalip
import dalip.evaluation.wiseft as wiseft
import dalip.frontier.sweeps as frontier_sweeps
from dalip.cli import main
from dalip.frontier.curves import Curve, curve_from_sweep, dominated_area, frontier, general_at_gain


def _curve(recipe: str, seed: str, plant: list[float], general: list[float]) -> Curve:
    return Curve(recipe, seed, [0.0, 0.5, 1.0][: len(plant)] if len(plant) <= 3 else [], plant, general)


def _sweep(plant: list[float], general: list[float], weights=(0.0, 0.5, 1.0), mode="fused") -> dict:
    """What `dalip interpolate` writes, for the given domain scores per weight."""
    points = [
        {"weight": w, "summary": {mode: {"domains": {"plant": p, "general": g}, "overall": (p + g) / 2}}}
        for w, p, g in zip(weights, plant, general)
    ]
    return {"interpolation": points}


def test_general_accuracy_at_matched_gain_is_read_along_the_curve():
    curve = _curve("a", "0", [0.10, 0.20, 0.30], [0.50, 0.46, 0.40])
    assert curve.gains == pytest.approx([0.0, 0.1, 0.2])
    assert general_at_gain(curve, 0.1) == pytest.approx(0.46)  # a sweep point
    assert general_at_gain(curve, 0.15) == pytest.approx(0.43)  # halfway between 0.46 and 0.40
    assert general_at_gain(curve, 0.25) is None  # never gains that much
    wavy = _curve("b", "0", [0.10, 0.30, 0.20], [0.50, 0.30, 0.45])  # crosses gain 0.15 twice
    assert general_at_gain(wavy, 0.15) == pytest.approx(max(0.50 - 0.2 * 0.75, 0.30 + 0.15 * 0.5))


def test_the_dominated_area_grows_with_a_better_curve():
    lower = _curve("low", "0", [0.0, 0.1, 0.2], [0.5, 0.4, 0.3])
    higher = _curve("high", "0", [0.0, 0.1, 0.2], [0.5, 0.45, 0.35])
    # the union of [0, gain] x [floor, general] over the points: 0.2 x 0.1 + 0.1 x 0.1
    assert dominated_area(lower, 0.2, 0.2) == pytest.approx(0.03)
    assert dominated_area(higher, 0.2, 0.2) > dominated_area(lower, 0.2, 0.2)
    assert dominated_area(lower, 0.2, 0.1) == pytest.approx(0.1 * 0.2)  # cut at the common ceiling


def test_paired_differences_over_seeds_have_t_intervals():
    curves, shift = [], {"0": 0.02, "1": 0.03, "2": 0.01}
    for seed, extra in shift.items():
        curves.append(_curve("clip", seed, [0.1, 0.2, 0.3], [0.5, 0.45, 0.40]))
        curves.append(_curve("lora", seed, [0.1, 0.2, 0.3], [0.5, 0.45 + extra, 0.40 + extra]))
    report = frontier(curves, "clip", levels=[0.5, 1.0])
    paired = report["paired"]["lora"]
    assert paired["seeds"] == ["0", "1", "2"]
    at_full = paired["general_at_level"]["1"]
    differences = list(shift.values())
    half_width = stats.t.ppf(0.975, 2) * stats.tstd(differences) / 3**0.5
    assert at_full["mean"] == pytest.approx(0.02) and at_full["n"] == 3 and at_full["reached"] == 3
    assert (at_full["low"], at_full["high"]) == pytest.approx((0.02 - half_width, 0.02 + half_width))
    assert paired["general_at_level"]["0.5"]["mean"] == pytest.approx(0.02)  # gain 0.1: a sweep point
    assert paired["gain"]["mean"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not one of the recipes"):
        frontier(curves, "dalip")


def test_a_sweep_reads_fused_where_it_has_it_and_names_what_is_missing():
    assert curve_from_sweep(
        _sweep([0.1, 0.2, 0.3], [0.5, 0.4, 0.3]), "a", "0", "plant", "general"
    ).general == [
        0.5,
        0.4,
        0.3,
    ]
    first = _sweep([0.1, 0.2, 0.3], [0.5, 0.4, 0.3], mode="first")  # a CLIP-tuned model
    assert curve_from_sweep(first, "a", "0", "plant", "general").domain == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="the weights 0 and 1"):
        curve_from_sweep(_sweep([0.1, 0.2], [0.5, 0.4], weights=(0.0, 0.5)), "a", "0", "plant", "general")
    with pytest.raises(ValueError, match="no domain 'leaves'"):
        curve_from_sweep(first, "a", "0", "leaves", "general")


def test_frontier_cli_from_earlier_sweeps(tmp_path, capsys):
    folders = {}
    for recipe, general in [("clip", [0.5, 0.42, 0.35]), ("dalip", [0.5, 0.46, 0.40])]:
        folder = tmp_path / recipe
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(_sweep([0.1, 0.2, 0.3], general)))
        folders[recipe] = folder
    argv = [
        "frontier",
        "--sweep",
        f"clip@0={folders['clip']}",
        f"dalip@0={folders['dalip']}",
        "--out",
        tmp_path / "f",
    ]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "| dalip | 0 | +20.0 | 40.0 |" in out and "| dalip | 1 | +0.0 | +5.0 |" in out
    assert {p.name for p in (tmp_path / "f").iterdir()} >= {"frontier.json", "frontier.md", "frontier.png"}
    report = json.loads((tmp_path / "f" / "frontier.json").read_text())
    assert report["baseline"] == "clip" and report["sweeps"][1]["general"] == [0.5, 0.46, 0.40]
    assert "expected RECIPE[@SEED]=VALUE" in user_error(
        capsys, "frontier", "--sweep", "clip", "--out", tmp_path / "g"
    )
    line = user_error(capsys, "frontier", "--sweep", f"a={tmp_path}", "--out", tmp_path / "g")
    assert "no results.json" in line


def test_frontier_cli_sweeps_tuned_models_once(train_data, tmp_path, capsys, monkeypatch):
    start, state, config = saved_checkpoint(tmp_path)
    tuned = {}
    for index, recipe in enumerate(["clip", "dalip"]):
        model = dalip.load_checkpoint(start)
        with torch.no_grad():
            model.clip.visual.proj.add_(
                0.1
                * torch.randn(model.clip.visual.proj.shape, generator=torch.Generator().manual_seed(index))
            )
        tuned[recipe] = tmp_path / f"{recipe}.safetensors"
        model.save(tuned[recipe])
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "datasets:\n"
        f"  - {{name: p, task: zeroshot, domain: plant, path: {train_data / 'plant/test'}, templates: none}}\n"
        f"  - {{name: g, task: zeroshot, domain: general, path: {train_data / 'general/test'}, templates: none}}\n"
    )
    argv = [
        "frontier",
        "--start",
        str(start),
        "--suite",
        str(suite),
        "--weights",
        "0,0.5,1",
        "--out",
        str(tmp_path / "f"),
    ]
    argv += ["--tuned", f"clip@0={tuned['clip']}", f"dalip@0={tuned['dalip']}", "-q"]
    evaluated = []
    evaluate = wiseft.evaluate_loaded
    monkeypatch.setattr(
        wiseft, "evaluate_loaded", lambda p, *a: evaluated.append(p.sha256) or evaluate(p, *a)
    )
    assert main(argv) == 0
    assert (tmp_path / "f" / "sweeps" / "dalip@0" / "interpolation.png").is_file()
    # w=0 is the same weights and config in both sweeps: evaluated once, 5 points of 6
    assert len(evaluated) == 5 and len(set(evaluated)) == 5
    first, second = (
        json.loads((tmp_path / "f" / "sweeps" / f"{r}@0" / "results.json").read_text())["models"]["w=0"]
        for r in ("clip", "dalip")
    )
    assert second["reused"] and second["summary"] == first["summary"] and second["sha256"] == first["sha256"]
    swept = []
    original = frontier_sweeps.interpolate
    monkeypatch.setattr(
        frontier_sweeps, "interpolate", lambda *a, **k: swept.append(a[1]) or original(*a, **k)
    )
    assert main([*argv, "--force"]) == 0  # the same models: both sweeps are reused
    assert swept == []
    assert (
        main([*argv[:-4], "--tuned", f"clip@0={tuned['clip']}", f"dalip@0={tuned['clip']}", "--force", "-q"])
        == 0
    )
    assert swept == [str(tuned["clip"])]  # dalip@0 names another model now: swept again
    assert (
        json.loads((tmp_path / "f" / "frontier.json").read_text())["paired"]["dalip"]["gain"]["mean"] == 0.0
    )
    swept.clear()
    suite.write_text(suite.read_text() + "modes: [fused, first]\n")  # another suite: no sweep is reused
    assert main([*argv, "--force"]) == 0
    assert sorted(swept) == sorted(str(tuned[r]) for r in ("clip", "dalip"))
    results = json.loads((tmp_path / "f" / "sweeps" / "dalip@0" / "results.json").read_text())
    assert set(results["interpolation"][1]["summary"]) == {"fused", "first"}

"""WiSE-FT interpolation: endpoints equal the two models; sweeps are evaluated by a suite.
Interpolation weights out of bounds are one line."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import user_error
from eval_fixtures import make_workspace

import dalip
from dalip.cli import main
from dalip.evaluation import wiseft
from dalip.evaluation.suite import run_suite
from dalip.evaluation.wiseft import interpolate, interpolate_weights
from dalip.inference.specs import load_model
from dalip.report.suite import write_interpolation_report


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("wiseft"))


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_endpoints_equal_start_and_tuned(workspace):
    start, tuned = dalip.load_checkpoint(workspace["start"]), dalip.load_checkpoint(workspace["tuned"])
    assert _states_equal(interpolate_weights(start, tuned, 0.0).state_dict(), start.state_dict())
    assert _states_equal(interpolate_weights(start, tuned, 1.0).state_dict(), tuned.state_dict())
    middle = interpolate_weights(start, tuned, 0.25).state_dict()
    mbdc_key = next(k for k in middle if k.startswith("image_mbdc.") and k.endswith("weight"))
    for key in ("clip.visual.proj", mbdc_key):
        expected = 0.75 * start.state_dict()[key] + 0.25 * tuned.state_dict()[key]
        assert torch.allclose(middle[key], expected)


def test_open_clip_start_takes_mbdc_heads_from_tuned(workspace):
    start = load_model(f"openclip:test-tiny:{workspace['exported']}").model
    tuned = dalip.load_checkpoint(workspace["tuned"])
    state = interpolate_weights(start, tuned, 0.0).state_dict()
    for key, value in state.items():
        reference = start.state_dict()[key] if key.startswith("clip.") else tuned.state_dict()[key]
        assert torch.equal(value, reference), key


def test_different_architectures_are_refused(workspace):
    tuned = dalip.load_checkpoint(workspace["tuned"])
    other, *_ = dalip.create_model("test-tiny", heads=2, reduced_dim=4)
    with pytest.raises(ValueError, match="different architectures"):
        interpolate_weights(other, tuned, 0.5)


def test_sweep_endpoints_reproduce_the_models_own_results(workspace, tmp_path):
    suite = {
        "modes": ["all"],
        "batch_size": 6,
        "datasets": [
            {"name": "zs", "task": "zeroshot", "domain": "plant", "path": str(workspace["test"])},
            {"name": "ret", "task": "retrieval", "domain": "general", "path": str(workspace["captions"])},
        ],
    }
    sweep = interpolate(
        str(workspace["start"]), str(workspace["tuned"]), [0, 0.5, 1], suite, tmp_path / "sweep"
    )
    write_interpolation_report(sweep, str(tmp_path / "sweep"))  # a plain path, as README shows
    alone = run_suite(
        {"start": str(workspace["start"]), "tuned": str(workspace["tuned"])}, suite, tmp_path / "alone"
    )
    for weight, name in (("w=0", "start"), ("w=1", "tuned")):
        for dataset in ("zs", "ret"):
            assert (
                sweep["models"][weight]["datasets"][dataset]["modes"]
                == alone["models"][name]["datasets"][dataset]["modes"]
            )
    assert [p["weight"] for p in sweep["interpolation"]] == [0.0, 0.5, 1.0]
    assert "| fused | 0.5 |" in (tmp_path / "sweep" / "interpolation.md").read_text()
    assert (tmp_path / "sweep" / "interpolation.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "sweep" / "results.json").read_text())["tuned"]["spec"].endswith(
        "tuned.safetensors"
    )


def test_given_endpoint_evaluations_are_reused_only_where_they_are_that_model(
    workspace, tmp_path, monkeypatch
):
    """`evaluated` entries stand for w=1 (the tuned model) and for w=0 only when the start
    has the tuned model's stored config; the sweep's figures do not change."""
    suite = {
        "modes": ["fused", "first"],
        "batch_size": 6,
        "datasets": [{"name": "zs", "task": "zeroshot", "domain": "plant", "path": str(workspace["test"])}],
    }
    other_alpha = dalip.load_checkpoint(workspace["start"])
    other_alpha.alpha = 0.3  # same weights, another stored config
    other_alpha.save(tmp_path / "other.safetensors")
    starts = {"start": str(workspace["start"]), "other": str(tmp_path / "other.safetensors")}
    alone = run_suite({**starts, "tuned": str(workspace["tuned"])}, suite, tmp_path / "alone")["models"]
    evaluated_points = []
    evaluate = wiseft.evaluate_loaded
    monkeypatch.setattr(
        wiseft,
        "evaluate_loaded",
        lambda point, *args: evaluated_points.append(point.name) or evaluate(point, *args),
    )
    for start, expected in (("start", ["w=0.5"]), ("other", ["w=0", "w=0.5"])):
        evaluated_points.clear()
        known = {0.0: alone[start], 1.0: alone["tuned"]}
        sweep = interpolate(
            starts[start],
            str(workspace["tuned"]),
            [0, 0.5, 1],
            {**suite, "modes": ["first"]},
            tmp_path / f"sweep-{start}",
            evaluated=known,
        )
        assert evaluated_points == expected
        evaluated_points.clear()
        fresh = interpolate(
            starts[start],
            str(workspace["tuned"]),
            [0, 0.5, 1],
            {**suite, "modes": ["first"]},
            tmp_path / f"fresh-{start}",
        )
        assert [p["summary"] for p in sweep["interpolation"]] == [
            p["summary"] for p in fresh["interpolation"]
        ]
        assert sweep["models"]["w=1"]["modes"] == ["first"] and sweep["models"]["w=1"]["reused"]
    with pytest.raises(ValueError, match="w=0 and w=1"):
        interpolate(
            starts["start"],
            str(workspace["tuned"]),
            [0.5],
            suite,
            tmp_path / "bad",
            evaluated={0.5: alone["tuned"]},
        )


def test_interpolate_cli(workspace, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"datasets:\n  - {{name: zs, task: zeroshot, domain: plant, path: {workspace['test']}}}\n"
    )
    argv = [
        "interpolate",
        "--start",
        f"openclip:test-tiny:{workspace['exported']}",
        "--tuned",
        str(workspace["tuned"]),
        "--weights",
        "0,1",
        "--suite",
        str(suite),
        "--out",
        str(tmp_path / "out"),
        "--save-models",
        "-q",
    ]
    assert main(argv) == 0
    assert "| fused | 1 |" in capsys.readouterr().out
    saved = dalip.load_checkpoint(tmp_path / "out" / "models" / "wise_ft_1.safetensors")
    assert _states_equal(saved.state_dict(), dalip.load_checkpoint(workspace["tuned"]).state_dict())
    argv[argv.index("0,1")] = "0,half"
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("dalip interpolate: error: --weights")


def test_interpolation_weights_are_bounded(tmp_path, capsys):
    argv = ["interpolate", "--start", "a", "--tuned", "b", "--suite", "s.yaml", "--out", str(tmp_path / "o")]
    line = user_error(capsys, *argv, "--weights", "0,1e308")
    assert "interpolation weights (--weights): expected numbers in [-10, 10]" in line and "1e+308" in line

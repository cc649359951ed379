"""The README's first command at a test-sized budget: every file, finite numbers, no overwrite."""

import json
import math
from pathlib import Path

import pytest

from dalip.cli.main import build_parser, main
from dalip.train.run_log import read_metrics

EXPECTED_FILES = [
    "report.md",
    "results.json",
    "figures/loss_curves.png",
    "figures/accuracy.png",
    "figures/predictions.png",
    "figures/wiseft.png",
    "start/model.safetensors",
    "tuned-clip/model.safetensors",
    "tuned-dalip/model.safetensors",
    "start/metrics.jsonl",
    "tuned-clip/metrics.jsonl",
    "tuned-dalip/metrics.jsonl",
    "eval/results.json",
    "wiseft-clip/results.json",
    "wiseft-dalip/results.json",
]


def numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, float):
        yield value


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    assert main(["quickstart", "--out", str(out), "--budget", "test"]) == 0
    return out


def test_writes_every_file_with_finite_numbers(quickstart_run):
    for name in EXPECTED_FILES:
        path = quickstart_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in EXPECTED_FILES[2:6]:
        assert (quickstart_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    results = json.loads((quickstart_run / "results.json").read_text())
    assert all(math.isfinite(x) for x in numbers(results))
    models = results["evaluation"]["models"]
    assert set(models) == {"start", "tuned-clip", "tuned-dalip"}
    # every mode of the DALIP-tuned model side by side; it answers with the one `dalip train`
    # chose on the val splits, which the report marks; the CLIP-tuned models have the first only
    assert models["tuned-dalip"]["modes"] == ["fused", "first", "second"]
    assert models["tuned-clip"]["modes"] == models["start"]["modes"] == ["first"]
    chosen = models["tuned-dalip"]["answer_mode"]
    assert chosen in ("fused", "first") and models["tuned-dalip"]["answer_mode_stored"]
    record = [r for r in read_metrics(quickstart_run / "tuned-dalip" / "metrics.jsonl") if "answer_mode" in r]
    assert record[0]["answer_mode"]["chosen"] == chosen
    assert f"tuned, DALIP loss [{chosen}] *" in (quickstart_run / "report.md").read_text()
    for entry in models.values():
        assert set(entry["datasets"]) == {
            "plant-zeroshot",
            "general-zeroshot",
        }  # captions name classes: no retrieval
    assert [p["weight"] for p in results["wise_ft"]["dalip"]["interpolation"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    report = (quickstart_run / "report.md").read_text()
    assert "| plant-zeroshot | top-1 |" in report and "vs start" in report
    # the plant test also by rank: 6 species in 2 genera of one family
    assert list(models["start"]["datasets"]["plant-zeroshot"]["ranks"]) == ["genus", "species"]
    assert "| plant-zeroshot | genus top-1 (taxonomic text) |" in report
    assert "ranks" not in results["wise_ft"]["clip"]["models"]["w=0.5"]["datasets"]["plant-zeroshot"]


def test_tuning_runs_share_data_steps_and_seed(quickstart_run):
    import yaml

    clip = yaml.safe_load((quickstart_run / "tuned-clip/config.yaml").read_text())
    dalip_run = yaml.safe_load((quickstart_run / "tuned-dalip/config.yaml").read_text())
    assert clip["loss"]["kind"] == "clip" and dalip_run["loss"]["kind"] == "dalip"
    for key in ("data", "steps", "seed", "batch_size", "optim"):
        assert clip[key] == dalip_run[key], key
    assert clip["model"]["pretrained"] == dalip_run["model"]["pretrained"].replace(
        "tuned-dalip", "tuned-clip"
    ) or clip["model"]["pretrained"].endswith("start/model.safetensors")
    assert [s["weight"] for s in clip["data"]["sources"]] == [10.0, 3.0]


def test_refuses_to_overwrite_without_force(quickstart_run, capsys):
    assert main(["quickstart", "--out", str(quickstart_run), "--budget", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --force" in err


def test_force_reuses_the_cached_start_model(quickstart_run, capsys):
    before = (quickstart_run / "start/model.safetensors").stat().st_mtime_ns
    assert main(["quickstart", "--out", str(quickstart_run), "--budget", "test", "--force"]) == 0
    serve = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert serve[:2] == ["dalip", "serve"]
    arguments = build_parser().parse_args(serve[1:])
    assert [spec.split("=")[0] for spec in arguments.model] == ["tuned-clip", "tuned-dalip"]
    assert all(Path(spec.split("=", 1)[1]).is_file() for spec in arguments.model)
    assert Path(arguments.gallery) == quickstart_run / "data" / "plant" / "test"
    assert arguments.taxonomy == "auto" and (Path(arguments.gallery) / "taxonomy.csv").is_file()
    assert (quickstart_run / "start/model.safetensors").stat().st_mtime_ns == before
    results = json.loads((quickstart_run / "results.json").read_text())
    assert results["timings_seconds"]["start"] == 0.0


def test_an_interrupted_stage_stops_the_quickstart(tmp_path, monkeypatch, capsys):
    import dalip.experiments.runs

    calls = []

    def interrupted_train(config, resume=None, validate=None, choose_mode=None):
        calls.append(config.out_dir)
        return {"interrupted_by_signal": 15, "step": 1}

    monkeypatch.setattr(dalip.experiments.runs, "train", interrupted_train)
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--budget", "test"]) == 130
    assert len(calls) == 1 and calls[0].endswith("start")
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "qs" / "tuned-clip").exists()

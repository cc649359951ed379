"""Reports and suites: table layout, suite files, and a run on the generated dataset."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEST_MBDC
from eval_fixtures import CLASSES, EYE, IMAGE_FIRST, IMAGE_SECOND, StubModel, loaded_stub, write_folder

import dalip
from dalip.evaluation.suite import load_suite, run_suite
from dalip.report.suite import markdown_table, write_suite_report


def _results(scores: dict[str, dict[str, dict[str, float]]]) -> dict:
    """A minimal results dict: {model: {mode: {dataset: score}}}; datasets p1, p2 (plant), g (general)."""
    domains = {"p1": "plant", "g": "general", "p2": "plant"}
    models = {}
    for name, by_mode in scores.items():
        datasets = {
            d: {"domain": domains[d], "scores": {m: s[d] for m, s in by_mode.items()}} for d in domains
        }
        summary = {
            m: {
                "domains": {"plant": (s["p1"] + s["p2"]) / 2, "general": s["g"]},
                "overall": sum(s.values()) / 3,
            }
            for m, s in by_mode.items()
        }
        models[name] = {"modes": list(by_mode), "datasets": datasets, "summary": summary}
    return {"suite": {"datasets": [{"name": d, "domain": domains[d]} for d in domains]}, "models": models}


def test_markdown_table_groups_datasets_by_domain_with_means():
    results = _results(
        {
            "dalip": {"fused": {"p1": 0.5, "p2": 0.7, "g": 0.3}, "first": {"p1": 0.4, "p2": 0.6, "g": 0.35}},
            "clip": {"first": {"p1": 0.2, "p2": 0.4, "g": 0.5}},
        }
    )
    lines = markdown_table(results).splitlines()
    assert (
        lines[0]
        == "| model [mode] | p1 (plant) | p2 (plant) | g (general) | mean plant | mean general | overall |"
    )
    assert lines[2] == "| dalip [fused] | 50.0 | 70.0 | 30.0 | 60.0 | 30.0 | 50.0 |"
    assert lines[3] == "| dalip [first] | 40.0 | 60.0 | 35.0 | 50.0 | 35.0 | 45.0 |"
    assert lines[4] == "| clip [first] | 20.0 | 40.0 | 50.0 | 30.0 | 50.0 | 36.7 |"


def test_run_suite_with_stub_models(tmp_path):
    write_folder(
        tmp_path / "zs", {"a": 3, "b": 1, "c": 2}, readable={"a": "alpha", "b": "beta", "c": "gamma"}
    )
    dalip_like = loaded_stub(StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE), CLASSES, "dalip-like")
    clip_like = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE)
    clip_like.has_second_order = False
    suite = {
        "modes": "all",
        "templates": "none",
        "datasets": [{"task": "zeroshot", "domain": "plant", "path": "zs"}],
    }
    (tmp_path / "suite.yaml").write_text(json.dumps(suite))  # JSON is YAML
    results = run_suite(
        [dalip_like, loaded_stub(clip_like, CLASSES, "clip-like")], tmp_path / "suite.yaml", tmp_path / "out"
    )
    write_suite_report(results, tmp_path / "out")
    table = (tmp_path / "out" / "results.md").read_text()
    # every mode side by side, the one the model answers with when none is named marked *
    assert "| dalip-like [fused] * | 66.7 | 66.7 | 66.7 |" in table
    assert "| dalip-like [first] | " in table
    assert results["models"]["dalip-like"]["answer_mode"] == "fused"
    assert "| dalip-like [second] | 83.3 | 83.3 | 83.3 |" in table
    assert "| clip-like [first] | 50.0 | 50.0 | 50.0 |" in table
    assert results["models"]["clip-like"]["modes"] == ["first"]


def test_suite_file_checks(tmp_path):
    (tmp_path / "s.yaml").write_text("datasets:\n  - {task: zeroshot, path: data/test, colour: red}\n")
    with pytest.raises(ValueError, match=r"s.yaml: unknown field 'datasets\[0\].colour'"):
        load_suite(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("datasets:\n  - {task: fewshot, train: a}\n")
    with pytest.raises(ValueError, match="needs train, test"):
        load_suite(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(
        "datasets:\n  - {name: x, task: zeroshot, path: a}\n  - {name: x, task: retrieval, path: b}\n"
    )
    with pytest.raises(ValueError, match="unique"):
        load_suite(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(
        "seed: 2\ndatasets:\n  - {task: linear_probe, train: d/train, test: d/test}\n"
    )
    suite = load_suite(tmp_path / "s.yaml")
    assert suite.datasets[0].train == str(tmp_path / "d/train") and suite.datasets[0].name == "test"
    with pytest.raises(FileNotFoundError, match="suite file not found"):
        load_suite(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from dalip.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("generated")
    manifest = make_dataset(
        str(root),
        seed=0,
        species=4,
        image_size=32,
        train_per_class=3,
        val_per_class=1,
        test_per_class=2,
        general_classes=2,
        samples_per_shard=8,
    )
    return root, manifest


def test_suite_on_the_generated_dataset(generated, tmp_path):
    root, _ = generated
    torch.manual_seed(0)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    suite = {
        "batch_size": 8,
        "datasets": [
            {
                "name": "plant-zs",
                "task": "zeroshot",
                "domain": "plant",
                "path": str(root / "plant/test"),
                "templates": "plant",
            },
            {
                "name": "plant-csv",
                "task": "zeroshot",
                "domain": "plant",
                "path": str(root / "plant/test/captions.csv"),
            },
            {
                "name": "plant-ret",
                "task": "retrieval",
                "domain": "plant",
                "path": str(root / "plant/test/captions.csv"),
            },
            {
                "name": "general-zs",
                "task": "zeroshot",
                "domain": "general",
                "path": str(root / "general/test"),
            },
            {
                "name": "plant-lp",
                "task": "linear_probe",
                "domain": "plant",
                "train": str(root / "plant/train"),
                "test": str(root / "plant/test"),
                "features": "concat",
                "c_values": [1.0],
            },
        ],
    }
    results = run_suite({"tiny": model}, suite, tmp_path)
    datasets = results["models"]["tiny"]["datasets"]
    species = [line.split("\t")[1] for line in (root / "plant/test/classes.txt").read_text().splitlines()]
    assert datasets["plant-zs"]["class_names"] == species == datasets["plant-csv"]["class_names"]
    assert datasets["plant-zs"]["num_images"] == 8 and datasets["plant-ret"]["num_images"] == 8
    assert datasets["plant-zs"]["modes"] == datasets["plant-csv"]["modes"]  # same images, same labels
    assert datasets["plant-lp"]["train_size"] == 12 and datasets["plant-lp"]["features"] == "concat"
    assert set(results["models"]["tiny"]["summary"]["fused"]["domains"]) == {"plant", "general"}

"""`dalip eval`: suites, model comparison, reports and one-line errors. The source revision
recorded in results.json is read without touching the checkout's index."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest
from eval_fixtures import make_workspace

import dalip
from dalip.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def suite_run(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite-out")
    argv = [
        "eval",
        "--model",
        f"tuned={workspace['tuned']}",
        "--model",
        f"base=openclip:test-tiny:{workspace['exported']}",
        "--suite",
        str(workspace["suite"]),
        "--out",
        str(out),
        "--device",
        "cpu",
        "-q",
    ]
    assert main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def test_suite_compares_models_with_domain_means(suite_run):
    out, results = suite_run
    tuned, base = results["models"]["tuned"], results["models"]["base"]
    assert tuned["modes"] == ["fused", "first"] and base["modes"] == ["first"]
    for entry in (tuned, base):
        assert set(entry["datasets"]) == {"leaves-zs", "leaves-ret", "leaves-lp", "leaves-fs"}
        for mode, summary in entry["summary"].items():
            scores = {name: d["scores"][mode] for name, d in entry["datasets"].items()}
            assert summary["domains"]["plant"] == pytest.approx(
                (scores["leaves-zs"] + scores["leaves-ret"]) / 2
            )
            assert summary["domains"]["general"] == pytest.approx(
                (scores["leaves-lp"] + scores["leaves-fs"]) / 2
            )
            assert summary["overall"] == pytest.approx(sum(scores.values()) / 4)
    zero_shot = tuned["datasets"]["leaves-zs"]
    assert zero_shot["scores"]["fused"] == zero_shot["modes"]["fused"]["top1"]
    assert zero_shot["class_names"] == ["red oak", "sugar maple", "royal fern"]
    table = (out / "results.md").read_text()
    # a model stored without an answer mode answers with dalip's default, first: marked *
    assert tuned["answer_mode"] == "first" and not tuned["answer_mode_stored"]
    for row in ("| tuned [fused] |", "| tuned [first] * |", "| base [first] |"):
        assert row in table
    assert "mean plant" in table and "overall" in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_carry_a_reproducibility_record(suite_run, workspace):
    _, results = suite_run
    record = results["record"]
    assert set(record["versions"]) >= {"dalip", "dalip_source", "open_clip_torch", "torch"}
    assert record["versions"]["dalip"] == dalip.__version__ == metadata.version("dalip") != "0.1.0"
    tuned_hash = hashlib.sha256(workspace["tuned"].read_bytes()).hexdigest()
    assert record["checkpoints"]["tuned"]["sha256"] == tuned_hash
    assert (
        record["checkpoints"]["base"]["sha256"]
        == hashlib.sha256(workspace["exported"].read_bytes()).hexdigest()
    )
    assert record["seed"] == 3
    assert record["similarity_modes"] == {"tuned": ["fused", "first"], "base": ["first"]}
    zs = record["datasets"]["leaves-zs"]
    assert zs["dataset"] == str(workspace["test"]) and zs["num_images"] == 6
    assert zs["templates"][0] == "a photo of {}, a type of plant."
    assert zs["class_names"] == ["red oak", "sugar maple", "royal fern"]
    assert record["datasets"]["leaves-lp"]["train_size"] == 12
    assert results["models"]["tuned"]["datasets"]["leaves-zs"]["images_per_second"] > 0


def test_fewshot_splits_are_saved_beside_the_results(suite_run):
    out, results = suite_run
    splits = json.loads((out / "fewshot_splits" / "leaves-fs.json").read_text())
    assert splits["seed"] == 3 and set(splits["splits"]) == {"1", "2"}
    assert [len(fold) for fold in splits["splits"]["2"]] == [6, 6]  # 2 per class x 3 classes


def test_dataset_flags_and_mode_all(workspace, tmp_path, capsys):
    argv = [
        "eval",
        "-m",
        str(workspace["start"]),
        "--zeroshot",
        str(workspace["test"]),
        "--retrieval",
        str(workspace["captions"]),
        "--mode",
        "all",
        "--templates",
        "generic",
        "--out",
        str(tmp_path),
        "-q",
        "--batch-size",
        "5",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["models"]["start"]["modes"] == ["fused", "first", "second"]
    assert set(results["models"]["start"]["datasets"]["test"]["modes"]) == {"fused", "first", "second"}
    assert "| start [second] |" in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    """The error is one line (log lines may come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1] and errors[0].startswith("dalip eval: error: ")
    return errors[0]


def test_folder_without_images_exits_2(workspace, tmp_path, capsys):
    (tmp_path / "empty" / "oak").mkdir(parents=True)
    argv = [
        "eval",
        "-m",
        str(workspace["start"]),
        "--zeroshot",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "no images found" in _one_line_error(capsys)


def test_missing_checkpoint_exits_2(workspace, tmp_path, capsys):
    argv = [
        "eval",
        "-m",
        str(tmp_path / "nope.safetensors"),
        "--zeroshot",
        str(workspace["test"]),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "checkpoint not found" in _one_line_error(capsys)


def test_suite_errors_name_the_problem(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - {name: x, task: segmentation, path: test}\n")
    assert main(["eval", "-m", str(workspace["start"]), "--suite", str(bad), "--out", str(tmp_path)]) == 2
    assert "datasets[0].task: expected one of zeroshot" in _one_line_error(capsys)
    assert main(["eval", "-m", str(workspace["start"]), "--out", str(tmp_path)]) == 2
    assert "--suite" in _one_line_error(capsys)


def test_source_revision_names_the_checkout_commit(tmp_path, monkeypatch):
    """From a git checkout the record names the commit (and "+modified" for local changes);
    outside one, None."""
    import subprocess

    from dalip.evaluation import record

    checkout = tmp_path / "repo"
    module = checkout / "src" / "dalip" / "evaluation" / "record.py"
    module.parent.mkdir(parents=True)
    module.write_text("# a stand-in\n")
    monkeypatch.setattr(record, "__file__", str(module))
    assert record.source_revision() is None
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert record.source_revision() == head
    module.write_text("# changed\n")
    assert record.source_revision() == f"{head}+modified"


def test_the_source_revision_is_read_without_touching_the_index():
    from dalip.evaluation.record import source_revision

    index = Path(dalip.__file__).resolve().parents[2] / ".git" / "index"
    if not index.exists():
        pytest.skip("dalip does not run from a git checkout here")
    before = index.stat().st_mtime_ns
    source_revision()
    assert index.stat().st_mtime_ns == before
    assert json.dumps(source_revision())  # a string (or None), recorded in results.json

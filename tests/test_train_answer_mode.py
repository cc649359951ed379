"""The similarity a DALIP model answers with: chosen at the end of `dalip train` on its two
validation folders, or named in the config, stored with the model in every format, used by
every command that names no mode, and dalip's default (first) for a file that stores none."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from eval_fixtures import (
    CLASSES,
    EYE,
    IMAGE_FIRST,
    IMAGE_SECOND,
    StubModel,
    StubTokenizer,
    stub_preprocess,
    write_folder,
)
from train_fixtures import train_data, write_config  # noqa: F401 (fixture)

import dalip
from dalip.cli import main
from dalip.config import DEFAULT_ANSWER_MODE, TrainConfig
from dalip.evaluation.validation import answer_mode_choice
from dalip.frontier.curves import curve_from_sweep, frontier
from dalip.frontier.report import frontier_table
from dalip.inference.runtime import resolve_modes
from dalip.inference.specs import load_model
from dalip.model.file_format import read_checkpoint_config
from dalip.train.run_log import read_metrics


def _val_config(tmp_path, **model) -> TrainConfig:
    """A DALIP run config whose two val folders hold the stub's images (ids 0-5, 3 classes)."""
    readable = dict(zip("abc", CLASSES))
    for name in ("val", "general"):
        write_folder(tmp_path / name, {"a": 3, "b": 1, "c": 2}, readable)
    config = TrainConfig()
    config.data.val, config.data.val_general = str(tmp_path / "val"), str(tmp_path / "general")
    config.data.val_templates, config.data.workers = "none", 0
    for key, value in model.items():
        setattr(config.model, key, value)
    return config


class _AnyTemplate(StubTokenizer):
    """The stub's tokenizer for prompts made from any template: the class name's row."""

    def __call__(self, texts):
        return super().__call__([next(name for name in CLASSES if name in text) for text in texts])


def _task(model: StubModel) -> SimpleNamespace:
    return SimpleNamespace(model=model, tokenizer=_AnyTemplate(CLASSES), preprocess_val=stub_preprocess)


@pytest.mark.parametrize(
    "tables, chosen",
    [
        ((IMAGE_FIRST, IMAGE_SECOND), "fused"),  # first 50%, fused 66.7%, second 83.3%
        ((IMAGE_SECOND, IMAGE_FIRST), "first"),  # first 83.3%, fused 66.7%, second 50%
    ],
)
def test_the_end_of_a_run_chooses_the_mode_its_validation_data_favour(tmp_path, tables, chosen):
    choose = answer_mode_choice(_val_config(tmp_path))
    choice = choose(_task(StubModel(*tables, EYE, EYE)), 4)
    assert choice["chosen"] == chosen
    assert set(choice["val"]) == {"fused", "first", "second"}  # every mode measured, second never chosen
    for scores in choice["val"].values():
        assert scores["mean"] == pytest.approx((scores["domain"] + scores["general"]) / 2)
    assert choice["val"]["fused"]["domain"] == pytest.approx(4 / 6)


def test_nothing_is_chosen_without_both_folders_or_with_a_mode_named(tmp_path):
    config = _val_config(tmp_path)
    assert answer_mode_choice(config) is not None
    for change in (
        lambda c: setattr(c.data, "val_general", None),
        lambda c: setattr(c.model, "answer_mode", "fused"),
        lambda c: setattr(c.loss, "kind", "clip"),
        lambda c: setattr(c.model, "alpha", 1.0),
    ):
        changed = _val_config(tmp_path)
        change(changed)
        assert answer_mode_choice(changed) is None


def test_dalip_train_stores_the_chosen_mode_and_records_why(train_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    data = {"val": str(train_data / "plant/val"), "val_general": str(train_data / "general/val")}
    config = write_config(train_data, out, data=data)
    assert main(["train", "--config", str(config)]) == 0
    stored = read_checkpoint_config(out / "model.safetensors")["answer_mode"]
    record = [r["answer_mode"] for r in read_metrics(out / "metrics.jsonl") if "answer_mode" in r]
    assert len(record) == 1 and record[0]["chosen"] == stored
    means = {mode: record[0]["val"][mode]["mean"] for mode in ("first", "fused")}
    assert stored == max(("first", "fused"), key=lambda mode: means[mode])
    assert f"answers with {stored} (chosen on data.val and data.val_general" in capsys.readouterr().out
    model = dalip.load_checkpoint(out / "model.safetensors")
    assert model.answer_mode == model.default_mode == stored
    checkpoint = sorted((out / "checkpoints").glob("step_*.pt"))[-1]
    assert dalip.load_checkpoint(checkpoint).answer_mode == stored  # the last training checkpoint too


def test_a_mode_named_in_the_config_is_stored_and_travels_with_exports(train_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    config = write_config(train_data, out, model={"answer_mode": "second"})
    assert main(["train", "--config", str(config), "--set", "steps=2"]) == 0
    assert "answers with second (model.answer_mode)" in capsys.readouterr().out
    assert main(["export", str(out / "model.safetensors"), str(tmp_path / "f"), "--format", "fused-dir"]) == 0
    for spec in (out / "model.safetensors", f"local-dir:{tmp_path / 'f'}"):
        loaded = load_model(str(spec))
        assert loaded.model.default_mode == "second", spec


def test_without_validation_folders_the_model_answers_with_the_default(train_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert main(["train", "--config", str(write_config(train_data, out)), "--set", "steps=2"]) == 0
    assert f"answers with {DEFAULT_ANSWER_MODE} (dalip's default" in capsys.readouterr().out
    assert "answer_mode" not in read_checkpoint_config(out / "model.safetensors")
    assert dalip.load_checkpoint(out / "model.safetensors").default_mode == "first"


def test_a_stored_mode_that_is_not_a_mode_is_refused(tmp_path, tiny_model):
    model = tiny_model[0]
    model.answer_mode = "mean"
    model.save(tmp_path / "bad.safetensors")
    with pytest.raises(
        ValueError, match="stored config field 'answer_mode' is 'mean'; expected fused, first or second"
    ):
        dalip.load_checkpoint(tmp_path / "bad.safetensors")


def test_default_and_all_resolve_per_model(tiny_model):
    model = tiny_model[0]
    assert resolve_modes(model, None) == resolve_modes(model, "default") == ["first"]
    assert resolve_modes(model, ["default", "first", "fused"]) == ["first", "fused"]
    assert resolve_modes(model, "all") == ["fused", "first", "second"]
    model.answer_mode = "fused"
    try:
        assert resolve_modes(model, None) == ["fused"]
        model.alpha = 1.0  # no second-order term trained: "all" is the first order alone
        assert resolve_modes(model, "all") == ["first"]
    finally:
        model.answer_mode, model.alpha = None, 0.5


def test_the_frontier_reads_each_sweep_in_the_mode_its_tuned_model_answers_with():
    def point(weight, fused, first):
        summary = {
            "fused": {"domains": {"plant": fused, "general": 0.5}},
            "first": {"domains": {"plant": first, "general": 0.5}},
        }
        return {"weight": weight, "summary": summary}

    sweep = {"interpolation": [point(0.0, 0.1, 0.1), point(1.0, 0.8, 0.6)], "models": {}}
    assert (
        curve_from_sweep({**sweep, "answer_mode": "fused"}, "dalip", "0", "plant", "general").domain[-1]
        == 0.8
    )
    assert (
        curve_from_sweep({**sweep, "answer_mode": "first"}, "dalip", "0", "plant", "general").domain[-1]
        == 0.6
    )
    # a sweep written before the answer mode was recorded: the default, first
    assert curve_from_sweep(sweep, "dalip", "0", "plant", "general").domain[-1] == 0.6
    assert curve_from_sweep(sweep, "dalip", "0", "plant", "general", mode="fused").domain[-1] == 0.8
    curves = [
        curve_from_sweep({**sweep, "answer_mode": "first"}, "clip", "0", "plant", "general"),
        curve_from_sweep({**sweep, "answer_mode": "fused"}, "dalip", "0", "plant", "general"),
        curve_from_sweep({**sweep, "answer_mode": "first"}, "dalip", "1", "plant", "general"),
        curve_from_sweep({**sweep, "answer_mode": "first"}, "clip", "1", "plant", "general"),
    ]
    table = frontier_table(frontier(curves, "clip"), "plant", "general")  # the report names each mode
    assert (
        "read in (the tuned model's own unless --mode names one): clip first; dalip fused (seed 0), first (seed 1)."
        in table
    )


def test_eval_mode_default_scores_each_model_in_its_own_mode(tmp_path, capsys):
    from eval_fixtures import make_workspace

    workspace = make_workspace(tmp_path / "w")
    model = dalip.load_checkpoint(workspace["tuned"])
    model.answer_mode = "fused"
    model.save(tmp_path / "fused.safetensors")
    models = ["-m", f"own={tmp_path / 'fused.safetensors'}", "-m", f"old={workspace['tuned']}"]
    data = ["--zeroshot", str(workspace["test"]), "--templates", "plant", "-q"]
    assert main(["eval", *models, *data, "--mode", "default", "--out", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e" / "results.json").read_text())["models"]
    assert results["own"]["modes"] == ["fused"] and results["old"]["modes"] == ["first"]
    assert main(["eval", *models, *data, "--out", str(tmp_path / "all")]) == 0
    table = (tmp_path / "all" / "results.md").read_text()  # no --mode: every mode, the model's own marked
    assert "| own [fused] * |" in table and "| old [first] * |" in table and "| old [second] |" in table


def test_bad_answer_mode_settings_are_one_line(train_data, tmp_path, capsys):  # noqa: F811
    from cli_helpers import user_error

    config = write_config(train_data, tmp_path / "run")
    general = str(train_data / "general/val")
    line = user_error(capsys, "train", "--config", config, "--set", f"data.val_general={general}")
    assert "data.val_general: set data.val too" in line
    line = user_error(capsys, "train", "--config", config, "--set", f"data.val_general={tmp_path / 'none'}")
    assert "data.val_general: image folder not found" in line
    line = user_error(capsys, "train", "--config", config, "--set", "model.answer_mode=mean")
    assert "model.answer_mode" in line and "first" in line

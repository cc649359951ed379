"""The run configuration: MBDC options declared once (`MBDCOptions`), held by ModelConfig,
written flat in YAML as before, and passed to the model as one object. Config files and
overrides are read safely and within bounds (alias bombs, deep nesting, keys given twice, sizes
that would exhaust memory, a model.config_file that is no architecture), one line each."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from cli_helpers import user_error
from train_fixtures import train_data, write_config  # noqa: F401 (fixture)

from dalip.cli import main
from dalip.config import (
    EXPERIMENTAL_OPTIONS,
    MBDCOptions,
    ModelConfig,
    TrainConfig,
    config_to_dict,
    experimental_settings,
    load_train_config,
    option_value,
)
from dalip.model.factory import ARCHITECTURE_MBDC, create_model
from dalip.readers import load_yaml_text
from dalip.schema import from_dict

# The `model` keys of dalip 0.1 / 0.2 config files and checkpoints, in their order.
FLAT_MODEL_KEYS = [
    "name",
    "pretrained",
    "config_file",
    "alpha",
    "heads",
    "reduced_dim",
    "dropout",
    "learnable_temperature",
    "dropout_kind",
    "weighting",
    "separate_second_temperature",
    "answer_mode",
    "image_size",
    "context_length",
]


def test_model_section_keeps_its_flat_keys_and_order():
    assert list(config_to_dict(TrainConfig())["model"]) == FLAT_MODEL_KEYS
    mbdc_keys = [item.name for item in dataclasses.fields(MBDCOptions)]
    assert set(mbdc_keys) <= set(FLAT_MODEL_KEYS)  # every option is a YAML key of `model`


def test_yaml_and_overrides_fill_the_mbdc_options(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"heads": 2, "weighting": "none"},
                "data": {"sources": [{"kind": "csv", "path": str(path)}]},
            }
        )
    )
    config = load_train_config(path, ["model.dropout=0.25", "model.dropout_kind=channel"])
    assert config.model.mbdc == MBDCOptions(
        heads=2, reduced_dim=None, dropout=0.25, dropout_kind="channel", weighting="none"
    )
    assert config.model.alpha == ModelConfig().alpha
    # what is stored (config.yaml, checkpoints) reads back to the same config
    assert from_dict(TrainConfig, config_to_dict(config)) == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.heads=0", "model.heads: "),
        ("model.weighting=sideways", "model.weighting: expected one of after_norm"),
        ("model.mbdc={}", "unknown field 'model.mbdc'"),
        ("model.dropout=1.0", "model.dropout: "),
    ],
)
def test_mbdc_errors_name_the_flat_key(tmp_path, override, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"sources": [{"kind": "csv", "path": str(path)}]}}))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_train_config(path, [override])


def test_one_options_object_reaches_the_model():
    """ModelConfig's options go to the model as they are; unset heads / reduced_dim are the
    architecture's own (dalip-tiny: 16 reduced channels)."""
    options = dataclasses.replace(
        ModelConfig().mbdc,
        heads=2,
        dropout=0.2,
        learnable_temperature=True,
        dropout_kind="channel",
        weighting="none",
    )
    model, *_ = create_model("dalip-tiny", mbdc=options)
    assert model.mbdc_options == dataclasses.replace(
        options, reduced_dim=ARCHITECTURE_MBDC["dalip-tiny"].reduced_dim
    )
    assert model.image_mbdc.heads == 2 and model.text_mbdc.weighting == "none"
    # single keyword options still apply on top (the Python API of create_model)
    model, *_ = create_model("dalip-tiny", mbdc=options, heads=1)
    assert model.mbdc_options.heads == 1 and model.mbdc_options.dropout == 0.2


@pytest.mark.parametrize("name", ["plantmix-vit-b16.yaml", "plantmix-siglip2-b16.yaml"])
def test_the_gpu_recipes_are_valid_configs_of_supported_architectures(name):
    from pathlib import Path

    from dalip.model.catalog import describe

    config = load_train_config(Path(__file__).parent.parent / "configs" / name)
    architecture = describe(config.model.name)
    assert architecture.supported and config.model.pretrained in architecture.pretrained
    assert config.loss.form in ("auto", architecture.loss_form)


def test_each_experimental_option_is_a_config_field_named_when_set():
    assert experimental_settings(TrainConfig()) == []
    for name in EXPERIMENTAL_OPTIONS:  # a renamed field fails here
        option_value(TrainConfig(), name)
    config = TrainConfig()
    config.loss.combine = "similarity"
    config.model.mbdc = dataclasses.replace(config.model.mbdc, dropout_kind="channel", heads=2)
    assert experimental_settings(config) == ["model.dropout_kind=channel", "loss.combine=similarity"]


def test_dalip_train_names_the_experimental_options_a_run_sets(train_data, tmp_path, capsys):  # noqa: F811
    config = write_config(train_data, tmp_path / "run", steps=1)
    assert main(["train", "--config", str(config), "--set", "optim.head_warmup_steps=1"]) == 0
    out = capsys.readouterr().out
    assert "experimental options set: optim.head_warmup_steps=1 (the ablations found none" in out
    assert main(["train", "--config", str(config), "--out-dir", str(tmp_path / "plain")]) == 0
    assert "experimental" not in capsys.readouterr().out


def test_a_config_file_that_is_no_architecture_is_refused(train_data, tmp_path, capsys):  # noqa: F811
    for name, text, message in [
        (
            "test-tiny.json",
            '{"seed": 1}',
            "not an open_clip model config (expected a JSON object with embed_dim",
        ),
        ("other.json", (train_data / "test-tiny.json").read_text(), "describes the architecture 'other'"),
    ]:
        (tmp_path / name).write_text(text)
        config = write_config(train_data, tmp_path / "run", model={"config_file": str(tmp_path / name)})
        line = user_error(capsys, "train", "--config", config)
        assert f"model.config_file {tmp_path / name}: " in line and message in line


def _alias_bomb(levels: int) -> str:
    """A few hundred bytes whose last key expands to 9**levels scalars."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    lines.append(f"seed: [{', '.join([f'*l{levels - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb(9))  # 9**9 values: gigabytes once expanded
    assert len(config.read_text()) < 1000
    line = user_error(capsys, "train", "--config", config, "--print-config")
    assert "more than 100,000 values once its aliases are expanded" in line and len(line) < 300
    line = user_error(capsys, "train", "--print-config", "--set", f"seed={_alias_bomb(6)}")
    assert "override of seed" in line and len(line) < 300


def test_deep_nesting_is_refused_in_files_and_overrides(tmp_path, capsys):
    config = tmp_path / "deep.yaml"
    config.write_text("seed: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "nested more than 64 levels deep" in user_error(capsys, "train", "--config", config)
    deep = ".".join(["model"] * 50_000)
    assert "more than 64 levels of sections" in user_error(capsys, "train", "--set", f"{deep}=1")
    with pytest.raises(ValueError, match="nested more than 64"):
        load_yaml_text("a: " + "{b: " * 100 + "1" + "}" * 100)


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("optim:\n  lr: 1e-3\n  lr: 1e-1\n")
    line = user_error(capsys, "train", "--config", config, "--print-config")
    assert str(config) in line and "key 'lr' appears twice" in line
    assert load_yaml_text("<<: {a: 1}\na: 2\n") == {"a": 2}  # a merge key may be overridden


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.image_size=100000", "model.image_size: expected an integer >= 1 and <= 2048"),
        ("model.context_length=10000000", "model.context_length: expected an integer >= 1 and <= 1024"),
        (f"seed={2**70}", "seed: expected an integer >= 0 and <= 4.29497e+09, got 1180591620717411303424"),
    ],
)
def test_sizes_that_would_exhaust_memory_are_refused(capsys, override, message):
    assert message in user_error(capsys, "train", "--print-config", "--set", override)


def test_yaml_stays_safe_and_reads_what_it_read(tmp_path):
    assert load_yaml_text("a: [1, {b: 2e-3}]\nc: null\n") == yaml.safe_load("a: [1, {b: 2e-3}]\nc: null\n")
    with pytest.raises(yaml.YAMLError):
        load_yaml_text("!!python/object/apply:os.system ['echo hi']")

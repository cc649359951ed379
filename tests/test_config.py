"""The run configuration: MBDC options declared once (`MBDCOptions`), held by ModelConfig,
written flat in YAML as before, and passed to the model as one object."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
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

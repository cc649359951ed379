"""Run configuration: dataclass schemas, YAML loading, `section.field=value` overrides and
validation. Every error names the field (e.g. `optim.lr`) and what was expected."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml


@dataclass
class SourceConfig:
    """One image-text source of a training or evaluation mix.

    kind: "csv" (CSV/TSV file), "folder" (root/<class>/*.jpg) or "webdataset"
    (tar shards, brace patterns allowed). Paths in a CSV are relative to the file.
    """

    kind: str
    path: str
    weight: float = 1.0
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str | None = None
    templates: list[str] | None = None
    caption_weights: dict[str, float] | None = None
    num_samples: int | None = None


@dataclass
class ModelConfig:
    """Architecture, starting weights and DALIP heads.

    name: an open_clip ViT architecture or one of ours; config_file: optional JSON
    architecture (open_clip format) registered under its file name before building.
    heads / reduced_dim: None takes the model's default (paper: 4 x 46).
    """

    name: str = "dalip-tiny"
    pretrained: str | None = None
    config_file: str | None = None
    alpha: float = 0.5
    heads: int | None = None
    reduced_dim: int | None = None
    dropout: float = 0.1
    learnable_temperature: bool = False
    separate_second_temperature: bool = False
    image_size: int | None = None
    context_length: int | None = None


@dataclass
class LossConfig:
    """kind: "dalip" or "clip" (the plain OpenCLIP loss: first order only, alpha = 1)."""

    kind: str = "dalip"
    combine: str = "losses"
    local_loss: bool = False
    gather_with_grad: bool = True


@dataclass
class DataConfig:
    """Training sources with mixing weights; `val`: an image folder for zero-shot checks.

    augment: open_clip's training transform (random resized crop); False uses the
    deterministic validation transform."""

    sources: list[SourceConfig] = field(default_factory=list)
    workers: int = 2
    num_samples: int | None = None
    augment: bool = True
    val: str | None = None
    val_templates: str = "generic"


@dataclass
class OptimConfig:
    """AdamW with a cosine (or constant) schedule after linear warmup, in optimiser steps."""

    lr: float = 5e-4
    mbdc_lr: float | None = None
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    accumulation: int = 1


@dataclass
class LockConfig:
    """LiT-style locking: freeze a tower except its last `unlocked_*` groups/layers."""

    image: bool = False
    image_unlocked_groups: int = 0
    text: bool = False
    text_unlocked_layers: int = 0


@dataclass
class TrainConfig:
    """A whole training run. `batch_size` is the global batch (all ranks, all
    accumulation steps); `steps`, when set, overrides `epochs`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    out_dir: str = "runs/dalip"
    batch_size: int = 64
    epochs: int = 1
    steps: int | None = None
    precision: str = "fp32"
    grad_checkpointing: bool = False
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    eval_every: int = 0
    max_nonfinite: int = 5
    tensorboard: bool = True
    progress: bool = True


PRECISIONS = ("fp32", "bf16", "amp")
LOSS_KINDS = ("dalip", "clip")
SCHEDULES = ("cosine", "constant")
SOURCE_KINDS = ("csv", "folder", "webdataset")


T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data; unknown fields and wrong types are ValueErrors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping of fields, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        raise ValueError(f"unknown field {_join(where, unknown[0])!r}; expected one of: {', '.join(names)}")
    values = {key: _convert(hints[key], value, _join(where, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{where or 'config'}: {error}") from error


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_kind(value)}")
        return [_convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_kind(value)}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(hint, value, where)


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise ValueError(f"{where}: expected {hint.__name__}, got {_kind(value)} {value!r}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML: 1e-4, true, [a, b], null)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {override!r}: expected FIELD=VALUE, e.g. optim.lr=1e-4")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {override!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def load_train_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """YAML file (or none: the defaults) + overrides -> validated TrainConfig."""
    data: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections at the top level")
        _resolve_relative_paths(data, Path(path).parent)
    config = from_dict(TrainConfig, apply_overrides(data, overrides))
    validate_train_config(config)
    return config


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> None:
    # Paths in a config file are relative to the file, as CSV image paths are to the CSV.
    for source in (data.get("data") or {}).get("sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _rebase(source["path"], base)
    data_section = data.get("data") or {}
    if isinstance(data_section.get("val"), str):
        data_section["val"] = _rebase(data_section["val"], base)


def _rebase(path: str, base: Path) -> str:
    return path if os.path.isabs(path) or "://" in path else str(base / path)


def validate_train_config(config: TrainConfig) -> None:
    """Semantic checks that types cannot express; raises ValueError / FileNotFoundError."""
    _choice("precision", config.precision, PRECISIONS)
    _choice("loss.kind", config.loss.kind, LOSS_KINDS)
    _choice("optim.schedule", config.optim.schedule, SCHEDULES)
    for name in ("batch_size", "epochs", "checkpoint_every", "keep_last", "log_every", "max_nonfinite"):
        _positive(name, getattr(config, name))
    _positive("optim.accumulation", config.optim.accumulation)
    if config.steps is not None:
        _positive("steps", config.steps)
    if config.optim.lr <= 0:
        raise ValueError(f"optim.lr: expected a positive learning rate, got {config.optim.lr}")
    if not 0.0 <= config.model.alpha <= 1.0:
        raise ValueError(f"model.alpha: expected a value in [0, 1], got {config.model.alpha}")
    if not config.data.sources:
        raise ValueError("data.sources: expected at least one source (kind, path, weight)")
    for index, source in enumerate(config.data.sources):
        _choice(f"data.sources[{index}].kind", source.kind, SOURCE_KINDS)
        if source.weight <= 0:
            raise ValueError(f"data.sources[{index}].weight: expected a positive weight, got {source.weight}")
        if source.kind != "webdataset" and not os.path.exists(source.path):
            raise FileNotFoundError(f"data.sources[{index}].path: not found: {source.path}")
    if config.data.val is not None and not os.path.isdir(config.data.val):
        raise FileNotFoundError(f"data.val: image folder not found: {config.data.val}")
    if config.model.config_file is not None and not os.path.isfile(config.model.config_file):
        raise FileNotFoundError(f"model.config_file: not found: {config.model.config_file}")


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-able data of a config dataclass (stored in checkpoints)."""
    return dataclasses.asdict(config)

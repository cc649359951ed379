"""Run configuration: dataclass schemas, YAML loading, `section.field=value` overrides and
validation. Every error names the field (e.g. `optim.lr`) and what was expected.

Every field's type, and the range or choices given with `checked(...)`, is the one source
of validation (`check_fields`): numbers must be finite and in range, strings one of their
choices, whatever file or command line the value came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

PRECISIONS = ("fp32", "bf16", "amp")
LOSS_KINDS = ("dalip", "clip")
COMBINE_MODES = ("losses", "similarity")
SCHEDULES = ("cosine", "constant")
SOURCE_KINDS = ("csv", "folder", "webdataset")
DEVICES = ("auto", "cpu", "cuda")


def checked(
    default: Any, *, minimum: float | None = None, maximum: float | None = None, above: float | None = None,
    below: float | None = None, choices: Sequence[str] | None = None,
) -> Any:
    """A dataclass field whose values must lie in a range (`minimum <= v <= maximum`,
    `above < v < below`) or be one of `choices`; None, where the type allows it, passes."""
    limits = dict(minimum=minimum, maximum=maximum, above=above, below=below, choices=choices)
    return field(default=default, metadata={k: v for k, v in limits.items() if v is not None})


@dataclass
class SourceConfig:
    """One image-text source of a training or evaluation mix.

    kind: "csv" (CSV/TSV file), "folder" (root/<class>/*.jpg) or "webdataset"
    (tar shards, brace patterns allowed). Paths in a CSV are relative to the file.
    """

    kind: str = field(metadata={"choices": SOURCE_KINDS})
    path: str
    weight: float = checked(1.0, above=0)
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str | None = None
    templates: list[str] | None = None
    caption_weights: dict[str, float] | None = None
    num_samples: int | None = checked(None, minimum=1)


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
    alpha: float = checked(0.5, minimum=0, maximum=1)
    heads: int | None = checked(None, minimum=1)
    reduced_dim: int | None = checked(None, minimum=1)
    dropout: float = checked(0.1, minimum=0, below=1)
    learnable_temperature: bool = False
    separate_second_temperature: bool = False
    image_size: int | None = checked(None, minimum=1)
    context_length: int | None = checked(None, minimum=1)


@dataclass
class LossConfig:
    """kind: "dalip" or "clip" (the plain OpenCLIP loss: first order only, alpha = 1)."""

    kind: str = checked("dalip", choices=LOSS_KINDS)
    combine: str = checked("losses", choices=COMBINE_MODES)
    local_loss: bool = False
    gather_with_grad: bool = True


@dataclass
class DataConfig:
    """Training sources with mixing weights; `val`: an image folder for zero-shot checks.

    augment: open_clip's training transform (random resized crop); False uses the
    deterministic validation transform."""

    sources: list[SourceConfig] = field(default_factory=list)
    workers: int = checked(2, minimum=0)
    num_samples: int | None = checked(None, minimum=1)
    augment: bool = True
    val: str | None = None
    val_templates: str = "generic"


@dataclass
class OptimConfig:
    """AdamW with a cosine (or constant) schedule after linear warmup, in optimiser steps."""

    lr: float = checked(5e-4, above=0)
    mbdc_lr: float | None = checked(None, above=0)
    weight_decay: float = checked(0.2, minimum=0)
    beta1: float = checked(0.9, minimum=0, below=1)
    beta2: float = checked(0.98, minimum=0, below=1)
    eps: float = checked(1e-6, above=0)
    warmup_steps: int = checked(100, minimum=0)
    schedule: str = checked("cosine", choices=SCHEDULES)
    min_lr_ratio: float = checked(0.0, minimum=0, maximum=1)
    grad_clip: float | None = checked(1.0, above=0)
    accumulation: int = checked(1, minimum=1)


@dataclass
class LockConfig:
    """LiT-style locking: freeze a tower except its last `unlocked_*` groups/layers."""

    image: bool = False
    image_unlocked_groups: int = checked(0, minimum=0)
    text: bool = False
    text_unlocked_layers: int = checked(0, minimum=0)


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
    batch_size: int = checked(64, minimum=1)
    epochs: int = checked(1, minimum=1)
    steps: int | None = checked(None, minimum=1)
    precision: str = checked("fp32", choices=PRECISIONS)
    grad_checkpointing: bool = False
    device: str = checked("auto", choices=DEVICES)
    seed: int = checked(0, minimum=0)
    checkpoint_every: int = checked(500, minimum=1)
    keep_last: int = checked(3, minimum=1)
    log_every: int = checked(10, minimum=1)
    eval_every: int = checked(0, minimum=0)
    max_nonfinite: int = checked(5, minimum=1)
    tensorboard: bool = True
    progress: bool = True


T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data; unknown fields and wrong types are ValueErrors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip(': .') or 'config'}: expected a mapping of fields, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:
        prefix, _, name = _join(where, str(unknown[0])).rpartition(": ")  # "file: " stays outside the quotes
        raise ValueError(f"{prefix + ': ' if prefix else ''}unknown field {name!r}; "
                         f"expected one of: {', '.join(names)}")
    values = {key: _convert(hints[key], value, _join(where, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"{where.rstrip(': .') or 'config'}: {error}") from error


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # e.g. `str | list[str]`: the first that fits
            try:
                return _convert(option, value, where)
            except ValueError:
                continue
        return _convert(options[-1], value, where)
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
    if hint is Any:
        return value
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
    """"optim" + "lr" -> "optim.lr"; a prefix ending in ": " or "." (a file, a list item) is kept as is."""
    if not where or where.endswith((": ", ".")):
        return f"{where}{key}"
    return f"{where}.{key}"


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
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as error:
            raise ValueError(f"override {override!r}: the value is not valid YAML "
                             f"({str(error).splitlines()[0]}); quote it or fix the brackets") from error
    return data


def check_fields(config: Any, where: str = "") -> None:
    """ValueError naming the first field of a dataclass config (recursively) whose value is
    not finite, out of its range or not one of its choices (`dalip.config.checked`)."""
    for spec in dataclasses.fields(config):
        value, name = getattr(config, spec.name), _join(where, spec.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_fields(item, f"{name}[{index}]")
                else:
                    _check_value(item, spec.metadata, f"{name}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_value(item, {}, f"{name}.{key}")
        else:
            _check_value(value, spec.metadata, name)


def _check_value(value: Any, limits: Mapping[str, Any], name: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        bounds = [(">=", limits.get("minimum"), lambda v, b: v >= b), ("<=", limits.get("maximum"), lambda v, b: v <= b),
                  (">", limits.get("above"), lambda v, b: v > b), ("<", limits.get("below"), lambda v, b: v < b)]
        wanted = " and ".join(f"{sign} {bound:g}" for sign, bound, _ in bounds if bound is not None)
        kind = "an integer" if isinstance(value, int) else "a finite number"
        if not math.isfinite(value) or not all(test(value, bound) for _, bound, test in bounds if bound is not None):
            raise ValueError(f"{name}: expected {kind}{' ' + wanted if wanted else ''}, got {value!r}")
    elif "choices" in limits and value not in limits["choices"]:
        raise ValueError(f"{name}: expected one of {', '.join(limits['choices'])}, got {value!r}")


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """A YAML file's data; FileNotFoundError / ValueError naming the file otherwise."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}" if not Path(path).exists()
                                else f"{what} {path}: not a file")
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}); save the {what} as UTF-8") from error
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error


def load_train_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """YAML file (or none: the defaults) + overrides -> validated TrainConfig.

    Relative paths in the file are relative to the file; in overrides, to the working folder.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path, "config file") or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections at the top level, got {_kind(data)}")
        _resolve_relative_paths(data, Path(path).parent, str(path))
    config = from_dict(TrainConfig, apply_overrides(data, overrides))
    _make_paths_absolute(config)  # what is left relative came from --set: the working folder's
    validate_train_config(config)
    return config


def _make_paths_absolute(config: TrainConfig) -> None:
    for source in config.data.sources:
        source.path = _rebase(source.path, Path.cwd())
    config.out_dir = _rebase(config.out_dir, Path.cwd())
    if config.data.val:
        config.data.val = _rebase(config.data.val, Path.cwd())
    if config.model.config_file:
        config.model.config_file = _rebase(config.model.config_file, Path.cwd())
    pretrained = config.model.pretrained
    if pretrained and (_looks_like_path(pretrained) or os.path.exists(pretrained)):
        config.model.pretrained = _rebase(pretrained, Path.cwd())


def _resolve_relative_paths(data: dict[str, Any], base: Path, where: str) -> None:
    # Paths in a config file are relative to the file, as CSV image paths are to the CSV.
    for section in ("model", "data"):
        if section in data and data[section] is not None and not isinstance(data[section], dict):
            raise ValueError(f"{where}: section {section!r} must be a mapping of fields, got {_kind(data[section])}")
    model, data_section = data.get("model") or {}, data.get("data") or {}
    sources = data_section.get("sources") or []
    for source in sources if isinstance(sources, list) else []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = _rebase(source["path"], base)
    for node, key in ((data_section, "val"), (model, "config_file"), (data, "out_dir")):
        if isinstance(node.get(key), str):
            node[key] = _rebase(node[key], base)
    pretrained = model.get("pretrained")
    if isinstance(pretrained, str) and (_looks_like_path(pretrained) or (base / pretrained).exists()):
        model["pretrained"] = _rebase(pretrained, base)  # else an open_clip tag such as "openai"


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _rebase(path: str, base: Path) -> str:
    if "://" in path or path.startswith("pipe:"):
        return path
    return os.path.abspath(os.path.join(base, os.path.expanduser(path)))


def validate_train_config(config: TrainConfig) -> None:
    """Field checks from the types (check_fields), then what types cannot express;
    raises ValueError / FileNotFoundError naming the field."""
    check_fields(config)
    if not config.data.sources:
        raise ValueError("data.sources: expected at least one source (kind, path, weight)")
    for index, source in enumerate(config.data.sources):
        where = f"data.sources[{index}]"
        if source.kind == "webdataset":
            continue
        if not os.path.exists(source.path):
            raise FileNotFoundError(f"{where}.path: not found: {source.path}")
        if source.kind == "csv" and not os.path.isfile(source.path):
            raise ValueError(f"{where}.path: {source.path} is not a file; a csv source is a CSV/TSV file")
        if source.kind == "folder" and not os.path.isdir(source.path):
            raise ValueError(f"{where}.path: {source.path} is not a folder; a folder source is root/<class>/*.jpg")
    if config.data.val is not None and not os.path.isdir(config.data.val):
        raise FileNotFoundError(f"data.val: image folder not found: {config.data.val}")
    if config.model.config_file is not None and not os.path.isfile(config.model.config_file):
        raise FileNotFoundError(f"model.config_file: not found: {config.model.config_file}")
    if os.path.exists(config.out_dir) and not os.path.isdir(config.out_dir):
        raise NotADirectoryError(f"out_dir: {config.out_dir} exists and is not a folder")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-able data of a config dataclass (stored in checkpoints)."""
    return dataclasses.asdict(config)

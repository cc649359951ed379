"""Run configuration: the dataclasses of a run, YAML loading, `section.field=value` overrides
and validation (conversion and Literal choices through `dalip.schema`). Every error names
the field (e.g. `optim.lr`) and what was expected."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from dalip.schema import apply_overrides, check_choices, from_dict


Precision = Literal["fp32", "bf16", "amp"]  # amp: float16 autocast with a gradient scaler
LossKind = Literal["dalip", "clip"]
CombineMode = Literal["losses", "similarity"]
Schedule = Literal["cosine", "constant"]
SourceKind = Literal["csv", "folder", "webdataset"]
# Where MBDC's token weights meet the reduction: "before_norm" is dalip 0.1's (nearly inert).
Weighting = Literal["after_norm", "batchnorm", "none", "before_norm"]
DropoutKind = Literal["element", "channel"]  # channel: whole reduced channels of a token set


@dataclass(frozen=True)
class MBDCOptions:
    """The MBDC head's shape. Defaults are the paper's (4 heads x 46 reduced channels);
    small architectures set their own (`dalip.model.factory.ARCHITECTURE_MBDC`)."""

    heads: int = 4
    reduced_dim: int = 46
    dropout: float = 0.1
    learnable_temperature: bool = False
    dropout_kind: DropoutKind = "element"
    weighting: Weighting = "after_norm"


PAPER_MBDC = MBDCOptions()


@dataclass
class SourceConfig:
    """One image-text source of a training or evaluation mix.

    kind: "csv" (CSV/TSV file), "folder" (root/<class>/*.jpg) or "webdataset"
    (tar shards, brace patterns allowed). Paths in a CSV are relative to the file.
    """

    kind: SourceKind
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
    weighting: where the summary-cosine token weights meet the MBDC reduction
    ("after_norm", "batchnorm", "none", or dalip 0.1's nearly inert "before_norm");
    dropout_kind: "element" or "channel" (whole reduced channels) at rate `dropout`.
    """

    name: str = "dalip-tiny"
    pretrained: str | None = None
    config_file: str | None = None
    alpha: float = 0.5
    heads: int | None = None
    reduced_dim: int | None = None
    dropout: float = PAPER_MBDC.dropout
    learnable_temperature: bool = PAPER_MBDC.learnable_temperature
    dropout_kind: DropoutKind = PAPER_MBDC.dropout_kind
    weighting: Weighting = PAPER_MBDC.weighting
    separate_second_temperature: bool = False
    image_size: int | None = None
    context_length: int | None = None


@dataclass
class LossConfig:
    """kind: "dalip" or "clip" (the plain OpenCLIP loss: first order only, alpha = 1)."""

    kind: LossKind = "dalip"
    combine: CombineMode = "losses"
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
    schedule: Schedule = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    accumulation: int = 1
    head_warmup_steps: int = 0  # first N steps: only MBDC heads and temperatures train


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
    precision: Precision = "fp32"
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
    """Choices (Literal fields) and checks that types cannot express; raises ValueError /
    FileNotFoundError naming the field."""
    check_choices(config)
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
        if source.weight <= 0:
            raise ValueError(f"data.sources[{index}].weight: expected a positive weight, got {source.weight}")
        if source.kind != "webdataset" and not os.path.exists(source.path):
            raise FileNotFoundError(f"data.sources[{index}].path: not found: {source.path}")
    if config.data.val is not None and not os.path.isdir(config.data.val):
        raise FileNotFoundError(f"data.val: image folder not found: {config.data.val}")
    if config.model.config_file is not None and not os.path.isfile(config.model.config_file):
        raise FileNotFoundError(f"model.config_file: not found: {config.model.config_file}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-able data of a config dataclass (stored in checkpoints)."""
    return dataclasses.asdict(config)

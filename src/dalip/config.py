"""Run configuration: dataclasses, YAML loading and command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field


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

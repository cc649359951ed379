"""Run configuration: dataclasses, YAML loading and command-line overrides.

Every field's type, and the range or choices given with `checked(...)`, is the one source
of validation (`dalip.config_io.check_fields`): numbers must be finite and in range,
strings one of their choices, whatever file or command line the value came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

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

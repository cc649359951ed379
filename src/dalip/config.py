"""Run configuration: the dataclasses of a run, YAML loading, `section.field=value` overrides
and validation. Each field's type (Literal choices) and range (`checked(...)`) are its one
validation, applied by `dalip.schema` whatever file, override or Python call the value came
from; `validate_train_config` adds what types cannot say (paths that must exist). Every
error names the field (e.g. `optim.lr`) and what was expected."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dalip.config_paths import make_paths_absolute, resolve_relative_paths
from dalip.readers import read_yaml
from dalip.schema import apply_overrides, check_fields, checked, flattened, from_dict, to_dict

Precision = Literal["fp32", "bf16", "amp"]  # amp: float16 autocast with a gradient scaler
LossKind = Literal["dalip", "clip"]
CombineMode = Literal["losses", "similarity"]
# softmax: CLIP's InfoNCE; sigmoid: SigLIP's pairwise loss with a learned bias; auto: the start model's
LossForm = Literal["softmax", "sigmoid"]
LossFormChoice = Literal["auto", "softmax", "sigmoid"]
Schedule = Literal["cosine", "constant"]
SourceKind = Literal["csv", "folder", "webdataset"]
# Where MBDC's token weights meet the reduction: "before_norm" is dalip 0.1's (nearly inert).
Weighting = Literal["after_norm", "batchnorm", "none", "before_norm"]
LoRATarget = Literal["q", "k", "v", "out", "mlp"]  # dalip.model.lora.LORA_TARGETS
AnswerMode = Literal["auto", "fused", "first", "second"]  # auto: chosen on validation data, or the default
DropoutKind = Literal["element", "channel"]  # channel: whole reduced channels of a token set
Device = Literal["auto", "cpu", "cuda"]  # auto: cuda when available; under torchrun, each rank's own GPU


@dataclass(frozen=True)
class MBDCOptions:
    """The MBDC head's shape. Defaults are the paper's (4 heads x 46 reduced channels);
    small architectures set their own (`dalip.model.factory.ARCHITECTURE_MBDC`). `heads` or
    `reduced_dim` None: the architecture's own (`mbdc_options_for` fills them; a model built
    directly takes the paper's)."""

    heads: int | None = checked(4, minimum=1)
    reduced_dim: int | None = checked(46, minimum=1)
    dropout: float = checked(0.1, minimum=0, below=1)
    learnable_temperature: bool = False
    dropout_kind: DropoutKind = "element"
    weighting: Weighting = "after_norm"

    def filled(self, defaults: MBDCOptions) -> MBDCOptions:
        """These options with `heads` / `reduced_dim` taken from `defaults` where they are None."""
        return dataclasses.replace(
            self,
            heads=self.heads if self.heads is not None else defaults.heads,
            reduced_dim=self.reduced_dim if self.reduced_dim is not None else defaults.reduced_dim,
        )


PAPER_MBDC = MBDCOptions()
# The first-order weight alpha: the paper's 0.5. 0.75 scored best in the quickstart ablation
# (3 paired seeds; RESULTS.md "Ablation") and was the default until 2026-12-02, but by a margin
# whose confidence interval includes zero, and a check on real plant photos went the other
# way (docs: "The method"): a default changes only on a difference that excludes zero.
DEFAULT_ALPHA = 0.5
# The similarity a DALIP model answers with when its file names none (one trained without the
# validation data to choose, or written before dalip 0.5): the first order alone, as the authors'
# release scores. On real photos (issue 39: two domains, 5 paired seeds each) the first-order
# answers of DALIP-tuned weights kept 4 to 7 more general points than fused at the same domain
# accuracy; on the embedded synthetic data fused scored higher (benchmarks/RESULTS.md), and a
# default chosen on those alone has failed to transfer before. `model.answer_mode: auto` with
# `data.val` and `data.val_general` chooses per model instead (dalip.evaluation.validation).
DEFAULT_ANSWER_MODE = "first"


@dataclass
class SourceConfig:
    """One image-text source of a training or evaluation mix.

    kind: "csv" (CSV/TSV file), "folder" (root/<class>/*.jpg) or "webdataset"
    (tar shards, brace patterns allowed). Paths in a CSV are relative to the file.
    resampled (webdataset only): each rank's DataLoader worker draws shards with
    replacement instead of reading its share of them once; None (auto) resamples when the
    source has fewer shards than ranks x workers, so that every worker mixes it in.
    text_types: captions made from the classes' taxonomy (`taxonomy`, else taxonomy.csv in
    the folder, next to the table or beside the shards; dalip.data.taxonomy), drawn per
    sample by weight as `caption_weights` are; "caption" is the source's own caption.
    domain: what the source is data of ("plant", "general"): `dalip mixlaw` mixes by domain,
    dividing a domain's share among its sources by their weights; training ignores it.
    """

    kind: SourceKind
    path: str
    weight: float = checked(1.0, above=0)
    image_key: str = "filepath"
    caption_key: str = "caption"
    label_key: str | None = None
    templates: list[str] | None = None
    caption_weights: dict[str, float] | None = None
    num_samples: int | None = checked(None, minimum=1)
    resampled: bool | None = None
    taxonomy: str | None = None
    text_types: dict[str, float] | None = None
    domain: str | None = None


@dataclass
class ModelConfig:
    """Architecture, starting weights and DALIP heads.

    name: an open_clip ViT architecture or one of ours; config_file: optional JSON
    architecture (open_clip format) registered under its file name before building.
    mbdc: the MBDC heads' options, written flat in YAML (`model.heads`, `model.weighting`, ...):
    heads / reduced_dim None take the architecture's default (paper: 4 x 46);
    weighting: where the summary-cosine token weights meet the MBDC reduction
    ("after_norm", "batchnorm", "none", or dalip 0.1's nearly inert "before_norm");
    dropout_kind: "element" or "channel" (whole reduced channels) at rate `dropout`.
    answer_mode: the similarity the trained model answers with by default, stored in its file
    ("fused", "first", "second"); "auto" chooses fused or first on `data.val` and
    `data.val_general` at the end of a DALIP run, else leaves DEFAULT_ANSWER_MODE.
    """

    name: str = "dalip-tiny"
    pretrained: str | None = None
    config_file: str | None = None
    alpha: float = checked(DEFAULT_ALPHA, minimum=0, maximum=1)
    mbdc: MBDCOptions = flattened(lambda: MBDCOptions(heads=None, reduced_dim=None))
    separate_second_temperature: bool = False
    answer_mode: AnswerMode = "auto"
    # bounded so a typo cannot ask for terabytes: the largest open_clip ViTs use 518 px and 256 tokens
    image_size: int | None = checked(None, minimum=1, maximum=2048)
    context_length: int | None = checked(None, minimum=1, maximum=1024)


@dataclass
class LossConfig:
    """kind: "dalip" or "clip" (the plain OpenCLIP loss: first order only, alpha = 1).

    form: "softmax" (CLIP's InfoNCE), "sigmoid" (SigLIP's pairwise loss with a learned logit
    bias, the second order with a bias of its own) or "auto": the start model's own (sigmoid for
    the SigLIP family and models trained with it, else softmax). The form is stored with the
    model, which answers in it (`predict` probabilities: sigmoid of scale * cos + bias)."""

    kind: LossKind = "dalip"
    form: LossFormChoice = "auto"
    combine: CombineMode = "losses"
    local_loss: bool = False
    gather_with_grad: bool = True


@dataclass
class DataConfig:
    """Training sources with mixing weights; `val`: an image folder for zero-shot checks;
    `val_general`: a folder of the general data the run should not forget, checked beside `val`
    (with it, the end of a DALIP run chooses the model's answer mode: `model.answer_mode`).

    augment: open_clip's training transform (random resized crop); False uses the
    deterministic validation transform."""

    sources: list[SourceConfig] = field(default_factory=list)
    workers: int = checked(2, minimum=0)
    num_samples: int | None = checked(None, minimum=1)
    augment: bool = True
    val: str | None = None
    val_general: str | None = None
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
    schedule: Schedule = "cosine"
    min_lr_ratio: float = checked(0.0, minimum=0, maximum=1)
    grad_clip: float | None = checked(1.0, above=0)
    accumulation: int = checked(1, minimum=1)
    head_warmup_steps: int = checked(0, minimum=0)  # first N steps: only MBDC heads and temperatures train
    fused: bool = True  # torch's fused AdamW kernel (CPU and CUDA); false: torch's default implementation


@dataclass
class LockConfig:
    """LiT-style locking: freeze a tower except its last `unlocked_*` groups/layers."""

    image: bool = False
    image_unlocked_groups: int = checked(0, minimum=0)
    text: bool = False
    text_unlocked_layers: int = checked(0, minimum=0)


@dataclass
class LoRAConfig:
    """Low-rank adapters on both towers (`dalip.model.lora`); rank 0 is off. The towers' own
    weights freeze; the adapters, the MBDC heads and the temperatures train. Saved merged."""

    rank: int = checked(0, minimum=0, maximum=1024)
    alpha: float = checked(1.0, above=0)  # the update is scaled by alpha / rank
    dropout: float = checked(0.0, minimum=0, below=1)  # of the adapters' rank components
    targets: list[LoRATarget] = field(default_factory=lambda: ["q", "k", "v"])


@dataclass
class L2SPConfig:
    """L2-SP (Li et al. 2018): coefficient / 2 * ||w - w_start||^2 over the towers' trainable
    weights added to the loss, w_start read from `model.pretrained`; 0 is off."""

    coefficient: float = checked(0.0, minimum=0)


@dataclass
class DistillConfig:
    """Distillation to the frozen start model (`model.pretrained`) on each batch: the KL
    divergence from its image-text similarity distributions (both directions, at its
    temperature divided by `temperature`) to the tuned model's first-order ones, times
    temperature^2, weighted by `coefficient`; 0 is off."""

    coefficient: float = checked(0.0, minimum=0)
    temperature: float = checked(1.0, above=0)


@dataclass
class TrainConfig:
    """A whole training run. `batch_size` is the global batch (all ranks, all
    accumulation steps); `steps`, when set, overrides `epochs`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    l2sp: L2SPConfig = field(default_factory=L2SPConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    out_dir: str = "runs/dalip"
    batch_size: int = checked(64, minimum=1)
    epochs: int = checked(1, minimum=1)
    steps: int | None = checked(None, minimum=1)
    precision: Precision = "fp32"  # GPUs: bf16; fp32 is for CPUs and debugging
    tf32: bool = True  # CUDA: TF32 tensor cores for float32 matmuls and convolutions (BDC's Gram stays IEEE)
    compile: bool = False  # torch.compile the forward (both towers and the MBDC heads)
    grad_checkpointing: bool = False
    device: Device = "auto"
    distributed_timeout_minutes: float = checked(60.0, above=0)  # how long a rank waits for the others
    seed: int = checked(0, minimum=0, maximum=2**32 - 1)
    checkpoint_every: int = checked(500, minimum=1)
    keep_last: int = checked(3, minimum=1)
    log_every: int = checked(10, minimum=1)
    eval_every: int = checked(0, minimum=0)
    max_nonfinite: int = checked(5, minimum=1)
    tensorboard: bool = True
    progress: bool = True


def load_train_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """YAML file (or none: the defaults) + overrides -> validated TrainConfig.

    Relative paths in the file are relative to the file; in overrides, to the working folder.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path, "config file") or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}"
            )
        resolve_relative_paths(data, Path(path).parent, str(path))
    config = from_dict(TrainConfig, apply_overrides(data, overrides))
    make_paths_absolute(config)  # what is left relative came from --set: the working folder's
    validate_train_config(config)
    return config


def validate_train_config(config: TrainConfig) -> None:
    """Field checks from the types and ranges (`dalip.schema.check_fields`), then what types
    cannot express; raises ValueError / FileNotFoundError naming the field."""
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
            raise ValueError(
                f"{where}.path: {source.path} is not a folder; a folder source is root/<class>/*.jpg"
            )
    for key in ("val", "val_general"):
        folder = getattr(config.data, key)
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(f"data.{key}: image folder not found: {folder}")
    if config.data.val_general is not None and config.data.val is None:
        raise ValueError(
            "data.val_general: set data.val too (the domain's validation folder it is weighed against)"
        )
    if config.model.config_file is not None and not os.path.isfile(config.model.config_file):
        raise FileNotFoundError(f"model.config_file: not found: {config.model.config_file}")
    if os.path.exists(config.out_dir) and not os.path.isdir(config.out_dir):
        raise NotADirectoryError(f"out_dir: {config.out_dir} exists and is not a folder")
    for name, on in (("l2sp", config.l2sp.coefficient > 0), ("distill", config.distill.coefficient > 0)):
        if on and config.model.pretrained is None:
            raise ValueError(
                f"{name}.coefficient: needs model.pretrained, the start model it holds the run to"
            )
    if config.lora.rank and not config.lora.targets:
        raise ValueError("lora.targets: expected some of q, k, v, out, mlp")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/YAML-able data of a config dataclass (stored in checkpoints): MBDC options
    flat in `model`, as in the YAML file."""
    return to_dict(config)


# Method options the ablations (docs: "The method") found no better than the defaults: kept
# for research, and named by `dalip train` when a run sets one away from its default.
EXPERIMENTAL_OPTIONS = (
    "model.weighting",
    "model.dropout_kind",
    "model.learnable_temperature",
    "model.separate_second_temperature",
    "loss.combine",
    "optim.head_warmup_steps",
    "optim.mbdc_lr",
)


def experimental_settings(config: TrainConfig) -> list[str]:
    """`name=value` of each experimental option `config` sets away from its default."""
    default = TrainConfig()
    changed = [(name, option_value(config, name)) for name in EXPERIMENTAL_OPTIONS]
    return [f"{name}={value}" for name, value in changed if value != option_value(default, name)]


def option_value(config: TrainConfig, name: str) -> Any:
    """The value of a dotted option (`model.weighting`: the MBDC options are flat in `model`)."""
    section, key = name.split(".")
    part = getattr(config, section)
    return getattr(part, key) if hasattr(part, key) else getattr(part.mbdc, key)

"""The configuration reference, generated from the config dataclasses so that it cannot drift:
every field's dotted name, type, choices, default and range come from `dalip.config`; its meaning
from `FIELD_DOCS`, which `tests/test_train_config.py` keeps equal to the fields (a field without a
line, or a line without a field, fails). The documentation site builds its page from
`config_reference()` (docs/hooks.py)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any

from dalip.config import EXPERIMENTAL_OPTIONS, SourceConfig, TrainConfig

FIELD_DOCS = {
    "model.name": "an open_clip architecture (`dalip models`) or one of dalip's",
    "model.pretrained": "the start weights: an open_clip tag, an open_clip weights file, or a dalip "
    "checkpoint (a `model.safetensors` or a training `checkpoints/step_*.pt`)",
    "model.config_file": "a JSON architecture (open_clip format) registered first; named `NAME.json` for "
    "`model.name: NAME`, and refused when it is no architecture",
    "model.alpha": "the first-order weight in the loss and the fused similarity (the paper's 0.5)",
    "model.heads": "MBDC heads; null: the architecture's default (the paper's 4 for ViT-B)",
    "model.reduced_dim": "channels each MBDC head reduces the tokens to; null: the architecture's "
    "default (the paper's 46)",
    "model.dropout": "MBDC dropout rate",
    "model.learnable_temperature": "DeepBDC's learned distance scale",
    "model.dropout_kind": "`element`, or `channel` (whole reduced channels, the authors' Dropout2d)",
    "model.weighting": "where the summary-cosine token weights meet the MBDC reduction; `before_norm` "
    "is dalip 0.1's",
    "model.separate_second_temperature": "a logit scale of its own for the second-order branch",
    "model.answer_mode": "the similarity the trained model answers with, stored with it; `auto`: chosen "
    "between fused and first on `data.val` and `data.val_general` at the end of a DALIP run, else "
    "dalip's default (first)",
    "model.image_size": "overrides the architecture's input size",
    "model.context_length": "overrides the architecture's text length",
    "loss.kind": "`dalip`, or `clip` (OpenCLIP's loss: heads frozen, alpha 1)",
    "loss.form": "`softmax` (CLIP's InfoNCE), `sigmoid` (SigLIP's, learned biases), `auto`: the start "
    "model's",
    "loss.combine": "`losses` (two contrastive losses, the reference code) or `similarity` (one loss on "
    "the fused similarity)",
    "loss.local_loss": "as OpenCLIP's `--local-loss`",
    "loss.gather_with_grad": "as OpenCLIP's `--gather-with-grad`",
    "data.sources": "the training mix: a list of sources (the rows `data.sources[*]` below)",
    "data.sources[*].kind": "`csv` (CSV/TSV file), `folder` (`root/<class>/*.jpg`) or `webdataset` "
    "(tar shards, brace patterns allowed)",
    "data.sources[*].path": "the file, folder or shard pattern; paths inside a CSV are relative to it",
    "data.sources[*].weight": "the source's share of the mix, relative to the others'",
    "data.sources[*].image_key": "the CSV column of image paths",
    "data.sources[*].caption_key": "the CSV column of captions",
    "data.sources[*].label_key": "a CSV column of class labels (captions from `templates`)",
    "data.sources[*].templates": "caption templates for labelled data (`{}` is the class name)",
    "data.sources[*].caption_weights": "how often each kind of caption is drawn, by weight",
    "data.sources[*].num_samples": "the source's size when its shards do not say",
    "data.sources[*].resampled": "webdataset: each loader worker draws shards with replacement; null: "
    "when the source has fewer shards than ranks x workers",
    "data.sources[*].taxonomy": "a taxonomy CSV for captions made from the classes' taxa (else "
    "`taxonomy.csv` beside the data)",
    "data.sources[*].text_types": "captions from the taxonomy by type, weighted (`caption` is the "
    "source's own)",
    "data.sources[*].domain": "what the source is data of (`plant`, `general`): `dalip mixlaw` mixes by "
    "domain; training ignores it",
    "data.workers": "DataLoader workers per rank",
    "data.num_samples": "the epoch's length when the shards do not say",
    "data.augment": "open_clip's training transform (random resized crop); false: the eval transform",
    "data.val": "an image folder for zero-shot checks every `eval_every` steps",
    "data.val_general": "a general image folder checked beside `data.val` at the end of a DALIP run to "
    "choose `model.answer_mode` (needs `data.val`)",
    "data.val_templates": "the template set of `data.val`",
    "optim.lr": "AdamW's learning rate",
    "optim.mbdc_lr": "the MBDC heads' own learning rate (null: `optim.lr`)",
    "optim.weight_decay": "not applied to norms, biases, embeddings' gains or temperatures",
    "optim.beta1": "AdamW",
    "optim.beta2": "AdamW",
    "optim.eps": "AdamW",
    "optim.warmup_steps": "linear warm-up steps",
    "optim.schedule": "after the warm-up: `cosine` or `constant`",
    "optim.min_lr_ratio": "the cosine's floor, as a fraction of `optim.lr`",
    "optim.grad_clip": "the largest gradient norm (null: no clipping)",
    "optim.accumulation": "micro-batches per step: the exact full-batch gradient, as OpenCLIP's `accum_freq`",
    "optim.head_warmup_steps": "the first N steps train only the MBDC heads and temperatures",
    "optim.fused": "torch's fused AdamW kernel (skips a non-finite step on the device); false: torch's "
    "default implementation (one host read per step)",
    "lock.image": "LiT-style lock of the image tower",
    "lock.image_unlocked_groups": "the image tower's last groups left trainable",
    "lock.text": "lock of the text tower",
    "lock.text_unlocked_layers": "the text tower's last layers left trainable",
    "lora.rank": "LoRA adapters' rank on both towers; 0 is off",
    "lora.alpha": "the adapters' update is scaled by alpha / rank",
    "lora.dropout": "dropout of the adapters' rank components",
    "lora.targets": "where the adapters go: some of `q`, `k`, `v`, `out`, `mlp`",
    "l2sp.coefficient": "L2-SP pull toward the start weights (needs `model.pretrained`); 0 is off",
    "distill.coefficient": "distillation to the frozen start model (needs `model.pretrained`); 0 is off",
    "distill.temperature": "the distillation's temperature",
    "out_dir": "the run's folder: config, metrics, checkpoints, the model",
    "batch_size": "the global batch: all ranks and accumulation steps",
    "epochs": "passes over the data (`steps` overrides it)",
    "steps": "optimiser steps; overrides `epochs`",
    "precision": "`fp32` (CPUs, debugging), `bf16` (GPUs), `amp` (float16 with a grad scaler)",
    "tf32": "CUDA: TF32 tensor cores for float32 matmuls and convolutions (BDC's Gram stays IEEE)",
    "compile": "`torch.compile` the forward (both towers and the MBDC heads)",
    "grad_checkpointing": "open_clip's activation checkpointing",
    "device": "`auto`, `cpu` or `cuda`; under torchrun each rank takes `cuda:LOCAL_RANK`",
    "distributed_timeout_minutes": "how long a rank waits at a collective for the others",
    "seed": "every random draw of the run",
    "checkpoint_every": "steps between training checkpoints",
    "keep_last": "training checkpoints kept",
    "log_every": "steps between `metrics.jsonl` records",
    "eval_every": "steps between zero-shot checks on `data.val` (0: none)",
    "max_nonfinite": "non-finite steps in a row skipped before the run stops",
    "tensorboard": "write TensorBoard scalars (when tensorboard is installed)",
    "progress": "a progress bar on a terminal",
}


def leaf_fields(cls: type | None = None, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted name, field, type) of every option a config file can set, in declaration order:
    sections expanded, flattened options in their section, a source's fields as `data.sources[*].x`."""
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if item.metadata.get("flatten"):
            yield from leaf_fields(hint, prefix)
        elif dataclasses.is_dataclass(hint):
            yield from leaf_fields(hint, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item, hint
            if typing.get_args(hint) == (SourceConfig,):
                yield from leaf_fields(SourceConfig, f"{prefix}{item.name}[*].")


def describe_type(hint: Any) -> str:
    """A type as a reader needs it: choices spelt out, optional as `or null`."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(describe_type(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    if origin is list:
        item = "sources" if args == (SourceConfig,) else describe_type(args[0])
        return f"list of ({item})" if item.startswith("one of") else f"list of {item}"
    if origin is dict:
        return "mapping of " + " to ".join(describe_type(a) for a in args)
    return {int: "integer", float: "number", str: "text", bool: "true/false"}.get(hint, str(hint))


def describe_range(metadata: typing.Mapping[str, Any]) -> str:
    """`checked(...)` limits as `>= 0`, `< 1`, ..."""
    symbols = {"minimum": ">=", "above": ">", "maximum": "<=", "below": "<"}
    return ", ".join(f"{symbols[key]} {_number(metadata[key])}" for key in symbols if key in metadata)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def default_of(name: str, item: dataclasses.Field) -> str:
    if name.startswith("data.sources[*]."):
        owner: Any = SourceConfig.__dataclass_fields__
        item = owner[item.name]
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return "required"
    if name in ("model.heads", "model.reduced_dim"):  # the section's own default: the architecture's
        value = getattr(TrainConfig().model.mbdc, item.name)
    if value is None:
        return "null"
    if isinstance(value, list):
        return f"`[{', '.join(map(str, value))}]`"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def config_reference() -> str:
    """Markdown: one row per option (name, type and range, default, meaning; experimental marked)."""
    rows = ["| option | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, item, hint in leaf_fields():
        kind = describe_type(hint)
        limits = describe_range(item.metadata)
        meaning = FIELD_DOCS[name]
        if name in EXPERIMENTAL_OPTIONS:
            meaning = f"*experimental*: {meaning}"
        cell = f"{kind} ({limits})" if limits else kind
        meaning = meaning.replace("|", "\\|")
        rows.append(f"| `{name}` | {cell} | {default_of(name, item)} | {meaning} |")
    return "\n".join(rows) + "\n"

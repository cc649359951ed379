"""Zero-shot classification and prediction as plain functions, in the manner of CLIP_benchmark.

A model is anything with `encode_image(images, second_order)` / `encode_text(tokens,
second_order)` returning `Features(first, second)` and `similarity(image, text, mode)`
(a `DALIPModel`, or `dalip.evaluation.specs.OpenCLIPModel` around a plain open_clip
model). The metrics are plain functions of score matrices, so they can be checked by hand.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Sequence

import torch

from dalip.config import TrainConfig
from dalip.data.captions import fill_template
from dalip.data.files import read_text_lines
from dalip.evaluation.datasets import ImageFileDataset, list_image_files, load_classification_dataset
from dalip.evaluation.runtime import Runtime, encode_dataset, encode_texts, resolve_modes
from dalip.evaluation.templates import load_templates, template_set_name
from dalip.model.features import Encoder, Features
from dalip.train.task import TrainingTask

logger = logging.getLogger(__name__)


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores.

    scores (N, C), labels (N,). k is capped at C (with 3 classes "top-5" is top-3).
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def mean_per_class_recall(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 recall of each class present in `labels`, averaged over those classes."""
    predicted = scores.argmax(dim=1)
    recalls = [(predicted[labels == c] == c).float().mean() for c in labels.unique()]
    return torch.stack(recalls).mean().item()


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1, top5 and mean per-class recall of scores (N, C) against labels (N,)."""
    return {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(scores, labels),
    }


def class_embeddings(
    model: Encoder, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str],
    runtime: Runtime, second_order: bool = True,
) -> Features:
    """One embedding per class: each feature kind averaged over templates, re-normalised.

    Returns Features with first (C, D) and second (C, D2) or None.
    """
    texts = [fill_template(t, name) for name in class_names for t in templates]
    encoded = encode_texts(model, tokenizer, texts, runtime, second_order)

    def average(features: torch.Tensor | None) -> torch.Tensor | None:
        if features is None:
            return None
        per_class = features.reshape(len(class_names), len(templates), -1).mean(dim=1)  # (C, D)
        return torch.nn.functional.normalize(per_class, dim=-1)

    return Features(average(encoded.first), average(encoded.second))


def zero_shot(
    model: Encoder,
    images_path_or_dataset: str | os.PathLike | torch.utils.data.Dataset,
    tokenizer: Any,
    preprocess: Any,
    templates: str | Sequence[str] = "generic",
    modes: Sequence[str] = ("fused",),
    runtime: Runtime | None = None,
    class_names: Sequence[str] | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
) -> dict[str, Any]:
    """Zero-shot classification of an image folder, a labelled CSV or a dataset.

    A dataset yields `(image tensor, label)` (or None for an unreadable image) and has a
    `classes` attribute unless `class_names` is given. `templates` is a built-in set
    name, a file or a list; `modes` any of fused/first/second or ("all",).

    Returns {"modes": {mode: {top1, top5, mean_per_class_recall}}, "images_per_second",
    "num_images", "class_names", "template_set" (the set's name, a file path or "custom"),
    "templates" (the list used), ...}.
    """
    modes = resolve_modes(model, modes)
    template_set, templates = template_set_name(templates), load_templates(templates)
    dataset, names, where = load_classification_dataset(
        images_path_or_dataset, preprocess, class_names, label_key, image_key
    )
    second_order = modes != ["first"]
    with (runtime or Runtime()).evaluating(model) as runtime:
        classes = class_embeddings(model, tokenizer, names, templates, runtime, second_order)
        encoded = encode_dataset(model, dataset, runtime, second_order, "zero-shot")
    results = {
        mode: classification_metrics(model.similarity(encoded.features, classes, mode), encoded.labels)
        for mode in modes
    }
    return {
        "task": "zeroshot",
        "dataset": where,
        "num_images": len(encoded.labels),
        "skipped": len(dataset) - len(encoded.labels),
        "num_classes": len(names),
        "class_names": list(names),
        "template_set": template_set,
        "templates": templates,
        "modes": results,
        "images_per_second": encoded.images_per_second,
    }


def check_labels(labels: Sequence[str], where: str = "labels") -> list[str]:
    """Stripped labels; ValueError when none are given or one is repeated."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise ValueError(f"{where}: no labels given")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"{where}: duplicate label(s) {repeated}; each label must appear once")
    return labels


def read_label_file(path: str | os.PathLike) -> list[str]:
    """One label per line (blank lines and "#" comments ignored); duplicates are an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path}")
    lines = [line for line in read_text_lines(path, "label file") if not line.lstrip().startswith("#")]
    return check_labels(lines, os.fspath(path))


def _probability_scale(model: Encoder) -> float:
    """exp(logit_scale) of the model's CLIP (the trained temperature), 100 when unknown."""
    clip = getattr(model, "clip", None)
    scale = getattr(clip, "logit_scale", None)
    return 100.0 if scale is None else float(scale.detach().exp().clamp(max=100.0))


def predict(
    model: Encoder, images: Sequence[str | os.PathLike], labels: Sequence[str], tokenizer: Any, preprocess: Any,
    templates: str | Sequence[str] = "none", mode: str = "fused", top_k: int = 5, runtime: Runtime | None = None,
) -> list[dict[str, Any]]:
    """Top-k labels per image with probabilities (softmax of the model's scaled similarity).

    `images`: files and/or folders. Returns [{"image": path, "predictions": [{"label", "probability"}]}]
    for every readable image, in input order.
    """
    (mode,) = resolve_modes(model, [mode])
    labels, templates = check_labels(labels), load_templates(templates)
    paths = list_image_files(images)
    with (runtime or Runtime()).evaluating(model) as runtime:
        classes = class_embeddings(model, tokenizer, labels, templates, runtime, mode != "first")
        encoded = encode_dataset(model, ImageFileDataset(paths, preprocess), runtime, mode != "first", "predict")
    ranked = top_labels(label_probabilities(model, encoded.features, classes, mode), labels, top_k)
    return [{"image": paths[index], "predictions": row} for index, row in zip(encoded.indices.tolist(), ranked)]


def label_probabilities(model: Any, images: Features, classes: Features, mode: str) -> torch.Tensor:
    """(N, C) softmax over labels of the model's temperature times its similarity (`mode`)."""
    return (_probability_scale(model) * model.similarity(images, classes, mode)).softmax(dim=1)


def top_labels(probabilities: torch.Tensor, labels: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
    """Per row of probabilities (N, C): the top_k [{"label", "probability"}], most likely first."""
    top = probabilities.topk(min(top_k, len(labels)), dim=1)
    return [
        [{"label": labels[c], "probability": p} for c, p in zip(columns.tolist(), values.tolist())]
        for values, columns in zip(top.values, top.indices)
    ]


def embed_classes(
    model: Encoder, tokenizer: Any, labels: Sequence[str], templates: str | Sequence[str] = "none",
    runtime: Runtime | None = None,
) -> Features:
    """Zero-shot class vectors, built as `zero_shot` builds them: each feature kind averaged
    over the templates and re-normalised (fuse them afterwards with `model.fused_embedding`).

    Returns Features(first (C, D), second (C, D2) or None), one row per label.
    """
    labels, templates = check_labels(labels), load_templates(templates)
    with (runtime or Runtime()).evaluating(model) as runtime:
        return class_embeddings(model, tokenizer, labels, templates, runtime, model.has_second_order)


def training_validation(config: TrainConfig) -> Callable[[TrainingTask, int], dict[str, Any]] | None:
    """The zero-shot check `dalip.train.loop.train` runs every `eval_every` steps on `data.val`
    (None when the config asks for none); fused and first order when the task has both, in the
    run's precision (bf16 / amp autocast), on the model's device."""
    if not (config.eval_every and config.data.val):
        return None

    def validate(task: TrainingTask, batch_size: int) -> dict[str, Any]:
        modes = ("fused", "first") if task.second_order else ("first",)
        return zero_shot(
            task.model, config.data.val, task.tokenizer, task.preprocess_val, templates=config.data.val_templates,
            modes=modes, runtime=Runtime(batch_size, config.data.workers, precision=config.precision),
        )

    return validate

"""Prediction: the top labels of each image with probabilities, as `dalip predict` and
`dalip serve` give them, in the model's own form: the softmax over labels of its scaled
similarity to the zero-shot class vectors (CLIP), or for a model trained with the sigmoid loss
(SigLIP) the sigmoid of scale * similarity + bias, each label's own probability of matching."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from dalip.inference.classes import class_embeddings
from dalip.inference.images import ImageFileDataset, list_image_files
from dalip.inference.labels import check_labels
from dalip.inference.runtime import Runtime, encode_dataset, resolve_modes
from dalip.inference.templates import load_templates
from dalip.model.features import Encoder, Features


def _probability_scale(model: Encoder) -> float:
    """exp(logit_scale) of the model's CLIP (the trained temperature), 100 when unknown."""
    clip = getattr(model, "clip", None)
    scale = getattr(clip, "logit_scale", None)
    return 100.0 if scale is None else float(scale.detach().exp().clamp(max=100.0))


def answers_with_sigmoid(model: Any) -> bool:
    """Whether the model's probabilities are sigmoid ones (trained with the sigmoid loss)."""
    return getattr(model, "loss_form", "softmax") == "sigmoid"


def predict(
    model: Encoder,
    images: Sequence[str | os.PathLike],
    labels: Sequence[str],
    tokenizer: Any,
    preprocess: Any,
    templates: str | Sequence[str] = "none",
    mode: str | None = None,
    top_k: int = 5,
    runtime: Runtime | None = None,
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
        encoded = encode_dataset(
            model, ImageFileDataset(paths, preprocess), runtime, mode != "first", "predict"
        )
    ranked = top_labels(label_probabilities(model, encoded.features, classes, mode), labels, top_k)
    return [
        {"image": paths[index], "predictions": row} for index, row in zip(encoded.indices.tolist(), ranked)
    ]


def label_probabilities(
    model: Any, images: Features, classes: Features, mode: str, distribution: bool = False
) -> torch.Tensor:
    """(N, C) probabilities of each label for each image in the model's form (`mode`): the
    softmax over labels of the temperature times the similarity, or, for a sigmoid-form model,
    the sigmoid of its logits (scale * cos + bias), each label on its own. `distribution` asks
    for a distribution over the labels whatever the form (exactly one label is right, e.g. a
    species of a checklist): the softmax of the model's logits."""
    if not answers_with_sigmoid(model):
        return (_probability_scale(model) * model.similarity(images, classes, mode)).softmax(dim=1)
    logits = model.logits(images, classes, mode)
    return logits.softmax(dim=1) if distribution else logits.sigmoid()


def top_labels(probabilities: torch.Tensor, labels: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
    """Per row of probabilities (N, C): the top_k [{"label", "probability"}], most likely first."""
    top = probabilities.topk(min(top_k, len(labels)), dim=1)
    return [
        [{"label": labels[c], "probability": p} for c, p in zip(columns.tolist(), values.tolist())]
        for values, columns in zip(top.values, top.indices)
    ]

"""Zero-shot classification as plain functions, in the manner of CLIP_benchmark: the class
vectors (`class_embeddings`, `embed_classes`) and the evaluation (`zero_shot`).

A model is anything with `encode_image(images, second_order)` / `encode_text(tokens,
second_order)` returning `Features(first, second)` and `similarity(image, text, mode)`
(a `DALIPModel`, or `dalip.evaluation.specs.OpenCLIPModel` around a plain open_clip
model). Metrics: `dalip.evaluation.metrics`; prediction: `dalip.evaluation.predict`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from dalip.data.captions import fill_template
from dalip.evaluation.datasets import load_classification_dataset
from dalip.evaluation.labels import check_class_names, check_labels
from dalip.evaluation.metrics import classification_metrics
from dalip.evaluation.runtime import Runtime, encode_dataset, encode_texts, resolve_modes
from dalip.evaluation.templates import load_templates, template_set_name
from dalip.model.features import Encoder, Features

logger = logging.getLogger(__name__)


def class_embeddings(
    model: Encoder,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str],
    runtime: Runtime,
    second_order: bool = True,
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
    modes: Sequence[str] | None = None,
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
    if isinstance(images_path_or_dataset, (str, os.PathLike)):  # our folders and CSVs; a
        check_class_names(names, where)  # benchmark's own class list is taken as it comes
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


def embed_classes(
    model: Encoder,
    tokenizer: Any,
    labels: Sequence[str],
    templates: str | Sequence[str] = "none",
    runtime: Runtime | None = None,
) -> Features:
    """Zero-shot class vectors, built as `zero_shot` builds them: each feature kind averaged
    over the templates and re-normalised (fuse them afterwards with `model.fused_embedding`).

    Returns Features(first (C, D), second (C, D2) or None), one row per label.
    """
    labels, templates = check_labels(labels), load_templates(templates)
    with (runtime or Runtime()).evaluating(model) as runtime:
        return class_embeddings(model, tokenizer, labels, templates, runtime, model.has_second_order)

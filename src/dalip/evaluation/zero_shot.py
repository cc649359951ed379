"""Zero-shot classification as a plain function, in the manner of CLIP_benchmark (`zero_shot`);
the class vectors it scores against are `dalip.inference.classes`'.

A model is anything with `encode_image(images, second_order)` / `encode_text(tokens,
second_order)` returning `Features(first, second)` and `similarity(image, text, mode)`
(a `DALIPModel`, or `dalip.inference.specs.OpenCLIPModel` around a plain open_clip
model). Metrics: `dalip.evaluation.metrics`; prediction: `dalip.inference.predict`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from dalip.evaluation.datasets import load_classification_dataset
from dalip.evaluation.metrics import classification_metrics
from dalip.inference.classes import class_embeddings, embed_classes  # noqa: F401 (embed_classes: its home before 0.6)
from dalip.inference.labels import check_class_names
from dalip.inference.runtime import Runtime, encode_dataset, resolve_modes
from dalip.inference.templates import load_templates, template_set_name
from dalip.model.features import Encoder

logger = logging.getLogger(__name__)


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

"""Class vectors for zero-shot answers: each class name filled into every template, encoded,
and each feature kind averaged over the templates and re-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dalip.data.captions import fill_template
from dalip.inference.labels import check_labels
from dalip.inference.runtime import Runtime, encode_texts
from dalip.inference.templates import load_templates
from dalip.model.features import Encoder, Features


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

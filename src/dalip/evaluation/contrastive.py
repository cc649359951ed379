"""Held-out image-text contrastive loss: the quantity a data mixing law predicts.

The pairs of a caption CSV/TSV (each image with its first caption) are put in one fixed
order (a seeded shuffle, the same for every model) and cut into batches of `batch_size`
(a last, shorter batch is left out, so every batch has the same number of negatives).
Per batch, the loss is the model's own: for CLIP (softmax form) the mean of the image->text
and text->image cross-entropies of the model's temperature times its similarity in a mode; for
a model trained with the sigmoid loss, SigLIP's (every pair's -log sigmoid of +-logit, summed
per image; the two directions are one loss). The result is the mean over batches, with their
standard deviation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dalip.evaluation.datasets import read_caption_csv
from dalip.inference.images import ImageFileDataset
from dalip.inference.predict import _probability_scale, answers_with_sigmoid
from dalip.inference.runtime import Runtime, encode_dataset, encode_texts, resolve_modes
from dalip.model.features import Encoder, Features


def _rows(features: Features, rows: torch.Tensor) -> Features:
    return Features(features.first[rows], None if features.second is None else features.second[rows])


def contrastive_loss(
    model: Encoder,
    csv_path: str | os.PathLike,
    tokenizer: Any,
    preprocess: Any,
    modes: Sequence[str] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    runtime: Runtime | None = None,
    image_key: str = "filepath",
    caption_key: str = "caption",
) -> dict[str, Any]:
    """Mean held-out InfoNCE per mode: {"task", "dataset", "pairs", "batch_size", "batches",
    "modes": {mode: {"loss", "image_to_text", "text_to_image", "batch_sd"}}}. ValueError
    naming the file when it holds fewer readable pairs than one batch."""
    if batch_size < 2:
        raise ValueError(f"batch_size: a contrastive loss needs batches of 2 or more pairs, got {batch_size}")
    paths, captions, owners = read_caption_csv(csv_path, image_key, caption_key)
    first_caption = {}
    for caption, owner in zip(captions, owners):
        first_caption.setdefault(owner, caption)
    modes = resolve_modes(model, modes)
    second_order = modes != ["first"]
    with (runtime or Runtime()).evaluating(model) as runtime:
        encoded = encode_dataset(model, ImageFileDataset(paths, preprocess), runtime, second_order, "pairs")
        kept = encoded.indices.tolist()
        texts = encode_texts(model, tokenizer, [first_caption[i] for i in kept], runtime, second_order)
    batches = len(kept) // batch_size
    if batches == 0:
        raise ValueError(
            f"{csv_path}: {len(kept)} readable image-caption pairs, fewer than one batch of {batch_size}"
        )
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed))[: batches * batch_size]
    scale = _probability_scale(model)
    target = torch.arange(batch_size)
    signs = 2 * torch.eye(batch_size) - 1  # +1 for the matching pairs, -1 for every other
    sigmoid = answers_with_sigmoid(model)
    results = {}
    for mode in modes:
        both = []
        for rows in order.view(batches, batch_size):
            image, text = _rows(encoded.features, rows), _rows(texts, rows)
            if sigmoid:
                logits = model.logits(image, text, mode).float()
                loss = -F.logsigmoid(signs * logits).sum() / batch_size
                both.append(torch.stack([loss, loss]))
                continue
            logits = scale * model.similarity(image, text, mode).float()
            both.append(torch.stack([F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)]))
        stacked = torch.stack(both)  # (batches, 2)
        per_batch = stacked.mean(dim=1)
        results[mode] = {
            "loss": float(per_batch.mean()),
            "image_to_text": float(stacked[:, 0].mean()),
            "text_to_image": float(stacked[:, 1].mean()),
            "batch_sd": float(per_batch.std()) if batches > 1 else 0.0,
        }
    return {
        "task": "contrastive_loss",
        "dataset": os.path.abspath(csv_path),
        "pairs": batches * batch_size,
        "batch_size": batch_size,
        "batches": batches,
        "form": "sigmoid" if sigmoid else "softmax",
        "modes": results,
    }

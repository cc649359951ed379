"""Image-text retrieval: recall@k both ways on a caption CSV/TSV."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from dalip.evaluation.datasets import ImageFileDataset, read_caption_csv
from dalip.evaluation.runtime import Runtime, encode_dataset, encode_texts, resolve_modes
from dalip.model.features import Encoder, Features


def retrieval_metrics(
    scores: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k both ways; scores (N_images, N_texts), text_to_image (N_texts,) image index.

    Image->text: an image counts as found when any of its captions is in its top k.
    Text->image: a caption counts when its image is in its top k. `mean_recall` is the
    mean of all the recalls (both directions, every k).
    """
    positives = text_to_image[None, :] == torch.arange(scores.shape[0])[:, None]  # (N_img, N_txt)
    metrics: dict[str, float] = {}
    for k in ks:
        top_texts = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (N_img, k)
        found = positives.gather(1, top_texts).any(dim=1)
        metrics[f"image_to_text_R@{k}"] = found.float().mean().item()
    for k in ks:
        top_images = scores.T.topk(min(k, scores.shape[0]), dim=1).indices  # (N_txt, k)
        found = (top_images == text_to_image[:, None]).any(dim=1)
        metrics[f"text_to_image_R@{k}"] = found.float().mean().item()
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics


def retrieval(
    model: Encoder,
    csv_path: str | os.PathLike,
    tokenizer: Any,
    preprocess: Any,
    modes: Sequence[str] = ("fused",),
    runtime: Runtime | None = None,
    image_key: str = "filepath",
    caption_key: str = "caption",
) -> dict[str, Any]:
    """Image->text and text->image recall@1/5/10 on a caption CSV/TSV.

    Rows with the same image path are one image with several captions; a caption cell
    may also hold a JSON list of captions (or a JSON object of named captions).
    Returns {"modes": {mode: {image_to_text_R@k, text_to_image_R@k, mean_recall}}, ...}.
    """
    modes = resolve_modes(model, modes)
    paths, captions, owners = read_caption_csv(csv_path, image_key, caption_key)
    dataset = ImageFileDataset(paths, preprocess)
    second_order = modes != ["first"]
    with (runtime or Runtime()).evaluating(model) as runtime:
        images = encode_dataset(model, dataset, runtime, second_order, "retrieval")
        texts = encode_texts(model, tokenizer, captions, runtime, second_order)
    kept = images.indices  # images that could be read; their captions only
    position = torch.full((len(paths),), -1, dtype=torch.long)
    position[kept] = torch.arange(len(kept))
    text_to_image = position[torch.as_tensor(owners)]
    keep_text = text_to_image >= 0
    texts = Features(texts.first[keep_text], None if texts.second is None else texts.second[keep_text])
    results = {
        mode: retrieval_metrics(model.similarity(images.features, texts, mode), text_to_image[keep_text])
        for mode in modes
    }
    return {
        "task": "retrieval",
        "dataset": os.path.abspath(csv_path),
        "num_images": len(kept),
        "num_texts": int(keep_text.sum()),
        "skipped": len(paths) - len(kept),
        "modes": results,
        "images_per_second": images.images_per_second,
    }

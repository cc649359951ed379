"""Image-text retrieval: recall@k both ways on a caption CSV/TSV or any image dataset with
captions (CLIP_benchmark's, for one).

A caption identical to one of an image's own captions counts as a match for that image:
identical captions get identical features, so counting only the owner would make R@k
depend on which duplicate the sort puts first, that is on the order of the rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from dalip.evaluation.datasets import read_caption_csv
from dalip.inference.images import ImageFileDataset
from dalip.inference.runtime import Runtime, encode_dataset, encode_texts, resolve_modes
from dalip.model.features import Encoder, Features

POSITIVES_RULE = "own or identical caption"


def retrieval_metrics(
    scores: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    positives: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@k both ways; scores (N_images, N_texts), text_to_image (N_texts,) image index.

    Image->text: an image counts as found when a positive text is in its top k.
    Text->image: a caption counts when a positive image is in its top k. `positives`
    (N_images, N_texts) bool says which pairs match; by default only a caption's own image
    (`caption_positives` also counts captions identical to the image's own). `mean_recall`
    is the mean of all the recalls (both directions, every k).
    """
    if positives is None:
        positives = text_to_image[None, :] == torch.arange(scores.shape[0])[:, None]  # (N_img, N_txt)
    metrics: dict[str, float] = {}
    for k in ks:
        top_texts = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (N_img, k)
        metrics[f"image_to_text_R@{k}"] = positives.gather(1, top_texts).any(dim=1).float().mean().item()
    for k in ks:
        top_images = scores.T.topk(min(k, scores.shape[0]), dim=1).indices  # (N_txt, k)
        metrics[f"text_to_image_R@{k}"] = positives.T.gather(1, top_images).any(dim=1).float().mean().item()
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics


def caption_positives(captions: Sequence[str], text_to_image: torch.Tensor, num_images: int) -> torch.Tensor:
    """(N_images, N_texts) bool: text j matches image i when its text is identical to one of
    image i's own captions (its own captions included)."""
    ids: dict[str, int] = {}
    caption_ids = torch.tensor([ids.setdefault(caption, len(ids)) for caption in captions], dtype=torch.long)
    owns = torch.zeros(num_images, len(ids), dtype=torch.bool)  # (N_img, N_distinct)
    owns[text_to_image, caption_ids] = True
    return owns[:, caption_ids]  # (N_img, N_txt)


def retrieval(
    model: Encoder,
    csv_path: str | os.PathLike,
    tokenizer: Any,
    preprocess: Any,
    modes: Sequence[str] | None = None,
    runtime: Runtime | None = None,
    image_key: str = "filepath",
    caption_key: str = "caption",
) -> dict[str, Any]:
    """Image->text and text->image recall@1/5/10 on a caption CSV/TSV.

    Rows with the same image path are one image with several captions; a caption cell
    may also hold a JSON list of captions (or a JSON object of named captions).
    Returns {"modes": {mode: {image_to_text_R@k, text_to_image_R@k, mean_recall}}, ...}
    as `retrieval_on`.
    """
    paths, captions, owners = read_caption_csv(csv_path, image_key, caption_key)
    return retrieval_on(
        model,
        ImageFileDataset(paths, preprocess),
        captions,
        owners,
        tokenizer,
        os.path.abspath(csv_path),
        modes,
        runtime,
    )


def retrieval_on(
    model: Encoder,
    images: Dataset,
    captions: Sequence[str],
    owners: Sequence[int],
    tokenizer: Any,
    where: str,
    modes: Sequence[str] | None = None,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Recall@1/5/10 both ways: `images` yields (image tensor, any) or None (unreadable),
    caption j belongs to image `owners[j]`; `where` names the data in the result.

    A caption identical to one of an image's own captions counts as a hit for that image,
    both ways (`caption_positives`); `shared_captions` counts the captions that match
    several images. Captions of unreadable images are left out.
    """
    modes = resolve_modes(model, modes)
    second_order = modes != ["first"]
    with (runtime or Runtime()).evaluating(model) as runtime:
        encoded = encode_dataset(model, images, runtime, second_order, "retrieval")
        texts = encode_texts(model, tokenizer, list(captions), runtime, second_order)
    kept = encoded.indices  # images that could be read; their captions only
    position = torch.full((len(images),), -1, dtype=torch.long)
    position[kept] = torch.arange(len(kept))
    text_to_image = position[torch.as_tensor(list(owners), dtype=torch.long)]
    keep_text = text_to_image >= 0
    texts = Features(texts.first[keep_text], None if texts.second is None else texts.second[keep_text])
    kept_captions = [caption for caption, keep in zip(captions, keep_text.tolist()) if keep]
    positives = caption_positives(kept_captions, text_to_image[keep_text], len(kept))
    results = {
        mode: retrieval_metrics(
            model.similarity(encoded.features, texts, mode), text_to_image[keep_text], positives=positives
        )
        for mode in modes
    }
    return {
        "task": "retrieval",
        "dataset": where,
        "num_images": len(kept),
        "num_texts": int(keep_text.sum()),
        "skipped": len(images) - len(kept),
        "positives": POSITIVES_RULE,
        "shared_captions": int((positives.sum(dim=0) > 1).sum()),
        "modes": results,
        "images_per_second": encoded.images_per_second,
    }

"""Zero-shot classification and image-text retrieval as plain functions.

A model is anything with `encode_image(images, second_order)` / `encode_text(tokens,
second_order)` returning `Features(first, second)` and `similarity(image, text, mode)`
(a `DALIPModel`, or `dalip.suite.OpenCLIPModel` around a plain open_clip model), in the
manner of CLIP_benchmark. The metrics are plain functions of score matrices, so they can
be checked by hand; reading data and batching encoders live in `dalip.evaluation_data`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch

from dalip.evaluation_data import (
    Runtime,
    ImageFileDataset,
    encode_dataset,
    encode_texts,
    list_image_files,
    load_classification_dataset,
    read_caption_csv,
    resolve_modes,
)
from dalip.model import Features
from dalip.templates import fill, load_templates, template_set_name

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


def retrieval_metrics(
    scores: torch.Tensor, text_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
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
    image i's own captions.

    Identical captions get identical features, so with only the owner counted, which of
    them ranks first (and so R@k) would depend on the order of the rows.
    """
    ids: dict[str, int] = {}
    caption_ids = torch.tensor([ids.setdefault(caption, len(ids)) for caption in captions], dtype=torch.long)
    owns = torch.zeros(num_images, len(ids), dtype=torch.bool)  # (N_img, N_distinct)
    owns[text_to_image, caption_ids] = True
    return owns[:, caption_ids]  # (N_img, N_txt)


def class_embeddings(
    model: Any, tokenizer: Any, class_names: Sequence[str], templates: Sequence[str],
    runtime: Runtime, second_order: bool = True,
) -> Features:
    """One embedding per class: each feature kind averaged over templates, re-normalised.

    Returns Features with first (C, D) and second (C, D2) or None.
    """
    texts = [fill(t, name) for name in class_names for t in templates]
    encoded = encode_texts(model, tokenizer, texts, runtime, second_order)

    def average(features: torch.Tensor | None) -> torch.Tensor | None:
        if features is None:
            return None
        per_class = features.reshape(len(class_names), len(templates), -1).mean(dim=1)  # (C, D)
        return torch.nn.functional.normalize(per_class, dim=-1)

    return Features(average(encoded.first), average(encoded.second))


def zero_shot(
    model: Any,
    images_path_or_dataset: str | os.PathLike | torch.utils.data.Dataset,
    tokenizer: Any,
    preprocess: Any,
    templates: str | Sequence[str] = "generic",
    modes: Sequence[str] = ("fused",),
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
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
    runtime = Runtime(batch_size, workers, device, precision, progress)
    modes = resolve_modes(model, modes)
    template_set, templates = template_set_name(templates), load_templates(templates)
    dataset, names, where = load_classification_dataset(
        images_path_or_dataset, preprocess, class_names, label_key, image_key
    )
    second_order = modes != ["first"]
    with runtime.evaluating(model):
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


def retrieval(
    model: Any,
    csv_path: str | os.PathLike,
    tokenizer: Any,
    preprocess: Any,
    modes: Sequence[str] = ("fused",),
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    progress: bool = False,
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
        model, ImageFileDataset(paths, preprocess), captions, owners, tokenizer, os.path.abspath(csv_path),
        modes=modes, batch_size=batch_size, workers=workers, device=device, precision=precision, progress=progress,
    )


def retrieval_on(
    model: Any, images: torch.utils.data.Dataset, captions: Sequence[str], owners: Sequence[int], tokenizer: Any,
    where: str, modes: Sequence[str] = ("fused",), batch_size: int = 64, workers: int = 0,
    device: str | torch.device | None = None, precision: str = "fp32", progress: bool = False,
) -> dict[str, Any]:
    """Recall@1/5/10 both ways: `images` yields (image tensor, any) or None (unreadable),
    caption j belongs to image `owners[j]`.

    A caption identical to one of an image's own captions counts as a hit for that image,
    both ways (`caption_positives`); `shared_captions` counts the captions that match
    several images. Captions of unreadable images are left out.
    """
    runtime = Runtime(batch_size, workers, device, precision, progress)
    modes = resolve_modes(model, modes)
    second_order = modes != ["first"]
    with runtime.evaluating(model):
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
        mode: retrieval_metrics(model.similarity(encoded.features, texts, mode), text_to_image[keep_text],
                                positives=positives)
        for mode in modes
    }
    return {
        "task": "retrieval",
        "dataset": where,
        "num_images": len(kept),
        "num_texts": int(keep_text.sum()),
        "skipped": len(images) - len(kept),
        "positives": "own or identical caption",
        "shared_captions": int((positives.sum(dim=0) > 1).sum()),
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
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if not line.lstrip().startswith("#")]
    return check_labels(lines, os.fspath(path))


def _probability_scale(model: Any) -> float:
    """exp(logit_scale) of the model's CLIP (the trained temperature), 100 when unknown."""
    clip = getattr(model, "clip", None)
    scale = getattr(clip, "logit_scale", None)
    return 100.0 if scale is None else float(scale.detach().exp().clamp(max=100.0))


def predict(
    model: Any, images: Sequence[str | os.PathLike], labels: Sequence[str], tokenizer: Any, preprocess: Any,
    templates: str | Sequence[str] = "none", mode: str = "fused", top_k: int = 5, batch_size: int = 64,
    workers: int = 0, device: str | torch.device | None = None, precision: str = "fp32", progress: bool = False,
) -> list[dict[str, Any]]:
    """Top-k labels per image with probabilities (softmax of the model's scaled similarity).

    `images`: files and/or folders. Returns [{"image": path, "predictions": [{"label", "probability"}]}]
    for every readable image, in input order.
    """
    runtime = Runtime(batch_size, workers, device, precision, progress)
    (mode,) = resolve_modes(model, [mode])
    labels, templates = check_labels(labels), load_templates(templates)
    paths = list_image_files(images)
    with runtime.evaluating(model):
        classes = class_embeddings(model, tokenizer, labels, templates, runtime, mode != "first")
        encoded = encode_dataset(model, ImageFileDataset(paths, preprocess), runtime, mode != "first", "predict")
    probabilities = (_probability_scale(model) * model.similarity(encoded.features, classes, mode)).softmax(dim=1)
    top = probabilities.topk(min(top_k, len(labels)), dim=1)
    return [
        {"image": paths[index], "predictions": [
            {"label": labels[c], "probability": p} for c, p in zip(classes_.tolist(), values.tolist())
        ]}
        for index, values, classes_ in zip(encoded.indices.tolist(), top.values, top.indices)
    ]


def embed_classes(
    model: Any, tokenizer: Any, labels: Sequence[str], templates: str | Sequence[str] = "none",
    batch_size: int = 64, device: str | torch.device | None = None, precision: str = "fp32",
) -> Features:
    """Zero-shot class vectors, built as `zero_shot` builds them: each feature kind averaged
    over the templates and re-normalised (fuse them afterwards with `model.fused_embedding`).

    Returns Features(first (C, D), second (C, D2) or None), one row per label.
    """
    runtime = Runtime(batch_size, 0, device, precision, False)
    labels, templates = check_labels(labels), load_templates(templates)
    with runtime.evaluating(model):
        return class_embeddings(model, tokenizer, labels, templates, runtime, getattr(model, "has_second_order", True))


def embed(
    model: Any, tokenizer: Any = None, preprocess: Any = None, images: Sequence[str | os.PathLike] = (),
    texts: Sequence[str] = (), batch_size: int = 64, workers: int = 0, device: str | torch.device | None = None,
    precision: str = "fp32", progress: bool = False,
) -> tuple[Features, list[str]]:
    """Features of images (files/folders) or of texts, and the item each row belongs to.

    Returns (Features(first (N, D), second (N, D2) or None), items): unreadable images
    are left out of both.
    """
    if bool(images) == bool(texts):
        raise ValueError("embed: give either images or texts")
    runtime = Runtime(batch_size, workers, device, precision, progress)
    second_order = getattr(model, "has_second_order", True)
    with runtime.evaluating(model):
        if texts:
            return encode_texts(model, tokenizer, list(texts), runtime, second_order), list(texts)
        paths = list_image_files(images)
        encoded = encode_dataset(model, ImageFileDataset(paths, preprocess), runtime, second_order, "embed")
    return encoded.features, [paths[i] for i in encoded.indices.tolist()]

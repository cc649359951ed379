"""How evaluation runs: `Runtime` (batch size, workers, device, precision, progress bar)
and batching a model's encoders over images and texts.

`encode_dataset` / `encode_texts` run the model under `torch.no_grad()` (and bf16
autocast when asked) and return CPU float32 features; `embed` is the public form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dalip.config import Precision
from dalip.data import collate_skipping
from dalip.inference.images import ImageFileDataset, list_image_files
from dalip.model.dalip_model import SIMILARITY_MODES
from dalip.model.devices import autocast, resolve_device
from dalip.model.features import Encoder, Features, concat_features
from dalip.schema import check_fields, checked

logger = logging.getLogger(__name__)


def model_device(model: Encoder, device: str | torch.device | None) -> torch.device:
    """`device` resolved ("auto", "cuda", ...); None: where the model's parameters are."""
    if device is not None:
        return resolve_device(device)
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


@dataclass(frozen=True)
class Runtime:
    """How an evaluation runs (not what it measures): every evaluation function takes one.

    device None: wherever the model's parameters are; "auto": CUDA when available.
    """

    batch_size: int = checked(64, minimum=1)
    workers: int = checked(0, minimum=0)
    device: str | torch.device | None = None
    precision: Precision = "fp32"
    progress: bool = False

    def __post_init__(self) -> None:
        check_fields(self)  # ranges and the precision's choices, as for any config

    @contextlib.contextmanager
    def evaluating(self, model: Encoder) -> Iterator[Runtime]:
        """Model on the device, in eval mode, gradients off; training mode restored after.
        Yields this runtime with its device resolved."""
        runtime = dataclasses.replace(self, device=model_device(model, self.device))
        was_training = getattr(model, "training", False)
        if hasattr(model, "to"):
            model.to(runtime.device)  # outside no_grad/inference mode so parameters stay trainable
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                yield runtime
        finally:
            if was_training:
                model.train()

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, torch.device(self.device or "cpu").type)


def resolve_modes(model: Encoder, modes: Sequence[str] | str | None) -> list[str]:
    """Validate similarity modes; "all" means every mode the model answers in (first alone for
    a model trained without a second-order term: alpha 1), "default" (or
    None) the mode the model answers with (`default_mode`: stored with it, or the default)."""
    if modes is None:
        modes = ["default"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    modes = list(dict.fromkeys(model.default_mode if mode in (None, "default") else mode for mode in modes))
    has_second = model.has_second_order
    if "all" in modes:  # alpha 1: fused is the first order and no loss trained the heads
        return list(SIMILARITY_MODES) if has_second and getattr(model, "alpha", 1.0) < 1.0 else ["first"]
    for mode in modes:
        if mode not in SIMILARITY_MODES:
            raise ValueError(f"similarity mode must be one of {SIMILARITY_MODES} or 'all', got {mode!r}")
        if mode != "first" and not has_second:
            raise ValueError(
                f"similarity mode {mode!r} needs second-order features, which this model lacks; use 'first'"
            )
    if not modes:
        raise ValueError("no similarity mode given")
    return modes


def _to_cpu(features: Features) -> Features:
    second = None if features.second is None else features.second.float().cpu()
    return Features(features.first.float().cpu(), second)


class EncodedImages(NamedTuple):
    """Features (N, D) of the readable images, their labels (N,) and dataset indices (N,)."""

    features: Features
    labels: torch.Tensor
    indices: torch.Tensor
    images_per_second: float


class _Indexed(Dataset):
    """(image, label, index) per item of a dataset of (image, label); None stays None."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | None:
        item = self.dataset[index]
        return None if item is None else (item[0], int(item[1]), index)


def encode_dataset(
    model: Encoder, dataset: Dataset, runtime: Runtime, second_order: bool, desc: str = "images"
) -> EncodedImages:
    """Encode every readable image of a dataset of (image, label); call inside `runtime.evaluating`."""
    loader = DataLoader(
        _Indexed(dataset),
        batch_size=runtime.batch_size,
        num_workers=runtime.workers,
        collate_fn=collate_skipping,
        pin_memory=torch.device(runtime.device).type == "cuda",
    )
    parts, labels, indices = [], [], []
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not runtime.progress):
        if batch is None:
            continue
        images, batch_labels, batch_indices = batch
        with runtime.autocast():
            parts.append(_to_cpu(model.encode_image(images.to(runtime.device), second_order=second_order)))
        labels.append(batch_labels)
        indices.append(batch_indices)
    elapsed = time.perf_counter() - start
    if not parts:
        raise ValueError(f"{desc}: none of the {len(dataset)} images could be read")
    count = sum(len(p.first) for p in parts)
    return EncodedImages(
        concat_features(parts), torch.cat(labels), torch.cat(indices), count / max(elapsed, 1e-9)
    )


def encode_texts(
    model: Encoder, tokenizer: Any, texts: Sequence[str], runtime: Runtime, second_order: bool
) -> Features:
    """Texts -> Features (N, D), batched; call inside `runtime.evaluating`."""
    parts = []
    for start in range(0, len(texts), runtime.batch_size):
        tokens = tokenizer(list(texts[start : start + runtime.batch_size])).to(runtime.device)
        with runtime.autocast():
            parts.append(_to_cpu(model.encode_text(tokens, second_order=second_order)))
    return concat_features(parts)


def embed(
    model: Encoder,
    tokenizer: Any = None,
    preprocess: Any = None,
    images: Sequence[str | os.PathLike] = (),
    texts: Sequence[str] = (),
    runtime: Runtime | None = None,
) -> tuple[Features, list[str]]:
    """Features of images (files/folders) or of texts, and the item each row belongs to.

    Returns (Features(first (N, D), second (N, D2) or None), items): unreadable images
    are left out of both.
    """
    if bool(images) == bool(texts):
        raise ValueError("embed: give either images or texts")
    second_order = model.has_second_order
    with (runtime or Runtime()).evaluating(model) as runtime:
        if texts:
            return encode_texts(model, tokenizer, list(texts), runtime, second_order), list(texts)
        paths = list_image_files(images)
        encoded = encode_dataset(model, ImageFileDataset(paths, preprocess), runtime, second_order, "embed")
    return encoded.features, [paths[i] for i in encoded.indices.tolist()]

"""What `dalip serve` computes, independent of HTTP: top-k labels and nearest gallery images.

Predictions go through the same library functions as `dalip predict`
(`class_embeddings`, `encode_dataset`, `label_probabilities`, `top_labels`), so the
page, the JSON API and `dalip predict` give the same numbers for the same image. Each
model is answered in the modes worth comparing: DALIP models in fused and first-order
mode, plain open_clip models (and DALIP models with alpha = 1, whose fused similarity is
their first order) in first-order mode.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from PIL import Image
from torch.utils.data import Dataset

from dalip.evaluation.predict import label_probabilities, top_labels
from dalip.evaluation.runtime import Runtime, encode_dataset
from dalip.evaluation.specs import LoadedModel
from dalip.evaluation.templates import load_templates
from dalip.evaluation.zero_shot import class_embeddings
from dalip.model.features import Features
from dalip.serve.gallery import Gallery, NeighbourIndex, image_vectors, load_or_build_index, vector_kind

logger = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
LABEL_CACHE_SIZE = 8  # label sets typed on the page, remembered per model
GALLERY_ROUTE = "/gallery/"  # the app's route of gallery images: a link is this + quote(path)
MODE_WORDS = {"fused": "combined (DALIP)", "first": "first order only (as CLIP)"}


@dataclass
class ServeOptions:
    """How `dalip serve` answers; every field is a command-line flag."""

    top_k: int = 5
    neighbours: int = 8
    templates: str = "none"
    max_upload_bytes: int = 20 * MEGABYTE
    max_labels: int = 1000
    device: str = "auto"
    batch_size: int = 64

    def validate(self) -> None:
        for name in ("top_k", "neighbours", "max_labels", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"--max-upload-mb must be > 0, got {self.max_upload_bytes / MEGABYTE:g}")


class _OneImage(Dataset):
    """A dataset of one decoded image, so an upload is encoded exactly as `dalip predict` encodes a file."""

    def __init__(self, image: Image.Image, preprocess: Any) -> None:
        self.image, self.preprocess = image, preprocess

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.preprocess(self.image), 0


class ServedModel:
    """A loaded model, the modes it is shown in and its caches of label embeddings."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.vector_kind = vector_kind(loaded.model)
        self.modes = ["fused", "first"] if self.vector_kind == "fused" else ["first"]
        self.index: NeighbourIndex | None = None
        self._pinned: dict[tuple[str, ...], Features] = {}
        self._recent: OrderedDict[tuple[str, ...], Features] = OrderedDict()

    def result_name(self, mode: str) -> str:
        """The key of one mode's results: NAME for the main mode, NAME/first for the second."""
        return self.name if mode == self.modes[0] else f"{self.name}/{mode}"

    def label_embeddings(
        self, labels: Sequence[str], templates: list[str], runtime: Runtime, pin: bool = False
    ) -> Features:
        """Label embeddings (C, D), computed once per label set; pinned sets (the defaults) are
        kept for good, others in a small most-recently-used cache. Call inside `runtime.evaluating`."""
        key = tuple(labels)
        if key in self._pinned:
            return self._pinned[key]
        if key not in self._recent:
            second_order = self.modes != ["first"]
            embeddings = class_embeddings(
                self.loaded.model, self.loaded.tokenizer, labels, templates, runtime, second_order
            )
            if pin:
                self._pinned[key] = embeddings
                return embeddings
            self._recent[key] = embeddings
            if len(self._recent) > LABEL_CACHE_SIZE:
                self._recent.popitem(last=False)
        self._recent.move_to_end(key)
        return self._recent[key]

    def encode(self, image: Image.Image, runtime: Runtime) -> Features:
        second_order = self.modes != ["first"]
        return encode_dataset(
            self.loaded.model, _OneImage(image, self.loaded.preprocess), runtime, second_order, "upload"
        ).features

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "spec": self.loaded.spec,
            "modes": self.modes,
            "results": {self.result_name(m): MODE_WORDS[m] for m in self.modes},
            "neighbours_by": self.vector_kind,
        }


class Identifier:
    """Models, default labels and gallery indexes behind one lock (the models are not re-entrant:
    DALIPModel reads tokens with forward hooks)."""

    def __init__(
        self,
        models: Sequence[LoadedModel],
        default_labels: Sequence[str] | None = None,
        gallery: Gallery | None = None,
        options: ServeOptions | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        self.options = options or ServeOptions()
        self.options.validate()
        self.models = [ServedModel(loaded) for loaded in models]
        self.default_labels = list(default_labels) if default_labels else None
        self.gallery = gallery
        self.cache_dir = cache_dir
        self.templates = load_templates(self.options.templates)
        self.runtime = Runtime(batch_size=self.options.batch_size, device=self.options.device)
        self.lock = threading.Lock()
        self.ready = False
        self.failure: str | None = None
        self.progress = "starting"

    def prepare(self) -> None:
        """Embed the default labels and build (or read) every gallery index; sets `ready`."""
        with self.lock:
            for number, model in enumerate(self.models, start=1):
                where = f"model {number}/{len(self.models)} ({model.name})"
                if self.default_labels:
                    self.progress = f"{where}: embedding {len(self.default_labels)} labels"
                    with self.runtime.evaluating(model.loaded.model) as runtime:
                        model.label_embeddings(self.default_labels, self.templates, runtime, pin=True)
                if self.gallery is not None:
                    model.index = load_or_build_index(
                        self.gallery,
                        model.loaded,
                        self.runtime,
                        self.cache_dir,
                        lambda done, total, where=where: self._report(
                            f"{where}: indexing the gallery, {done}/{total} images"
                        ),
                    )
            self.progress = "ready"
            self.ready = True

    def _report(self, line: str) -> None:
        self.progress = line
        logger.info(line)

    def identify(
        self,
        image: Image.Image,
        labels: Sequence[str] | None,
        predictions: bool = True,
        neighbours: bool = True,
    ) -> dict[str, Any]:
        """Top-k labels per model and mode and/or nearest gallery images per model, with timings."""
        if predictions:
            labels = labels or self.default_labels
            if not labels:
                raise ValueError(
                    "no labels: type labels on the page (one per line) or start dalip serve with --labels"
                )
        if neighbours and self.gallery is None:
            raise LookupError("no gallery: start dalip serve with --gallery FOLDER to find similar images")
        result: dict[str, Any] = {"predictions": {}, "modes": {}, "neighbours": {}, "seconds": {}}
        with self.lock:
            for model in self.models:
                start = time.perf_counter()
                with self.runtime.evaluating(model.loaded.model) as runtime:
                    features = model.encode(image, runtime)
                    if predictions:
                        classes = model.label_embeddings(labels, self.templates, runtime)
                        for mode in model.modes:
                            probabilities = label_probabilities(model.loaded.model, features, classes, mode)
                            result["predictions"][model.result_name(mode)] = top_labels(
                                probabilities, labels, self.options.top_k
                            )[0]
                            result["modes"][model.result_name(mode)] = mode
                if neighbours:
                    result["neighbours"][model.name] = self._nearest(model, features)
                result["seconds"][model.name] = time.perf_counter() - start
        return result

    def _nearest(self, model: ServedModel, features: Features) -> list[dict[str, Any]]:
        query = image_vectors(model.loaded.model, features, model.vector_kind)[0]
        return [
            {
                "path": self.gallery.paths[row],
                "label": self.gallery.label_of(row),
                "score": score,
                "url": GALLERY_ROUTE + quote(self.gallery.paths[row]),
            }
            for row, score in model.index.nearest(query, self.options.neighbours)
        ]

    def describe(self) -> dict[str, Any]:
        """What the page shows before any upload."""
        return {
            "models": [model.describe() for model in self.models],
            "default_labels": self.default_labels or [],
            "templates": self.options.templates,
            "gallery_images": len(self.gallery) if self.gallery else 0,
            "top_k": self.options.top_k,
            "neighbours": self.options.neighbours,
            "max_upload_bytes": self.options.max_upload_bytes,
            "max_labels": self.options.max_labels,
        }

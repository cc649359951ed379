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

import torch
from PIL import Image
from torch.utils.data import Dataset

from dalip.inference.classes import class_embeddings
from dalip.inference.predict import answers_with_sigmoid, label_probabilities, top_labels
from dalip.inference.runtime import Runtime, encode_dataset
from dalip.inference.specs import LoadedModel
from dalip.inference.taxon_predict import answer, one_plant
from dalip.inference.templates import load_templates
from dalip.model.features import Features
from dalip.serve.gallery import Gallery, NeighbourIndex, image_vectors, load_or_build_index, vector_kind
from dalip.serve.taxa import ServedTaxonomy, Species, TaxonQuery

logger = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
LABEL_CACHE_SIZE = 8  # label sets typed on the page, remembered per model
GALLERY_ROUTE = "/gallery/"  # the app's route of gallery images: a link is this + quote(path)
MODE_WORDS = {
    "fused": "combined (DALIP)",
    "first": "first order only (as CLIP)",
    "second": "second order only",
}


@dataclass
class ServeOptions:
    """How `dalip serve` answers; every field is a command-line flag."""

    top_k: int = 5
    neighbours: int = 8
    max_photos: int = 8
    templates: str = "none"
    max_upload_bytes: int = 20 * MEGABYTE
    max_labels: int = 1000
    device: str = "auto"
    batch_size: int = 64

    def validate(self) -> None:
        for name in ("top_k", "neighbours", "max_photos", "max_labels", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"--max-upload-mb must be > 0, got {self.max_upload_bytes / MEGABYTE:g}")


class _Photos(Dataset):
    """Decoded uploads as a dataset, so they are encoded exactly as `dalip predict` encodes files."""

    def __init__(self, images: Sequence[Image.Image], preprocess: Any) -> None:
        self.images, self.preprocess = list(images), preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.preprocess(self.images[index]), index


class ServedModel:
    """A loaded model, the modes it is shown in and its caches of label embeddings."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.vector_kind = vector_kind(loaded.model)
        model = loaded.model
        if loaded.has_second_order and getattr(model, "alpha", 1.0) < 1.0:  # its own mode first
            self.modes = list(dict.fromkeys([model.default_mode, "fused", "first"]))
        else:
            self.modes = ["first"]
        self.index: NeighbourIndex | None = None
        self._pinned: dict[tuple[str, ...], Features] = {}
        self._recent: OrderedDict[tuple[str, ...], Features] = OrderedDict()

    def result_name(self, mode: str) -> str:
        """The key of one mode's results: NAME for the model's own mode, NAME/MODE for the others."""
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

    def encode(self, images: Sequence[Image.Image], runtime: Runtime) -> Features:
        second_order = self.modes != ["first"]
        return encode_dataset(
            self.loaded.model, _Photos(images, self.loaded.preprocess), runtime, second_order, "upload"
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
        taxonomy: ServedTaxonomy | None = None,
    ) -> None:
        """`taxonomy`: answer with taxa too; its species are then the default labels."""
        self.options = options or ServeOptions()
        self.options.validate()
        self.models = [ServedModel(loaded) for loaded in models]
        self.taxonomy = taxonomy
        if taxonomy is not None:
            default_labels = taxonomy.default.names
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
                    texts = self.taxonomy.default.texts if self.taxonomy else self.default_labels
                    with self.runtime.evaluating(model.loaded.model) as runtime:
                        model.label_embeddings(texts, self.templates, runtime, pin=True)
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
        images: Image.Image | Sequence[Image.Image],
        labels: Sequence[str] | None,
        predictions: bool = True,
        neighbours: bool = True,
        query: TaxonQuery | None = None,
    ) -> dict[str, Any]:
        """Top-k labels per model and mode (and, with a taxonomy, the answer as a taxon) and/or
        the nearest gallery images per model, with timings. Several images are photos of one
        plant, answered together: the mean of their log-probabilities, and the gallery images
        nearest to the mean of their vectors."""
        images = [images] if isinstance(images, Image.Image) else list(images)
        species = self._species(labels, query or TaxonQuery()) if predictions else None
        if neighbours and self.gallery is None:
            raise LookupError("no gallery: start dalip serve with --gallery FOLDER to find similar images")
        result: dict[str, Any] = {"predictions": {}, "modes": {}, "taxa": {}, "neighbours": {}, "seconds": {}}
        with self.lock:
            for model in self.models:
                start = time.perf_counter()
                with self.runtime.evaluating(model.loaded.model) as runtime:
                    features = model.encode(images, runtime)
                    if species is not None:
                        classes = model.label_embeddings(species.texts, self.templates, runtime)
                        for mode in model.modes:
                            self._predict(model, mode, features, classes, species, query, result)
                if neighbours:
                    result["neighbours"][model.name] = self._nearest(model, features)
                result["seconds"][model.name] = time.perf_counter() - start
        result["photos"] = len(images)
        source = "request" if labels else "checklist" if query and query.subset is not None else "server"
        result["labels"] = {"count": len(species.names), "source": source} if species else None
        return result

    def _species(self, labels: Sequence[str] | None, query: TaxonQuery) -> Species:
        """What a request chooses among: its own labels, the taxonomy's species (or its checklist's),
        or the server's labels. ValueError naming what is missing or wrong."""
        asked = [name for name in ("rank", "subset", "min_probability") if getattr(query, name) is not None]
        if asked and self.taxonomy is None:
            raise ValueError(
                f"{asked[0]}: this server has no taxonomy (start dalip serve with --taxonomy FILE)"
            )
        if labels and query.subset is not None:
            raise ValueError("send either labels or a subset (a checklist of the taxonomy), not both")
        if labels:
            return Species([], list(labels), list(labels))
        if self.taxonomy is not None:
            self.taxonomy.options(query)  # checked before any model runs
            return self.taxonomy.species(query)
        if not self.default_labels:
            raise ValueError(
                "no labels: type labels on the page (one per line) or start dalip serve with --labels"
            )
        return Species([], self.default_labels, self.default_labels)

    def _predict(
        self,
        model: ServedModel,
        mode: str,
        features: Features,
        classes: Features,
        species: Species,
        query: TaxonQuery | None,
        result: dict[str, Any],
    ) -> None:
        # Taxa add species up to genera: they need a distribution over the checklist, whatever the form.
        distribution = bool(species.taxa) or not answers_with_sigmoid(model.loaded.model)
        probabilities = label_probabilities(model.loaded.model, features, classes, mode, distribution)
        if len(probabilities) == 1:
            row = probabilities[0]
        elif distribution:
            row = one_plant(probabilities)
        else:  # several photos, each label's own sigmoid probability: their geometric mean
            row = probabilities.clamp_min(1e-30).log().mean(dim=0).exp()
        key = model.result_name(mode)
        result["predictions"][key] = top_labels(row[None], species.names, self.options.top_k)[0]
        result["modes"][key] = mode
        if species.taxa:
            rank, min_probability = self.taxonomy.options(query or TaxonQuery())
            result["taxa"][key] = answer(row, species.taxa, rank, self.options.top_k, min_probability)

    def _nearest(self, model: ServedModel, features: Features) -> list[dict[str, Any]]:
        vectors = image_vectors(model.loaded.model, features, model.vector_kind)
        query = vectors[0] if len(vectors) == 1 else torch.nn.functional.normalize(vectors.mean(dim=0), dim=0)
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
            "max_photos": self.options.max_photos,
            "taxonomy": self.taxonomy.describe() if self.taxonomy else None,
            "max_upload_bytes": self.options.max_upload_bytes,
            "max_labels": self.options.max_labels,
        }

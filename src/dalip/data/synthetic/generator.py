"""The embedded dataset generator: fine-grained synthetic plants plus general pictures.

`make_dataset(out_dir, seed=0, ...)` writes, deterministically in `seed`:

    out_dir/manifest.json                  seed, options, counts, species and their traits,
                                           every split's files and shard sizes
    out_dir/plant/{train,val,test}/        one split folder each (layout in
    out_dir/general/{train,val,test}/      `writers.py`): <class>/<id>.jpg,
                                           classes.txt, captions.csv, shards/*.tar, sizes.json

Every image has its own random generator seeded by (seed, domain, split, class, index),
so the output does not depend on the order images are rendered in.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from PIL import Image

from dalip.atomic import write_text
from dalip.data.synthetic.general import GENERAL_CLASSES, general_caption, render_general
from dalip.data.synthetic.plants import MAX_SPECIES, TRAITS, Species, alt_text, make_species, multi_captions
from dalip.data.synthetic.render import render_leaf, sample_pose
from dalip.data.synthetic.writers import SplitWriter, encode_image
from dalip.data.taxonomy import TAXONOMY_FILE, write_taxonomy
from dalip.outputs import OutputFolder
from dalip.schema import check_fields, checked

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DOMAINS = ("plant", "general")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ImageFormat = Literal["jpg", "png"]


@dataclass(frozen=True)
class GeneratorOptions:
    """What `make_dataset` writes (all of it is recorded in the manifest)."""

    seed: int = checked(0, minimum=0)
    species: int = checked(24, minimum=2, maximum=MAX_SPECIES)
    image_size: int = checked(64, minimum=16, maximum=1024)
    train_per_class: int = checked(40, minimum=1)
    val_per_class: int = checked(10, minimum=1)
    test_per_class: int = checked(20, minimum=1)
    general_classes: int = checked(12, minimum=0, maximum=len(GENERAL_CLASSES))
    samples_per_shard: int = checked(200, minimum=1)
    image_format: ImageFormat = "jpg"

    def validate(self) -> None:
        """ValueError naming the first option of the wrong type or out of range."""
        for spec in fields(self):
            value, kind = getattr(self, spec.name), int if spec.type == "int" else str
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{spec.name}: expected {kind.__name__}, got {value!r}")
        check_fields(self)

    def per_class(self, split: str) -> int:
        return {"train": self.train_per_class, "val": self.val_per_class, "test": self.test_per_class}[split]


Renderer = Callable[[int, np.random.Generator], tuple[Image.Image, str, dict[str, str]]]


def _plant_renderer(species: list[Species], size: int) -> Renderer:
    def render(label: int, rng: np.random.Generator) -> tuple[Image.Image, str, dict[str, str]]:
        chosen = species[label]
        image = render_leaf(chosen.traits, sample_pose(rng), size)
        return image, alt_text(chosen, rng), multi_captions(chosen)

    return render


def _general_renderer(classes: list[tuple[str, str]], size: int) -> Renderer:
    def render(label: int, rng: np.random.Generator) -> tuple[Image.Image, str, dict[str, str]]:
        folder, readable = classes[label]
        image, detail = render_general(folder, sample_pose(rng), size)
        caption = general_caption(readable, detail, rng)
        return image, caption, {"common": readable, "description": caption}

    return render


def write_split(
    root: str,
    classes: list[tuple[str, str]],
    render: Renderer,
    options: GeneratorOptions,
    key: list[int],
    expect: Callable[[list[str]], None] = lambda files: None,
) -> dict[str, Any]:
    """Render and write one split; `key` = [seed, domain, split] seeds every image.
    `expect(files)` hears every file (relative to `root`) before the first is written."""
    per_class = options.per_class(SPLITS[key[2]])
    items = [(label, index) for label in range(len(classes)) for index in range(per_class)]
    order = np.random.default_rng([*key, 99]).permutation(len(items))  # classes mixed in shards
    labels = [items[position][0] for position in order]
    expect(SplitWriter.planned(classes, labels, options.samples_per_shard, options.image_format))
    writer = SplitWriter(root, classes, options.samples_per_shard, options.image_format)
    try:
        for position in order:
            label, index = items[position]
            image, caption, captions = render(label, np.random.default_rng([*key, label, index]))
            writer.add(label, encode_image(image, options.image_format), caption, captions)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def make_dataset(
    out_dir: str,
    seed: int = 0,
    species: int = 24,
    image_size: int = 64,
    *,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Write the synthetic dataset under `out_dir` (layout in the module docstring).

    Further keyword options are the fields of `GeneratorOptions` (train_per_class,
    val_per_class, test_per_class, general_classes, samples_per_shard, image_format).
    Returns the manifest, also written to `out_dir/manifest.json`.
    """
    unknown = set(options) - set(GeneratorOptions.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown make_dataset options {sorted(unknown)}")
    config = GeneratorOptions(seed=seed, species=species, image_size=image_size, **options)
    config.validate()
    # A new or empty folder, or with `force` one that holds an earlier dataset: only the
    # files that run wrote are deleted (dalip.outputs).
    with OutputFolder(out_dir, "make-dataset", force=force) as folder:
        return _write_dataset(out_dir, config, folder)


def _write_dataset(out_dir: str, config: GeneratorOptions, folder: OutputFolder) -> dict[str, Any]:
    plants = make_species(config.species, config.seed)
    domains: dict[str, tuple[list[tuple[str, str]], Renderer]] = {
        "plant": ([(s.folder, s.scientific) for s in plants], _plant_renderer(plants, config.image_size)),
        "general": (
            list(GENERAL_CLASSES[: config.general_classes]),
            _general_renderer(list(GENERAL_CLASSES), config.image_size),
        ),
    }
    splits: dict[str, dict[str, Any]] = {}
    for domain_index, (domain, (classes, render)) in enumerate(domains.items()):
        if not classes:
            continue
        for split_index, split in enumerate(SPLITS):
            root = os.path.join(out_dir, domain, split)
            key = [config.seed, domain_index, split_index]
            announce = functools.partial(_announce, folder, f"{domain}/{split}")
            entry = write_split(root, classes, render, config, key, announce)
            if domain == "plant":  # the ranks of its species, for text types and rank evaluation
                announce([TAXONOMY_FILE])
                write_taxonomy(os.path.join(root, TAXONOMY_FILE), [s.taxon() for s in plants])
                entry["taxonomy"] = TAXONOMY_FILE
            splits[f"{domain}/{split}"] = entry
            shards = len(entry["shard_sizes"])
            logger.info("wrote %s/%s: %d images, %d shards", domain, split, entry["count"], shards)
    manifest = _manifest(config, plants, splits, out_dir)
    write_text(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _announce(folder: OutputFolder, prefix: str, files: list[str]) -> None:
    folder.expect([*(f"{prefix}/{name}" for name in files), MANIFEST])


def _manifest(
    config: GeneratorOptions, plants: list[Species], splits: dict[str, dict[str, Any]], out_dir: str
) -> dict[str, Any]:
    """JSON-able record of what was written (paths relative to `out_dir`)."""
    files = {}
    for name, entry in splits.items():
        shards = [f"shards/{shard}" for shard in entry["shard_sizes"]]
        extra = [entry["taxonomy"]] if "taxonomy" in entry else []
        for relative in [entry["csv"], entry["classes"], *extra, "shards/sizes.json", *shards]:
            files[f"{name}/{relative}"] = os.path.getsize(os.path.join(out_dir, name, relative))
    return {
        "generator": "dalip.data.synthetic",
        "format_version": FORMAT_VERSION,
        "options": asdict(config),
        "seed": config.seed,
        "image_size": config.image_size,
        "traits": {trait: list(values) for trait, values in TRAITS.items()},
        "species": [
            {
                "label": i,
                "folder": s.folder,
                "scientific": s.scientific,
                "common": s.common,
                "order": s.order,
                "family": s.family,
                "traits": s.traits,
                "differs_from_genus_base_in": s.changed,
            }
            for i, s in enumerate(plants)
        ],
        "general_classes": [readable for _, readable in GENERAL_CLASSES[: config.general_classes]],
        "splits": splits,
        "counts": {name: entry["count"] for name, entry in splits.items()},
        "files": files,
    }

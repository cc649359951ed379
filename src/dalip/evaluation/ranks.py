"""Zero-shot evaluation by taxonomic rank, as BioCLIP 2 evaluates: at each rank the labels
are that rank's distinct taxa, each embedded from its taxonomic text down to the rank
("Plantae Tracheophyta Magnoliopsida Fagales Fagaceae" for family Fagaceae), scored flat
(all taxa of the rank) and top-down (only the children of the taxon chosen one rank up);
and, for each wrong species answer, how far down from the kingdom it still agrees with
the truth (the depth of the lowest common ancestor).

Ranks where the data has a single taxon (all plants are Plantae) say nothing and are left
out; so are a rank's images whose class has no name there.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from dalip.data.files import CLASSES_FILE, list_image_folder, read_classes_file
from dalip.data.taxonomy import RANKS, TAXONOMY_FILE, Taxon, Taxonomy, read_taxonomy
from dalip.evaluation.datasets import load_classification_dataset
from dalip.evaluation.metrics import classification_metrics
from dalip.inference.classes import class_embeddings
from dalip.inference.runtime import Runtime, encode_dataset, resolve_modes
from dalip.inference.templates import load_templates
from dalip.model.features import Encoder


def dataset_taxonomy(taxonomy: str | os.PathLike | Taxonomy, path: str | os.PathLike) -> Taxonomy:
    """`taxonomy` read (a file; "auto": taxonomy.csv in the image folder or next to the CSV)."""
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if str(taxonomy) == "auto":
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        taxonomy = os.path.join(folder, TAXONOMY_FILE)
    return read_taxonomy(taxonomy)


def class_keys(path: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """The taxonomy labels of a dataset's classes in label order: an image folder's class
    folders, a CSV's `classes.txt` folder names, else its class names."""
    if os.path.isdir(path):
        return list(list_image_folder(path).folders)
    listing = os.path.join(os.path.dirname(path), CLASSES_FILE)
    if os.path.exists(listing):
        return [folder for folder, _ in read_classes_file(listing)]
    return list(names)


def zero_shot_ranks(
    model: Encoder,
    path: str | os.PathLike,
    tokenizer: Any,
    preprocess: Any,
    taxonomy: str | os.PathLike | Taxonomy = "auto",
    templates: str | Sequence[str] = "generic",
    modes: Sequence[str] | None = None,
    runtime: Runtime | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
) -> dict[str, Any]:
    """Per rank and mode: flat and top-down top-1 (and flat top-5, mean per-class recall);
    per mode: the wrong species answers and the ranks down to which they still agree.

    Returns {"ranks": {rank: {"num_taxa", "num_images", "modes": {mode: {top1, top5,
    mean_per_class_recall, top_down_top1}}}}, "wrong_species": {mode: {"count",
    "mean_depth", "agree_down_to": {rank: count}}}, "taxonomy": path}.
    """
    modes = resolve_modes(model, modes)
    taxonomy = dataset_taxonomy(taxonomy, path)
    templates = load_templates(templates)
    dataset, names, where = load_classification_dataset(path, preprocess, None, label_key, image_key)
    keys = class_keys(path, names)
    taxonomy.check_labels(keys, where)
    taxa = [taxonomy.taxon(key) for key in keys]
    second_order = modes != ["first"]
    with (runtime or Runtime()).evaluating(model) as runtime:
        encoded = encode_dataset(model, dataset, runtime, second_order, "zero-shot by rank")
        ranks = [rank for rank in RANKS if len({t.name(rank) for t in taxa} - {""}) > 1]
        embedded = {}
        for rank in ranks:
            names_at = sorted({t.name(rank) for t in taxa} - {""})
            texts = [" ".join(next(t for t in taxa if t.name(rank) == n).lineage(rank)) for n in names_at]
            embedded[rank] = (
                names_at,
                class_embeddings(model, tokenizer, texts, templates, runtime, second_order),
            )
    labels = encoded.labels
    results: dict[str, Any] = {"taxonomy": taxonomy.path, "ranks": {}, "wrong_species": {}}
    above: dict[str, tuple[list[str], torch.Tensor]] = {}  # per mode: the rank above's taxa, choices
    for rank in ranks:
        names_at, classes = embedded[rank]
        index = {name: i for i, name in enumerate(names_at)}
        truth = torch.tensor([index.get(taxa[label].name(rank), -1) for label in labels.tolist()])
        known = truth >= 0
        entry = {"num_taxa": len(names_at), "num_images": int(known.sum()), "modes": {}}
        parents = _parents(taxa, names_at, rank, ranks)
        for mode in modes:
            logits = model.similarity(encoded.features, classes, mode)
            metrics = classification_metrics(logits[known], truth[known])
            chosen = _top_down(logits, parents, above.get(mode))
            above[mode] = (names_at, chosen)
            metrics["top_down_top1"] = float((chosen[known] == truth[known]).float().mean())
            entry["modes"][mode] = metrics
            if rank == "species":
                results["wrong_species"][mode] = _agreement(taxa, labels, logits.argmax(dim=1), names_at)
        results["ranks"][rank] = entry
    return results


def _parents(taxa: list[Taxon], names_at: list[str], rank: str, ranks: list[str]) -> list[str] | None:
    """Each taxon's name one evaluated rank up (None at the first evaluated rank)."""
    position = ranks.index(rank)
    if position == 0:
        return None
    above = ranks[position - 1]
    by_name = {t.name(rank): t.name(above) for t in taxa if t.name(rank)}
    return [by_name[name] for name in names_at]


def _top_down(
    logits: torch.Tensor, parents: list[str] | None, above: tuple[list[str], torch.Tensor] | None
) -> torch.Tensor:
    """Each image's taxon at this rank among the children of its taxon chosen one rank up
    (`above`: that rank's taxa and choices); the flat choice where the chosen one has none."""
    if parents is None or above is None:
        return logits.argmax(dim=1)
    names_above, chosen_above = above
    allowed = torch.tensor([[parent == names_above[i] for parent in parents] for i in chosen_above.tolist()])
    masked = logits.masked_fill(~allowed, float("-inf"))
    choice = masked.argmax(dim=1)
    return torch.where(allowed.any(dim=1), choice, logits.argmax(dim=1))


def _agreement(
    taxa: list[Taxon], labels: torch.Tensor, chosen: torch.Tensor, names_at: list[str]
) -> dict[str, Any]:
    """For the wrong species answers: how many named ranks from the kingdom down each shares
    with the truth (its lowest common ancestor), the mean, and the counts of the finest one."""
    by_species = {t.name("species"): t for t in taxa if t.name("species")}
    depths, finest = [], Counter()
    for label, choice in zip(labels.tolist(), chosen.tolist()):
        truth, answer = taxa[label], by_species[names_at[choice]]
        if truth.name("species") == answer.name("species"):
            continue
        depth, shared = 0, "none"
        for rank in RANKS:  # ranks blank in both are unknown, not a difference
            if not truth.name(rank) and not answer.name(rank):
                continue
            if truth.name(rank) != answer.name(rank):
                break
            depth, shared = depth + 1, rank
        depths.append(depth)
        finest[shared] += 1
    mean = sum(depths) / len(depths) if depths else None
    return {"count": len(depths), "mean_depth": mean, "agree_down_to": dict(finest)}

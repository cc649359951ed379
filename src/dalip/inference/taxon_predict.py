"""Prediction a botanist can use: answers at a taxonomic rank, restricted to a checklist,
backed off to a coarser rank when unsure, and several photos of one plant answered together
(`dalip predict --taxonomy`, in the manner of pybioclip's `--rank` / `--subset` and Pl@ntNet's
several-organ identification).

The model scores the species (every class of the taxonomy, or those of `subset`), each
embedded from its taxonomic text; a taxon's probability at a higher rank is the sum over the
species below it. `min_probability` walks from the species up to the first rank whose best
taxon reaches it, and answers "no answer" (None) when none does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import torch

from dalip.data.files import read_text_lines
from dalip.data.taxonomy import RANKS, TEXT_TYPES, Taxon, Taxonomy, named_ranks
from dalip.inference.classes import class_embeddings
from dalip.inference.images import ImageFileDataset, list_image_files
from dalip.inference.predict import label_probabilities
from dalip.inference.runtime import Runtime, encode_dataset, resolve_modes
from dalip.inference.templates import load_templates
from dalip.model.features import Encoder

# `--subset RANK=NAME` ("family=Rosaceae"): a word, then "=" (a file name with a separator is a file)
_RANK_FILTER = re.compile(r"\s*[A-Za-z_]+\s*=.*", re.DOTALL)


def checklist(taxonomy: Taxonomy, subset: str | os.PathLike | None) -> list[Taxon]:
    """The species to choose among: all, those under `RANK=NAME` ("family=Rosaceae"), or those
    under any taxon named in a checklist file (one name per line, at any rank; "#" comments).
    ValueError naming what matched nothing."""
    if subset is None:
        return list(taxonomy.taxa.values())
    text = os.fspath(subset)
    if _RANK_FILTER.fullmatch(text) and not os.path.exists(text):
        return _under(taxonomy, text, f"--subset {text}")
    names = _names(read_text_lines(text, "checklist"))
    if not names:
        raise ValueError(f"{text}: the checklist names no taxon (expected one name per line)")
    return _named(taxonomy, names, text)


def ranked_checklist(taxonomy: Taxonomy, subset: str | os.PathLike | None, rank: str) -> list[Taxon]:
    """`checklist`, refused (`check_rank`, naming --rank) when none of its species names `rank`."""
    taxa = checklist(taxonomy, subset)
    check_rank(
        taxa, rank, "--rank", taxonomy.path if subset is None else f"the checklist {os.fspath(subset)}"
    )
    return taxa


def checklist_of_text(taxonomy: Taxonomy, text: str, where: str) -> list[Taxon]:
    """The species of a checklist typed as text (`dalip serve`'s `subset` field): one taxon
    name per line, or a single `RANK=NAME` line. ValueError starting with `where`."""
    names = _names(text.splitlines())
    if not names:
        raise ValueError(
            f"{where}: the checklist is empty (one taxon name per line, or e.g. family=Rosaceae)"
        )
    if len(names) == 1 and _RANK_FILTER.fullmatch(names[0]) and names[0] not in taxonomy.taxa:
        return _under(taxonomy, names[0], where)
    return _named(taxonomy, names, where)


def check_rank(taxa: Sequence[Taxon], rank: str, where: str, among: str) -> None:
    """ValueError when none of `taxa` has a name at `rank` (every answer would be empty);
    `where` names the option ("--rank"), `among` the classes (a file, a checklist)."""
    named = named_ranks(taxa)
    if rank not in named:
        raise ValueError(
            f"{where} {rank}: no class of {among} names a {rank}; answer at a rank it names: "
            f"{', '.join(named) or 'none'}"
        )


def species_texts(taxa: Sequence[Taxon], text_type: str) -> list[str]:
    """Each species' text of `text_type`, or its taxonomic text where it cannot make that type."""
    return [t.text(text_type) or t.text("taxonomic") for t in taxa]


def _names(lines: Sequence[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _under(taxonomy: Taxonomy, text: str, where: str) -> list[Taxon]:
    """The species under `RANK=NAME`; ValueError naming an unknown rank, or a name no class has."""
    rank, _, name = (part.strip() for part in text.partition("="))
    if rank not in RANKS:
        raise ValueError(
            f"{where}: unknown rank {rank!r}; the ranks of {taxonomy.path} are "
            f"{', '.join(named_ranks(taxonomy.taxa.values())) or 'none'} (or give a checklist file)"
        )
    chosen = [t for t in taxonomy.taxa.values() if t.name(rank) == name]
    if not chosen:
        raise ValueError(f"{where}: no class of {taxonomy.path} has {rank} {name!r}")
    return chosen


def _named(taxonomy: Taxonomy, names: Sequence[str], where: str) -> list[Taxon]:
    taxa = list(taxonomy.taxa.values())
    known = {t.label for t in taxa} | {t.name(r) for t in taxa for r in RANKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{where}: {unknown[0]!r} names no taxon of {taxonomy.path} ({len(unknown)} unknown)"
        )
    wanted = set(names)
    return [t for t in taxa if t.label in wanted or any(t.name(r) in wanted for r in RANKS)]


def one_plant(probabilities: torch.Tensor) -> torch.Tensor:
    """Several photos of one plant (N, S) -> one distribution (S,): the mean of their
    log-probabilities, renormalised (a species unlikely in any photo stays unlikely)."""
    return probabilities.clamp_min(1e-30).log().mean(dim=0).softmax(dim=0)


def by_rank(probabilities: torch.Tensor, taxa: Sequence[Taxon], rank: str) -> tuple[list[str], torch.Tensor]:
    """The taxa at `rank` (species without a name there are left out) and, per row, the sum
    of their species' probabilities: (names, (N, T))."""
    names = sorted({t.name(rank) for t in taxa} - {""})
    index = {name: i for i, name in enumerate(names)}
    groups = torch.zeros(len(taxa), len(names))
    for row, taxon in enumerate(taxa):
        if taxon.name(rank):
            groups[row, index[taxon.name(rank)]] = 1.0
    return names, probabilities @ groups


def describe(taxa: Sequence[Taxon], rank: str, name: str, probability: float) -> dict[str, Any]:
    """One answer: the taxon, its rank and probability, its lineage and (species) common name."""
    member = next(t for t in taxa if t.name(rank) == name)
    lineage = {r: member.name(r) for r in RANKS[: RANKS.index(rank) + 1] if member.name(r)}
    common = member.common if rank == "species" else ""
    return {
        "taxon": name,
        "rank": rank,
        "probability": probability,
        "lineage": lineage,
        "common_name": common,
    }


def answer(
    probabilities: torch.Tensor, taxa: Sequence[Taxon], rank: str, top_k: int, min_probability: float | None
) -> dict[str, Any]:
    """For one row of species probabilities (S,): the top_k at `rank`, and the answer: the best
    taxon at `rank`, or with `min_probability` at the finest rank from `rank` up whose best
    taxon reaches it (None: "no answer")."""
    names, summed = by_rank(probabilities[None], taxa, rank)
    top = summed[0].topk(min(top_k, len(names)))
    predictions = [
        describe(taxa, rank, names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    chosen = predictions[0] if predictions else None
    if min_probability is not None:
        chosen = None
        for level in reversed(RANKS[: RANKS.index(rank) + 1]):
            level_names, level_summed = by_rank(probabilities[None], taxa, level)
            if level_names and float(level_summed.max()) >= min_probability:
                best = int(level_summed[0].argmax())
                chosen = describe(taxa, level, level_names[best], float(level_summed[0, best]))
                break
    return {"answer": chosen, "predictions": predictions}


def check_options(rank: str, min_probability: float | None, text_type: str = "taxonomic") -> None:
    """ValueError naming the option (as a flag: --rank, --min-probability, --text-type)."""
    if rank not in RANKS:
        raise ValueError(f"--rank: expected one of {', '.join(RANKS)}, got {rank!r}")
    if text_type not in TEXT_TYPES:
        raise ValueError(f"--text-type: expected one of {', '.join(TEXT_TYPES)}, got {text_type!r}")
    if min_probability is not None and not 0.0 < min_probability <= 1.0:
        raise ValueError(f"--min-probability: expected a number in (0, 1], got {min_probability}")


def predict_taxa(
    model: Encoder,
    images: Sequence[str | os.PathLike],
    taxonomy: Taxonomy,
    tokenizer: Any,
    preprocess: Any,
    templates: str | Sequence[str] = "none",
    mode: str | None = None,
    top_k: int = 5,
    rank: str = "species",
    subset: str | os.PathLike | None = None,
    min_probability: float | None = None,
    same_plant: bool = False,
    text_type: str = "taxonomic",
    runtime: Runtime | None = None,
) -> list[dict[str, Any]]:
    """Answers per image (or one for all images with `same_plant`: the mean of their
    log-probabilities, renormalised): [{"images": [paths], "answer": {taxon, rank,
    probability, lineage, common_name} or None, "predictions": top_k at `rank`}]."""
    check_options(rank, min_probability, text_type)
    (mode,) = resolve_modes(model, [mode])
    taxa = ranked_checklist(taxonomy, subset, rank)
    texts = species_texts(taxa, text_type)
    paths = list_image_files(images)
    with (runtime or Runtime()).evaluating(model) as runtime:
        classes = class_embeddings(
            model, tokenizer, texts, load_templates(templates), runtime, mode != "first"
        )
        encoded = encode_dataset(
            model, ImageFileDataset(paths, preprocess), runtime, mode != "first", "predict"
        )
    # a distribution over the checklist: its species' probabilities add up to their genus'
    probabilities = label_probabilities(model, encoded.features, classes, mode, distribution=True)
    read = [paths[i] for i in encoded.indices.tolist()]
    if same_plant:
        return [{"images": read, **answer(one_plant(probabilities), taxa, rank, top_k, min_probability)}]
    return [
        {"images": [path], **answer(row, taxa, rank, top_k, min_probability)}
        for path, row in zip(read, probabilities)
    ]

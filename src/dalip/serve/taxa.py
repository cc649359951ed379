"""Taxon answers of `dalip serve --taxonomy`: what a request asks (the rank, a checklist, the
back-off probability) and the species it chooses among, as `dalip predict --taxonomy` does.

The server's labels are the taxonomy's species, each embedded from its text (`text_type`,
taxonomic by default); a request's `subset` restricts them, and its answer per model and mode
is `dalip.inference.taxon_predict.answer` of the species probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dalip.data.taxonomy import RANKS, Taxon, Taxonomy, named_ranks
from dalip.inference.taxon_predict import (
    check_options,
    check_rank,
    checklist_of_text,
    ranked_checklist,
    species_texts,
)


@dataclass(frozen=True)
class TaxonQuery:
    """One request's taxon options; None: the server's default."""

    rank: str | None = None
    subset: str | None = None
    min_probability: float | None = None


@dataclass(frozen=True)
class Species:
    """The species a request chooses among: their taxa, the names shown and the texts embedded."""

    taxa: list[Taxon]
    names: list[str]
    texts: list[str]


class ServedTaxonomy:
    """A taxonomy with the server's defaults: answer `rank`, back-off `min_probability`,
    checklist `subset` (a file or RANK=NAME, as `dalip predict --subset`)."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        rank: str = "species",
        min_probability: float | None = None,
        subset: str | None = None,
        text_type: str = "taxonomic",
    ) -> None:
        check_options(rank, min_probability, text_type)
        self.taxonomy, self.rank, self.min_probability = taxonomy, rank, min_probability
        self.subset, self.text_type = subset, text_type
        self.default = self._species(ranked_checklist(taxonomy, subset, rank))
        self.ranks = named_ranks(taxonomy.taxa.values())

    def _species(self, taxa: list[Taxon]) -> Species:
        return Species(taxa, [t.scientific() or t.label for t in taxa], species_texts(taxa, self.text_type))

    def species(self, query: TaxonQuery) -> Species:
        """The server's species, or those of the request's checklist; ValueError naming `subset`,
        or `rank` when none of them names the rank the request is answered at."""
        if query.subset is None:
            species = self.default
            among = self.taxonomy.path if self.subset is None else f"the checklist {self.subset}"
        else:
            species = self._species(checklist_of_text(self.taxonomy, query.subset, "subset"))
            among = "the request's checklist"
        check_rank(species.taxa, self.options(query)[0], "rank", among)
        return species

    def options(self, query: TaxonQuery) -> tuple[str, float | None]:
        """The (rank, min_probability) a request is answered at, checked (ValueError naming the field)."""
        rank = query.rank or self.rank
        if rank not in RANKS:
            raise ValueError(f"rank: expected one of {', '.join(RANKS)}, got {rank!r}")
        chosen = self.min_probability if query.min_probability is None else query.min_probability
        if chosen is not None and not 0.0 < chosen <= 1.0:
            raise ValueError(f"min_probability: expected a number in (0, 1], got {chosen}")
        return rank, chosen

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.taxonomy.path,
            "species": len(self.default.taxa),
            "ranks": self.ranks,
            "rank": self.rank,
            "min_probability": self.min_probability,
            "subset": self.subset,
            "text_type": self.text_type,
        }

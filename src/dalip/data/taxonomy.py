"""Taxonomy files: the ranks a botanist names a plant by, per class, and the texts made from them.

A `taxonomy.csv` (UTF-8; `.tsv` tab-separated) has a `label` column (the class folder name,
or the label a CSV / WebDataset source gives) and any of the rank columns `RANKS` plus
`common_name`; blank cells are unknown ranks. `species` holds the epithet ("rubra"), as in
BioCLIP's and pybioclip's tables; the species name is "Genus epithet". The table is checked
on load, each failure one line naming the row and column: an unknown column, a repeated
label, a species without its genus, a row with nothing in it, and a taxon placed under two
different parents (genus Quercus in family Fagaceae in one row and Rosaceae in another).

Text types (BioCLIP, Stevens et al. 2024, section 3.3): `scientific` ("Quercus rubra"),
`common` ("red oak"), `taxonomic` ("Plantae Tracheophyta Magnoliopsida Fagales Fagaceae
Quercus rubra"), and the two with the common name after them (`scientific_common`,
`taxonomic_common`: "... Quercus rubra with common name red oak"). A type a class cannot make
(no common name, no rank at all) is absent for that class.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dalip.atomic import write_text
from dalip.data.captions import DEFAULT_TEMPLATES, check_template, fill_template
from dalip.data.files import CLASSES_FILE, read_classes_file, read_table

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
LABEL = "label"
COMMON = "common_name"
COLUMNS = (LABEL, *RANKS, COMMON)
TEXT_TYPES = ("scientific", "common", "taxonomic", "scientific_common", "taxonomic_common")
OWN_CAPTION = "caption"  # in `text_types`: the source's own caption (CSV cell, folder template)
TAXONOMY_FILE = "taxonomy.csv"
MAX_TAXONOMY_BYTES = 100_000_000


@dataclass(frozen=True)
class Taxon:
    """One class's place in the taxonomy: `ranks` holds a name (or "") per entry of `RANKS`."""

    label: str
    ranks: tuple[str, ...]
    common: str = ""

    def name(self, rank: str) -> str:
        """The taxon's name at `rank` ("" when unknown); at species, "Genus epithet"."""
        value = self.ranks[RANKS.index(rank)]
        if rank == "species" and value:
            return f"{self.ranks[RANKS.index('genus')]} {value}"
        return value

    @property
    def finest(self) -> str | None:
        """The finest rank with a name, or None."""
        return next((rank for rank in reversed(RANKS) if self.name(rank)), None)

    def lineage(self, rank: str = "species") -> tuple[str, ...]:
        """The names from kingdom down to `rank`, blanks left out."""
        upto = RANKS[: RANKS.index(rank) + 1]
        return tuple(value for value in (self.ranks[RANKS.index(r)] for r in upto) if value)

    def scientific(self) -> str:
        """The name at the finest known rank ("Quercus rubra", or "Quercus", or "")."""
        return self.name(self.finest) if self.finest else ""

    def text(self, kind: str) -> str:
        """The text of one of `TEXT_TYPES` ("" when the class cannot make it)."""
        if kind not in TEXT_TYPES:
            raise ValueError(f"text type: expected one of {', '.join(TEXT_TYPES)}, got {kind!r}")
        named = {
            "scientific": self.scientific(),
            "common": self.common,
            "taxonomic": " ".join(self.lineage()),
        }
        base, _, with_common = kind.partition("_")
        if not with_common:
            return named[base]
        return f"{named[base]} with common name {self.common}" if named[base] and self.common else ""


@dataclass(frozen=True)
class Taxonomy:
    """The taxa of a table, by label; `path` names the file in messages."""

    taxa: dict[str, Taxon]
    path: str

    def __len__(self) -> int:
        return len(self.taxa)

    def taxon(self, label: str) -> Taxon:
        try:
            return self.taxa[label]
        except KeyError:
            raise ValueError(f"{self.path}: no row for class {label!r} (column {LABEL})") from None

    def check_labels(self, labels: Iterable[str], where: str) -> None:
        """ValueError naming the classes of `where` that the table lacks (up to 5)."""
        missing = [label for label in dict.fromkeys(labels) if label not in self.taxa]
        if missing:
            shown = ", ".join(repr(label) for label in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(
                f"{self.path}: no row for class {shown}{more} of {where} (expected one row per class)"
            )


def named_ranks(taxa: Iterable[Taxon]) -> list[str]:
    """The ranks (of `RANKS`, coarse to fine) at which at least one of `taxa` has a name."""
    taxa = list(taxa)
    return [rank for rank in RANKS if any(taxon.name(rank) for taxon in taxa)]


def read_taxonomy(path: str | os.PathLike) -> Taxonomy:
    """The checked table at `path` (module docstring); FileNotFoundError / ValueError naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"taxonomy file not found: {path}")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{path}: the taxonomy file is not a regular file (expected a CSV table)")
    if os.path.getsize(path) > MAX_TAXONOMY_BYTES:
        raise ValueError(f"{path}: the taxonomy file is larger than {MAX_TAXONOMY_BYTES:,} bytes")
    rows = read_table(path, [LABEL], what="taxonomy file", hint=f"expected columns {', '.join(COLUMNS)}")
    header = list(rows[0]) if rows else []
    unknown = [column for column in header if column is not None and column not in COLUMNS]
    if unknown:
        raise ValueError(f"{path}: unknown column {unknown[0]!r} (expected {', '.join(COLUMNS)})")
    if not rows:
        raise ValueError(f"{path}: no rows (expected a header line and one row per class)")
    return Taxonomy(_taxa(rows, path), path)


def _taxa(rows: Sequence[dict[str, str | None]], path: str) -> dict[str, Taxon]:
    taxa: dict[str, Taxon] = {}
    first_row: dict[str, int] = {}
    parents: dict[tuple[str, str], tuple[tuple[str, ...], int]] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        if None in row:
            raise ValueError(f"{path}: row {number} has more cells than the header has columns")
        cells = {column: (row.get(column) or "").strip() for column in COLUMNS}
        label = cells[LABEL]
        where = f"{path}: row {number}"
        if not label:
            raise ValueError(f"{where}, column {LABEL}: empty (expected the class folder name or label)")
        if label in first_row:
            raise ValueError(f"{where}, column {LABEL}: {label!r} is also in row {first_row[label]}")
        if cells["species"] and not cells["genus"]:
            raise ValueError(f"{where}, column genus: empty, but the species epithet needs its genus")
        if not any(cells[column] for column in (*RANKS, COMMON)):
            raise ValueError(f"{where}: no rank and no common name for {label!r}")
        ranks = tuple(cells[rank] for rank in RANKS)
        _check_parents(ranks, number, where, parents)
        first_row[label] = number
        taxa[label] = Taxon(label, ranks, cells[COMMON])
    return taxa


def _check_parents(
    ranks: tuple[str, ...],
    number: int,
    where: str,
    parents: dict[tuple[str, str], tuple[tuple[str, ...], int]],
) -> None:
    """Each taxon above species sits under one lineage in every row that names it."""
    for depth, rank in enumerate(RANKS[:-1]):
        if not ranks[depth]:
            continue
        above = ranks[:depth]
        seen = parents.setdefault((rank, ranks[depth]), (above, number))
        if seen[0] != above:
            differing = next(i for i in range(depth) if above[i] != seen[0][i])
            raise ValueError(
                f"{where}, column {RANKS[differing]}: {rank} {ranks[depth]} is under "
                f"{seen[0][differing] or '(blank)'} in row {seen[1]} and under "
                f"{above[differing] or '(blank)'} here"
            )


def write_taxonomy(path: str | os.PathLike, taxa: Iterable[Taxon]) -> None:
    """Write `taxa` as a taxonomy table (atomically)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for taxon in taxa:
        writer.writerow([taxon.label, *taxon.ranks, taxon.common])
    write_text(os.fspath(path), buffer.getvalue())


class TaxonTexts:
    """The training captions a class's taxonomy makes: {text type: [each template around the
    type's text]} for the types of `text_types` (weights) the class can make; used by the
    folder, CSV and webdataset sources, whose `caption_weights` become the types' weights."""

    def __init__(self, taxonomy: Taxonomy, text_types: Mapping[str, float], templates: Sequence[str]) -> None:
        self.taxonomy = taxonomy
        self.types = [kind for kind in text_types if kind != OWN_CAPTION]
        self.templates = [check_template(t) for t in templates] if templates else list(DEFAULT_TEMPLATES)
        self._made: dict[str, dict[str, list[str]]] = {}

    def __call__(self, label: str) -> dict[str, list[str]]:
        made = self._made.get(label)
        if made is None:
            taxon = self.taxonomy.taxon(label)
            texts = {kind: taxon.text(kind) for kind in self.types}
            made = {
                kind: [fill_template(t, text) for t in self.templates] for kind, text in texts.items() if text
            }
            self._made[label] = made
        return made


def check_text_types(text_types: Mapping[str, float] | None, field: str) -> None:
    """ValueError naming `field` unless `text_types` maps known types (`TEXT_TYPES` and
    "caption") to non-negative weights, not all zero."""
    if text_types is None:
        return
    known = (*TEXT_TYPES, OWN_CAPTION)
    unknown = [kind for kind in text_types if kind not in known]
    if unknown:
        raise ValueError(f"{field}: unknown text type {unknown[0]!r} (expected some of {', '.join(known)})")
    weights = [float(w) for w in text_types.values()]
    if not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"{field}: expected non-negative weights, not all zero, got {dict(text_types)}")


def source_taxonomy(path: str | None, kind: str, source_path: str) -> Taxonomy:
    """The taxonomy of a source: `path` when given, else `taxonomy.csv` in an image-folder
    source's root, next to a CSV source's table, or beside a webdataset's shards or one
    folder up (the embedded data's layout: SPLIT/shards/*.tar, SPLIT/taxonomy.csv)."""
    if path is None:
        folder = source_path if kind == "folder" else os.path.dirname(source_path)
        path = os.path.join(folder, TAXONOMY_FILE)
        above = os.path.join(os.path.dirname(folder), TAXONOMY_FILE)
        if kind == "webdataset" and not os.path.exists(path) and os.path.exists(above):
            path = above
        if not os.path.exists(path):
            raise ValueError(
                f"source {source_path}: text_types need a taxonomy: set the source's taxonomy: FILE "
                f"or put {TAXONOMY_FILE} in {folder or '.'}"
            )
    return read_taxonomy(path)


def shard_class_folders(pattern: str) -> list[str] | None:
    """The class folder names of `classes.txt` beside the shards or one folder up, or None."""
    folder = os.path.dirname(pattern)
    for candidate in (folder, os.path.dirname(folder)):
        listing = os.path.join(candidate, CLASSES_FILE)
        if os.path.exists(listing):
            return [name for name, _ in read_classes_file(listing)]
    return None

"""Synthetic plant species: traits, Latin-like names and web-like captions.

Species come in genera of up to four. A genus has a base trait set; its first species
has exactly those traits and each other species changes one trait (a different one
each), so every species has a sibling that differs in one visual trait and any two
species of a genus differ in one or two. Colours repeat across genera, so no species
can be told apart by colour alone. The epithet of a changed species names its
distinctive trait, as real epithets often do ("serrata", "purpurea"). Genera go two to a
family and families three to an order, each named after its first genus ("Pelmaceae",
"Pelmales"), under Plantae, Tracheophyta, Magnoliopsida: the dataset's taxonomy.csv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dalip.data.synthetic.leaves import MARGINS, SHAPES, VENATIONS
from dalip.data.synthetic.render import COLOURS, SPOTS
from dalip.data.taxonomy import Taxon

TRAITS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "margin": MARGINS,
    "venation": VENATIONS,
    "colour": tuple(COLOURS),
    "spots": SPOTS,
}
SPECIES_PER_GENUS = 4
GENERA_PER_FAMILY = 2  # a family is named after its first (type) genus, as Rosaceae after Rosa
FAMILIES_PER_ORDER = 3
HIGHER_RANKS = ("Plantae", "Tracheophyta", "Magnoliopsida")  # kingdom, phylum, class
TRAIT_COMBINATIONS = len(SHAPES) * len(MARGINS) * len(VENATIONS) * len(COLOURS) * len(SPOTS)
# A third of the distinct trait sets: a genus then finds free ones in a few draws.
MAX_SPECIES = TRAIT_COMBINATIONS // 3
_GENUS_DRAWS = 10_000  # the bound on the search for one genus (a few suffice below MAX_SPECIES)

_SYLLABLES = (
    "ca",
    "lo",
    "mi",
    "ra",
    "te",
    "phy",
    "lla",
    "the",
    "ri",
    "so",
    "na",
    "ve",
    "ul",
    "mar",
    "bo",
    "cri",
    "den",
    "for",
    "gal",
    "hel",
    "lin",
    "mor",
    "pel",
    "sil",
    "tor",
    "var",
    "zan",
    "qui",
    "dro",
    "sty",
    "ne",
    "pha",
)
_GENUS_ENDINGS = ("ia", "us", "um", "a", "is", "ella", "ops", "anthus")
_EPITHET_ENDINGS = ("ensis", "ii", "ana", "iana", "ina", "ica")
_COMMON_NOUNS = (
    "wort",
    "bane",
    "weed",
    "bell",
    "creeper",
    "sage",
    "mallow",
    "thorn",
    "balm",
    "vine",
    "clover",
    "sorrel",
    "laurel",
    "myrtle",
    "rue",
    "tansy",
)
_NOUN_PREFIXES = ("marsh", "mountain", "wood", "sea", "desert", "river", "meadow", "cliff")
_TRAIT_EPITHETS = {
    "ovate": "ovata",
    "lanceolate": "lanceolata",
    "cordate": "cordifolia",
    "lobed": "lobata",
    "palmate": "palmata",
    "entire": "integra",
    "serrate": "serrata",
    "dentate": "dentata",
    "pinnate": "pinnatinervis",
    "parallel": "parallelinervis",
    "dark green": "atrovirens",
    "light green": "pallida",
    "yellow-green": "flavescens",
    "blue-green": "glauca",
    "purple": "purpurea",
    "red": "rubra",
    "none": "immaculata",
    "brown lesions": "maculata",
    "pale spots": "punctata",
    "rust pustules": "ferruginea",
}
_TRAIT_WORDS = {  # (common-name qualifier, description phrase)
    "ovate": ("egg-leaved", "egg-shaped (ovate) leaves"),
    "lanceolate": ("narrow-leaved", "narrow, lance-shaped leaves"),
    "cordate": ("heart-leaved", "heart-shaped (cordate) leaves"),
    "lobed": ("oak-leaved", "deeply lobed leaves"),
    "palmate": ("maple-leaved", "palmate leaves with five pointed lobes"),
    "entire": ("smooth-edged", "smooth (entire) margins"),
    "serrate": ("saw-toothed", "finely saw-toothed (serrate) margins"),
    "dentate": ("coarse-toothed", "coarsely toothed (dentate) margins"),
    "pinnate": ("feather-veined", "pinnate veins"),
    "palmate_vein": ("fan-veined", "veins fanning out from the base"),
    "parallel": ("parallel-veined", "parallel veins"),
    "none": ("clean", "no spots"),
    "brown lesions": ("blotched", "brown lesions with yellow halos"),
    "pale spots": ("speckled", "small pale spots"),
    "rust pustules": ("rusty", "orange rust pustules"),
}


@dataclass(frozen=True)
class Species:
    """One synthetic species."""

    folder: str  # class folder name, e.g. "03_calomia_serrata"
    genus: str
    epithet: str
    family: str
    common: str
    traits: dict[str, str]
    changed: str | None  # the trait that sets it apart from its genus base (None: the base)
    order: str = ""

    @property
    def scientific(self) -> str:
        return f"{self.genus} {self.epithet}"

    def taxon(self) -> Taxon:
        """The species' row of the dataset's taxonomy.csv."""
        ranks = (*HIGHER_RANKS, self.order, self.family, self.genus, self.epithet)
        return Taxon(self.folder, ranks, self.common)


def _stem(genus: str) -> str:
    """Genus without its Latin ending ("Pelmium" -> "Pelmi"), for the family name."""
    for ending in sorted(_GENUS_ENDINGS, key=len, reverse=True):
        if genus.endswith(ending) and len(genus) > len(ending) + 2:
            return genus[: -len(ending)]
    return genus


def _unique(stem: str, endings: tuple[str, ...], taken: set[str]) -> str:
    """The first of stem + ending not in `taken` (then numbered), added to it."""
    names = [stem + ending for ending in endings]
    name = next((n for n in names if n not in taken), None) or f"{names[0]}{len(taken)}"
    taken.add(name)
    return name


def _word(rng: np.random.Generator, parts: int, endings: tuple[str, ...]) -> str:
    stem, ending = "".join(rng.choice(_SYLLABLES, size=parts)), str(rng.choice(endings))
    if stem[-1] in "aeiouy" and ending[0] in "aeiou":
        stem = stem[:-1]  # "cripha" + "a" -> "Cripha", not "Criphaa"
    return stem + ending


def _trait_word(trait: str, value: str) -> tuple[str, str]:
    return _TRAIT_WORDS["palmate_vein" if trait == "venation" and value == "palmate" else value]


def _epithet(trait: str, value: str) -> str:
    return "palminervis" if trait == "venation" and value == "palmate" else _TRAIT_EPITHETS[value]


def _common_noun(nouns: list[str], index: int) -> str:
    """A distinct common-name noun per genus ("wort", then "marsh wort", ...)."""
    rounds, noun = divmod(index, len(nouns))
    if rounds == 0:
        return nouns[noun]
    prefix = _NOUN_PREFIXES[(rounds - 1) % len(_NOUN_PREFIXES)]
    suffix = "" if rounds <= len(_NOUN_PREFIXES) else f" {rounds}"
    return f"{prefix} {nouns[noun]}{suffix}"


def _genus_traits(
    rng: np.random.Generator, size: int, taken: set[tuple[str, ...]]
) -> list[tuple[dict[str, str], str | None]]:
    """Traits of one genus: the base, then one changed trait per further species (at most
    `_GENUS_DRAWS` draws; RuntimeError past them, which `MAX_SPECIES` keeps out of reach)."""
    for _ in range(_GENUS_DRAWS):
        base = {trait: str(rng.choice(values)) for trait, values in TRAITS.items()}
        if rng.random() < 0.5:
            base["spots"] = "none"  # healthy leaves are the commonest look
        changed = list(rng.choice(list(TRAITS), size=size - 1, replace=False))
        members = [(base, None)]
        for trait in changed:
            other = [v for v in TRAITS[trait] if v != base[trait]]
            members.append(({**base, trait: str(rng.choice(other))}, trait))
        keys = [tuple(m.values()) for m, _ in members]
        if not taken.intersection(keys):
            taken.update(keys)
            return members
    raise RuntimeError(f"no free trait sets for a genus of {size} after {_GENUS_DRAWS} draws")


def make_species(count: int, seed: int) -> list[Species]:
    """`count` species (>= 2) with unique names and trait sets, deterministic in `seed`."""
    if not 2 <= count <= MAX_SPECIES:
        raise ValueError(
            f"species: expected 2 to {MAX_SPECIES} (a third of the {TRAIT_COMBINATIONS} distinct trait "
            f"sets), got {count}"
        )
    rng = np.random.default_rng([seed, 7])
    species: list[Species] = []
    taken: set[tuple[str, ...]] = set()
    genera: set[str] = set()
    higher: set[str] = set()  # family and order names given so far
    nouns = [str(noun) for noun in rng.permutation(_COMMON_NOUNS)]
    for genus_index in range(-(-count // SPECIES_PER_GENUS)):
        size = min(SPECIES_PER_GENUS, count - len(species))
        genus = _word(rng, 2, _GENUS_ENDINGS).capitalize()
        while genus in genera:
            genus = _word(rng, 2, _GENUS_ENDINGS).capitalize()
        genera.add(genus)
        noun = _common_noun(nouns, genus_index)
        if genus_index % GENERA_PER_FAMILY == 0:
            family = _unique(_stem(genus), ("aceae", "inaceae", "idaceae", "ellaceae"), higher)
            if genus_index % (GENERA_PER_FAMILY * FAMILIES_PER_ORDER) == 0:
                order = _unique(_stem(genus), ("ales", "inales", "idales", "ellales"), higher)
        for traits, changed in _genus_traits(rng, size, taken):
            if changed is None:
                epithet, common = _word(rng, 1, _EPITHET_ENDINGS), f"common {noun}"
            else:
                epithet = _epithet(changed, traits[changed])
                qualifier = (
                    traits[changed] if changed == "colour" else _trait_word(changed, traits[changed])[0]
                )
                common = f"{qualifier} {noun}"
            folder = f"{len(species):02d}_{genus.lower()}_{epithet}"
            species.append(Species(folder, genus, epithet, family, common, traits, changed, order))
    return species


def describe(species: Species) -> str:
    """A one-sentence description of the species' traits."""
    t = species.traits
    shape, margin, venation, spots = (
        _trait_word(k, t[k])[1] for k in ("shape", "margin", "venation", "spots")
    )
    marks = "" if t["spots"] == "none" else f", marked with {spots}"
    return f"A plant with {t['colour']} {shape}, {margin} and {venation}{marks}."


def multi_captions(species: Species) -> dict[str, str]:
    """The named captions stored as a shard's `.json` (scientific/common/taxonomic/description)."""
    return {
        "scientific": species.scientific,
        "common": species.common,
        "taxonomic": species.taxon().text("taxonomic"),
        "description": describe(species),
    }


def alt_text(species: Species, rng: np.random.Generator) -> str:
    """A web-alt-text-like caption: name only, traits only, both, templates, or noise."""
    t, name, common = species.traits, species.scientific, species.common
    shape_word = _trait_word("shape", t["shape"])[0]
    margin_word = _trait_word("margin", t["margin"])[0]
    styles = (
        name,
        f"{name} ({common})",
        common,
        f"a photo of {name}, a type of plant.",
        f"close-up of a {common} leaf",
        f"{t['colour']} {shape_word} leaf, {margin_word}",
        f"{name}: {describe(species)}",
        f"IMG_{int(rng.integers(1000, 9999))} {common} in the garden",
        f"leaf of {species.genus} sp.",
        f"{common} leaf with {_trait_word('spots', t['spots'])[1]}",
    )
    return styles[int(rng.integers(len(styles)))]

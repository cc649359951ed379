"""Taxonomy files: the exact texts of each type, the checks on a bad table (one line naming
row and column), the embedded data's table, and text types drawn in training sources."""

from __future__ import annotations

import collections
import csv
import itertools
import shutil

import numpy as np
import pytest
from cli_helpers import user_error
from train_fixtures import write_config

from dalip.config import SourceConfig
from dalip.data.make import make_source
from dalip.data.synthetic.plants import make_species
from dalip.data.taxonomy import COLUMNS, TEXT_TYPES, Taxon, read_taxonomy

OAK = Taxon(
    "q_rubra",
    ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus", "rubra"),
    "red oak",
)


def test_each_text_type_is_the_string_bioclip_trains_on():
    lineage = "Plantae Tracheophyta Magnoliopsida Fagales Fagaceae Quercus rubra"
    assert {kind: OAK.text(kind) for kind in TEXT_TYPES} == {
        "scientific": "Quercus rubra",
        "common": "red oak",
        "taxonomic": lineage,
        "scientific_common": "Quercus rubra with common name red oak",
        "taxonomic_common": f"{lineage} with common name red oak",
    }
    genus_only = Taxon("q", ("Plantae", "", "", "", "Fagaceae", "Quercus", ""))
    assert (
        genus_only.text("scientific") == "Quercus"
        and genus_only.text("taxonomic") == "Plantae Fagaceae Quercus"
    )
    assert (
        genus_only.text("common") == "" and genus_only.text("taxonomic_common") == ""
    )  # absent, not "with ..."
    assert OAK.name("species") == "Quercus rubra" and OAK.name("family") == "Fagaceae"
    assert OAK.lineage("order") == ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales")
    with pytest.raises(ValueError, match="text type: expected one of"):
        OAK.text("vernacular")


def _table(path, rows, header=COLUMNS):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


GOOD = [
    ["a", "Plantae", "", "", "Fagales", "Fagaceae", "Quercus", "rubra", "red oak"],
    ["b", "Plantae", "", "", "Fagales", "Fagaceae", "Quercus", "alba", ""],
    ["c", "Plantae", "", "", "Rosales", "Rosaceae", "Rosa", "", "rose"],
]


def test_a_good_table_reads_with_its_blanks(tmp_path):
    taxonomy = read_taxonomy(_table(tmp_path / "t.csv", GOOD))
    assert len(taxonomy) == 3 and taxonomy.taxon("c").finest == "genus"
    assert taxonomy.taxon("b").text("scientific_common") == ""
    with pytest.raises(ValueError, match=r"t.csv: no row for class 'z', 'y' of FOLDER"):
        taxonomy.check_labels(["a", "z", "y"], "FOLDER")


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (GOOD, [*COLUMNS[:-1], "vernacular"], r"unknown column 'vernacular' \(expected label, kingdom"),
        (GOOD, COLUMNS[1:], r"missing column 'label'"),
        ([*GOOD, GOOD[0]], COLUMNS, r"row 5, column label: 'a' is also in row 2"),
        (
            [["d", "Plantae", "", "", "", "", "", "alba", ""]],
            COLUMNS,
            r"row 2, column genus: empty, but the species",
        ),
        ([["d", "", "", "", "", "", "", "", ""]], COLUMNS, r"row 2: no rank and no common name for 'd'"),
        ([["", "Plantae", "", "", "", "", "", "", ""]], COLUMNS, r"row 2, column label: empty"),
        (
            [*GOOD, ["d", "Plantae", "", "", "Rosales", "Rosaceae", "Quercus", "ilex", ""]],
            COLUMNS,
            r"row 5, column order: genus Quercus is under Fagales in row 2 and under Rosales here",
        ),
        ([[*GOOD[0], "extra"]], COLUMNS, r"row 2 has more cells than the header has columns"),
        ([], COLUMNS, r"no rows"),
    ],
)
def test_a_bad_table_is_one_line_naming_row_and_column(tmp_path, rows, header, expected):
    with pytest.raises(ValueError, match=expected) as caught:
        read_taxonomy(_table(tmp_path / "t.csv", rows, header))
    assert "\n" not in str(caught.value) and "t.csv" in str(caught.value)


def test_the_embedded_plants_have_families_of_two_genera_and_one_order(train_data):
    for split in ("train", "val", "test"):
        taxonomy = read_taxonomy(train_data / "plant" / split / "taxonomy.csv")
        folders = [
            line.split("\t")[0]
            for line in (train_data / "plant" / split / "classes.txt").read_text().splitlines()
        ]
        assert sorted(taxonomy.taxa) == sorted(folders)
    species = make_species(48, seed=0)
    genera_of = collections.defaultdict(set)
    for plant in species:
        genera_of[plant.family].add(plant.genus)
        assert plant.taxon().lineage()[:3] == ("Plantae", "Tracheophyta", "Magnoliopsida")
    assert sorted(len(genera) for genera in genera_of.values()) == [2] * 6  # 12 genera, 6 families
    assert len({plant.order for plant in species}) == 2  # three families to an order


def _draws(config: SourceConfig, count: int = 200) -> collections.Counter:
    source = make_source(config, seed=0)
    rng = np.random.default_rng(0)
    captions = collections.Counter()
    for _ in range(count):
        index = int(rng.integers(len(source)))
        captions[source.builder.caption(source.captions(index), rng, "test")] += 1
    return captions


def test_folder_and_csv_sources_draw_the_text_types_by_weight(train_data, tmp_path):
    folder = train_data / "plant" / "train"
    taxa = read_taxonomy(folder / "taxonomy.csv").taxa
    types = {"scientific": 1.0, "taxonomic_common": 1.0, "caption": 0.0}
    config = SourceConfig(kind="folder", path=str(folder), text_types=types, templates=["a photo of {}."])
    drawn = _draws(config)
    expected = {
        f"a photo of {t.text(kind)}." for t in taxa.values() for kind in ("scientific", "taxonomic_common")
    }
    assert set(drawn) == expected  # weight 0: the folder's own template never drawn
    # the embedded table's numeric labels reach the taxonomy through classes.txt
    config = SourceConfig(
        kind="csv",
        path=str(folder / "captions.csv"),
        label_key="label",
        text_types={"common": 1, "caption": 1},
    )
    drawn = _draws(config, 400)
    commons = {
        f"{template.replace('{}', t.common)}" for t in taxa.values() for template in _default_templates()
    }
    assert set(drawn) & commons and set(drawn) - commons  # both the common names and the CSV's captions
    assert abs(sum(drawn[c] for c in commons) / 400 - 0.5) < 0.1


def _default_templates():
    from dalip.data.captions import DEFAULT_TEMPLATES

    return DEFAULT_TEMPLATES


def test_text_type_mistakes_are_one_line(train_data, tmp_path, capsys):
    folder = tmp_path / "plants"
    shutil.copytree(train_data / "plant" / "train", folder)
    (folder / "taxonomy.csv").unlink()
    cases = [
        (dict(kind="folder", path=str(folder), text_types={"scientific": 1}), "text_types need a taxonomy"),
        (dict(kind="folder", path=str(folder), text_types={"latin": 1}), "unknown text type 'latin'"),
        (
            dict(kind="folder", path=str(folder), text_types={"common": 1}, caption_weights={"caption": 1}),
            "set text_types or caption_weights, not both",
        ),
        (
            dict(kind="webdataset", path=str(folder / "shards/00000.tar"), text_types={"common": 1}),
            "text_types need a taxonomy",
        ),
    ]
    for source, expected in cases:
        config = write_config(train_data, tmp_path / "run", data={"sources": [source]})
        assert expected in user_error(capsys, "train", "--config", config)
    _table(folder / "taxonomy.csv", GOOD)  # a table without these classes
    config = write_config(
        train_data,
        tmp_path / "run",
        data={"sources": [dict(kind="folder", path=str(folder), text_types={"common": 1})]},
    )
    assert "no row for class '00_" in user_error(capsys, "train", "--config", config)


def test_a_webdataset_source_draws_text_types_by_its_cls_member(train_data, tmp_path):
    split = train_data / "plant" / "train"
    taxa = read_taxonomy(split / "taxonomy.csv").taxa  # one folder above the shards
    config = SourceConfig(
        kind="webdataset",
        path=str(split / "shards" / "{00000..00003}.tar"),
        text_types={"scientific": 1, "caption": 1},
        templates=["{}"],
    )
    texts = [text for _, text in itertools.islice(iter(make_source(config, seed=0)), 32)]
    scientific = {t.text("scientific") for t in taxa.values()}
    assert set(texts) & scientific and set(texts) - scientific  # both kinds drawn
    shutil.copytree(split, tmp_path / "split")
    (tmp_path / "split" / "classes.txt").write_text("someone_else\n")  # no class is in the table
    config.path = str(tmp_path / "split" / "shards" / "{00000..00003}.tar")
    source = make_source(config, seed=0)
    assert list(iter(source)) == [] and source.skipped()["no_taxon"] == 32

"""Answers as taxa, worked out by hand (rank sums, back-off to species, genus and "no
answer", checklists, one plant from several photos) and `dalip predict --taxonomy` end to end."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from cli_helpers import saved_checkpoint, user_error

from dalip.cli import main
from dalip.data.taxonomy import Taxon, Taxonomy
from dalip.inference.taxon_predict import answer, by_rank, checklist

# only family, genus and species known: so that even the coarsest rank can fall short
TAXA = [
    Taxon("a1", ("", "", "", "", "F", "A", "one"), "first plant"),
    Taxon("a2", ("", "", "", "", "F", "A", "two"), ""),
    Taxon("b1", ("", "", "", "", "G", "B", "one"), ""),
    Taxon("c1", ("", "", "", "", "G", "C", "one"), ""),
]
TAXONOMY = Taxonomy({t.label: t for t in TAXA}, "taxonomy.csv")


def test_probabilities_sum_over_the_species_below_each_taxon():
    names, summed = by_rank(torch.tensor([[0.40, 0.35, 0.15, 0.10]]), TAXA, "genus")
    assert names == ["A", "B", "C"] and torch.allclose(summed, torch.tensor([[0.75, 0.15, 0.10]]))
    names, summed = by_rank(torch.tensor([[0.40, 0.35, 0.15, 0.10]]), TAXA, "family")
    assert names == ["F", "G"] and torch.allclose(summed, torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([0.90, 0.04, 0.03, 0.03], ("species", "A one", 0.90)),  # sure of the species
        ([0.40, 0.35, 0.15, 0.10], ("genus", "A", 0.75)),  # of the genus only
        ([0.35, 0.30, 0.20, 0.15], None),  # family F 0.65 < 0.7: no answer
    ],
)
def test_back_off_to_the_finest_rank_that_reaches_the_probability(row, expected):
    result = answer(torch.tensor(row), TAXA, "species", 3, 0.7)
    chosen = result["answer"]
    if expected is None:
        assert chosen is None
    else:
        assert (chosen["rank"], chosen["taxon"]) == expected[:2]
        assert chosen["probability"] == pytest.approx(expected[2])
    assert [p["taxon"] for p in result["predictions"]][:1] == ["A one"]  # the species top-k stays
    first = answer(torch.tensor(row), TAXA, "species", 1, None)["predictions"][0]
    assert first["lineage"] == {"family": "F", "genus": "A", "species": "A one"}
    assert first["common_name"] == "first plant"


def test_checklists_restrict_the_species(tmp_path):
    assert [t.label for t in checklist(TAXONOMY, "family=G")] == ["b1", "c1"]
    listed = tmp_path / "checklist.txt"
    listed.write_text("# region X\nA\nc1\n")
    assert [t.label for t in checklist(TAXONOMY, listed)] == ["a1", "a2", "c1"]
    with pytest.raises(ValueError, match="no class of taxonomy.csv has family 'Z'"):
        checklist(TAXONOMY, "family=Z")
    listed.write_text("A\nQuercus\n")
    with pytest.raises(ValueError, match="'Quercus' names no taxon"):
        checklist(TAXONOMY, listed)


def test_predict_taxonomy_end_to_end(train_data, tmp_path, capsys):
    model, _, _ = saved_checkpoint(tmp_path)
    images = [str(p) for p in sorted((train_data / "plant/test").rglob("*.jpg"))[:3]]
    taxonomy = str(train_data / "plant/test/taxonomy.csv")
    base = ["predict", *images, "-m", str(model), "--taxonomy", taxonomy, "-q"]
    capsys.readouterr()
    assert main([*base, "--format", "csv", "--rank", "genus", "--k", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and {r["rank"] for r in rows} == {"genus"}  # one genus in the tiny data
    assert all(float(r["probability"]) == pytest.approx(1.0) and r["kingdom"] == "Plantae" for r in rows)
    assert main([*base, "--format", "json", "--same-plant", "--min-probability", "0.99"]) == 0
    (plant,) = json.loads(capsys.readouterr().out)["results"]
    assert plant["images"] == images and sum(p["probability"] for p in plant["predictions"]) <= 1 + 1e-6
    assert plant["answer"]["rank"] in ("species", "genus")  # the genus holds all the probability
    assert main(base) == 0 and "answer: " in capsys.readouterr().out
    plain = ["predict", images[0], "-m", str(model), "--labels", "a,b"]
    assert "--rank: needs --taxonomy" in user_error(capsys, *plain, "--rank", "genus")
    assert "--format csv: the answers with their taxonomy need --taxonomy" in user_error(
        capsys, *plain, "--format", "csv"
    )
    assert "--subset family=Nope: no class" in user_error(capsys, *base, "--subset", "family=Nope")

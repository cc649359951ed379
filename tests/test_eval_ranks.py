"""Zero-shot by taxonomic rank, worked out by hand on a stub model (flat and top-down top-1,
the ranks a wrong species answer shares), and `dalip eval --taxonomy` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import saved_checkpoint
from data_fixtures import jpeg_bytes
from torch import nn

import dalip.evaluation.ranks as ranks
from dalip.cli import main
from dalip.inference.runtime import EncodedImages
from dalip.model.features import Features

# two families of one genus each, two species per genus; phylum and class unknown
ROWS = {
    "a1": ("F", "A", "a1"),
    "a2": ("F", "A", "a2"),
    "b1": ("G", "B", "b1"),
    "b2": ("G", "B", "b2"),
}
E = torch.eye(4)
TEXTS = {  # taxonomic text down to each rank -> its embedding
    "P O F": E[0],
    "P O G": E[1],
    "P O F A": E[0],
    "P O G B": E[1],
    "P O F A a1": E[0],
    "P O F A a2": E[2],
    "P O G B b1": E[1],
    "P O G B b2": E[3],
}
IMAGES = torch.stack(  # one image per class, in label order a1, a2, b1, b2
    [E[0], 0.6 * E[1] + 0.8 * E[2], 0.8 * E[1] + 0.6 * E[3], 0.8 * E[0] + 0.6 * E[3]]
)


class Stub(nn.Module):
    has_second_order = False

    def encode_text(self, tokens, second_order=False):
        return Features(torch.stack([list(TEXTS.values())[i] for i in tokens[:, 0].tolist()]), None)

    def similarity(self, image, text, mode):
        return image.first @ text.first.T


def tokenizer(texts):
    return torch.tensor([[list(TEXTS).index(text)] for text in texts])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "plants"
    lines = ["label,kingdom,phylum,class,order,family,genus,species,common_name"]
    for label, (family, genus, species) in ROWS.items():
        (root / label).mkdir(parents=True)
        (root / label / "x.jpg").write_bytes(jpeg_bytes(1))
        lines.append(f"{label},P,,,O,{family},{genus},{species},")
    (root / "taxonomy.csv").write_text("\n".join(lines) + "\n")
    return root


def test_flat_top_down_and_shared_ranks_by_hand(folder, monkeypatch):
    encoded = EncodedImages(Features(IMAGES, None), torch.arange(4), torch.arange(4), 1.0)
    monkeypatch.setattr(ranks, "encode_dataset", lambda *args, **kwargs: encoded)
    result = ranks.zero_shot_ranks(
        Stub(), folder, tokenizer, lambda image: torch.zeros(1), templates="none", modes=["first"]
    )
    assert list(result["ranks"]) == ["family", "genus", "species"]  # one kingdom, one order: left out
    scores = {rank: entry["modes"]["first"] for rank, entry in result["ranks"].items()}
    # family: a1 F ok, a2 -> G wrong, b1 G ok, b2 -> F wrong; genus follows the family
    assert scores["family"]["top1"] == scores["family"]["top_down_top1"] == 0.5
    assert scores["genus"]["top1"] == scores["genus"]["top_down_top1"] == 0.5
    # species flat: a2 (0.8 against b1's 0.6) is right, b2 -> a1 wrong; top-down a2 is sent
    # to genus B and answers b1
    assert scores["species"]["top1"] == 0.75 and scores["species"]["top_down_top1"] == 0.5
    # the one wrong species (b2 answered a1) shares kingdom P and order O, then differs
    assert result["wrong_species"]["first"] == {"count": 1, "mean_depth": 2.0, "agree_down_to": {"order": 1}}
    assert result["ranks"]["species"]["num_taxa"] == 4 and result["ranks"]["family"]["num_images"] == 4


def test_a_class_the_taxonomy_lacks_is_named(folder):
    (folder / "c9").mkdir()
    (folder / "c9" / "x.jpg").write_bytes(jpeg_bytes(2))
    with pytest.raises(ValueError, match=r"taxonomy.csv: no row for class 'c9'"):
        ranks.zero_shot_ranks(
            Stub(), folder, tokenizer, lambda image: torch.zeros(1), templates="none", modes=["first"]
        )


def test_eval_taxonomy_writes_a_row_per_rank(train_data, tmp_path, capsys):
    model, _, _ = saved_checkpoint(tmp_path)
    out = tmp_path / "eval"
    argv = ["eval", "-m", str(model), "--zeroshot", str(train_data / "plant/test"), "--taxonomy", "auto"]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    result = json.loads((out / "results.json").read_text())["models"]["model"]["datasets"]["test"]
    assert list(result["ranks"]) == ["species"]  # the tiny data: 4 species of one genus
    assert result["ranks"]["species"]["num_images"] == result["num_images"] == 8
    assert set(result["wrong_species"]) == {"fused", "first", "second"}  # by default every mode
    table = (out / "results.md").read_text()
    assert (
        "**test by rank**" in table and "| species | 4 |" in table and "wrong species: ranks shared" in table
    )
    assert (
        main(
            [
                "eval",
                "-m",
                str(model),
                "--suite",
                "x.yaml",
                "--taxonomy",
                "auto",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )

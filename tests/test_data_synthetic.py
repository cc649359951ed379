"""The embedded generator: layout, determinism, fine-grained traits, and the CLI (which refuses
more species than the generator can make)."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import user_error
from data_fixtures import TINY_DATASET, TINY_OPTIONS, generate_tiny

from dalip.cli import main
from dalip.data.synthetic.plants import TRAITS, make_species
from dalip.data.synthetic.render import render_leaf, sample_pose


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_layout_and_manifest(tiny_dataset):
    root, manifest = tiny_dataset
    for domain, split in itertools.product(("plant", "general"), ("train", "val", "test")):
        folder = root / domain / split
        for name in ("classes.txt", "captions.csv", "shards/sizes.json", "shards/00000.tar"):
            assert (folder / name).is_file(), folder / name
        sizes = json.loads((folder / "shards/sizes.json").read_text())
        assert sum(sizes.values()) == manifest["counts"][f"{domain}/{split}"]
        images = list(folder.rglob("*.jpg"))
        assert len(images) == manifest["counts"][f"{domain}/{split}"]
    assert len(manifest["splits"]["plant/train"]["shard_sizes"]) == 3  # 12 samples, 4 per shard
    assert manifest["seed"] == 0 and manifest["image_size"] == 32
    assert set(manifest["species"][0]["traits"]) == set(TRAITS)
    assert json.loads((root / "manifest.json").read_text()) == manifest


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_tiny(tmp_path / "a", seed=3)
    generate_tiny(tmp_path / "b", seed=3)
    generate_tiny(tmp_path / "c", seed=4)
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")


def test_species_are_fine_grained_and_uniquely_named():
    species = make_species(24, seed=0)
    assert len({s.scientific for s in species}) == 24
    assert len({tuple(s.traits.values()) for s in species}) == 24
    for genus in {s.genus for s in species}:
        members = [s for s in species if s.genus == genus]
        for a, b in itertools.combinations(members, 2):
            differing = sum(a.traits[t] != b.traits[t] for t in TRAITS)
            assert differing in (1, 2), (a.scientific, b.scientific)
    colours = [s.traits["colour"] for s in species]
    genera_per_colour = {c: {s.genus for s in species if s.traits["colour"] == c} for c in colours}
    assert max(len(g) for g in genera_per_colour.values()) >= 2  # colour alone does not name a genus


BASE = {"shape": "ovate", "margin": "entire", "venation": "pinnate", "colour": "light green", "spots": "none"}
ONE_CHANGE = [
    ("shape", "lobed"),
    ("shape", "cordate"),
    ("margin", "serrate"),
    ("margin", "dentate"),
    ("venation", "parallel"),
    ("venation", "palmate"),
    ("colour", "dark green"),
    ("spots", "brown lesions"),
    ("spots", "pale spots"),
]


@pytest.mark.parametrize("trait, value", ONE_CHANGE)
def test_one_trait_changes_the_image_visibly(trait, value):
    for seed in range(3):
        pose = replace(sample_pose(np.random.default_rng(seed)), occluder="none", blur=0.0)
        base = np.asarray(render_leaf(BASE, pose, 64), dtype=np.int16)
        assert np.array_equal(base, np.asarray(render_leaf(BASE, pose, 64), dtype=np.int16))
        changed = np.asarray(render_leaf({**BASE, trait: value}, pose, 64), dtype=np.int16)
        strongly_different = (np.abs(base - changed).max(axis=2) > 24).mean()
        assert strongly_different > 0.01, (trait, value, seed, strongly_different)


def test_cli_writes_and_refuses_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "data"
    args = ["make-dataset", "--out", str(out), *TINY_DATASET]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["plant/train"] == 4 and manifest["image_size"] == 24
    capsys.readouterr()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not empty" in error and str(out) in error
    (out / "keep.txt").write_text("user file")
    assert main(args + ["--force", "--seed", "1"]) == 0
    assert (out / "keep.txt").exists()  # --force only replaces what the generator wrote
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1


def test_bad_option_is_a_clear_error(tmp_path):
    from dalip.data.synthetic import make_dataset

    with pytest.raises(ValueError, match="general_classes"):
        make_dataset(str(tmp_path / "x"), **{**TINY_OPTIONS, "general_classes": 99})


def test_make_dataset_refuses_more_species_than_it_can_make(tmp_path, capsys):
    line = user_error(capsys, "make-dataset", "--species", "1100", "--out", tmp_path / "data")
    assert "species: expected an integer >= 2 and <= 360" in line
    assert not (tmp_path / "data").exists()
    from dalip.data.synthetic.plants import MAX_SPECIES, make_species

    assert len(make_species(MAX_SPECIES, seed=3)) == MAX_SPECIES  # the bound itself is reachable

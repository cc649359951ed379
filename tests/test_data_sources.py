"""Each source reads what the generator writes; captions, labels, tokenisation. What a source
declares is checked: a malformed or lying sizes.json, a column named twice, a brace pattern of
shard names bounded before it expands."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import jpeg_bytes, to_tensor, write_csv
from train_fixtures import write_config

from dalip.cli import main
from dalip.config import SourceConfig
from dalip.data import CsvSource, ImageFolderSource, WebDatasetSource, make_source
from dalip.data.captions import choose_caption, parse_caption_field
from dalip.data.files import read_table
from dalip.data.sources import StreamSplit
from dalip.evaluation.datasets import load_classification_dataset


def test_csv_source_reads_generated_split(tiny_dataset):
    root, manifest = tiny_dataset
    source = make_source(
        SourceConfig("csv", str(root / "plant/train/captions.csv"), label_key="label"), to_tensor
    )
    assert isinstance(source, CsvSource)
    assert len(source) == manifest["counts"]["plant/train"] == 12
    image, caption = source[0]
    assert image.shape == (3, 8, 8) and isinstance(caption, str) and caption
    assert source.classes == [s["scientific"] for s in manifest["species"]]  # from classes.txt
    assert sorted(Counter(label for _, label in source.samples).values()) == [3, 3, 3, 3]
    assert source.skipped() == {}


def test_folder_source_classes_labels_and_templates(tiny_dataset):
    root, manifest = tiny_dataset
    config = SourceConfig("folder", str(root / "plant/val"), templates=["a photo of {}."])
    source = make_source(config, None)
    assert isinstance(source, ImageFolderSource)
    assert source.classes == [s["scientific"] for s in manifest["species"]]
    assert len(source.samples) == 4 * 2  # shards/ is not a class: it is not in classes.txt
    path, label = source.samples[0]
    assert Path(path).parent.name == manifest["species"][label]["folder"]
    image, caption = source[0]
    assert image.mode == "RGB" and image.size == (32, 32)
    assert caption == f"a photo of {source.classes[label]}."
    # evaluation reads the same folder as (image, label) with the same classes
    dataset, names, _ = load_classification_dataset(str(root / "plant/val"), lambda image: image)
    assert names == source.classes and dataset[3][1] == source.samples[3][1]


def test_folder_without_classes_file_uses_sorted_folders(tmp_path):
    for name in ("b_leaf", "a_leaf"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_bytes(jpeg_bytes(0))
    (tmp_path / "notes").mkdir()  # no images: not a class
    source = make_source(SourceConfig("folder", str(tmp_path)))
    assert source.classes == ["a leaf", "b leaf"]
    assert [label for _, label in source.samples] == [0, 1]


def test_every_reader_lists_an_image_folder_the_same_way(tmp_path):
    """Training, evaluation and serve all list a folder with `list_image_folder`: classes.txt
    order, extensions in any case, a FIFO with an image name (for the reader to skip and
    count), no folder with an image name, no non-image file."""
    import os

    from dalip.data.files import list_image_folder
    from dalip.serve.gallery import Gallery

    for folder, names in {"rosa": ["b.JPG", "a.png", "notes.txt"], "acer": ["c.webp", "d.JpEg"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(jpeg_bytes(len(name)))
    os.mkfifo(tmp_path / "acer" / "pipe.jpg")  # listed; its reader refuses it unopened
    (tmp_path / "acer" / "e.jpg").mkdir()
    (tmp_path / "classes.txt").write_text("rosa\tRosa canina\nacer\n")
    listing = list_image_folder(tmp_path)
    expected = [
        ("rosa", "a.png"),
        ("rosa", "b.JPG"),
        ("acer", "c.webp"),
        ("acer", "d.JpEg"),
        ("acer", "pipe.jpg"),
    ]
    assert [(Path(p).parent.name, Path(p).name) for p, _ in listing.samples] == expected
    assert [label for _, label in listing.samples] == [0, 0, 1, 1, 1]
    assert listing.classes == ["Rosa canina", "acer"]
    source = make_source(SourceConfig("folder", str(tmp_path)))
    assert (source.samples, source.classes) == (listing.samples, listing.classes)
    dataset, names, _ = load_classification_dataset(str(tmp_path), lambda image: image)
    assert (dataset.paths, dataset.labels, names) == (
        [p for p, _ in listing.samples],
        [0, 0, 1, 1, 1],
        listing.classes,
    )
    gallery = Gallery.scan(tmp_path)
    assert [str(tmp_path.resolve() / p) for p in gallery.paths] == [
        str(Path(p).resolve()) for p, _ in listing.samples
    ]
    assert (gallery.labels, gallery.classes) == ([0, 0, 1, 1, 1], listing.classes)


def test_webdataset_source_reads_generated_shards(tiny_dataset):
    root, manifest = tiny_dataset
    split = manifest["splits"]["plant/train"]
    pattern = str(root / "plant/train" / split["shards"])
    assert "{00000..00002}" in pattern
    source = make_source(SourceConfig("webdataset", pattern), to_tensor)
    assert isinstance(source, WebDatasetSource)
    assert source.num_samples == 12  # from shards/sizes.json
    samples = list(source)
    assert len(samples) == 12
    assert all(image.shape == (3, 8, 8) for image, _ in samples)
    names = {s["scientific"] for s in manifest["species"]}
    # json captions (scientific/common/taxonomic/description) and the txt alt-text are mixed
    assert any(text in names for _, text in samples)


def test_caption_weights_pick_named_captions_in_proportion(tiny_dataset):
    root, _ = tiny_dataset
    pattern = str(root / "plant/train/shards/{00000..00002}.tar")
    config = SourceConfig(
        "webdataset", pattern, caption_weights={"scientific": 3.0, "common": 1.0, "absent": 5.0}
    )
    source = make_source(config, None)
    kinds = Counter()
    species = {s["scientific"] for s in json.loads((root / "manifest.json").read_text())["species"]}
    for epoch in range(25):  # captions are drawn per sample per step
        kinds.update(
            "scientific" if text in species else "common" for _, text in source.stream(StreamSplit(epoch))
        )
    share = kinds["scientific"] / sum(kinds.values())
    assert abs(share - 0.75) < 0.05  # "absent" is skipped, 3:1 renormalised


def test_choose_caption_rules():
    rng = np.random.default_rng(0)
    captions = parse_caption_field(
        '{"scientific": "Aa bb", "common": ["x", "y"], "description": " "}', "caption"
    )
    seen = Counter(choose_caption(captions, None, rng) for _ in range(3000))
    assert set(seen) == {"Aa bb", "x", "y"}  # blank description skipped
    assert abs(seen["Aa bb"] / 3000 - 0.5) < 0.04  # uniform over present keys
    assert parse_caption_field("plain text", "caption") == {"caption": "plain text"}


def test_csv_json_caption_cell_tsv_and_named_labels(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(4):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
        cell = json.dumps({"scientific": f"Genus sp{i}", "common": f"plant {i}"})
        rows.append({"path": f"img/{i}.jpg", "text": cell, "species": "beta" if i % 2 else "alpha"})
    write_csv(tmp_path / "data.tsv", rows, delimiter="\t")
    config = SourceConfig(
        "csv",
        str(tmp_path / "data.tsv"),
        image_key="path",
        caption_key="text",
        label_key="species",
        caption_weights={"common": 1.0},
    )
    source = make_source(config, None)
    assert [source[i][1] for i in range(4)] == [f"plant {i}" for i in range(4)]
    assert source.classes == ["alpha", "beta"]
    assert [label for _, label in source.samples] == [0, 1, 0, 1]


def test_csv_missing_column_names_file_and_columns(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", [{"image": "a.jpg", "caption": "x"}])
    with pytest.raises(ValueError) as error:
        make_source(SourceConfig("csv", str(path)))
    message = str(error.value)
    assert "pairs.csv" in message and "'filepath'" in message and "['image', 'caption']" in message


def test_open_clip_transform_and_tokenizer_give_clip_batches(tiny_dataset):
    import open_clip

    from dalip.data import build_loader, build_train_dataset

    root, _ = tiny_dataset
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # ships its vocabulary: offline
    transform = open_clip.image_transform(48, is_train=True)  # what create_model_and_transforms returns
    source = make_source(SourceConfig("csv", str(root / "general/val/captions.csv")), transform, tokenizer)
    image, tokens = source[0]
    assert tokens.shape == (77,) and tokens.dtype == torch.long and tokens[0] == 49406  # start token
    configs = [SourceConfig("webdataset", str(root / "plant/train/shards/{00000..00002}.tar"))]
    dataset = build_train_dataset(configs, transform, tokenizer, seed=0)
    images, texts = next(iter(build_loader(dataset, batch_size=5, workers=0)))
    assert images.shape == (5, 3, 48, 48) and images.dtype == torch.float32
    assert texts.shape == (5, 77) and texts.dtype == torch.long


def test_augmentation_is_seeded_per_sample_without_touching_other_generators(tiny_dataset, monkeypatch):
    """A sample's random crop depends on (seed, sample) only, and drawing it leaves the
    process's CPU generator where it was and never seeds a CUDA generator (on a GPU,
    that would reset the dropout masks' generator at every sample; on a CPU-only machine,
    torch.manual_seed queues a CUDA seeding with a stack trace per call)."""
    import open_clip

    from dalip.data import build_train_dataset

    def refuse(*args, **kwargs):
        raise AssertionError("the data pipeline seeded a CUDA generator")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed", refuse)
    root, _ = tiny_dataset
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    transform = open_clip.image_transform(48, is_train=True)
    configs = [SourceConfig("csv", str(root / "general/val/captions.csv"))]

    def first_images(seed: int) -> torch.Tensor:
        stream = iter(build_train_dataset(configs, transform, tokenizer, seed=seed))
        return torch.stack([next(stream)[0] for _ in range(4)])

    torch.default_generator.manual_seed(123)
    before = torch.get_rng_state()
    images = first_images(0)
    assert torch.equal(torch.get_rng_state(), before)
    torch.default_generator.manual_seed(456)  # another process state: the same samples
    assert torch.equal(first_images(0), images)
    assert not torch.equal(first_images(1), images)


@pytest.mark.parametrize("sizes", ["{not json", "[1, 2]", '{"00000.tar": "many"}'])
def test_a_malformed_sizes_json_names_the_file(tmp_path, sizes):
    (tmp_path / "00000.tar").write_bytes(b"")
    (tmp_path / "sizes.json").write_text(sizes)
    with pytest.raises(ValueError, match="sizes.json"):
        make_source(SourceConfig("webdataset", str(tmp_path / "00000.tar")))


def test_a_source_smaller_than_its_declared_size_warns_once_with_the_numbers(train_data, tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    shutil.copy(train_data / "plant/train/shards/00000.tar", shards)  # 8 samples
    (shards / "sizes.json").write_text(json.dumps({"00000.tar": 40}))  # claims 40
    source = {"kind": "webdataset", "path": str(shards / "00000.tar")}
    out = tmp_path / "run"
    config = write_config(train_data, out, data={"sources": [source]}, steps=None, epochs=1)
    assert main(["train", "--config", str(config)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "ran out" in line]
    assert len(warnings) == 1, warnings  # once, though every epoch of this run runs out
    assert "epoch 0 ran out after 1 of its 5 steps (8 of 40 samples per rank)" in warnings[0]
    assert str(shards / "00000.tar") in warnings[0]


def test_a_column_named_twice_in_a_header_is_refused(tmp_path):
    table = tmp_path / "pairs.csv"
    table.write_text("filepath,caption,caption\na.jpg,one,two\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['caption'\] appear twice"):
        read_table(table, ["filepath", "caption"])


def test_a_brace_pattern_is_bounded_before_it_expands(tmp_path):
    """`{0000000000..9999999999}.tar` is 10^10 names: refused from the pattern, not expanded."""
    from dalip.data.shards import MAX_SHARDS, _expansion_bound, expand_shards

    for pattern in ("{0000000000..9999999999}.tar", "{a,b}" * 30, "{{0..999}{0..9999},x}.tar"):
        with pytest.raises(ValueError, match="expands to more than 1,000,000 shard names"):
            expand_shards(str(tmp_path / pattern))
    assert _expansion_bound("shards/{00000..41455}.tar") == 41456 <= MAX_SHARDS
    (tmp_path / "a1.tar").write_bytes(b"")
    assert expand_shards(str(tmp_path / "a{1..3}.tar")) == [
        str(tmp_path / "a1.tar")
    ]  # the others are missing

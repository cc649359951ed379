"""Unreadable samples are skipped and counted by reason, in the main process and in
DataLoader workers; sources that yield nothing are clear errors. Files other tools write
(rows lacking cells, a byte-order mark, 16-bit grayscale, huge images, a FIFO named like an
image, a tar member named twice) are read correctly or skipped and counted, never waited on."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import file_size_limit, saved_checkpoint
from data_fixtures import (
    insert_lying_member,
    jpeg_bytes,
    to_tensor,
    truncate_inside_member,
    write_csv,
    write_shard,
)
from eval_fixtures import (
    EYE,
    IMAGE_FIRST,
    IMAGE_SECOND,
    StubModel,
    StubTokenizer,
    stub_preprocess,
    write_folder,
)
from PIL import Image
from train_fixtures import write_config

from dalip.cli import main
from dalip.config import SourceConfig
from dalip.data import build_loader, build_train_dataset, make_source
from dalip.data.files import read_table
from dalip.data.skips import SkipCounter
from dalip.data.sources import DEFAULT_MAX_IMAGE_PIXELS, decode_image, read_file
from dalip.evaluation.datasets import read_caption_csv
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.images import list_image_files
from dalip.inference.labels import check_labels
from dalip.inference.runtime import Runtime


def _faulty_csv(folder: Path) -> tuple[Path, set[str]]:
    """6 good rows plus one of each fault; returns (csv path, good captions)."""
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(6):
        (folder / "img" / f"good{i}.jpg").write_bytes(jpeg_bytes(i))
        rows.append({"filepath": f"img/good{i}.jpg", "caption": f"good {i}"})
    truncated = jpeg_bytes(99)
    (folder / "img" / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (folder / "img" / "notes.jpg").write_text("this is not an image")
    rows += [
        {"filepath": "img/missing.jpg", "caption": "missing"},
        {"filepath": "img/truncated.jpg", "caption": "truncated"},
        {"filepath": "img/notes.jpg", "caption": "not an image"},
        {"filepath": "img/good0.jpg", "caption": "   "},
        {"filepath": "img/good1.jpg", "caption": '{"scientific": "Aa'},  # broken JSON
    ]
    return write_csv(folder / "pairs.csv", rows), {f"good {i}" for i in range(6)}


CSV_FAULTS = {
    "missing_file": 1,
    "truncated_image": 1,
    "not_an_image": 1,
    "empty_caption": 1,
    "bad_caption": 1,
}


@pytest.mark.parametrize("workers", [0, 2])
def test_csv_faults_are_skipped_and_counted(tmp_path, workers, caplog):
    path, good = _faulty_csv(tmp_path)
    dataset = build_train_dataset([SourceConfig("csv", str(path))], to_tensor, None, seed=0)
    loader = build_loader(dataset, batch_size=2, workers=workers, drop_last=False)
    with caplog.at_level(logging.WARNING, logger="dalip.data.skips"):
        seen = [text for _, texts in loader for text in texts]
    assert sorted(seen) == sorted(good)
    assert dataset.skipped() == CSV_FAULTS
    assert loader.last_epoch_skips == CSV_FAULTS
    assert "skipped 5 samples" in caplog.text and "truncated_image=1" in caplog.text


def _faulty_shards(folder: Path) -> tuple[str, set[str]]:
    """Shard 0: 4 good samples. Shard 1: truncated inside its 3rd image. Shard 2: an empty
    caption, a sample without image, a non-image and 2 good samples."""
    folder.mkdir()
    good = [(f"a{i}", {"jpg": jpeg_bytes(i), "txt": f"good a{i}".encode()}) for i in range(4)]
    write_shard(folder / "00000.tar", good)
    cut = [(f"b{i}", {"jpg": jpeg_bytes(10 + i), "txt": f"good b{i}".encode()}) for i in range(4)]
    write_shard(folder / "00001.tar", cut)
    truncate_inside_member(folder / "00001.tar", "b2.jpg")
    mixed = [
        ("c0", {"jpg": jpeg_bytes(20), "txt": b" "}),
        ("c1", {"txt": b"no image"}),
        ("c2", {"jpg": b"GIF? no", "txt": b"broken image"}),
        ("c3", {"png": jpeg_bytes(23), "json": b'{"scientific": "good c3"}'}),
        ("c4", {"webp": jpeg_bytes(24), "txt": b"good c4"}),
    ]
    write_shard(folder / "00002.tar", mixed)
    expected = {f"good a{i}" for i in range(4)} | {"good b0", "good b1", "good c3", "good c4"}
    return str(folder / "{00000..00002}.tar"), expected


SHARD_FAULTS = {"truncated_shard": 1, "empty_caption": 1, "incomplete_sample": 1, "not_an_image": 1}


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_faults_are_skipped_and_counted(tmp_path, workers):
    pattern, good = _faulty_shards(tmp_path / "shards")
    dataset = build_train_dataset([SourceConfig("webdataset", pattern)], to_tensor, None, seed=3)
    loader = build_loader(dataset, batch_size=3, workers=workers, drop_last=False)
    seen = [text for _, texts in loader for text in texts]
    assert sorted(seen) == sorted(good)
    assert dataset.skipped() == SHARD_FAULTS
    dataset.set_epoch(1)  # a second epoch counts again; last_epoch_skips is per epoch
    assert sorted(text for _, texts in loader for text in texts) == sorted(good)
    assert loader.last_epoch_skips == SHARD_FAULTS
    assert dataset.skipped() == {reason: 2 * n for reason, n in SHARD_FAULTS.items()}


@pytest.mark.timeout(60)  # today's tarfile reads toward the claimed size for days
@pytest.mark.parametrize("workers", [0, 1])
def test_a_member_claiming_more_bytes_than_its_shard_holds_is_skipped(tmp_path, workers):
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in range(2):
        samples = [
            (f"s{shard}{i}", {"jpg": jpeg_bytes(i), "txt": f"good {shard}{i}".encode()}) for i in range(3)
        ]
        write_shard(folder / f"0000{shard}.tar", samples)
    insert_lying_member(folder / "00000.tar", before="s01.jpg")  # a pax header claiming 10^15 bytes
    dataset = build_train_dataset(
        [SourceConfig("webdataset", str(folder / "{00000..00001}.tar"))], to_tensor, None, seed=0
    )
    loader = build_loader(dataset, batch_size=2, workers=workers, drop_last=False)
    seen = sorted(text for _, texts in loader for text in texts)
    assert seen == ["good 00", "good 10", "good 11", "good 12"]  # the rest of shard 0 is lost
    assert dataset.skipped() == {"truncated_shard": 1}


def test_map_style_loader_drops_skipped_items(tmp_path):
    path, good = _faulty_csv(tmp_path)
    source = make_source(SourceConfig("csv", str(path)), to_tensor)
    assert source[6] is None  # the missing file
    batches = list(build_loader(source, batch_size=4, workers=0))
    assert sum(len(texts) for _, texts in batches) == len(good)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("folder", lambda p: p.mkdir() or p),
        ("folder", lambda p: (p / "class_a").mkdir(parents=True) or p),
        ("csv", lambda p: write_csv(p.with_suffix(".csv"), [])),
        ("webdataset", lambda p: Path(str(p) + "/{00000..00003}.tar")),
    ],
    ids=["empty-folder", "empty-class-folder", "empty-csv", "no-shards"],
)
def test_source_that_yields_nothing_is_an_error(tmp_path, kind, make):
    path = make(tmp_path / "data")
    with pytest.raises(ValueError) as error:
        make_source(SourceConfig(kind, str(path)))
    assert str(path) in str(error.value)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        make_source(SourceConfig("csv", str(tmp_path / "nowhere.csv")))
    with pytest.raises(ValueError, match="kind must be"):
        make_source(SourceConfig("parquet", str(tmp_path)))


@pytest.mark.timeout(60)  # the duplicate check used to be quadratic: hours for this header
def test_a_header_of_a_million_columns_is_refused_with_its_bound(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "x," * 999_999 + "x\n")
    with pytest.raises(ValueError) as error:
        read_table(wide, ["filepath", "title"])
    message = str(error.value)
    assert message.startswith(str(wide)) and "1,000,000 columns" in message and "at most 10,000" in message
    assert len(message) < 300


@pytest.mark.timeout(60)
def test_header_checks_are_linear_and_their_messages_short(tmp_path):
    table = tmp_path / "repeated.csv"
    names = [f"c{i}" for i in range(5_000)]
    table.write_text(",".join(names + names) + "\n")  # 10,000 columns: at the bound, each named twice
    with pytest.raises(
        ValueError, match=r"column\(s\) \['c0', 'c1', .* and 4,990 more\] appear twice"
    ) as error:
        read_table(table, ["filepath"])
    assert len(str(error.value)) < 400
    table.write_text(",".join(names) + "\n")
    with pytest.raises(
        ValueError, match=r"missing column 'filepath' \(columns present: \['c0', .* 4,990 more\]\)"
    ):
        read_table(table, ["filepath"])
    with pytest.raises(ValueError, match=r"duplicate label\(s\) \['b'\]"):
        check_labels(["a", "b", "b"] + [f"x{i}" for i in range(200_000)])


@pytest.mark.parametrize("command", ["predict", "train"])
def test_no_room_for_the_shared_skip_counts_is_one_line_and_exit_1(train_data, tmp_path, capsys, command):
    model, _, _ = saved_checkpoint(tmp_path)
    image = next((train_data / "plant/test").rglob("*.jpg"))
    argv = {
        "predict": ["predict", "--model", str(model), "--labels", "a,b", str(image)],
        "train": ["train", "--config", str(write_config(train_data, tmp_path / "run", steps=2))],
    }[command]
    capsys.readouterr()
    with file_size_limit(4096):  # the config and log fit; the 5 kB table of skip counts does not
        status = main(argv)
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (
        f"dalip {command}: error: /dev/shm: file too large (shared memory for the skip counts)"
    ), err


@pytest.mark.timeout(60)  # a CSV reader on /dev/zero reads one endless line
def test_a_table_that_is_a_device_is_named_not_read(tmp_path):
    with pytest.raises(ValueError, match="/dev/zero: the caption CSV/TSV file is not a regular file"):
        read_caption_csv("/dev/zero")
    with pytest.raises(ValueError, match="/dev/zero: the CSV/TSV file is not a regular file"):
        read_table("/dev/zero", ["filepath"])
    with pytest.raises(FileNotFoundError, match="caption CSV/TSV file not found: "):
        read_caption_csv(tmp_path / "missing.csv")


def _images(folder, count=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(i))


def test_csv_rows_lacking_cells_are_skipped_and_counted(tmp_path):
    _images(tmp_path / "img")
    # a short row leaves its last cells None (the filepath here); an empty cell is ""
    (tmp_path / "pairs.csv").write_text(
        "caption,filepath\na leaf,img/0.jpg\nshort row\nno image,\n,img/1.jpg\nok,img/2.jpg\n"
    )
    dataset = build_train_dataset([SourceConfig("csv", str(tmp_path / "pairs.csv"))], to_tensor, None, seed=0)
    seen = sorted(text for _, texts in build_loader(dataset, 2, 0, drop_last=False) for text in texts)
    assert seen == ["a leaf", "ok"]
    assert dataset.skipped() == {"incomplete_sample": 2, "empty_caption": 1}


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    _images(tmp_path / "img", 2)
    (tmp_path / "bom.csv").write_bytes(
        "filepath,caption,label\nimg/0.jpg,a leaf,oak\nimg/1.jpg,a fern,fern\n".encode("utf-8-sig")
    )
    source = make_source(SourceConfig("csv", str(tmp_path / "bom.csv"), label_key="label"))
    assert [label for _, label in source.samples] == [1, 0] and source.classes == ["fern", "oak"]
    paths, captions, _ = read_caption_csv(tmp_path / "bom.csv")
    assert captions == ["a leaf", "a fern"] and len(paths) == 2


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    image = decode_image(read_file(str(tmp_path / "gray16.png")), SkipCounter(), "gray16.png")
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (64, 64, 3)
    assert abs(pixels.mean() - ramp.mean() / 257) < 1.0  # about mid-gray; clipped it was ~254
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255


def test_images_above_the_pixel_limit_are_skipped_as_too_large(tmp_path, monkeypatch):
    assert DEFAULT_MAX_IMAGE_PIXELS < 12000 * 12000
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    counter = SkipCounter()
    monkeypatch.setenv("DALIP_MAX_IMAGE_PIXELS", "1199")
    assert decode_image(read_file(str(tmp_path / "big.png")), counter, "big.png") is None
    assert counter.counts() == {"too_large": 1}
    monkeypatch.setenv("DALIP_MAX_IMAGE_PIXELS", "1200")
    assert decode_image(read_file(str(tmp_path / "big.png")), counter, "big.png") is not None
    monkeypatch.setenv("DALIP_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="DALIP_MAX_IMAGE_PIXELS='lots'"):
        decode_image(read_file(str(tmp_path / "big.png")), counter, "big.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_never_blocks(tmp_path):
    _images(tmp_path / "root" / "oak", 2)
    os.mkfifo(tmp_path / "root" / "oak" / "pipe.jpg")
    source = make_source(SourceConfig("folder", str(tmp_path / "root")))  # listed, to be counted
    assert [os.path.basename(p) for p, _ in source.samples] == ["0.jpg", "1.jpg", "pipe.jpg"]
    assert [os.path.basename(p) for p in list_image_files([tmp_path / "root"])] == [
        "0.jpg",
        "1.jpg",
        "pipe.jpg",
    ]
    counter, outcome = SkipCounter(), []
    reader = threading.Thread(
        target=lambda: outcome.append(
            decode_image(read_file(str(tmp_path / "root" / "oak" / "pipe.jpg")), counter, "pipe")
        ),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=20)
    assert outcome == [None] and counter.counts() == {"not_an_image": 1}


def _without_blocking(work, seconds: float = 30):
    """`work()`'s value; a failure, not a hung test, when it blocks (a FIFO opened for reading)."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(work()), daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert outcome, "blocked: something opened the FIFO"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_is_counted_as_a_skip_never_waited_on(tmp_path):
    root = tmp_path / "root"
    write_folder(root, {"fern": 1, "oak": 2})
    os.mkfifo(root / "oak" / "x.jpg")
    (root / "fern" / "bad.png").write_bytes(b"not an image")  # an unreadable regular file, alike
    source = make_source(SourceConfig("folder", str(root)))
    assert [Path(p).name for p, _ in source.samples] == ["0.png", "bad.png", "0.png", "1.png", "x.jpg"]
    dataset = build_train_dataset([SourceConfig("folder", str(root))], to_tensor, None, seed=0)
    loader = build_loader(dataset, 2, 0, drop_last=False)
    batches = _without_blocking(lambda: list(loader))
    assert sum(len(texts) for _, texts in batches) == 3
    assert loader.last_epoch_skips == {"not_an_image": 2}
    model = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE[:2], EYE[:2])
    result = _without_blocking(
        lambda: zero_shot(
            model,
            root,
            StubTokenizer(["fern", "oak"]),
            stub_preprocess,
            ["{}"],
            runtime=Runtime(batch_size=2),
        )
    )
    assert result["skipped"] == 2 and result["num_images"] == 3
    listed = [Path(p).name for p in list_image_files([root])]
    assert listed == ["0.png", "bad.png", "0.png", "1.png", "x.jpg"]  # predict reports it unreadable


def test_a_member_named_twice_in_a_shard_is_counted_as_such(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as archive:
        for name, payload in [("a.jpg", jpeg_bytes(1)), ("a.txt", b"a leaf"), ("a.txt", b"again")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    dataset = build_train_dataset([SourceConfig("webdataset", str(shard))], to_tensor, None, seed=0)
    list(build_loader(dataset, batch_size=1, workers=0, drop_last=False))
    assert dataset.skipped() == {"duplicate_member": 1}

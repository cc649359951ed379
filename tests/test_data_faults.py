"""Unreadable samples are skipped and counted by reason, in the main process and in
DataLoader workers; sources that yield nothing are clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from data_fixtures import (
    insert_lying_member,
    jpeg_bytes,
    to_tensor,
    truncate_inside_member,
    write_csv,
    write_shard,
)
from guard_helpers import file_size_limit, saved_checkpoint
from train_fixtures import write_config

from dalip.cli import main
from dalip.config import SourceConfig
from dalip.data import build_loader, build_train_dataset, make_source
from dalip.data.files import read_table
from dalip.evaluation.datasets import read_caption_csv
from dalip.inference.labels import check_labels


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

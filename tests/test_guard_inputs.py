"""Inputs a new user gets wrong: data files, suites, labels and flags. Each is skipped and
counted, read correctly, or one line naming the file or field."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from data_fixtures import jpeg_bytes, to_tensor
from eval_fixtures import make_workspace
from guard_helpers import files_under, user_error
from PIL import Image

from dalip.atomic import atomic_write
from dalip.cli import main
from dalip.cli.main import one_line
from dalip.config import SourceConfig
from dalip.data import build_loader, build_train_dataset, make_source
from dalip.data.skips import SkipCounter
from dalip.data.sources import DEFAULT_MAX_IMAGE_PIXELS, decode_image, read_file
from dalip.evaluation.datasets import read_caption_csv
from dalip.inference.images import list_image_files


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("inputs"))


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


@pytest.mark.parametrize("sizes", ["{not json", "[1, 2]", '{"00000.tar": "many"}'])
def test_a_malformed_sizes_json_names_the_file(tmp_path, sizes):
    (tmp_path / "00000.tar").write_bytes(b"")
    (tmp_path / "sizes.json").write_text(sizes)
    with pytest.raises(ValueError, match="sizes.json"):
        make_source(SourceConfig("webdataset", str(tmp_path / "00000.tar")))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- just\n- a list of words\n", "datasets[0]: expected a mapping"),
        ("42\n", "expected a mapping with a 'datasets' list"),
        ("datasets: [\n", "not valid YAML"),
        ("batch_size: abc\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n", "batch_size: expected int"),
        (
            "workers: -2\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n",
            "workers: expected an integer >= 0",
        ),
        (
            "datasets:\n  - {name: a, task: fewshot, train: x, test: y, folds: 0}\n",
            "datasets[0].folds: expected an integer >= 1",
        ),
        (
            "datasets:\n  - {name: a, task: fewshot, train: x, test: y, shots: [0]}\n",
            "shots[0]: expected an integer >= 1",
        ),
        ("datasets:\n  - {name: ../../escape, task: zeroshot, path: x}\n", "plain name"),
        ("modes: [best]\ndatasets:\n  - {name: a, task: zeroshot, path: x}\n", "modes[0]: expected one of"),
    ],
)
def test_suite_mistakes_are_one_line_naming_the_file(tmp_path, capsys, text, expected):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    message = user_error(
        capsys, "eval", "-m", tmp_path / "m.safetensors", "--suite", suite, "--out", tmp_path / "o"
    )
    assert "suite.yaml" in message and expected in message
    assert not (tmp_path / "o").exists()


def test_latin1_label_and_text_files_name_the_file(workspace, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_bytes("ch\xeane\n\xe9rable\n".encode("latin-1"))
    message = user_error(
        capsys, "predict", workspace["test"], "-m", workspace["start"], "--labels-file", labels
    )
    assert "labels.txt" in message and "UTF-8" in message
    message = user_error(
        capsys, "embed", "-m", workspace["start"], "--texts-file", labels, "--out", tmp_path / "e.npz"
    )
    assert "labels.txt" in message and "UTF-8" in message


def test_predict_reports_unreadable_images_and_rejects_batch_size_0(workspace, tmp_path, capsys):
    (tmp_path / "broken.png").write_text("not an image")
    good = workspace["test"] / "oak" / "0.png"
    assert "--batch-size: expected an integer >= 1, got 0" in user_error(
        capsys, "predict", good, "-m", workspace["start"], "--labels", "a,b", "--batch-size", "0"
    )
    assert (
        main(
            [
                "predict",
                str(good),
                str(tmp_path / "broken.png"),
                "-m",
                str(workspace["start"]),
                "--labels",
                "oak,fern",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    output = json.loads(captured.out)
    assert [r["image"] for r in output["results"]] == [str(good)]
    assert output["unreadable"] == [str(tmp_path / "broken.png")]
    assert "1 of 2 images could not be read" in captured.err and "broken.png" in captured.err


def test_embed_and_eval_outputs_follow_the_force_rule(workspace, tmp_path, capsys):
    out = tmp_path / "features.npz"
    out.write_bytes(b"earlier")
    argv = ["embed", "-m", str(workspace["start"]), "--texts", "a leaf", "--out", str(out), "-q"]
    assert "--force" in user_error(capsys, *argv)
    assert out.read_bytes() == b"earlier"
    assert main(argv + ["--force"]) == 0 and np.load(out)["first"].shape[0] == 1
    assert "is a folder" in user_error(
        capsys, "embed", "-m", workspace["start"], "--texts", "x", "--out", tmp_path
    )
    eval_argv = [
        "eval",
        "-m",
        str(workspace["start"]),
        "--zeroshot",
        str(workspace["test"]),
        "--out",
        str(tmp_path / "eval"),
        "-q",
    ]
    assert main(eval_argv) == 0
    assert "pass --force" in user_error(capsys, *eval_argv)
    assert main(eval_argv + ["--force"]) == 0
    assert "results.json" in files_under(tmp_path / "eval")
    assert "not a folder" in user_error(capsys, *eval_argv[:-3], "--out", str(out), "-q")


def test_errors_never_show_errno_or_temporary_paths(tmp_path, capsys):
    def failing(temporary):
        raise OSError(28, "No space left on device", temporary)

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "model.safetensors", failing)
    line = one_line(caught.value)
    assert line == f"{tmp_path / 'model.safetensors'}: no space left on device"
    assert ".tmp" not in line and "Errno" not in line
    config_folder = tmp_path / "configs"
    config_folder.mkdir()
    message = user_error(capsys, "train", "--config", config_folder)
    assert "Errno" not in message and "not a file" in message

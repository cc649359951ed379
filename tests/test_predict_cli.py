"""`dalip predict`, `embed` and `export` on a tiny saved checkpoint. Their inputs: label and
text files that are not UTF-8 are named, unreadable images are reported and skipped, and a batch
size of 0 is refused."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from cli_helpers import user_error
from eval_fixtures import make_workspace

import dalip
from dalip.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("predict"))


def _last_error(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"dalip {command}: error: ")
    assert sum(": error: " in line for line in lines) == 1
    return lines[-1]


def test_predict_json_gives_top_k_probabilities(workspace, capsys):
    images = [str(workspace["test"] / "oak" / "0.png"), str(workspace["test"] / "fern")]
    argv = [
        "predict",
        *images,
        "-m",
        str(workspace["tuned"]),
        "--labels",
        "oak, maple,fern",
        "--top-k",
        "2",
        "--json",
        "--templates",
        "plant",
        "-q",
    ]
    assert main(argv) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["mode"] == "first"  # no --mode, no mode stored with the model: dalip's default
    assert [r["image"] for r in output["results"]] == [images[0]] + [
        str(workspace["test"] / "fern" / f"{n}.png") for n in range(2)
    ]
    for result in output["results"]:
        probabilities = [p["probability"] for p in result["predictions"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
        assert {p["label"] for p in result["predictions"]} <= {"oak", "maple", "fern"}
        assert 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_text_output_and_label_file(workspace, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("# species\nred oak\nsugar maple\n\nroyal fern\n")
    argv = [
        "predict",
        str(workspace["test"] / "oak"),
        "-m",
        str(workspace["start"]),
        "--labels-file",
        str(labels),
        "--mode",
        "first",
        "-q",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("0.png") and len(lines) == 2 * (1 + 3)
    assert lines[1].strip().endswith(("red oak", "sugar maple", "royal fern")) and "%" in lines[1]


def test_duplicate_labels_exit_2(workspace, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("oak\nmaple\noak\n")
    argv = ["predict", str(workspace["test"]), "-m", str(workspace["start"]), "--labels-file", str(labels)]
    assert main(argv) == 2
    assert "duplicate label(s) ['oak']" in _last_error(capsys, "predict")
    assert main(["predict", str(workspace["test"]), "-m", str(workspace["start"]), "--labels", "a,b,a"]) == 2
    assert "duplicate" in _last_error(capsys, "predict")


def test_predict_errors_for_missing_checkpoint_and_empty_folder(workspace, tmp_path, capsys):
    argv = ["predict", str(workspace["test"]), "-m", str(tmp_path / "missing.safetensors"), "--labels", "a,b"]
    assert main(argv) == 2
    assert "checkpoint not found" in _last_error(capsys, "predict")
    (tmp_path / "empty").mkdir()
    argv = ["predict", str(tmp_path / "empty"), "-m", str(workspace["start"]), "--labels", "a,b"]
    assert main(argv) == 2
    assert "no images found" in _last_error(capsys, "predict")


def test_embed_images_and_texts_write_both_feature_kinds(workspace, tmp_path):
    out = tmp_path / "images.npz"
    assert (
        main(
            [
                "embed",
                "-m",
                str(workspace["tuned"]),
                "--images",
                str(workspace["test"]),
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    with np.load(out) as saved:
        assert saved["first"].shape == (6, 32) and saved["second"].shape == (6, 32)
        assert str(saved["kind"]) == "image" and saved["items"][0].endswith("0.png")
        assert str(saved["answer_mode"]) == "first"  # stored with no mode: dalip's default
    texts = ["a red oak leaf", "a fern"]
    out = tmp_path / "texts.npz"
    assert main(["embed", "-m", str(workspace["tuned"]), "--texts", *texts, "--out", str(out), "-q"]) == 0
    model = dalip.load_checkpoint(workspace["tuned"])
    tokenizer = open_clip.get_tokenizer("test-tiny")
    with torch.no_grad():
        expected = model.encode_text(tokenizer(texts))
    with np.load(out) as saved:
        assert list(saved["items"]) == texts
        np.testing.assert_allclose(saved["first"], expected.first.numpy(), atol=1e-5)
        np.testing.assert_allclose(saved["second"], expected.second.numpy(), atol=1e-5)


def test_embed_plain_open_clip_has_first_order_only(workspace, tmp_path):
    out = tmp_path / "plain.npz"
    spec = f"openclip:test-tiny:{workspace['exported']}"
    assert main(["embed", "-m", spec, "--texts", "a fern", "--out", str(out), "-q"]) == 0
    with np.load(out) as saved:
        assert set(saved.files) == {"first", "items", "kind", "answer_mode"}
        assert str(saved["answer_mode"]) == "first"


def test_export_loads_in_open_clip_and_refuses_to_overwrite(workspace, tmp_path, capsys):
    out = tmp_path / "plain.safetensors"
    assert main(["export", str(workspace["tuned"]), str(out)]) == 0
    assert "create_model_and_transforms('test-tiny'" in capsys.readouterr().out
    clip, _, _ = open_clip.create_model_and_transforms("test-tiny", pretrained=str(out))
    model = dalip.load_checkpoint(workspace["tuned"])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(images, second_order=False).first
        assert torch.allclose(
            torch.nn.functional.normalize(clip.eval().encode_image(images), dim=-1), expected, atol=1e-6
        )
    assert main(["export", str(workspace["tuned"]), str(out)]) == 2
    assert "--force" in _last_error(capsys, "export")
    assert main(["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "x.pt")]) == 2
    assert "checkpoint not found" in _last_error(capsys, "export")


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

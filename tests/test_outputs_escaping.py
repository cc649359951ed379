"""What dalip shows of the user's data is safe to show: control characters in class names,
labels, file and folder names reach the terminal and the Markdown reports escaped (the JSON
keeps the exact text); gallery links of odd folder names are percent-encoded and served.
Error lines never show errno or temporary paths, and quote long values short."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from cli_helpers import saved_checkpoint, user_error
from eval_fixtures import write_folder, write_image

from dalip.atomic import atomic_write
from dalip.cli import main
from dalip.cli.main import one_line
from dalip.inference.specs import load_model
from dalip.readers import MAX_QUOTED, quoted
from dalip.report.text import printable

ESC, BEL, CSI = "\x1b", "\x07", "\x9b"  # CSI: the one-character (C1) form of ESC [
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # anything but the newlines of the output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path, _, _ = saved_checkpoint(tmp_path_factory.mktemp("model"))
    return path


def test_printable_escapes_control_characters_and_keeps_letters():
    assert printable(f"a{ESC}[2Jb{BEL}\x00\x7f{CSI}") == "a\\x1b[2Jb\\x07\\x00\\x7f\\x9b"
    assert printable("tab\there\nnext") == "tab\\there\\nnext"  # a name holds neither
    assert printable("Rosa canina é 花 ü \\ |") == "Rosa canina é 花 ü \\ |"
    assert quoted(f"x{ESC}[31m{BEL}é") == "'x\\x1b[31m\\x07é'"  # error messages' quotes too
    assert quoted(["a\x00", {"k": CSI}]) == "['a\\x00', {'k': '\\x9b'}]"


def test_eval_prints_and_reports_names_escaped_and_keeps_them_in_json(checkpoint, tmp_path, capsys):
    root = tmp_path / f"leaves{ESC}[2J"
    readable = {"oak": f"red{ESC}]0;owned{BEL} oak", "fern": f"royal fern é{CSI}"}
    write_folder(root, {"oak": 2, "fern": 2}, readable)
    with open(root / "classes.txt", "a") as listing:
        listing.write("ghost\n")  # listed without images: warned about, naming the folder
    model, domain, out = f"tiny{ESC}[31m", f"plant{BEL}", tmp_path / "out"
    capsys.readouterr()
    argv = ["eval", "-m", f"{model}={checkpoint}", "--zeroshot", root, "--domain", domain, "--out", out]
    assert main([str(a) for a in argv + ["-q", "--device", "cpu", "--batch-size", "4"]]) == 0
    printed = capsys.readouterr()
    report = (out / "results.md").read_text(encoding="utf-8")
    for text in (printed.out, printed.err, report):
        assert not RAW_CONTROL.search(text), text
    for text in (printed.out, report):
        assert "| tiny\\x1b[31m [fused] |" in text and "leaves\\x1b[2J (plant\\x07)" in text
    assert "leaves\\x1b[2J" in printed.err and "class folder 'ghost' has no images" in printed.err
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["models"]) == [model]
    assert [(d["name"], d["domain"]) for d in results["suite"]["datasets"]] == [(root.name, domain)]


def test_predict_prints_file_names_and_labels_escaped(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_image(folder / f"leaf{ESC}[1A.png", 10)
    write_image(folder / f"é{CSI}2J.png", 20)
    (folder / f"bad{ESC}[2K.png").write_bytes(b"not an image")  # named in the warning
    run = ["predict", str(folder), "-m", str(checkpoint), "--top-k", "3", "-q", "--device", "cpu"]
    capsys.readouterr()
    assert main(run + ["--labels", f"rose{ESC}[31m,oak{BEL},fern"]) == 0
    printed = capsys.readouterr()
    assert not RAW_CONTROL.search(printed.out + printed.err), printed
    assert "leaf\\x1b[1A.png" in printed.out and "é\\x9b2J.png" in printed.out
    assert "rose\\x1b[31m" in printed.out and "oak\\x07" in printed.out
    assert "1 of 3 images could not be read" in printed.err and "bad\\x1b[2K.png" in printed.err
    labels = tmp_path / "labels.txt"
    labels.write_text(f"ro\x00se\nmaple{ESC}c\n", encoding="utf-8")
    assert main(run + ["--labels-file", str(labels)]) == 0
    printed = capsys.readouterr().out
    assert not RAW_CONTROL.search(printed) and "ro\\x00se" in printed and "maple\\x1bc" in printed
    assert main(run + ["--labels-file", str(labels), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)  # machine-readable: the exact text
    assert {p["label"] for item in answer["results"] for p in item["predictions"]} == {
        "ro\x00se",
        f"maple{ESC}c",
    }
    assert {Path(item["image"]).name for item in answer["results"]} == {f"leaf{ESC}[1A.png", f"é{CSI}2J.png"}


def test_error_messages_escape_control_characters(tmp_path, capsys):
    missing = tmp_path / f"gone{ESC}[2J{BEL}.png"
    line = user_error(capsys, "predict", missing, "--labels", "a", "-m", tmp_path / "m.safetensors")
    assert "gone\\x1b[2J\\x07.png" in line and not RAW_CONTROL.search(line)
    line = user_error(capsys, "train", "--print-config", "--set", 'loss.kind="x\\e[2J"')  # YAML: ESC
    assert "got 'x\\x1b[2J'" in line and not RAW_CONTROL.search(line)
    assert main(["predict", "x.png", "-m", "m", "--labels", "a", f"--bogus{ESC}[2J"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus\\x1b[2J" in err and not RAW_CONTROL.search(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_gallery_links_of_odd_folder_names_are_encoded_and_served(checkpoint, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from dalip.serve import Gallery, Identifier, ServeOptions
    from dalip.serve.app import create_app

    root, names = tmp_path / "gallery", ["a#b?c%20d", "wild rose é", "花"]
    for number, name in enumerate(names):
        write_image(root / name / f"{name} {number}.png", 10 + 60 * number)
    write_image(tmp_path / "secret.png", 200)
    os.mkfifo(root / names[2] / "pipe.png")  # listed, left out of the index, never served
    identifier = Identifier(
        [load_model(str(checkpoint))], None, Gallery.scan(root), ServeOptions(neighbours=3)
    )
    identifier.prepare()
    client = TestClient(create_app(identifier))
    photo = (root / names[0] / f"{names[0]} 0.png").read_bytes()
    (found,) = client.post("/api/neighbours", files={"image": ("leaf.png", photo)}).json()["models"].values()
    assert sorted(row["path"] for row in found) == sorted(f"{n}/{n} {i}.png" for i, n in enumerate(names))
    for row in found:
        assert row["url"] == "/gallery/" + quote(row["path"]) and row["url"].isascii()
        assert not set(row["url"]) & set("#? "), row["url"]
        answer = client.get(row["url"])
        assert answer.status_code == 200 and answer.content == (root / row["path"]).read_bytes()
    for outside in (
        "/gallery/" + quote(f"{names[2]}/pipe.png"),
        "/gallery/" + quote(f"{names[0]}/../../secret.png"),
        "/gallery/%2E%2E/secret.png",
        "/gallery/" + quote(f"a#b?c d/{names[0]} 0.png"),  # the name decoded twice (%2520 -> space)
        f"/gallery/{names[0]}/{names[0]} 0.png",  # not encoded: '#' starts a fragment
    ):
        assert client.get(outside).status_code == 404, outside


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


def test_long_values_are_quoted_short_in_errors(tmp_path, capsys):
    line = user_error(capsys, "train", "--print-config", "--set", "loss.kind=" + "x" * 100_000)
    assert "loss.kind: expected one of dalip, clip" in line and len(line) < MAX_QUOTED + 200

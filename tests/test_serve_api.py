"""`dalip serve`'s JSON API through FastAPI's test client: the numbers of `dalip predict`,
neighbours by the fused vector, and every bad input answered with a 4xx and one message."""

from __future__ import annotations

import io
import json

import pytest
from eval_fixtures import make_workspace, write_image
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import dalip  # noqa: E402
from dalip.cli import main  # noqa: E402
from dalip.inference.runtime import embed  # noqa: E402
from dalip.inference.specs import load_model  # noqa: E402
from dalip.serve import Gallery, Identifier, ServeOptions  # noqa: E402
from dalip.serve.app import create_app  # noqa: E402
from dalip.serve.engine import ServedModel  # noqa: E402

LABELS = "oak\nmaple\nfern"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    workspace = make_workspace(root)
    tuned = dalip.load_checkpoint(workspace["tuned"])
    tuned.answer_mode = "fused"  # stored with the model: served first, as `dalip predict` answers
    tuned.save(root / "tuned-fused.safetensors")
    specs = {
        "tuned": str(root / "tuned-fused.safetensors"),
        "plain": f"openclip:test-tiny:{workspace['exported']}",
    }
    models = [load_model(spec, name) for name, spec in specs.items()]
    gallery = Gallery.scan(workspace["train"])
    options = ServeOptions(top_k=3, neighbours=4)
    identifier = Identifier(models, gallery.classes, gallery, options, root / "cache")
    identifier.prepare()
    return {
        "client": TestClient(create_app(identifier)),
        "identifier": identifier,
        "specs": specs,
        "models": models,
        **workspace,
    }


def _post(client, route, image_path=None, labels=None, image_bytes=None, filename="leaf.png"):
    data = image_bytes if image_bytes is not None else image_path.read_bytes()
    form = {"labels": labels} if labels is not None else {}
    return client.post(route, files={"image": (filename, data)}, data=form)


def _dalip_predict(capsys, image, spec, labels, mode=None):
    """`dalip predict`'s answer; no `mode`: the model's own (as the page's first result)."""
    modes = [] if mode is None else ["--mode", mode]
    arguments = [
        "predict",
        str(image),
        "-m",
        spec,
        "--labels",
        labels,
        *modes,
        "--top-k",
        "3",
        "--json",
        "-q",
    ]
    assert main(arguments) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["mode"] == (mode or "fused")
    return output["results"][0]["predictions"]


def test_predictions_equal_dalip_predict(served, capsys):
    image = served["test"] / "oak" / "0.png"
    answer = _post(served["client"], "/api/predict", image, LABELS)
    assert answer.status_code == 200
    body = answer.json()
    assert body["modes"] == {"tuned": "fused", "tuned/first": "first", "plain": "first"}
    assert body["labels"] == {"count": 3, "source": "request"}
    assert body["models"]["tuned"] == _dalip_predict(
        capsys, image, served["specs"]["tuned"], "oak,maple,fern"
    )
    assert body["models"]["tuned/first"] == _dalip_predict(
        capsys, image, served["specs"]["tuned"], "oak,maple,fern", "first"
    )
    assert body["models"]["plain"] == _dalip_predict(
        capsys, image, served["specs"]["plain"], "oak,maple,fern", "first"
    )
    assert set(body["seconds"]) == {"tuned", "plain"}


def test_a_model_shows_its_own_mode_first(served):
    """The fixture's model stores fused; one stored without a mode answers with dalip's default,
    first, on the page as in `dalip predict`, and finds neighbours by its first-order vector."""
    assert served["identifier"].models[0].modes == ["fused", "first"]
    unstored = ServedModel(load_model(str(served["tuned"]), "unstored"))
    assert unstored.modes == ["first", "fused"] and unstored.vector_kind == "first"
    assert unstored.describe()["results"] == {
        "unstored": "first order only (as CLIP)",
        "unstored/fused": "combined (DALIP)",
    }


def test_default_labels_are_the_gallery_classes(served, capsys):
    image = served["test"] / "fern" / "1.png"
    body = _post(served["client"], "/api/predict", image).json()
    assert body["labels"] == {"count": 3, "source": "server"}
    expected = _dalip_predict(capsys, image, served["specs"]["tuned"], "red oak,sugar maple,royal fern")
    assert body["models"]["tuned"] == expected


def test_neighbours_rank_the_gallery_by_the_fused_vector(served):
    image = served["train"] / "maple" / "1.png"
    body = _post(served["client"], "/api/neighbours", image).json()
    assert body["by"] == {"tuned": "fused", "plain": "first"}
    tuned = served["models"][0]
    upload = embed(tuned.model, preprocess=tuned.preprocess, images=[image])[0]
    for found in body["models"].values():
        assert len(found) == 4
        assert found[0]["path"] == "maple/1.png" and found[0]["label"] == "sugar maple"
        assert found[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert [n["score"] for n in found] == sorted((n["score"] for n in found), reverse=True)
    for neighbour in body["models"]["tuned"]:
        other = embed(tuned.model, preprocess=tuned.preprocess, images=[served["train"] / neighbour["path"]])[
            0
        ]
        fused = tuned.model.similarity(upload, other, "fused").item()
        assert neighbour["score"] == pytest.approx(fused, abs=1e-5)
        assert (
            neighbour["label"]
            == {"oak": "red oak", "maple": "sugar maple", "fern": "royal fern"}[
                neighbour["path"].split("/")[0]
            ]
        )


def test_gallery_images_are_served_and_nothing_else(served):
    client = served["client"]
    found = _post(client, "/api/neighbours", served["train"] / "oak" / "2.png").json()["models"]["plain"][0]
    assert client.get(found["url"]).content == (served["train"] / found["path"]).read_bytes()
    for outside in ("/gallery/../tuned.safetensors", "/gallery/oak/99.png", "/gallery/classes.txt"):
        answer = client.get(outside)
        assert answer.status_code == 404


def test_symbolic_links_out_of_the_gallery_are_neither_listed_nor_served(served, tmp_path, caplog):
    """A gallery image that is a link to a file outside the gallery (`x.jpg -> /etc/passwd`) is
    left out of the index, and one swapped in after the scan is refused: 404, nothing read."""
    gallery = tmp_path / "gallery"
    write_image(gallery / "oak" / "0.png", 10)
    (gallery / "oak" / "inside.png").symlink_to(gallery / "oak" / "0.png")  # a link within: kept
    secret = tmp_path / "secret.png"
    write_image(secret, 11)
    (gallery / "oak" / "x.png").symlink_to(secret)
    with caplog.at_level("WARNING", logger="dalip.serve.gallery"):
        scanned = Gallery.scan(gallery)
    assert scanned.paths == ["oak/0.png", "oak/inside.png"]
    assert "1 image(s) left out of the gallery" in caplog.text
    client, listed = served["client"], served["train"] / "oak" / "2.png"
    original = listed.read_bytes()
    listed.unlink()
    listed.symlink_to(served["tuned"])
    try:
        answer = client.get("/gallery/oak/2.png")
        assert answer.status_code == 404 and answer.content != served["tuned"].read_bytes()
    finally:
        listed.unlink()
        listed.write_bytes(original)
    assert client.get("/gallery/oak/2.png").content == original


def test_identify_answers_predictions_and_neighbours_together(served):
    body = _post(served["client"], "/api/identify", served["test"] / "maple" / "0.png", LABELS).json()
    assert set(body["predictions"]) == {"tuned", "tuned/first", "plain"}
    assert set(body["neighbours"]) == {"tuned", "plain"}
    assert all(len(rows) == 3 for rows in body["predictions"].values())
    assert body["labels"]["source"] == "request"


def _png(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


BAD_REQUESTS = [
    (
        "not an image",
        dict(image_bytes=b"just some notes", filename="notes.txt"),
        415,
        "notes.txt: not a JPEG, PNG or WebP image",
    ),
    ("gif", dict(image_bytes=_gif(), filename="a.gif"), 415, "not a JPEG, PNG or WebP image (it is GIF)"),
    ("truncated png", dict(image_bytes=_png()[:60]), 400, "could not be decoded"),
    ("empty file", dict(image_bytes=b""), 400, "the file is empty"),
    ("empty labels", dict(image_bytes=_png(), labels="\n   \n"), 400, "the label list is empty"),
    (
        "1001 labels",
        dict(image_bytes=_png(), labels="\n".join(f"species {i}" for i in range(1001))),
        400,
        "1001 labels given; at most 1000",
    ),
    (
        "duplicate labels",
        dict(image_bytes=_png(), labels="oak\nfern\noak"),
        400,
        "duplicate label(s) ['oak']",
    ),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_is_a_4xx_with_one_message_and_the_server_keeps_serving(served, case):
    _, request, status, message = case
    client = served["client"]
    for route in ("/api/predict", "/api/identify"):
        answer = _post(client, route, **request)
        assert answer.status_code == status
        assert message in answer.json()["error"]
    assert _post(client, "/api/predict", image_bytes=_png()).status_code == 200


def test_requests_without_a_photo_are_refused(served):
    client = served["client"]
    answer = client.post("/api/predict", data={"labels": LABELS})
    assert answer.status_code == 400 and "no photo" in answer.json()["error"]
    answer = client.post("/api/predict", json={"image": "leaf.png"})
    assert answer.status_code == 400 and "no photo" in answer.json()["error"]


def test_a_photo_over_the_size_limit_is_refused(served, monkeypatch):
    client, options = served["client"], served["identifier"].options
    monkeypatch.setattr(options, "max_upload_bytes", 100)
    photo = _png(64) + b"\0" * 200
    answer = _post(client, "/api/predict", image_bytes=photo)
    assert answer.status_code == 413
    expected = (
        f"leaf.png: the photo is {len(photo)} bytes; the limit is 100 bytes (dalip serve --max-upload-mb)"
    )
    assert answer.json()["error"] == expected
    # a body far over the limit is refused from its Content-Length, before it is parsed
    answer = _post(client, "/api/predict", image_bytes=b"\0" * (3 * 1024 * 1024))
    assert answer.status_code == 413 and answer.json()["error"].startswith("the upload is 3 MB")
    monkeypatch.undo()
    assert _post(client, "/api/predict", image_bytes=_png(64)).status_code == 200


def _chunked_upload(client, photo: bytes, chunk: int = 64 * 1024):
    """POST a multipart photo as a chunked body: no Content-Length header."""
    body = (
        b'--cut\r\nContent-Disposition: form-data; name="image"; filename="leaf.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + photo + b"\r\n--cut--\r\n"
    )
    chunks = (body[i : i + chunk] for i in range(0, len(body), chunk))
    return client.post(
        "/api/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=cut"}
    )


def test_an_upload_without_content_length_is_refused_while_it_is_read(served, monkeypatch):
    """A chunked body over the limit is cut off as it arrives, before the form is parsed
    (the form parser would spool all of it first)."""
    from starlette.requests import Request

    client, options = served["client"], served["identifier"].options
    parsed = []
    original = Request.form
    monkeypatch.setattr(Request, "form", lambda self, **kw: parsed.append(1) or original(self, **kw))
    assert _chunked_upload(client, _png(64)).status_code == 200 and parsed == [1]
    monkeypatch.setattr(options, "max_upload_bytes", 100)
    answer = _chunked_upload(client, b"\0" * (3 * 1024 * 1024))
    assert answer.status_code == 413 and parsed == [1]
    assert (
        answer.json()["error"]
        == "the upload is over 2 MB; the limit is 100 bytes (dalip serve --max-upload-mb)"
    )


def test_health_is_503_with_progress_until_prepared(served, tmp_path):
    gallery = Gallery.scan(served["train"])
    identifier = Identifier(served["models"][1:], None, gallery, ServeOptions(), tmp_path / "cache")
    client = TestClient(create_app(identifier))  # no `with`: the app's start-up does not run
    answer = client.get("/api/health")
    assert answer.status_code == 503 and answer.json() == {"status": "preparing", "progress": "starting"}
    assert _post(client, "/api/predict", image_bytes=_png(), labels=LABELS).status_code == 503
    with TestClient(create_app(identifier)) as started:  # start-up prepares in the background
        started.app.state.preparing.join(timeout=120)
        health = started.get("/api/health").json()
    assert health["status"] == "ready" and health["gallery_images"] == 12
    assert [m["name"] for m in health["models"]] == ["plain"] and health["default_labels"] == []


def test_without_gallery_or_labels_the_answer_says_what_to_give(served):
    identifier = Identifier(served["models"][1:], None, None, ServeOptions())
    identifier.prepare()
    client = TestClient(create_app(identifier))
    answer = _post(client, "/api/neighbours", image_bytes=_png())
    assert answer.status_code == 404 and "--gallery" in answer.json()["error"]
    answer = _post(client, "/api/predict", image_bytes=_png())
    assert answer.status_code == 400 and answer.json()["error"].startswith("no labels")
    body = _post(client, "/api/identify", image_bytes=_png(), labels="rose\ntulip").json()
    assert body["neighbours"] == {} and len(body["predictions"]["plain"]) == 2


def test_page_is_served(served):
    page = served["client"].get("/")
    assert page.status_code == 200 and "Identify a plant photo" in page.text and "/api/identify" in page.text


def test_gallery_file_names_with_spaces_and_hashes_are_linked_safely(served, tmp_path):
    write_image(tmp_path / "gallery" / "wild rose" / "leaf #1.png", 40)
    write_image(tmp_path / "gallery" / "wild rose" / "leaf #2.png", 41)
    gallery = Gallery.scan(tmp_path / "gallery")
    identifier = Identifier(served["models"][1:], None, gallery, ServeOptions(neighbours=1))
    identifier.prepare()
    client = TestClient(create_app(identifier))
    found = _post(client, "/api/neighbours", tmp_path / "gallery" / "wild rose" / "leaf #2.png").json()[
        "models"
    ]["plain"][0]
    assert found["path"] == "wild rose/leaf #2.png" and found["url"] == "/gallery/wild%20rose/leaf%20%232.png"
    assert client.get(found["url"]).content == (tmp_path / "gallery" / found["path"]).read_bytes()

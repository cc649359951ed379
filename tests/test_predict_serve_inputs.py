"""What a user asks `dalip predict --taxonomy` and `dalip serve`: a rank the taxonomy never
names, a `--subset RANK=NAME` with an unknown rank, hostile `/gallery/...` paths; each is
refused in one line (the CLI) or a 4xx with a JSON error (the server, which keeps serving)."""

from __future__ import annotations

import pytest
from cli_helpers import saved_checkpoint, user_error
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from dalip.data.taxonomy import read_taxonomy  # noqa: E402
from dalip.inference.specs import load_model  # noqa: E402
from dalip.serve import Gallery, Identifier, ServeOptions  # noqa: E402
from dalip.serve.app import create_app  # noqa: E402
from dalip.serve.taxa import ServedTaxonomy  # noqa: E402

NO_FAMILY = """label,genus,species,common_name
oak,Quercus,rubra,red oak
maple,Acer,saccharum,sugar maple
"""
FAMILIES_ONLY = """label,family,common_name
oak,Fagaceae,oaks
maple,Sapindaceae,maples
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny checkpoint, two taxonomies, a gallery of 2 classes and a photo."""
    root = tmp_path_factory.mktemp("inputs")
    checkpoint, _, _ = saved_checkpoint(root)
    (root / "no_family.csv").write_text(NO_FAMILY)
    (root / "families.csv").write_text(FAMILIES_ONLY)
    for number, folder in enumerate(["oak", "maple"]):
        (root / "gallery" / folder).mkdir(parents=True)
        Image.new("RGB", (32, 32), (40 * number, 120, 40)).save(root / "gallery" / folder / "0.png")
    return {"root": root, "checkpoint": checkpoint, "image": root / "gallery" / "oak" / "0.png"}


def _predict(workspace, capsys, table: str, *flags: str) -> str:
    root = workspace["root"]
    argv = ["predict", workspace["image"], "-m", workspace["checkpoint"], "--taxonomy", root / table]
    return user_error(capsys, *argv, *flags)


def test_predict_at_a_rank_no_class_names_is_refused(workspace, capsys):
    line = _predict(workspace, capsys, "families.csv", "--rank", "genus")
    assert line.startswith("dalip predict: error: --rank genus: no class of ")
    assert "families.csv names a genus" in line and "family" in line
    # the default rank, species, is one this table does not name either
    assert "--rank species: no class of" in _predict(workspace, capsys, "families.csv")
    # a table of genera and species, no family
    assert "--rank family" in _predict(workspace, capsys, "no_family.csv", "--rank", "family")


def test_a_subset_with_an_unknown_rank_names_it_and_the_ranks_there_are(workspace, capsys):
    line = _predict(workspace, capsys, "no_family.csv", "--subset", "bogusrank=X")
    assert "--subset bogusrank=X" in line and "unknown rank 'bogusrank'" in line
    assert "genus, species" in line and "not found" not in line


def test_a_subset_that_is_a_missing_file_is_still_not_found(workspace, capsys):
    missing = workspace["root"] / "list.txt"
    assert "checklist not found" in _predict(workspace, capsys, "no_family.csv", "--subset", missing)


@pytest.fixture(scope="module")
def served(workspace):
    """A taxonomy server (no family in its table) with a gallery; exceptions become 500s."""
    model = load_model(str(workspace["checkpoint"]), "tiny")
    taxonomy = ServedTaxonomy(read_taxonomy(workspace["root"] / "no_family.csv"))
    gallery = Gallery.scan(workspace["root"] / "gallery")
    identifier = Identifier([model], None, gallery, ServeOptions(top_k=2, neighbours=1), None, taxonomy)
    identifier.prepare()
    return TestClient(create_app(identifier), raise_server_exceptions=False)


def _post(client, image, **fields):
    return client.post("/api/predict", files=[("image", ("leaf.png", image.read_bytes()))], data=fields)


def test_serve_refuses_a_rank_no_class_names(workspace, served, capsys):
    answer = _post(served, workspace["image"], rank="family")
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("rank family: no class of ")
    assert _post(served, workspace["image"], rank="genus").status_code == 200
    argv = ["serve", "-m", workspace["checkpoint"], "--port", "0", "--taxonomy"]
    line = user_error(capsys, *argv, workspace["root"] / "no_family.csv", "--rank", "family")
    assert "--rank family: no class of" in line


def test_serve_names_an_unknown_rank_of_a_subset(workspace, served):
    answer = _post(served, workspace["image"], subset="bogusrank=X")
    assert answer.status_code == 400
    assert "unknown rank 'bogusrank'" in answer.json()["error"]


HOSTILE = [
    "/gallery/%00",
    "/gallery/oak/0.png%00",
    "/gallery/%2e%2e/%2e%2e/etc/passwd",
    "/gallery/%2e%2e/gallery/oak/0.png",
    "/gallery/..%2f..%2fetc%2fpasswd",
    "/gallery/%ff",
    "/gallery/oak/%ff%fe.png",
    "/gallery/" + "a" * 5000,
    "/gallery/" + "a/" * 3000,
    "/gallery/%25",
    "/gallery/",
]


@pytest.mark.parametrize("path", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_gallery_paths_are_a_4xx_with_a_json_error(workspace, served, path):
    answer = served.get(path)
    assert answer.status_code in (400, 404), answer.text[:200]
    assert isinstance(answer.json()["error"], str) and len(answer.json()["error"]) < 1000
    assert served.get("/gallery/oak/0.png").status_code == 200  # still serving


def test_gallery_paths_on_a_server_without_a_gallery_are_404(workspace):
    identifier = Identifier([load_model(str(workspace["checkpoint"]), "tiny")], ["oak", "maple"])
    client = TestClient(create_app(identifier), raise_server_exceptions=False)
    for path in ("/gallery/oak/0.png", "/gallery/%00"):
        answer = client.get(path)
        assert answer.status_code == 404 and "error" in answer.json()

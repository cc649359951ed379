"""`dalip serve --taxonomy`: answers as taxa through the JSON API equal `dalip predict
--taxonomy`'s (rank, checklist, back-off), several photos are one plant, and every bad taxon
option is a 400 naming its field."""

from __future__ import annotations

import pytest
from cli_helpers import user_error
from eval_fixtures import make_workspace

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import dalip  # noqa: E402
from dalip.data.taxonomy import read_taxonomy  # noqa: E402
from dalip.inference.runtime import embed  # noqa: E402
from dalip.inference.specs import load_model  # noqa: E402
from dalip.inference.taxon_predict import predict_taxa  # noqa: E402
from dalip.serve import Gallery, Identifier, ServeOptions  # noqa: E402
from dalip.serve.app import create_app  # noqa: E402
from dalip.serve.taxa import ServedTaxonomy  # noqa: E402

# no kingdom or phylum: so that even the coarsest rank can fall short of a probability
TABLE = """label,order,family,genus,species,common_name
oak,Fagales,Fagaceae,Quercus,rubra,red oak
white-oak,Fagales,Fagaceae,Quercus,alba,white oak
maple,Sapindales,Sapindaceae,Acer,saccharum,sugar maple
fern,Osmundales,Osmundaceae,Osmunda,regalis,royal fern
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-taxa")
    workspace = make_workspace(root)
    (workspace["train"] / "taxonomy.csv").write_text(TABLE)
    taxonomy = read_taxonomy(workspace["train"] / "taxonomy.csv")
    tuned = dalip.load_checkpoint(workspace["tuned"])
    tuned.answer_mode = "fused"  # answers fused: neighbours by the fused vector
    tuned.save(root / "tuned-fused.safetensors")
    models = [load_model(str(root / "tuned-fused.safetensors"), "tuned")]
    gallery = Gallery.scan(workspace["train"])
    options = ServeOptions(top_k=3, neighbours=4, max_photos=2)
    identifier = Identifier(models, None, gallery, options, root / "cache", ServedTaxonomy(taxonomy))
    identifier.prepare()
    return {"client": TestClient(create_app(identifier)), "taxonomy": taxonomy, "models": models, **workspace}


def _post(client, route, images, **fields):
    files = [("image", (image.name, image.read_bytes())) for image in images]
    return client.post(route, files=files, data=fields)


def _expected(served, images, **options):
    loaded = served["models"][0]
    return predict_taxa(
        loaded.model, images, served["taxonomy"], loaded.tokenizer, loaded.preprocess, top_k=3, **options
    )


def _same(served_answer, expected):
    """The served answer (a taxon or None) and top-k equal `predict_taxa`'s, probabilities to 1e-6."""
    got, want = served_answer["answer"], expected["answer"]
    assert (got is None) == (want is None)
    pairs = [(got, want)] if want is not None else []
    assert len(served_answer["predictions"]) == len(expected["predictions"])
    for got, want in [*pairs, *zip(served_answer["predictions"], expected["predictions"])]:
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
        assert {k: v for k, v in got.items() if k != "probability"} == {
            k: v for k, v in want.items() if k != "probability"
        }


@pytest.mark.parametrize(
    "options",
    [{}, {"rank": "genus"}, {"min_probability": 0.5}, {"min_probability": 1.0}, {"rank": "family"}],
    ids=["species", "genus", "back-off", "no-answer", "family"],
)
def test_taxon_answers_equal_dalip_predict(served, options):
    image = served["test"] / "oak" / "0.png"
    fields = {name: str(value) for name, value in options.items()}
    body = _post(served["client"], "/api/predict", [image], **fields).json()
    assert body["labels"] == {"count": 4, "source": "server"} and body["photos"] == 1
    (expected,) = _expected(served, [image], **options)
    _same(body["taxa"]["tuned"], expected)
    assert [p["label"] for p in body["models"]["tuned"]][0] in {
        "Quercus rubra",
        "Quercus alba",
        "Acer saccharum",
        "Osmunda regalis",
    }
    if options.get("min_probability") == 1.0:  # no rank of 4 species across 3 orders reaches 100%
        assert body["taxa"]["tuned"]["answer"] is None


def test_several_photos_are_one_plant(served):
    images = [served["test"] / "oak" / "0.png", served["test"] / "maple" / "1.png"]
    body = _post(served["client"], "/api/identify", images, rank="genus").json()
    assert body["photos"] == 2
    (expected,) = _expected(served, images, rank="genus", same_plant=True)
    _same(body["taxa"]["tuned"], expected)
    loaded = served["models"][0]

    def fused(paths):
        return loaded.model.fused_embedding(
            embed(loaded.model, preprocess=loaded.preprocess, images=paths)[0]
        )

    query = fused(images).mean(dim=0)
    query = query / query.norm()
    found = body["neighbours"]["tuned"]
    scores = (fused([served["train"] / n["path"] for n in found]) @ query).tolist()
    assert [n["score"] for n in found] == pytest.approx(scores, abs=1e-5)
    too_many = _post(served["client"], "/api/predict", [*images, images[0]])
    assert too_many.status_code == 400
    assert too_many.json()["error"] == "at most 2 photos in one request (dalip serve --max-photos)"


def test_a_checklist_restricts_the_species(served):
    image = served["test"] / "maple" / "0.png"
    for subset, species in (
        ("genus=Quercus", {"Quercus rubra", "Quercus alba"}),
        ("Acer\nfern\n", {"Acer saccharum", "Osmunda regalis"}),
    ):
        body = _post(served["client"], "/api/predict", [image], subset=subset).json()
        assert {p["taxon"] for p in body["taxa"]["tuned"]["predictions"]} == species
        assert body["labels"] == {"count": len(species), "source": "checklist"}
    body = _post(served["client"], "/api/predict", [image], subset="Acer\nfern").json()
    (expected,) = _expected(served, [image], subset=_checklist_file(served, "Acer\nfern\n"))
    _same(body["taxa"]["tuned"], expected)


def _checklist_file(served, text):
    path = served["train"].parent / "checklist.txt"
    path.write_text(text)
    return path


BAD = [
    ({"rank": "tribe"}, "rank: expected one of kingdom, phylum"),
    ({"min_probability": "most"}, "min_probability: expected a number in (0, 1], got 'most'"),
    ({"min_probability": "2"}, "min_probability: expected a number in (0, 1], got 2.0"),
    ({"subset": "family=Rosaceae"}, "subset: no class of"),
    ({"subset": "Quercus\nPinus"}, "subset: 'Pinus' names no taxon of"),
    ({"subset": "\n#x\n"}, "subset: the checklist is empty"),
    ({"subset": "Quercus", "labels": "oak\nfern"}, "send either labels or a subset"),
]


@pytest.mark.parametrize(("fields", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_taxon_options_are_a_400_naming_the_field(served, fields, message):
    answer = _post(served["client"], "/api/predict", [served["test"] / "oak" / "0.png"], **fields)
    assert answer.status_code == 400 and message in answer.json()["error"]


def test_own_labels_on_a_taxonomy_server_are_answered_flat(served):
    body = _post(
        served["client"], "/api/predict", [served["test"] / "oak" / "0.png"], labels="oak\nfern"
    ).json()
    assert body["taxa"] == {} and {p["label"] for p in body["models"]["tuned"]} == {"oak", "fern"}


def test_health_describes_the_taxonomy(served):
    described = served["client"].get("/api/health").json()
    assert described["taxonomy"]["ranks"] == ["order", "family", "genus", "species"]
    assert described["taxonomy"]["species"] == 4 and described["max_photos"] == 2
    assert described["default_labels"] == [
        "Quercus rubra",
        "Quercus alba",
        "Acer saccharum",
        "Osmunda regalis",
    ]


def test_taxon_options_without_a_taxonomy_are_refused(served, tmp_path, capsys):
    plain = Identifier(served["models"], ["oak", "fern"], None, ServeOptions())
    plain.prepare()
    answer = _post(
        TestClient(create_app(plain)), "/api/predict", [served["test"] / "oak" / "0.png"], rank="genus"
    )
    assert answer.status_code == 400
    assert (
        answer.json()["error"] == "rank: this server has no taxonomy (start dalip serve with --taxonomy FILE)"
    )
    model = ["serve", "-m", str(served["tuned"]), "--port", "0"]
    assert (
        user_error(capsys, *model, "--rank", "genus")
        == "dalip serve: error: --rank: needs --taxonomy (the classes' ranks)"
    )
    assert "give --gallery or a file" in user_error(capsys, *model, "--taxonomy", "auto")
    assert "taxonomy file not found" in user_error(capsys, *model, "--taxonomy", tmp_path / "no.csv")

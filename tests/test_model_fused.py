"""One vector per item: `DALIPModel.fused_embedding`, `dalip embed --fused` and zero-shot
class vectors built per feature kind before fusing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import make_workspace

import dalip
from dalip.cli import main
from dalip.data.captions import fill_template
from dalip.inference.templates import load_templates

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import fused_search  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("fused"))


def test_fused_embedding_dot_products_are_the_fused_similarity(tiny_model, captions):
    model, _, _, tokenizer = tiny_model
    model.alpha = 0.3  # not 0.5, so sqrt(alpha) and sqrt(1 - alpha) differ
    torch.manual_seed(1)
    with torch.no_grad():
        image = model.encode_image(torch.randn(3, 3, 32, 32))
        text = model.encode_text(tokenizer(captions))
    image_fused, text_fused = model.fused_embedding(image), model.fused_embedding(text)
    assert image_fused.shape == (3, 64)
    torch.testing.assert_close(image_fused.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(image_fused @ text_fused.T, model.similarity(image, text, "fused"))
    with pytest.raises(ValueError, match="second-order"):
        model.fused_embedding(dalip.Features(image.first, None))


def test_embed_fused_writes_vectors_whose_dot_products_rank_as_dalip(workspace, tmp_path):
    images, texts = tmp_path / "images.npz", tmp_path / "texts.npz"
    captions = ["a leaf of red oak", "a leaf of royal fern", "a leaf of sugar maple"]
    spec = str(workspace["tuned"])
    assert (
        main(["embed", "-m", spec, "--images", str(workspace["test"]), "--fused", "--out", str(images), "-q"])
        == 0
    )
    assert main(["embed", "-m", spec, "--texts", *captions, "--fused", "--out", str(texts), "-q"]) == 0
    model = dalip.load_checkpoint(workspace["tuned"])
    with np.load(images) as saved_images, np.load(texts) as saved_texts:
        assert float(saved_images["alpha"]) == pytest.approx(model.alpha)
        scores = saved_images["fused"] @ saved_texts["fused"].T
        first = torch.from_numpy(saved_images["first"]), torch.from_numpy(saved_texts["first"])
        second = torch.from_numpy(saved_images["second"]), torch.from_numpy(saved_texts["second"])
    expected = model.similarity(
        dalip.Features(first[0], second[0]), dalip.Features(first[1], second[1]), "fused"
    )
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-5)
    # the README's vector-index example ranks the images for each caption by the same scores
    with np.load(images) as saved_images, np.load(texts) as saved_texts:
        found, rows = fused_search.search(saved_images["fused"], saved_texts["fused"], top_k=3)
    assert rows.tolist() == expected.T.argsort(dim=1, descending=True)[:, :3].tolist()
    np.testing.assert_allclose(
        found, expected.T.sort(dim=1, descending=True).values[:, :3].numpy(), atol=1e-5
    )


def test_class_vectors_average_each_kind_then_fuse(workspace, tmp_path):
    out = tmp_path / "classes.npz"
    labels = ["red oak", "sugar maple", "royal fern"]
    assert (
        main(
            [
                "embed",
                "-m",
                str(workspace["tuned"]),
                "--labels",
                ",".join(labels),
                "--templates",
                "plant",
                "--fused",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    model = dalip.load_checkpoint(workspace["tuned"])
    templates = load_templates("plant")
    tokenizer = open_clip.get_tokenizer("test-tiny")
    with torch.no_grad():
        per_prompt = model.encode_text(
            tokenizer([fill_template(t, name) for name in labels for t in templates])
        )

    def per_class(features: torch.Tensor) -> torch.Tensor:
        return features.reshape(len(labels), len(templates), -1).mean(dim=1)  # (C, D)

    expected = model.fused_embedding(
        dalip.Features(
            F.normalize(per_class(per_prompt.first), dim=-1),
            F.normalize(per_class(per_prompt.second), dim=-1),
        )
    )
    naive = F.normalize(per_class(model.fused_embedding(per_prompt)), dim=-1)  # fuse first, then average
    with np.load(out) as saved:
        assert str(saved["kind"]) == "class" and list(saved["items"]) == labels
        assert list(saved["templates"]) == templates
        np.testing.assert_allclose(saved["fused"], expected.numpy(), atol=1e-5)
        assert not np.allclose(saved["fused"], naive.numpy(), atol=1e-3)


def test_embed_fused_refuses_a_plain_open_clip_model(workspace, tmp_path, capsys):
    spec = f"openclip:test-tiny:{workspace['exported']}"
    out = tmp_path / "plain.npz"
    assert main(["embed", "-m", spec, "--texts", "a fern", "--fused", "--out", str(out), "-q"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--fused" in error[0] and "first-order" in error[0]
    assert not out.exists()
    assert main(["embed", "-m", spec, "--texts", "a fern", "--templates", "plant", "--out", str(out)]) == 2
    assert "--templates applies to class vectors only" in capsys.readouterr().err

"""Exported checkpoints: first-order zero-shot through dalip equals plain open_clip."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import TEST_MBDC
from eval_fixtures import write_folder
from PIL import Image

import dalip
from dalip.cli import main
from dalip.data.captions import fill_template
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.predict import predict
from dalip.inference.runtime import embed
from dalip.inference.specs import load_model
from dalip.inference.templates import load_templates

CLASSES = {"oak": 2, "maple": 2, "fern": 1}


@pytest.fixture
def checkpoint_and_folder(tmp_path):
    torch.manual_seed(0)
    model, *_ = dalip.create_model("test-tiny", **TEST_MBDC)
    model.save(tmp_path / "model.safetensors")
    paths = write_folder(tmp_path / "images", CLASSES)
    return tmp_path / "model.safetensors", tmp_path / "images", paths


def _plain_open_clip_top1(weights, paths, labels, templates):
    """Zero-shot top-1 computed directly with open_clip, no dalip code involved."""
    clip, _, preprocess = open_clip.create_model_and_transforms("test-tiny", pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer("test-tiny")
    clip.eval()
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        image_features = F.normalize(clip.encode_image(images), dim=-1)
        classes = []
        for name in CLASSES:
            texts = F.normalize(
                clip.encode_text(tokenizer([fill_template(t, name) for t in templates])), dim=-1
            )
            classes.append(F.normalize(texts.mean(dim=0), dim=-1))
        scores = image_features @ torch.stack(classes).T
    return image_features, (scores.argmax(dim=1) == torch.tensor(labels)).float().mean().item(), scores


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_first_order_zero_shot_equals_plain_open_clip_on_export(checkpoint_and_folder, tmp_path, suffix):
    checkpoint, folder, paths = checkpoint_and_folder
    exported = tmp_path / f"exported{suffix}"
    assert main(["export", str(checkpoint), str(exported)]) == 0
    labels = [i for i, (_, count) in enumerate(CLASSES.items()) for _ in range(count)]
    templates = load_templates("plant")[:3]
    features, top1, _ = _plain_open_clip_top1(exported, paths, labels, templates)

    loaded = load_model(str(checkpoint))
    ours = zero_shot(
        loaded.model,
        folder,
        loaded.tokenizer,
        loaded.preprocess,
        templates=templates,
        modes=["first"],
        class_names=list(CLASSES),
    )
    assert ours["modes"]["first"]["top1"] == pytest.approx(top1)
    dalip_features, _ = embed(loaded.model, preprocess=loaded.preprocess, images=paths)
    assert torch.allclose(dalip_features.first, features, atol=1e-5)

    # the same file evaluated as a plain open_clip model spec
    plain = load_model(f"openclip:test-tiny:{exported}")
    theirs = zero_shot(
        plain.model,
        folder,
        plain.tokenizer,
        plain.preprocess,
        templates=templates,
        modes=["all"],
        class_names=list(CLASSES),
    )
    assert list(theirs["modes"]) == ["first"]  # no second order in a plain open_clip model
    assert theirs["modes"]["first"] == pytest.approx(ours["modes"]["first"])
    labels_as_prompts = [fill_template(templates[0], name) for name in CLASSES]
    predicted = predict(
        plain.model, paths, labels_as_prompts, plain.tokenizer, plain.preprocess, mode="first"
    )
    expected = _first_template_scores(features, exported, labels_as_prompts).argmax(dim=1)
    assert [p["predictions"][0]["label"] for p in predicted] == [labels_as_prompts[i] for i in expected]


def _first_template_scores(image_features, weights, prompts):
    clip, _, _ = open_clip.create_model_and_transforms("test-tiny", pretrained=str(weights))
    tokens = open_clip.get_tokenizer("test-tiny")(prompts)
    with torch.no_grad():
        return image_features @ F.normalize(clip.eval().encode_text(tokens), dim=-1).T

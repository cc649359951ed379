"""The held-out contrastive loss is open_clip's ClipLoss over fixed batches of a caption CSV's
pairs, in every similarity mode; too few pairs for a batch is one line naming the file."""

from __future__ import annotations

import pytest
import torch
from eval_fixtures import make_workspace
from open_clip.loss import ClipLoss

from dalip.evaluation.contrastive import contrastive_loss
from dalip.evaluation.datasets import read_caption_csv
from dalip.inference.runtime import embed
from dalip.inference.specs import load_model


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("contrastive"))


def test_the_loss_is_clip_loss_over_fixed_batches(workspace):
    loaded = load_model(workspace["tuned"])
    model, preprocess, tokenizer = loaded.model, loaded.preprocess, loaded.tokenizer
    result = contrastive_loss(model, workspace["captions"], tokenizer, preprocess, ["fused", "first"], 3)
    assert (result["pairs"], result["batches"], result["batch_size"]) == (6, 2, 3)
    paths, captions, owners = read_caption_csv(workspace["captions"])
    first = [captions[owners.index(i)] for i in range(len(paths))]
    images, _ = embed(model, preprocess=preprocess, images=paths)
    texts, _ = embed(model, tokenizer=tokenizer, texts=first)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0)).view(2, 3)
    scale = model.clip.logit_scale.detach().exp().clamp(max=100)
    expected = torch.stack([ClipLoss()(images.first[rows], texts.first[rows], scale) for rows in order])
    assert result["modes"]["first"]["loss"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert result["modes"]["first"]["batch_sd"] == pytest.approx(float(expected.std()), abs=1e-5)
    fused = result["modes"]["fused"]
    assert fused["loss"] == pytest.approx((fused["image_to_text"] + fused["text_to_image"]) / 2)
    assert fused["loss"] != pytest.approx(result["modes"]["first"]["loss"])
    again = contrastive_loss(model, workspace["captions"], tokenizer, preprocess, ["first"], 3)
    assert again["modes"]["first"] == result["modes"]["first"]  # one fixed order


def test_fewer_pairs_than_a_batch_are_refused(workspace):
    loaded = load_model(workspace["tuned"])
    arguments = (loaded.model, workspace["captions"], loaded.tokenizer, loaded.preprocess)
    with pytest.raises(
        ValueError, match=r"captions.csv: 6 readable image-caption pairs, fewer than one batch of 8"
    ):
        contrastive_loss(*arguments, batch_size=8)
    with pytest.raises(ValueError, match="batches of 2 or more"):
        contrastive_loss(*arguments, batch_size=1)

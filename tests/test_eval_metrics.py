"""Zero-shot and retrieval metrics against values worked out by hand on chosen features."""

from __future__ import annotations

import json

import pytest
import torch
from data_fixtures import write_csv
from eval_fixtures import (
    CLASSES,
    EYE,
    IMAGE_FIRST,
    IMAGE_SECOND,
    StubModel,
    StubTokenizer,
    stub_preprocess,
    write_folder,
    write_image,
)

from dalip.evaluation.metrics import mean_per_class_recall, top_k_accuracy
from dalip.evaluation.retrieval import retrieval, retrieval_metrics
from dalip.evaluation.zero_shot import zero_shot
from dalip.inference.classes import class_embeddings
from dalip.inference.runtime import Runtime


@pytest.fixture
def zero_shot_folder(tmp_path):
    root = tmp_path / "zs"
    write_folder(root, {"a": 3, "b": 1, "c": 2}, readable=dict(zip("abc", CLASSES)))
    return root


def test_zero_shot_metrics_match_hand_computed_values(zero_shot_folder):
    model = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE, alpha=0.5)
    result = zero_shot(
        model,
        zero_shot_folder,
        StubTokenizer(CLASSES),
        stub_preprocess,
        templates=["{}"],
        modes=("all",),
        runtime=Runtime(batch_size=4),
    )
    # first: predictions a a b b a a -> 3/6; recall a 2/3, b 1, c 0
    # second: a b a b c c -> 5/6; recall a 2/3, b 1, c 1
    # fused (0.5/0.5): a a b b c a -> 4/6; recall a 2/3, b 1, c 1/2
    expected = {"first": (3 / 6, 5 / 9), "second": (5 / 6, 8 / 9), "fused": (4 / 6, 13 / 18)}
    assert set(result["modes"]) == set(expected)
    for mode, (top1, recall) in expected.items():
        assert result["modes"][mode]["top1"] == pytest.approx(top1)
        assert result["modes"][mode]["mean_per_class_recall"] == pytest.approx(recall)
        assert result["modes"][mode]["top5"] == pytest.approx(1.0)  # capped at 3 classes
    assert result["class_names"] == CLASSES
    assert result["num_images"] == 6 and result["images_per_second"] > 0


def test_zero_shot_on_labelled_csv_matches_folder(zero_shot_folder, tmp_path):
    rows = [
        {"filepath": f"zs/{c}/{n}.png", "label": name}
        for c, count, name in zip("abc", (3, 1, 2), CLASSES)
        for n in range(count)
    ]
    table = write_csv(tmp_path / "labels.csv", rows)
    model = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE)
    result = zero_shot(
        model, table, StubTokenizer(CLASSES), stub_preprocess, templates="none", modes=["first"]
    )
    assert result["modes"]["first"]["top1"] == pytest.approx(0.5)
    assert list(result["modes"]) == ["first"]


def test_top_k_and_per_class_recall_on_a_score_matrix():
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # label 5: rank 6
            [0.1, 0.9, 0.2, 0.3, 0.4, 0.5],  # label 0: rank 6
            [0.5, 0.1, 0.2, 0.3, 0.4, 0.0],  # label 4: rank 2
            [0.0, 0.1, 0.2, 0.9, 0.4, 0.5],  # label 3: rank 1
        ]
    )
    labels = torch.tensor([5, 0, 4, 3])
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.25)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, 5) == pytest.approx(0.5)
    assert mean_per_class_recall(scores, labels) == pytest.approx(0.25)


def test_class_embeddings_average_each_kind_over_templates_and_renormalise():
    texts = ["alpha", "x alpha"]
    model = StubModel([[1, 0]], [[1, 0]], [[1, 0], [0, 1]], [[1, 0, 0], [1, 1, 0]])
    classes = class_embeddings(model, StubTokenizer(texts), ["alpha"], ["{}", "x {}"], Runtime())
    root_half = 2**-0.5
    assert torch.allclose(classes.first, torch.tensor([[root_half, root_half]]))
    second = torch.tensor([[1 + root_half, root_half, 0.0]])
    assert torch.allclose(classes.second, second / second.norm())


# Retrieval: images 0-2; captions 0a, 0b (two rows), 1, and 2a, 2b (a JSON list cell).
RETRIEVAL_IMAGES = [[1, 0], [0, 1], [1, 1]]
RETRIEVAL_TEXTS = ["cap0a", "cap0b", "cap1", "cap2a", "cap2b"]
RETRIEVAL_TEXT_FEATURES = [[1, 0], [0, 1], [0.1, 1], [1, 0.3], [-1, 0]]


def _caption_csv(tmp_path):
    for image_id in range(3):
        write_image(tmp_path / "img" / f"{image_id}.png", image_id)
    return write_csv(
        tmp_path / "captions.csv",
        [
            {"filepath": "img/0.png", "caption": "cap0a"},
            {"filepath": "img/0.png", "caption": "cap0b"},
            {"filepath": "img/1.png", "caption": "cap1"},
            {"filepath": "img/2.png", "caption": json.dumps(["cap2a", "cap2b"])},
        ],
    )


def test_retrieval_recall_on_a_toy_case(tmp_path):
    table = _caption_csv(tmp_path)
    model = StubModel(RETRIEVAL_IMAGES, RETRIEVAL_IMAGES, RETRIEVAL_TEXT_FEATURES, RETRIEVAL_TEXT_FEATURES)
    result = retrieval(model, table, StubTokenizer(RETRIEVAL_TEXTS), stub_preprocess, modes=["first"])
    metrics = result["modes"]["first"]
    # image->text top-1: img0 -> cap0a (hit), img1 -> cap0b (miss), img2 -> cap2a (hit)
    assert metrics["image_to_text_R@1"] == pytest.approx(2 / 3)
    # text->image top-1: cap0a hit, cap0b miss, cap1 hit, cap2a miss (img0), cap2b miss (img1)
    assert metrics["text_to_image_R@1"] == pytest.approx(2 / 5)
    for key in ("image_to_text_R@5", "image_to_text_R@10", "text_to_image_R@5", "text_to_image_R@10"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["mean_recall"] == pytest.approx((2 / 3 + 2 / 5 + 4) / 6)
    assert (result["num_images"], result["num_texts"]) == (3, 5)


def test_retrieval_leaves_out_unreadable_images_and_their_captions(tmp_path):
    table = _caption_csv(tmp_path)
    (tmp_path / "img" / "1.png").write_bytes(b"not a png")
    model = StubModel(RETRIEVAL_IMAGES, RETRIEVAL_IMAGES, RETRIEVAL_TEXT_FEATURES, RETRIEVAL_TEXT_FEATURES)
    result = retrieval(model, table, StubTokenizer(RETRIEVAL_TEXTS), stub_preprocess, modes=["first"])
    assert (result["num_images"], result["num_texts"], result["skipped"]) == (2, 4, 1)
    # without img1 and cap1, img0 finds cap0a and img2 finds cap2a first
    assert result["modes"]["first"]["image_to_text_R@1"] == pytest.approx(1.0)


def test_retrieval_metrics_at_two():
    images = torch.nn.functional.normalize(torch.tensor(RETRIEVAL_IMAGES, dtype=torch.float), dim=-1)
    texts = torch.nn.functional.normalize(torch.tensor(RETRIEVAL_TEXT_FEATURES, dtype=torch.float), dim=-1)
    metrics = retrieval_metrics(images @ texts.T, torch.tensor([0, 0, 1, 2, 2]), ks=(1, 2))
    assert metrics["image_to_text_R@2"] == pytest.approx(1.0)
    # cap0b ranks img0 third; cap2a and cap2b find their image second
    assert metrics["text_to_image_R@2"] == pytest.approx(4 / 5)


def test_unknown_mode_and_missing_second_order_are_refused(zero_shot_folder):
    model = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE)
    with pytest.raises(ValueError, match="similarity mode"):
        zero_shot(model, zero_shot_folder, StubTokenizer(CLASSES), stub_preprocess, modes=["both"])
    model.has_second_order = False
    with pytest.raises(ValueError, match="second-order"):
        zero_shot(model, zero_shot_folder, StubTokenizer(CLASSES), stub_preprocess, modes=["fused"])


def test_folder_without_images_is_a_value_error(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    model = StubModel(IMAGE_FIRST, IMAGE_SECOND, EYE, EYE)
    with pytest.raises(ValueError, match="no images"):
        zero_shot(model, tmp_path / "empty", StubTokenizer(CLASSES), stub_preprocess)

"""Linear probe (C chosen on training data only) and few-shot (seeded, saved splits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import StubModel, stub_preprocess, write_folder

from dalip.evaluation import probe


def _blobs(seed: int, per_class: int, classes: int = 3, dim: int = 8, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dim) * 3
    x = np.concatenate([centres[c] + spread * rng.normal(size=(per_class, dim)) for c in range(classes)])
    return x, np.repeat(np.arange(classes), per_class)


def test_c_is_chosen_from_training_data_only(monkeypatch):
    train_x, train_y = _blobs(0, 20)
    test_x, test_y = _blobs(1, 10)
    seen = []
    original = probe.select_c
    monkeypatch.setattr(probe, "select_c", lambda x, y, *a: seen.append((x, y)) or original(x, y, *a))
    honest = probe.fit_linear_probe(train_x, train_y, test_x, test_y, c_values=[0.001, 0.1, 10], seed=0)
    assert len(seen) == 1 and seen[0][0] is train_x and seen[0][1] is train_y
    # the choice is the one select_c makes from the training split alone ...
    assert honest["chosen_C"] == original(train_x, train_y, [0.001, 0.1, 10], 0)[0]
    # ... and does not move when the test split changes completely
    shuffled = probe.fit_linear_probe(
        train_x,
        train_y,
        -test_x,
        np.random.default_rng(5).permutation(test_y),
        c_values=[0.001, 0.1, 10],
        seed=0,
    )
    assert shuffled["chosen_C"] == honest["chosen_C"]
    assert shuffled["heldout_accuracy_by_C"] == honest["heldout_accuracy_by_C"]
    assert honest["top1"] > 0.9 and shuffled["top1"] < honest["top1"]


def test_select_c_prefers_the_c_that_fits_held_out_data():
    # imbalanced classes: under very strong regularisation only the intercept is left,
    # which predicts the majority class everywhere
    x, y = _blobs(2, 40, classes=2, spread=0.5)
    x, y = x[:50], y[:50]  # 40 of class 0, 10 of class 1
    best, scores = probe.select_c(x, y, [1e-6, 1.0], seed=0)
    assert best == 1.0 and scores[repr(1.0)] > scores[repr(1e-6)]


def test_fewshot_splits_are_reproducible_by_seed():
    labels = np.repeat(np.arange(3), 6)
    indices = np.arange(100, 118)
    first = probe.sample_fewshot_splits(labels, indices, [1, 5], folds=3, seed=7)
    assert first == probe.sample_fewshot_splits(labels, indices, [1, 5], folds=3, seed=7)
    assert first != probe.sample_fewshot_splits(labels, indices, [1, 5], folds=3, seed=8)
    for fold in first["5"]:
        assert len(fold) == 15 and set(fold) <= set(indices.tolist())
        chosen_labels = labels[np.searchsorted(indices, fold)]
        assert np.bincount(chosen_labels).tolist() == [5, 5, 5]
    assert len({tuple(fold) for fold in first["1"]}) > 1  # folds differ


def test_nearest_centroid_by_hand():
    support = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    accuracy = probe.nearest_centroid_accuracy(
        support, np.array([0, 0, 1]), np.array([[0.9, 0.1], [0.2, 1.0], [0.6, 0.5]]), np.array([0, 1, 1])
    )
    assert accuracy == pytest.approx(2 / 3)  # (0.6, 0.5) is closer to class 0's centroid


def test_fewshot_saves_splits_and_reuses_them(tmp_path):
    train_ids = {"a": 4, "b": 4}
    write_folder(tmp_path / "train", train_ids)
    write_folder(tmp_path / "test", {"a": 2, "b": 2}, start_id=8)
    first = (
        [[1, 0.1 * i] for i in range(4)]
        + [[0.1 * i, 1] for i in range(4)]
        + [[1, 0], [1, 0.5], [0, 1], [0.5, 1]]
    )
    model = StubModel(first, first, [[1, 0]], [[1, 0]])
    splits = tmp_path / "out" / "splits.json"
    result = probe.fewshot(
        model,
        tmp_path / "train",
        tmp_path / "test",
        stub_preprocess,
        shots=[1, 2],
        folds=3,
        seed=4,
        splits_path=splits,
    )
    saved = json.loads(splits.read_text())
    assert saved["seed"] == 4 and saved["folds"] == 3 and set(saved["splits"]) == {"1", "2"}
    assert result["accuracy"]["2-shot"]["mean"] == pytest.approx(1.0)
    again = probe.fewshot(
        model, tmp_path / "train", tmp_path / "test", stub_preprocess, seed=99, splits_from=splits
    )
    assert again["accuracy"] == result["accuracy"] and again["seed"] == 4
    resampled = probe.fewshot(
        model, tmp_path / "train", tmp_path / "test", stub_preprocess, shots=[1, 2], folds=3, seed=4
    )
    assert resampled["accuracy"] == result["accuracy"]


def test_probe_feature_kinds():
    import torch

    from dalip.inference.runtime import EncodedImages
    from dalip.model.features import Features

    encoded = EncodedImages(
        Features(torch.ones(2, 3), torch.zeros(2, 4)), torch.zeros(2), torch.arange(2), 1.0
    )
    assert probe.feature_matrix(encoded, "first").shape == (2, 3)
    assert probe.feature_matrix(encoded, "second").shape == (2, 4)
    assert probe.feature_matrix(encoded, "concat").shape == (2, 7)
    with pytest.raises(ValueError, match="features must be one of"):
        probe.feature_matrix(encoded, "both")

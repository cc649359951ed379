"""Linear probe and few-shot classification on frozen image features.

Linear probe: scikit-learn `LogisticRegression`, its inverse regularisation C chosen by
accuracy on a held-out part of the *training* split (`select_c` never sees test data),
then refitted on the whole training split and scored once on the test split.

Few-shot: k images per class drawn from the training split (one draw per seeded fold),
classified by the nearest class centroid (cosine). The drawn dataset indices are saved
as JSON so a later run (another checkpoint) can reuse exactly the same splits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from dalip.atomic import write_json
from dalip.evaluation.datasets import load_classification_dataset
from dalip.evaluation.metrics import classification_metrics
from dalip.inference.runtime import EncodedImages, Runtime, encode_dataset
from dalip.model.features import Encoder
from dalip.readers import MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES, read_json

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("first", "second", "concat")
DEFAULT_C_VALUES = (0.01, 0.1, 1.0, 10.0, 100.0)


def feature_matrix(encoded: EncodedImages, kind: str = "first") -> np.ndarray:
    """(N, D) float64 features of one kind: first, second or both concatenated."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {kind!r}")
    first, second = encoded.features
    if kind != "first" and second is None:
        raise ValueError(f"features {kind!r} need second-order features, which this model lacks")
    parts = {"first": [first], "second": [second], "concat": [first, second]}[kind]
    return torch.cat(parts, dim=1).double().numpy()


def encode_split(
    model: Encoder,
    source: Any,
    preprocess: Any,
    runtime: Runtime,
    kind: str,
    class_names: Sequence[str] | None = None,
    cache: dict | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
) -> tuple[EncodedImages, list[str], str, int]:
    """(encoded images, class names, description, dataset size) of one split, cached by path."""
    key = (os.fspath(source) if isinstance(source, (str, os.PathLike)) else id(source), kind != "first")
    if cache is not None and key in cache:
        return cache[key]
    dataset, names, where = load_classification_dataset(source, preprocess, class_names, label_key, image_key)
    with runtime.evaluating(model) as resolved:
        encoded = encode_dataset(model, dataset, resolved, second_order=kind != "first", desc="probe")
    result = (encoded, names, where, len(dataset))
    if cache is not None:
        cache[key] = result
    return result


def _holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) of the training split, stratified when possible."""
    indices = np.arange(len(labels))
    try:
        return tuple(train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels))
    except ValueError:  # a class with one image, or fewer held-out slots than classes
        return tuple(train_test_split(indices, test_size=fraction, random_state=seed))


def select_c(
    train_x: np.ndarray,
    train_y: np.ndarray,
    c_values: Sequence[float] = DEFAULT_C_VALUES,
    seed: int = 0,
    holdout_fraction: float = 0.2,
) -> tuple[float, dict[str, float]]:
    """Best C by held-out accuracy, from training data only; returns (C, {C: accuracy})."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    fit, held_out = _holdout_split(train_y, holdout_fraction, seed)
    scores: dict[str, float] = {}
    for c in c_values:
        classifier = LogisticRegression(C=float(c), max_iter=2000, random_state=seed)
        classifier.fit(train_x[fit], train_y[fit])
        scores[repr(float(c))] = float(classifier.score(train_x[held_out], train_y[held_out]))
    best = max(c_values, key=lambda c: (scores[repr(float(c))], -float(c)))  # ties: stronger regularisation
    return float(best), scores


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    c_values: Sequence[float] = DEFAULT_C_VALUES,
    seed: int = 0,
    holdout_fraction: float = 0.2,
) -> dict[str, Any]:
    """Choose C on the training split, refit on all of it, score the test split once."""
    best_c, heldout_scores = select_c(train_x, train_y, c_values, seed, holdout_fraction)
    classifier = LogisticRegression(C=best_c, max_iter=2000, random_state=seed).fit(train_x, train_y)
    scores = np.full((len(test_x), int(max(train_y.max(), test_y.max())) + 1), -np.inf)
    scores[:, classifier.classes_] = classifier.predict_log_proba(test_x)
    metrics = classification_metrics(torch.from_numpy(scores), torch.from_numpy(test_y))
    return {**metrics, "chosen_C": best_c, "heldout_accuracy_by_C": heldout_scores}


def encode_splits(
    model: Encoder,
    train: Any,
    test: Any,
    preprocess: Any,
    runtime: Runtime,
    features: str,
    cache: dict | None,
    label_key: str,
    image_key: str,
) -> tuple[tuple[Any, list[str], str, int], tuple[Any, list[str], str, int]]:
    """`encode_split` of the training split, then of the test split with the training split's
    class names (so both label the same classes)."""
    keys = dict(label_key=label_key, image_key=image_key)
    train_split = encode_split(model, train, preprocess, runtime, features, None, cache, **keys)
    test_split = encode_split(model, test, preprocess, runtime, features, train_split[1], cache, **keys)
    return train_split, test_split


def linear_probe(
    model: Encoder,
    train: Any,
    test: Any,
    preprocess: Any,
    features: str = "first",
    c_values: Sequence[float] = DEFAULT_C_VALUES,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    runtime: Runtime | None = None,
    cache: dict | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
) -> dict[str, Any]:
    """Linear probe of frozen image features; train/test are image folders, CSVs or datasets.

    Returns {top1, top5, mean_per_class_recall, chosen_C, heldout_accuracy_by_C, ...}.
    """
    runtime = runtime or Runtime()
    (train_set, names, train_where, train_size), (test_set, _, test_where, test_size) = encode_splits(
        model, train, test, preprocess, runtime, features, cache, label_key, image_key
    )
    if len(np.unique(train_set.labels.numpy())) < 2:
        raise ValueError(
            f"{train_where}: the linear probe's training images are all of one class; it needs 2 or more"
        )
    result = fit_linear_probe(
        feature_matrix(train_set, features),
        train_set.labels.numpy(),
        feature_matrix(test_set, features),
        test_set.labels.numpy(),
        c_values,
        seed,
        holdout_fraction,
    )
    return {
        "task": "linear_probe",
        "features": features,
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "train": train_where,
        "test": test_where,
        "train_size": train_size,
        "test_size": test_size,
        "class_names": names,
        **result,
        "images_per_second": min(train_set.images_per_second, test_set.images_per_second),
    }


def sample_fewshot_splits(
    labels: np.ndarray, indices: np.ndarray, shots: Sequence[int], folds: int, seed: int
) -> dict[str, list[list[int]]]:
    """{str(k): one list of dataset indices per fold}, k per class (all of a smaller class)."""
    splits: dict[str, list[list[int]]] = {}
    for k in shots:
        if k < 1:
            raise ValueError(f"few-shot k must be >= 1, got {k}")
        per_fold = []
        for fold in range(folds):
            rng = np.random.default_rng([seed, k, fold])
            chosen = [
                rng.choice(indices[labels == c], size=min(k, int((labels == c).sum())), replace=False)
                for c in np.unique(labels)
            ]
            per_fold.append(sorted(int(i) for i in np.concatenate(chosen)))
        splits[str(k)] = per_fold
    return splits


def nearest_centroid_accuracy(
    support_x: np.ndarray, support_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Accuracy of classifying test rows by the most cosine-similar class mean of the support."""
    classes = np.unique(support_y)
    centroids = np.stack([support_x[support_y == c].mean(axis=0) for c in classes])  # (C, D)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    queries = test_x / (np.linalg.norm(test_x, axis=1, keepdims=True) + 1e-12)
    predicted = classes[(queries @ centroids.T).argmax(axis=1)]
    return float((predicted == test_y).mean())


def read_splits(path: str | os.PathLike) -> dict[str, Any]:
    """A few-shot splits file written by `fewshot` (see `save_splits`)."""
    expected = "expected a fewshot_splits/NAME.json an earlier eval wrote"
    try:
        record = read_json(path, "few-shot splits file", MAX_DATA_JSON_CHARACTERS, MAX_DATA_JSON_VALUES)
    except ValueError as error:  # not JSON, not UTF-8, nested too deep, too large
        reason = str(error).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: not a few-shot splits file ({reason}); {expected}") from error
    if not isinstance(record, dict) or not isinstance(record.get("splits"), dict):
        raise ValueError(f"{path}: not a few-shot splits file (no 'splits' object); {expected}")
    return record


def save_splits(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write a few-shot splits record as JSON (atomically)."""
    write_json(path, record, indent=1)


def _read_fewshot_splits(
    path: str | os.PathLike, indices: np.ndarray, train_where: str, seed: int, folds: int
) -> tuple[dict[int, list[list[int]]], int, int]:
    """(splits, seed, folds) of a splits file; ValueError when it names images the split lacks."""
    record = read_splits(path)
    splits, seed, folds = record["splits"], record.get("seed", seed), record.get("folds", folds)
    unknown = sorted(
        {i for fold in splits.values() for chosen in fold for i in chosen} - set(indices.tolist())
    )
    if unknown:
        raise ValueError(f"{path}: indices {unknown[:5]} are not images of {train_where}")
    return splits, seed, folds


def _fewshot_accuracies(
    splits: dict[int, list[list[int]]], train_set: Any, test_set: Any, features: str
) -> dict[str, Any]:
    """{"k-shot": {mean, std, folds}}: nearest-centroid accuracy of each fold's chosen images."""
    train_x, test_x = feature_matrix(train_set, features), feature_matrix(test_set, features)
    labels, test_labels = train_set.labels.numpy(), test_set.labels.numpy()
    row_of = {int(index): row for row, index in enumerate(train_set.indices.numpy())}
    results: dict[str, Any] = {}
    for k, per_fold in splits.items():
        rows_per_fold = [[row_of[i] for i in chosen] for chosen in per_fold]
        accuracies = [
            nearest_centroid_accuracy(train_x[rows], labels[rows], test_x, test_labels)
            for rows in rows_per_fold
        ]
        results[f"{k}-shot"] = {
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "folds": accuracies,
        }
    return results


def fewshot(
    model: Encoder,
    train: Any,
    test: Any,
    preprocess: Any,
    shots: Sequence[int] = (1, 5),
    folds: int = 5,
    seed: int = 0,
    features: str = "first",
    splits_path: str | os.PathLike | None = None,
    splits_from: str | os.PathLike | None = None,
    runtime: Runtime | None = None,
    cache: dict | None = None,
    label_key: str = "label",
    image_key: str = "filepath",
) -> dict[str, Any]:
    """k-shot nearest-centroid accuracy, mean and std over `folds` seeded draws per k.

    The draws (dataset indices of the training split, the same for every model) are
    written to `splits_path` as JSON: {seed, folds, train, splits: {k: [[index, ...], ...]}}.
    With `splits_from`, the draws are read from such a file instead of sampled (then
    `shots`, `folds` and `seed` come from the file).
    """
    runtime = runtime or Runtime()
    (train_set, names, train_where, train_size), (test_set, _, test_where, test_size) = encode_splits(
        model, train, test, preprocess, runtime, features, cache, label_key, image_key
    )
    labels, indices = train_set.labels.numpy(), train_set.indices.numpy()
    if splits_from is not None:
        splits, seed, folds = _read_fewshot_splits(splits_from, indices, train_where, seed, folds)
    else:
        splits = sample_fewshot_splits(labels, indices, shots, folds, seed)
    if splits_path is not None:
        save_splits(splits_path, {"seed": seed, "folds": folds, "train": train_where, "splits": splits})
    results = _fewshot_accuracies(splits, train_set, test_set, features)
    return {
        "task": "fewshot",
        "features": features,
        "seed": seed,
        "folds": folds,
        "shots": [int(k) for k in splits],
        "train": train_where,
        "test": test_where,
        "train_size": train_size,
        "test_size": test_size,
        "class_names": names,
        "splits_file": None if splits_path is None else os.path.abspath(splits_path),
        "accuracy": results,
        "images_per_second": min(train_set.images_per_second, test_set.images_per_second),
    }

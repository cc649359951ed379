"""Classification metrics as plain functions of score matrices (N, C) and labels (N,), in
the manner of CLIP_benchmark, so they can be checked by hand."""

from __future__ import annotations

import torch


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores.

    scores (N, C), labels (N,). k is capped at C (with 3 classes "top-5" is top-3).
    """
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices  # (N, k)
    return (top == labels[:, None]).any(dim=1).float().mean().item()


def mean_per_class_recall(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 recall of each class present in `labels`, averaged over those classes."""
    predicted = scores.argmax(dim=1)
    recalls = [(predicted[labels == c] == c).float().mean() for c in labels.unique()]
    return torch.stack(recalls).mean().item()


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1, top5 and mean per-class recall of scores (N, C) against labels (N,)."""
    return {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(scores, labels),
    }

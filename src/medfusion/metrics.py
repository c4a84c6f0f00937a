"""Classification metrics on tensors (no scikit-learn needed)."""

from __future__ import annotations

import torch
from torch import Tensor


def binary_auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic (ties count one half).

    Args:
        scores: (N,) score of the positive class.
        labels: (N,) 0/1 labels.

    Raises:
        ValueError: on a shape mismatch or when only one class is present.
    """
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"auroc: expected scores and labels of equal shape (N,), received "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    positives = labels.bool()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc: needs both classes, received {n_pos} positive and {n_neg} negative")
    order = scores.double().argsort()
    sorted_scores = scores.double()[order]
    ranks = torch.empty_like(sorted_scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average the ranks of tied scores
    unique, inverse = torch.unique(sorted_scores, return_inverse=True)
    mean_rank = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks[order])
    mean_rank /= torch.bincount(inverse, minlength=len(unique)).double()
    ranks[order] = mean_rank[inverse]
    u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Share of argmax predictions equal to ``labels``. logits (N, K), labels (N,)."""
    return float((logits.argmax(dim=1) == labels).float().mean())

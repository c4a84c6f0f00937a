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


def recall_at_k(similarity: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Paired retrieval recall: query ``i``'s one relevant candidate is candidate ``i``.

    Recall@K is the share of queries whose relevant candidate ranks in the top K; a
    candidate scoring exactly as the relevant one ranks ahead of it (pessimistic ties).

    Args:
        similarity: (Q, N) scores, N >= Q; row i's relevant column is i.
        ks: cut-offs, each >= 1 (clipped to N).

    Returns:
        {K: recall in [0, 1]}.

    Raises:
        ValueError: on a non-matrix, fewer candidates than queries, or a K < 1.
    """
    if similarity.ndim != 2 or similarity.shape[1] < similarity.shape[0] or similarity.shape[0] == 0:
        raise ValueError(f"recall@k: expected a (Q, N) similarity with 1 <= Q <= N, "
                         f"received shape {tuple(similarity.shape)}")
    if any(k < 1 for k in ks):
        raise ValueError(f"recall@k: expected every K >= 1, received {ks}")
    rows = torch.arange(similarity.shape[0], device=similarity.device)
    relevant = similarity[rows, rows].unsqueeze(1)
    rank = (similarity >= relevant).sum(dim=1) - 1  # 0 = first; ties count ahead of the relevant one
    return {k: float((rank < k).float().mean()) for k in ks}

"""Per-modality monitoring and modality-imbalance handling.

- :class:`ModalityProbes`: one linear classifier per modality on *detached* features
  (encoder pooled vectors, or early fusion's featurisations). They never change the model;
  their validation AUROC, logged each epoch beside the fused model's, shows when one
  modality is not learning.
- :func:`ogm_ge_coefficients` / :func:`modulate_gradients`: on-the-fly gradient modulation
  with generalisation enhancement (OGM-GE; Peng et al., "Balanced Multimodal Learning via
  On-the-fly Gradient Modulation", CVPR 2022). Per batch, each modality's confidence in
  the true class is compared with the others'; the encoder of a dominating modality gets
  its gradient scaled by ``1 - tanh(alpha * (ratio - 1))`` and Gaussian noise with the
  gradient's standard deviation added, so the weaker modalities can catch up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ModalityProbes(nn.Module):
    """Linear probes, one per modality, trained on detached features.

    Args:
        dims: {modality: feature size}.
        num_classes: K.
    """

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in sorted(dims.items())})

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """{modality: (B, K) logits} from {modality: (B, D) features} (detached here)."""
        return {m: head(features[m].detach()) for m, head in self.heads.items()}

    def loss(self, logits: dict[str, Tensor], present: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Sum over modalities of the cross-entropy on the rows where the modality is present."""
        total = logits[next(iter(logits))].new_zeros(())
        for m, values in logits.items():
            rows = present[m]
            if rows.any():
                total = total + F.cross_entropy(values[rows], labels[rows])
        return total


def ogm_ge_coefficients(logits: dict[str, Tensor], present: dict[str, Tensor], labels: Tensor,
                        alpha: float) -> dict[str, float]:
    """OGM-GE gradient coefficient of each modality for one batch.

    score_m = mean over rows with m present of softmax(logits_m)[y];
    ratio_m = score_m / mean of the other modalities' scores;
    coefficient_m = 1 - tanh(alpha * (ratio_m - 1)) if ratio_m > 1 else 1.

    Args:
        logits: {modality: (B, K)} per-modality logits (probes or unimodal heads).
        present: {modality: (B,) bool}.
        labels: (B,) int64.
        alpha: modulation strength.

    Returns:
        {modality: coefficient in (0, 1]}; 1 for every modality when fewer than two have rows.
    """
    scores = {}
    for m, values in logits.items():
        rows = present[m]
        if rows.any():
            probs = values[rows].detach().softmax(dim=-1)
            scores[m] = probs.gather(1, labels[rows].unsqueeze(1)).mean().item()
    coefficients = {m: 1.0 for m in logits}
    if len(scores) < 2:
        return coefficients
    for m, score in scores.items():
        others = [s for k, s in scores.items() if k != m]
        ratio = score / max(sum(others) / len(others), 1e-8)
        if ratio > 1:
            coefficients[m] = 1.0 - float(torch.tanh(torch.tensor(alpha * (ratio - 1.0))))
    return coefficients


@torch.no_grad()
def modulate_gradients(encoders: nn.ModuleDict, coefficients: dict[str, float],
                       generator: torch.Generator | None = None) -> None:
    """Scale each encoder's gradients by its coefficient and, where modulated, add N(0, std(grad)) noise."""
    for m, coefficient in coefficients.items():
        if coefficient >= 1.0:
            continue
        for parameter in encoders[m].parameters():
            if parameter.grad is None:
                continue
            grad = parameter.grad
            std = grad.std().item() if grad.numel() > 1 else 0.0
            noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype) * (std + 1e-8)
            grad.mul_(coefficient).add_(noise)

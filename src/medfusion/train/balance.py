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
- :class:`GradientBlend`: online gradient blending (Wang, Tran & Feiszli, "What Makes
  Training Multi-modal Classification Networks Hard?", CVPR 2020). The unimodal heads then
  train their encoders (features not detached) and the objective is a weighted sum of the
  fused and unimodal losses, the weights re-estimated after every epoch from how much each
  head generalises (validation loss decrease) per unit of overfitting (growth of the
  validation-train gap, squared).
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

    def __init__(self, dims: dict[str, int], num_classes: int, detach: bool = True) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in sorted(dims.items())})
        self.detach = detach

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """{modality: (B, K) logits} from {modality: (B, D) features} (detached unless ``detach=False``:
        unimodal heads that train their encoders, as gradient blending needs)."""
        return {m: head(features[m].detach() if self.detach else features[m]) for m, head in self.heads.items()}

    def losses(self, logits: dict[str, Tensor], present: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """{modality: cross-entropy on the rows where it is present}; modalities absent from the batch left out."""
        return {m: F.cross_entropy(values[present[m]], labels[present[m]])
                for m, values in logits.items() if present[m].any()}

    def loss(self, logits: dict[str, Tensor], present: dict[str, Tensor], labels: Tensor) -> Tensor:
        """Sum over modalities of the cross-entropy on the rows where the modality is present."""
        return sum(self.losses(logits, present, labels).values(), logits[next(iter(logits))].new_zeros(()))


class GradientBlend(nn.Module):
    """Online gradient-blending weights of the fused head and each unimodal head.

    After epoch n (from the second epoch on), per head k with mean training loss T and
    validation loss V: generalisation ``dG = V_{n-1} - V_n``, overfitting
    ``dO = (V_n - T_n) - (V_{n-1} - T_{n-1})``, and ``w_k = max(dG, 0) / (dO^2 + eps)``
    normalised to sum 1. When no head improved, the weights stay. Initial weights are
    uniform. The weights and the last epoch's losses are buffers (saved in checkpoints, so
    a resumed run continues with them).

    Args:
        modalities: the unimodal heads; the fused head is called "fused".
        eps: added to dO^2 (a head whose gap did not move gets a large but finite weight).
    """

    def __init__(self, modalities: list[str], eps: float = 1e-4) -> None:
        super().__init__()
        self.heads = ["fused", *sorted(modalities)]
        self.eps = eps
        size = len(self.heads)
        self.register_buffer("weights", torch.full((size,), 1.0 / size))
        self.register_buffer("previous", torch.full((2, size), float("nan")))  # (train, val) losses of epoch n-1
        self.register_buffer("sums", torch.zeros(2, 2, size), persistent=False)  # (train/val, loss sum/count)

    def weight(self, head: str) -> float:
        """Current weight of ``head``."""
        return float(self.weights[self.heads.index(head)])

    def blend(self, losses: dict[str, Tensor]) -> Tensor:
        """sum_k w_k L_k over the heads in ``losses`` (a head without rows in the batch is left out)."""
        return sum((self.weights[self.heads.index(k)] * value for k, value in losses.items()),
                   next(iter(losses.values())).new_zeros(()))

    @torch.no_grad()
    def record(self, stage: str, losses: dict[str, Tensor], counts: dict[str, int]) -> None:
        """Add a batch's losses of ``stage`` ("train" or "val"), weighted by the rows each head saw."""
        row = 0 if stage == "train" else 1
        for head, value in losses.items():
            k = self.heads.index(head)
            self.sums[row, 0, k] += float(value) * counts[head]
            self.sums[row, 1, k] += counts[head]

    @torch.no_grad()
    def update(self, sums: Tensor | None = None) -> dict[str, float]:
        """End of an epoch: new weights from this epoch's and the previous epoch's losses.

        Args:
            sums: the (2, 2, H) loss sums and counts summed over processes (DDP); this
                process's own when None.

        Returns:
            {head: weight} after the update.
        """
        sums = self.sums if sums is None else sums
        current = sums[:, 0] / sums[:, 1].clamp_min(1)  # (2, H): train, val mean losses
        seen = (sums[:, 1] > 0).all(dim=0)
        if not torch.isnan(self.previous).all():
            gain = (self.previous[1] - current[1]).clamp_min(0)
            overfit = (current[1] - current[0]) - (self.previous[1] - self.previous[0])
            raw = torch.where(seen & ~torch.isnan(gain), gain / (overfit ** 2 + self.eps), torch.zeros_like(gain))
            if raw.sum() > 0:
                self.weights.copy_(raw / raw.sum())
        self.previous.copy_(torch.where(seen, current, self.previous))
        self.sums.zero_()
        return {head: float(w) for head, w in zip(self.heads, self.weights, strict=True)}


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

"""Contrastive (CLIP) loss as a function and a thin module.

Symmetric InfoNCE over paired embeddings (Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", ICML 2021), laid out after TorchMultimodal's
``contrastive_loss_with_temperature`` and open_clip's ``ClipLoss``:

    a_i, b_i = a_i / |a_i|, b_i / |b_i|
    logits_ij = exp(t) * <a_i, b_j>
    loss = (CE(logits, arange(B)) + CE(logits^T, arange(B))) / 2

with a learnable logit scale ``t`` initialised at ``log(1 / 0.07)`` and clamped so that
``exp(t) <= 100``, as CLIP does.

Distributed training (``gather=True``): every process gathers the embeddings of all
processes *with gradient* and scores its local rows against all of them (open_clip's
``local_loss=True, gather_with_grad=True``), targets offset by the rows of lower ranks.
The mean of the per-process losses then equals the single-process loss on the
concatenated batch when local batches have equal size. In backward, the all-gather sums
every process's gradient for a gathered slot, so the gradient a process sees for its
local embeddings is ``world_size`` times the single-process gradient; DDP's averaging of
parameter gradients divides it back, giving exactly the single-process gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn


class ContrastiveLossOutput(NamedTuple):
    """Parts of the contrastive loss.

    Attributes:
        loss: scalar, mean of the two directions.
        loss_a_to_b: scalar, cross-entropy of each a row over the b candidates.
        loss_b_to_a: scalar, cross-entropy of each b row over the a candidates.
        logits_a_to_b: (B_local, B_total) scaled cosine similarities of the local a rows
            to all b rows ((B, B) without gathering).
    """

    loss: Tensor
    loss_a_to_b: Tensor
    loss_b_to_a: Tensor
    logits_a_to_b: Tensor


def distributed_ready() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def _gather(x: Tensor) -> tuple[Tensor, list[int]]:
    """All-gather ``x`` with gradient; returns the concatenation and each rank's row count."""
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    extra = max(counts) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((extra, *x.shape[1:]))]) if extra else x
    parts = dist_nn.all_gather(padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)]), counts


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather ``x`` across processes, keeping the gradient path to every process.

    Processes may hold different numbers of rows: sizes are gathered first, each
    tensor is padded to the longest, gathered, and trimmed back.

    Args:
        x: (B_local, ...) this process's rows.

    Returns:
        (sum of B_local over ranks, ...) rows of every process in rank order; ``x``
        itself when no process group is initialised.
    """
    if not distributed_ready():
        return x
    return _gather(x)[0]


def contrastive_loss(a: Tensor, b: Tensor, logit_scale: Tensor, gather: bool = False) -> ContrastiveLossOutput:
    """Symmetric InfoNCE loss between paired embeddings (row i of ``a`` matches row i of ``b``).

    Args:
        a: (B, E) embeddings of one modality (normalised here).
        b: (B, E) embeddings of the other modality (normalised here).
        logit_scale: scalar tensor; the logits are multiplied by ``logit_scale.exp()``.
        gather: score the local rows against the rows of every process (see the
            module docstring); ignored when no process group is initialised. A
            process may then hold zero rows (its loss is a graph-connected zero).

    Returns:
        :class:`ContrastiveLossOutput`.

    Raises:
        ValueError: when ``a`` and ``b`` are not 2-D of the same shape, or there is no row
            (no row on any process when gathering).
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"contrastive loss: expected a and b of the same shape (B, E), "
            f"received a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=a.dtype, device=a.device).exp()
    local = a.shape[0]
    if gather and distributed_ready():
        all_a, counts = _gather(a)
        all_b = gather_with_grad(b)
        offset = sum(counts[: dist.get_rank()])
    else:
        all_a, all_b, counts, offset = a, b, [local], 0
    if sum(counts) < 1:
        raise ValueError(f"contrastive loss: expected at least 1 row, received a of shape {tuple(a.shape)}")
    targets = torch.arange(offset, offset + local, device=a.device)
    logits_a = scale * a @ all_b.T
    logits_b = scale * b @ all_a.T
    # Sum / count: a process with no local row contributes 0 (still in the graph).
    loss_a = F.cross_entropy(logits_a, targets, reduction="sum") / max(local, 1)
    loss_b = F.cross_entropy(logits_b, targets, reduction="sum") / max(local, 1)
    return ContrastiveLossOutput((loss_a + loss_b) / 2, loss_a, loss_b, logits_a)


class ContrastiveLoss(nn.Module):
    """CLIP loss with a learnable temperature.

    Args:
        init_temperature: initial temperature T; the logit scale starts at log(1 / T).
        max_logit_scale: upper bound of exp(logit_scale) (CLIP: 100, i.e. T >= 0.01).
        gather: gather embeddings across processes (distributed training).

    Inputs: a (B, E), b (B, E). Returns :class:`ContrastiveLossOutput`.

    Raises:
        ValueError: on ``init_temperature <= 0`` or ``max_logit_scale <= 1``.
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0, gather: bool = False) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"contrastive loss: expected init_temperature > 0, received {init_temperature}")
        if not max_logit_scale > 1:
            raise ValueError(f"contrastive loss: expected max_logit_scale > 1, received {max_logit_scale}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_logit_scale)
        self.gather = gather

    @property
    def clamped_logit_scale(self) -> Tensor:
        """Scalar logit scale clamped to ``log(max_logit_scale)`` (differentiable below the bound)."""
        return self.logit_scale.clamp(max=self.max_log_scale)

    @property
    def temperature(self) -> float:
        """Effective temperature ``1 / exp(clamped logit scale)``."""
        return float(torch.exp(-self.clamped_logit_scale.detach()))

    def forward(self, a: Tensor, b: Tensor) -> ContrastiveLossOutput:
        return contrastive_loss(a, b, self.clamped_logit_scale, gather=self.gather)

"""Contrastive loss: hand-computed values, symmetry, temperature clamp, and a 2-process gather run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medfusion.losses import ContrastiveLoss, contrastive_loss, gather_with_grad


def test_matches_hand_computation_on_3x3() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    # Cosines a_i . b_j after normalisation, times the scale exp(log 10) = 10.
    logits = [[10 * 1.0, 10 * r, 10 * 0.0], [10 * 0.0, 10 * r, 10 * 1.0], [10 * r, 10 * 1.0, 10 * r]]

    def logsumexp(values: list[float]) -> float:
        return math.log(sum(math.exp(v) for v in values))

    a_to_b = sum(logsumexp(logits[i]) - logits[i][i] for i in range(3)) / 3
    b_to_a = sum(logsumexp([logits[i][j] for i in range(3)]) - logits[j][j] for j in range(3)) / 3
    out = contrastive_loss(a, b, torch.tensor(math.log(10.0)))
    assert out.loss_a_to_b.item() == pytest.approx(a_to_b, rel=1e-5)
    assert out.loss_b_to_a.item() == pytest.approx(b_to_a, rel=1e-5)
    assert out.loss.item() == pytest.approx((a_to_b + b_to_a) / 2, rel=1e-5)
    torch.testing.assert_close(out.logits_a_to_b, torch.tensor(logits))


def test_symmetric_and_lower_when_aligned() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(math.log(1 / 0.07))
    one, two = contrastive_loss(a, b, scale), contrastive_loss(b, a, scale)
    torch.testing.assert_close(one.loss, two.loss)
    torch.testing.assert_close(one.loss_a_to_b, two.loss_b_to_a)
    aligned = contrastive_loss(a, a, scale).loss
    shuffled = contrastive_loss(a, a[torch.tensor([1, 2, 3, 4, 5, 0])], scale).loss
    assert aligned < shuffled


def test_module_init_and_temperature_clamp() -> None:
    loss = ContrastiveLoss()
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss.temperature == pytest.approx(0.07)
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    assert loss.clamped_logit_scale.exp().item() == pytest.approx(100.0)
    assert loss.temperature == pytest.approx(0.01)
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(loss(a, b).loss, contrastive_loss(a, b, torch.tensor(math.log(100.0))).loss)


def test_temperature_gets_a_gradient_below_the_clamp() -> None:
    loss = ContrastiveLoss(init_temperature=0.5)
    torch.manual_seed(0)
    loss(torch.randn(4, 3), torch.randn(4, 3)).loss.backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad != 0


def test_errors() -> None:
    scale = torch.tensor(0.0)
    with pytest.raises(ValueError, match=r"received a \(3, 4\) and b \(3, 5\)"):
        contrastive_loss(torch.zeros(3, 4), torch.zeros(3, 5), scale)
    with pytest.raises(ValueError, match=r"received a \(4,\) and b \(4,\)"):
        contrastive_loss(torch.zeros(4), torch.zeros(4), scale)
    with pytest.raises(ValueError, match="at least 1 row"):
        contrastive_loss(torch.zeros(0, 4), torch.zeros(0, 4), scale)
    with pytest.raises(ValueError, match="init_temperature > 0, received 0"):
        ContrastiveLoss(init_temperature=0)
    with pytest.raises(ValueError, match="max_logit_scale > 1, received 1.0"):
        ContrastiveLoss(max_logit_scale=1.0)


def test_gather_is_identity_without_process_group() -> None:
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x


WORLD = 2
BATCH = 8


def full_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 5, generator=g), torch.randn(BATCH, 5, generator=g)


def distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    """One process: half of the batch with gather=True, plus an unequal-size gather."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        a, b = full_batch()
        half = BATCH // WORLD
        local_a = a[rank * half:(rank + 1) * half].clone().requires_grad_()
        local_b = b[rank * half:(rank + 1) * half].clone().requires_grad_()
        scale = torch.tensor(math.log(5.0), requires_grad=True)
        out = contrastive_loss(local_a, local_b, scale, gather=True)
        out.loss.backward()

        rows = 3 if rank == 0 else 5  # unequal sizes
        x = (100.0 * rank + torch.arange(rows * 2, dtype=torch.float32).view(rows, 2)).requires_grad_()
        gathered = gather_with_grad(x)
        (gathered * (rank + 1)).sum().backward()

        # All rows on rank 1, none on rank 0.
        lopsided_a = a.clone() if rank == 1 else a[:0].clone()
        lopsided_b = b.clone() if rank == 1 else b[:0].clone()
        lopsided = contrastive_loss(lopsided_a, lopsided_b, torch.tensor(math.log(5.0)), gather=True)
        torch.save(
            {
                "loss": out.loss.detach(), "grad_a": local_a.grad, "grad_b": local_b.grad, "grad_scale": scale.grad,
                "logits_shape": tuple(out.logits_a_to_b.shape), "gathered": gathered.detach(), "grad_x": x.grad,
                "lopsided": lopsided.loss.detach(),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gather_equals_single_process_loss(tmp_path: Path) -> None:
    mp.spawn(distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    a, b = full_batch()
    a.requires_grad_()
    b.requires_grad_()
    scale = torch.tensor(math.log(5.0), requires_grad=True)
    single = contrastive_loss(a, b, scale)
    single.loss.backward()

    # DDP averages the per-process losses: the mean equals the single-process loss.
    mean_loss = sum(r["loss"] for r in results) / WORLD
    torch.testing.assert_close(mean_loss, single.loss.detach(), atol=1e-6, rtol=0)
    assert results[0]["logits_shape"] == (BATCH // WORLD, BATCH)
    # The all-gather backward sums every process's gradient into the local rows, so each
    # process sees WORLD x the single-process gradient of its rows; DDP's averaging of
    # parameter gradients (division by WORLD) then gives exactly the single-process gradient.
    half = BATCH // WORLD
    for rank, r in enumerate(results):
        rows = slice(rank * half, (rank + 1) * half)
        torch.testing.assert_close(r["grad_a"] / WORLD, a.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r["grad_b"] / WORLD, b.grad[rows], atol=1e-6, rtol=1e-5)
    # The scale is not gathered: the mean of the local gradients is the single-process one.
    torch.testing.assert_close(sum(r["grad_scale"] for r in results) / WORLD, scale.grad, atol=1e-6, rtol=1e-5)

    # Unequal sizes (3 and 5 rows): concatenated in rank order, gradient from both processes (1 + 2).
    expected = torch.cat([torch.arange(6.0).view(3, 2), 100.0 + torch.arange(10.0).view(5, 2)])
    for r in results:
        torch.testing.assert_close(r["gathered"], expected)
    torch.testing.assert_close(results[0]["grad_x"], torch.full((3, 2), 3.0))
    torch.testing.assert_close(results[1]["grad_x"], torch.full((5, 2), 3.0))

    # A process with no row contributes 0; the one holding the whole batch gives the full loss.
    assert results[0]["lopsided"].item() == 0.0
    torch.testing.assert_close(results[1]["lopsided"], single.loss.detach(), atol=1e-6, rtol=0)

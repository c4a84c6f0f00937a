from __future__ import annotations

import pytest
import torch

from medfusion.metrics import accuracy, binary_auroc


def test_auroc_hand_computed() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1 + 0 + 1 + 1 = 3 of 4
    assert binary_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)


def test_auroc_ties_count_one_half() -> None:
    # positives {0.5, 0.9} vs negatives {0.5, 0.5}: 0.5 + 0.5 + 1 + 1 = 3 of 4
    assert binary_auroc(torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.75)


def test_auroc_perfect_and_reversed() -> None:
    scores, labels = torch.tensor([0.2, 0.9, 0.1, 0.7]), torch.tensor([0, 1, 0, 1])
    assert binary_auroc(scores, labels) == 1.0
    assert binary_auroc(-scores, labels) == 0.0


def test_auroc_errors() -> None:
    with pytest.raises(ValueError, match="needs both classes"):
        binary_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="equal shape"):
        binary_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 0, 1]))


def test_accuracy() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)

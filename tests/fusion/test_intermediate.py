"""Intermediate fusion: normalised features concatenated with presence, absent rows zeroed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medfusion.fusion.intermediate import IntermediateFusion
from medfusion.types import EncoderOutput


def features(pooled: torch.Tensor) -> EncoderOutput:
    return EncoderOutput(pooled, pooled.unsqueeze(1), torch.ones(pooled.shape[0], 1, dtype=torch.bool))


def test_fused_is_concatenation_with_presence() -> None:
    fusion = IntermediateFusion({"a": 2, "b": 1}, num_classes=2, norm="none")
    out = fusion({"a": features(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), "b": features(torch.tensor([[5.0], [6.0]]))},
                 {"a": torch.tensor([True, False])})
    torch.testing.assert_close(out.fused, torch.tensor([[1.0, 2.0, 5.0, 1.0, 1.0], [0.0, 0.0, 6.0, 0.0, 1.0]]))
    assert out.logits is None and fusion.out_dim == 5


def test_l2_and_layernorm_normalise_each_modality() -> None:
    x = torch.tensor([[3.0, 4.0]])
    l2 = IntermediateFusion({"a": 2}, num_classes=2, norm="l2")({"a": features(x)}, {}).fused
    torch.testing.assert_close(l2[:, :2], torch.tensor([[0.6, 0.8]]))
    ln = IntermediateFusion({"a": 2}, num_classes=2, norm="layernorm")({"a": features(x)}, {}).fused
    torch.testing.assert_close(ln[:, :2], F.layer_norm(x, (2,)))


def test_absent_rows_do_not_matter_and_projection_sizes() -> None:
    torch.manual_seed(0)
    fusion = IntermediateFusion({"a": 4, "b": 3}, num_classes=2, hidden=6).eval()
    present = {"a": torch.tensor([True, False, True])}
    a = torch.randn(3, 4)
    b = torch.randn(3, 3)
    changed = a.clone()
    changed[1] = float("nan")
    one = fusion({"a": features(a), "b": features(b)}, present).fused
    two = fusion({"a": features(changed), "b": features(b)}, present).fused
    torch.testing.assert_close(one, two)
    assert one.shape == (3, 6)


def test_errors() -> None:
    fusion = IntermediateFusion({"a": 2}, num_classes=2)
    with pytest.raises(ValueError, match=r"expected features for \['a'\], received \['b'\]"):
        fusion({"b": features(torch.zeros(1, 2))}, {})
    with pytest.raises(ValueError, match=r"a features must have size 2, received shape \(1, 3\)"):
        fusion({"a": features(torch.zeros(1, 3))}, {})
    with pytest.raises(ValueError, match="norm"):
        IntermediateFusion({"a": 2}, num_classes=2, norm="batch")

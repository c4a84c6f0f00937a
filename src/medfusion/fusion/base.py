"""Fusion base class, the fusion registry and feature normalisation.

Every fusion strategy takes ``{modality: EncoderOutput}`` (early fusion: raw inputs)
and ``present`` ({modality: (B,) bool}) and returns one :class:`~medfusion.types.FusionOutput`.
Modalities are always iterated in sorted order. A sample's absent modality must not
change any output: its rows are excluded by masking (``torch.where``), never by
trusting their values.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.registry import Registry
from medfusion.types import EncoderOutput

FUSIONS = Registry("fusion")

NormKind = Literal["layernorm", "l2", "none"]


class FeatureNorm(nn.Module):
    """Normalises features before fusion, as the seed advises.

    Args:
        dim: feature size D.
        kind: ``"layernorm"`` (learnable affine), ``"l2"`` (unit length) or ``"none"``.

    Inputs: x (..., D). Returns (..., D).

    Raises:
        ValueError: on an unknown ``kind``.
    """

    def __init__(self, dim: int, kind: NormKind = "layernorm") -> None:
        super().__init__()
        if kind not in ("layernorm", "l2", "none"):
            raise ValueError(f"feature norm: expected 'layernorm', 'l2' or 'none', received {kind!r}")
        self.kind = kind
        self.norm = nn.LayerNorm(dim) if kind == "layernorm" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "l2":
            return F.normalize(x, dim=-1)
        return self.norm(x)


class Fusion(nn.Module):
    """Base class of the fusion strategies.

    Attributes:
        modalities: sorted modality keys the fusion was built for.
        out_dim: size F of ``FusionOutput.fused`` read by the classification head, or
            ``None`` when the strategy produces logits itself (late fusion).
        takes_raw_inputs: True for early fusion, which reads raw modality tensors.
    """

    modalities: list[str]
    out_dim: int | None
    takes_raw_inputs: bool = False

    def presence_matrix(self, present: dict[str, Tensor], batch_size: int, device: torch.device) -> Tensor:
        """(B, M) bool presence in sorted modality order; a missing key means present."""
        columns = [
            present[m] if m in present else torch.ones(batch_size, dtype=torch.bool, device=device)
            for m in self.modalities
        ]
        return torch.stack(columns, dim=1)

    def auxiliary_losses(self, output, present: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Extra training losses of the strategy by name (unimodal heads, contrastive); none by default."""
        return {}


def zero_absent(x: Tensor, present: Tensor) -> Tensor:
    """Rows of absent samples set to zero without reading their values.

    Args:
        x: (B, ...).
        present: (B,) bool.
    """
    shape = (-1,) + (1,) * (x.ndim - 1)
    return torch.where(present.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))


def check_features(name: str, expected: list[str], features: dict[str, EncoderOutput], dims: dict[str, int]) -> None:
    """Check that ``features`` holds exactly the expected modalities with the built sizes.

    Raises:
        ValueError: naming the strategy, the expected and the received modalities or sizes.
    """
    if sorted(features) != expected:
        raise ValueError(f"{name} fusion: expected features for {expected}, received {sorted(features)}")
    for m in expected:
        if features[m].pooled.shape[-1] != dims[m]:
            raise ValueError(
                f"{name} fusion: {m} features must have size {dims[m]}, "
                f"received shape {tuple(features[m].pooled.shape)}"
            )

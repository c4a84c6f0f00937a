"""Intermediate (feature-level) fusion: normalised encoder features concatenated, one head.

The common practical baseline (HAIM, Soenksen et al. 2022; MedFuse "joint" fusion,
Hayat et al. 2022): each encoder's pooled vector is normalised, zeroed when the
modality is absent, concatenated with the (B, M) presence indicator and optionally
projected by an MLP before the classification head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfusion.fusion.base import FUSIONS, FeatureNorm, Fusion, NormKind, check_features, zero_absent
from medfusion.types import EncoderOutput, FusionOutput


@FUSIONS.register("intermediate")
class IntermediateFusion(Fusion):
    """Concatenation of normalised pooled encoder features.

    Args:
        dims: {modality: encoder out_dim}.
        num_classes: K (the classification head is applied by the classifier).
        norm: feature normalisation before concatenation.
        hidden: width of an optional projection MLP (0: no projection).
        dropout: dropout of the projection.

    Output: ``FusionOutput.fused`` (B, sum(dims) + M), or (B, hidden) with a projection.
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        *,
        norm: NormKind = "layernorm",
        hidden: int = 0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("intermediate fusion: expected at least one modality, received none")
        if hidden < 0:
            raise ValueError(f"intermediate fusion: expected hidden >= 0, received {hidden}")
        self.modalities = sorted(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.norms = nn.ModuleDict({m: FeatureNorm(d, norm) for m, d in dims.items()})
        width = sum(dims.values()) + len(dims)
        self.projection = (
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)) if hidden else nn.Identity()
        )
        self.out_dim = hidden or width

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor], return_attention: bool = False
    ) -> FusionOutput:
        check_features("intermediate", self.modalities, features, self.dims)
        first = features[self.modalities[0]].pooled
        presence = self.presence_matrix(present, first.shape[0], first.device)
        parts = [
            zero_absent(self.norms[m](zero_absent(features[m].pooled, presence[:, i])), presence[:, i])
            for i, m in enumerate(self.modalities)
        ]
        parts.append(presence.to(first.dtype))
        return FusionOutput(fused=self.projection(torch.cat(parts, dim=1)))

"""Early (input-level) fusion: fixed featurisations concatenated, one network.

Each modality's raw input is reduced by a cheap fixed featurisation
(:mod:`medfusion.fusion.featurizers`), normalised, concatenated with an explicit (B, M)
presence indicator (missing modalities contribute zeros), and read by one MLP. No
learned per-modality encoder: the fastest strategy, for real-time triage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfusion.fusion.base import FUSIONS, FeatureNorm, Fusion, NormKind, zero_absent
from medfusion.types import FusionOutput


@FUSIONS.register("early")
class EarlyFusion(Fusion):
    """Input-level fusion.

    Args:
        featurizers: {modality: featurizer module with ``out_dim``} (see featurizers.py).
        num_classes: K (the classification head is applied by the classifier).
        hidden: width of the fusion network; ``out_dim`` of the fused vector.
        depth: number of hidden layers (>= 1).
        dropout: dropout between layers.
        norm: per-modality feature normalisation before concatenation.

    Inputs: ``inputs`` {modality: raw tensor}, ``present`` {modality: (B,) bool},
    ``masks`` {modality: token/value mask}. Output: ``FusionOutput.fused`` (B, hidden).

    Raises:
        ValueError: on an empty featurizer dict, bad sizes, or a modality missing from inputs.
    """

    takes_raw_inputs = True

    def __init__(
        self,
        featurizers: dict[str, nn.Module],
        num_classes: int,
        *,
        hidden: int = 128,
        depth: int = 2,
        dropout: float = 0.1,
        norm: NormKind = "layernorm",
    ) -> None:
        super().__init__()
        if not featurizers:
            raise ValueError("early fusion: expected at least one modality featurizer, received none")
        if hidden < 1 or depth < 1:
            raise ValueError(f"early fusion: expected hidden >= 1 and depth >= 1, received {hidden}, {depth}")
        self.modalities = sorted(featurizers)
        self.featurizers = nn.ModuleDict(featurizers)
        self.norms = nn.ModuleDict({m: FeatureNorm(f.out_dim, norm) for m, f in featurizers.items()})
        width = sum(f.out_dim for f in featurizers.values()) + len(self.modalities)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        self.network = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.out_dim = hidden

    def featurize(
        self, inputs: dict[str, Tensor], present: dict[str, Tensor], masks: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Concatenated normalised features and presence indicators (B, sum out_dim + M).

        A modality may be left out of ``inputs`` only when ``present`` marks it absent
        for every sample; it then contributes zeros.

        Raises:
            ValueError: on an unknown modality, or a left-out modality not marked absent.
        """
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown or not inputs:
            raise ValueError(f"early fusion: expected inputs for {self.modalities}, received {sorted(inputs)}")
        masks = masks or {}
        first = next(iter(inputs.values()))
        batch, device = first.shape[0], first.device
        absent = torch.zeros(batch, dtype=torch.bool, device=device)
        left_out = {m: absent for m in self.modalities if m not in inputs}
        presence = self.presence_matrix({**left_out, **present}, batch, device)
        parts = []
        for i, m in enumerate(self.modalities):
            if m not in inputs:
                if presence[:, i].any():
                    raise ValueError(f"early fusion: {m} is marked present but has no input tensor")
                parts.append(torch.zeros(batch, self.featurizers[m].out_dim, device=device))
                continue
            x = zero_absent(inputs[m], presence[:, i])  # absent rows never reach the network
            features = self.featurizers[m](x, masks.get(m), presence[:, i])
            parts.append(zero_absent(self.norms[m](features), presence[:, i]))
        parts.append(presence.to(parts[0].dtype))
        return torch.cat(parts, dim=1)

    def forward(
        self,
        inputs: dict[str, Tensor],
        present: dict[str, Tensor],
        masks: dict[str, Tensor] | None = None,
        return_attention: bool = False,
    ) -> FusionOutput:
        return FusionOutput(fused=self.network(self.featurize(inputs, present, masks)))

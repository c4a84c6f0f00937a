"""A multimodal classifier assembled from injected parts: encoders, a fusion, a head.

After TorchMultimodal's ``LateFusion(encoders, fusion_module, head_module)``: the
classifier builds nothing itself (see :func:`medfusion.models.factory.build_model`).
It validates the batch, applies modality dropout in training, zeroes the rows of absent
modalities so no encoder ever reads them, encodes each present modality, fuses, and
applies the head to the fused vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.fusion.base import Fusion, zero_absent
from medfusion.types import EncoderOutput, FusionOutput, MultimodalBatch
from medfusion.validation import check_any_present, check_mask


class ClassificationHead(nn.Module):
    """Linear (or one-hidden-layer MLP) classifier over the fused vector.

    Inputs: x (B, in_dim). Returns logits (B, num_classes).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"head: expected num_classes >= 2, received {num_classes}")
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def drop_modalities(present: dict[str, Tensor], p: float, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Modality dropout: mark each present modality absent with probability ``p``.

    A sample keeps at least one of its present modalities (a random one is restored
    when all were dropped).

    Args:
        present: {modality: (B,) bool}.
        p: drop probability in [0, 1).

    Returns:
        {modality: (B,) bool}, a subset of ``present``.
    """
    names = sorted(present)
    stacked = torch.stack([present[m] for m in names], dim=1)
    device = stacked.device
    keep = torch.rand(stacked.shape, generator=generator, device=device) >= p
    dropped = stacked & keep
    lost = ~dropped.any(dim=1) & stacked.any(dim=1)
    if lost.any():
        scores = torch.rand(stacked.shape, generator=generator, device=device).masked_fill(~stacked, -1.0)
        restore = F.one_hot(scores.argmax(dim=1), len(names)).bool() & lost.unsqueeze(1)
        dropped = dropped | restore
    return {m: dropped[:, i] for i, m in enumerate(names)}


class MultimodalClassifier(nn.Module):
    """Encoders + fusion + head.

    Args:
        encoders: {modality: Encoder}; empty for early fusion, which reads raw inputs.
        fusion: a :class:`~medfusion.fusion.base.Fusion`.
        head: maps ``FusionOutput.fused`` to logits; ``None`` when the fusion makes
            logits itself (late fusion).
        modality_dropout: probability of hiding each present modality of a sample in
            training (robustness to missing modalities).
        auxiliary_loss_weight: weight of the fusion's own losses (unimodal heads,
            contrastive) in :meth:`loss`.

    Raises:
        ValueError: when encoders and fusion disagree on modalities, or the head is
            missing/superfluous.
    """

    def __init__(
        self,
        encoders: dict[str, nn.Module],
        fusion: Fusion,
        head: nn.Module | None,
        *,
        modality_dropout: float = 0.0,
        auxiliary_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not fusion.takes_raw_inputs and sorted(encoders) != fusion.modalities:
            raise ValueError(
                f"classifier: encoders for {sorted(encoders)} but fusion built for {fusion.modalities}"
            )
        if fusion.takes_raw_inputs and encoders:
            raise ValueError("classifier: early fusion reads raw inputs; expected no encoders")
        if (fusion.out_dim is None) != (head is None):
            raise ValueError(
                "classifier: a head is needed exactly when the fusion produces a fused vector "
                f"(fusion out_dim={fusion.out_dim}, head={'given' if head is not None else 'None'})"
            )
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"classifier: expected modality_dropout in [0, 1), received {modality_dropout}")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.head = head
        self.modality_dropout = modality_dropout
        self.auxiliary_loss_weight = auxiliary_loss_weight

    @property
    def modalities(self) -> list[str]:
        """Sorted modalities the model was built for."""
        return self.fusion.modalities

    def presence(self, batch: MultimodalBatch, require_any: bool = True) -> dict[str, Tensor]:
        """Validated {modality: (B,) bool} for every modality of the model.

        A modality missing from ``batch.inputs`` is absent for every sample.

        Raises:
            ValueError: on a modality the model was not built for, a bad mask, or (with
                ``require_any``) a sample with no modality present.
        """
        unknown = sorted(set(batch.inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f"model was built for modalities {self.modalities}; received unknown {unknown}")
        if not batch.inputs:
            raise ValueError(f"batch has no inputs; expected some of {self.modalities}")
        size = batch.batch_size
        device = next(iter(batch.inputs.values())).device
        present = {}
        for m in self.modalities:
            if m not in batch.inputs:
                present[m] = torch.zeros(size, dtype=torch.bool, device=device)
                continue
            if batch.inputs[m].shape[0] != size:
                raise ValueError(
                    f"{m}: expected batch size {size} (first dim), received shape {tuple(batch.inputs[m].shape)}"
                )
            present[m] = batch.presence(m)
            check_mask(m, present[m], (size,), "presence mask (B,)")
        if require_any:
            check_any_present(present)
        return present

    def encode(self, batch: MultimodalBatch, present: dict[str, Tensor]) -> dict[str, EncoderOutput]:
        """{modality: EncoderOutput}; an absent-everywhere modality gets an all-masked placeholder."""
        features = {}
        for m in self.modalities:
            encoder = self.encoders[m]
            if not present[m].any():
                features[m] = absent_output(present[m].shape[0], encoder.out_dim, present[m].device)
                continue
            x = zero_absent(batch.inputs[m], present[m])
            features[m] = encoder(x, batch.masks.get(m), present[m])
        return features

    def forward(self, batch: MultimodalBatch, return_attention: bool = False) -> FusionOutput:
        """Fused prediction of a batch (modality dropout applies in training).

        Returns:
            FusionOutput with ``logits`` (B, K) always set.
        """
        return self.fuse(batch, self.training_presence(batch), return_attention=return_attention)

    def loss(self, batch: MultimodalBatch, class_weights: Tensor | None = None) -> tuple[FusionOutput, dict[str, Tensor]]:
        """Forward pass and training losses by name: ``classification``, the fusion's
        auxiliary losses (unimodal heads, contrastive) and their weighted ``total``.

        Args:
            batch: a labelled batch.
            class_weights: (K,) weights of the classification cross-entropy (class imbalance).

        Raises:
            ValueError: when the batch has no labels.
        """
        present = self.training_presence(batch)
        output = self.fuse(batch, present)
        return output, self.losses(output, present, batch.labels, class_weights)

    def losses(self, output: FusionOutput, present: dict[str, Tensor], labels: Tensor | None,
               class_weights: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms of a fused output: ``classification``, auxiliary terms, weighted ``total``.

        Raises:
            ValueError: when ``labels`` is None.
        """
        if labels is None:
            raise ValueError("loss: the batch has no labels")
        losses = {"classification": F.cross_entropy(output.logits, labels, weight=class_weights)}
        auxiliary = self.fusion.auxiliary_losses(output, present, labels)
        losses.update(auxiliary)
        total = losses["classification"]
        for value in auxiliary.values():
            total = total + self.auxiliary_loss_weight * value
        losses["total"] = total
        return losses

    def training_presence(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """Validated presence, with modality dropout applied in training mode."""
        present = self.presence(batch)
        if self.training and self.modality_dropout > 0:
            present = drop_modalities(present, self.modality_dropout)
        return present

    def fuse(self, batch: MultimodalBatch, present: dict[str, Tensor],
             features: dict[str, EncoderOutput] | None = None, return_attention: bool = False) -> FusionOutput:
        """Fuse a batch under ``present``; ``features`` (from :meth:`encode`) avoids encoding twice."""
        if self.fusion.takes_raw_inputs:
            output = self.fusion(batch.inputs, present, batch.masks, return_attention)
        else:
            features = self.encode(batch, present) if features is None else features
            output = self.fusion(features, present, return_attention)
        if self.head is not None:
            output = output._replace(logits=self.head(output.fused))
        return output


def absent_output(batch_size: int, dim: int, device: torch.device) -> EncoderOutput:
    """Encoder output of a modality absent for the whole batch: zeros and one masked token."""
    return EncoderOutput(
        pooled=torch.zeros(batch_size, dim, device=device),
        tokens=torch.zeros(batch_size, 1, dim, device=device),
        token_mask=torch.zeros(batch_size, 1, dtype=torch.bool, device=device),
    )

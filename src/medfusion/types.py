"""The data contract shared by every part of medfusion.

A batch is a mapping modality -> tensor plus, per modality, a (B,) boolean mask of
which samples actually have that modality. An absent modality is marked absent,
never filled with values a model could mistake for data: its rows may hold anything
and every model must ignore them.

Input layout per modality (B = batch):

| modality | tensor | dtype | optional mask |
|---|---|---|---|
| text   | token ids (B, L)           | int64  | (B, L) bool, True = real token |
| image  | (B, C, H, W)               | float  | — |
| volume | (B, C, D, H, W)            | float  | — |
| signal | (B, C, T)                  | float  | (B, T) bool, True = real sample |
| vitals | (B, F)                     | float  | (B, F) bool, True = observed value |
| video  | (B, T, C, H, W)            | float  | (B, T) bool, True = real frame |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

import torch
from torch import Tensor


class Modality(str, Enum):
    """The modalities medfusion knows. Values are the keys used in batches and configs."""

    TEXT = "text"
    IMAGE = "image"
    VOLUME = "volume"
    SIGNAL = "signal"
    VITALS = "vitals"
    VIDEO = "video"

    def __str__(self) -> str:
        return self.value


MODALITIES: tuple[str, ...] = tuple(m.value for m in Modality)


def check_modality(name: str) -> str:
    """Return ``name`` as a modality key.

    Raises:
        ValueError: if ``name`` is not one of :data:`MODALITIES`.
    """
    value = name.value if isinstance(name, Modality) else name
    if value not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; expected one of {list(MODALITIES)}")
    return value


class EncoderOutput(NamedTuple):
    """What every encoder returns.

    Attributes:
        pooled: (B, D) one vector per sample.
        tokens: (B, N, D) token sequence (words, patches, time steps, ...).
        token_mask: (B, N) bool, True for real tokens, False for padding.
    """

    pooled: Tensor
    tokens: Tensor
    token_mask: Tensor


class FusionOutput(NamedTuple):
    """What every fusion strategy (and the classifier around it) returns.

    Fields that do not apply to a strategy are ``None``.

    Attributes:
        logits: (B, K) class logits of the fused prediction.
        per_modality_logits: {modality: (B, K)} unimodal logits (late fusion); rows of
            absent samples are zero.
        modality_weights: (B, M) weight of each modality (sorted modality order) in the
            fused prediction; zero for absent modalities, rows sum to 1.
        attention: {"query->key": (layers, B, heads, Nq, Nk)} attention maps.
        embeddings: {modality: (B, E)} L2-normalised joint-space embeddings.
        fused: (B, F) the fused representation a classification head reads.
    """

    logits: Tensor | None = None
    per_modality_logits: dict[str, Tensor] | None = None
    modality_weights: Tensor | None = None
    attention: dict[str, Tensor] | None = None
    embeddings: dict[str, Tensor] | None = None
    fused: Tensor | None = None


@dataclass
class MultimodalBatch:
    """A batch of samples, each with any subset of modalities.

    Attributes:
        inputs: {modality: tensor} laid out as in the module table.
        present: {modality: (B,) bool}; a missing key means present for every sample.
        masks: {modality: token/value mask} where sequences are padded or values missing.
        labels: (B,) int64 class labels, if known.
    """

    inputs: dict[str, Tensor]
    present: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None

    @property
    def modalities(self) -> list[str]:
        """Modality keys in sorted order."""
        return sorted(self.inputs)

    @property
    def batch_size(self) -> int:
        """Number of samples, read from the first modality."""
        if not self.inputs:
            raise ValueError("MultimodalBatch has no modality inputs")
        return next(iter(self.inputs.values())).shape[0]

    def presence(self, modality: str) -> Tensor:
        """(B,) bool presence mask of ``modality`` (all True when not given)."""
        if modality in self.present:
            return self.present[modality]
        x = self.inputs[modality]
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)

    def select(self, rows: Tensor) -> MultimodalBatch:
        """The samples where ``rows`` ((B,) bool or int indices) selects, in order."""
        return MultimodalBatch(
            inputs={k: v[rows] for k, v in self.inputs.items()},
            present={k: v[rows] for k, v in self.present.items()},
            masks={k: v[rows] for k, v in self.masks.items()},
            labels=None if self.labels is None else self.labels[rows],
        )

    def to(self, device: torch.device | str) -> MultimodalBatch:
        """Copy of the batch with every tensor moved to ``device``."""
        return MultimodalBatch(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            present={k: v.to(device) for k, v in self.present.items()},
            masks={k: v.to(device) for k, v in self.masks.items()},
            labels=None if self.labels is None else self.labels.to(device),
        )

"""Encoder base class, the per-modality encoder registries and shared pooling helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from medfusion.registry import Registry
from medfusion.types import MODALITIES, EncoderOutput

#: One registry per modality: ``ENCODERS["image"].build("cnn", in_channels=1)``.
ENCODERS: dict[str, Registry] = {m: Registry(f"{m} encoder") for m in MODALITIES}


def register_encoder(modality: str, name: str, **defaults):
    """Decorator registering an encoder class for ``modality`` under ``name``."""
    return ENCODERS[modality].register(name, **defaults)


class Encoder(nn.Module, ABC):
    """One modality's encoder.

    Subclasses set ``modality`` and ``out_dim`` and implement :meth:`validate` and
    :meth:`encode`. ``forward`` validates, then encodes.
    """

    modality: str
    out_dim: int

    @abstractmethod
    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """Raise ``ValueError`` naming the modality, expected and received value on bad input.

        Args:
            x: the modality's input tensor.
            mask: optional token/value mask.
            present: (B,) bool; values of absent rows are not checked.
        """

    @abstractmethod
    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode a validated input into pooled (B, D) and tokens (B, N, D) + mask (B, N)."""

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> EncoderOutput:
        self.validate(x, mask, present)
        return self.encode(x, mask)


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens.

    Args:
        tokens: (B, N, D).
        mask: (B, N) bool, True for real tokens.

    Returns:
        (B, D); zero for a row with no real token.
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def all_tokens(tokens: Tensor) -> Tensor:
    """(B, N) all-True mask for a token tensor (B, N, D)."""
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

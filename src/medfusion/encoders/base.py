"""Encoder base class, the per-modality encoder registries and shared pooling helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
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


CONVOLUTIONS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def check_stage_widths(kind: str, widths, norm_groups: int) -> tuple[int, ...]:
    """Stage widths as a tuple, each a positive int divisible by ``norm_groups``.

    Raises:
        ValueError: naming ``kind`` (e.g. "image encoder"), the expected and received widths.
    """
    widths = tuple(widths)
    if not widths:
        raise ValueError(f"{kind}: expected at least one stage width, received widths=()")
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"{kind}: expected each of widths to be an int >= 1, received {width!r}")
        if width % norm_groups:
            raise ValueError(f"{kind}: expected norm_groups={norm_groups} to divide every width, "
                             f"received widths={list(widths)}")
    return widths


class ResidualBlock(nn.Module):
    """Stride-2 residual block (He et al. 2016) with GroupNorm, for 1-D, 2-D or 3-D inputs.

    conv(stride 2)-norm-GELU-conv-norm plus a strided 1x1 projection shortcut, then GELU;
    halves every spatial/temporal side (ceil).

    Args:
        spatial_dims: 1 (signals), 2 (images) or 3 (volumes).
        in_channels, out_channels: channel counts.
        groups: GroupNorm groups; must divide ``out_channels``.
        kernel_size: odd kernel side.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, groups: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        conv, pad = CONVOLUTIONS[spatial_dims], kernel_size // 2
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=2, padding=pad, bias=False)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = conv(out_channels, out_channels, kernel_size, padding=pad, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride=2, bias=False),
                                      nn.GroupNorm(groups, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.norm1(self.conv1(x)))
        return F.gelu(self.norm2(self.conv2(h)) + self.shortcut(x))

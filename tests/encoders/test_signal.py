"""Signal encoders: the 1-D residual CNN ("resnet1d") and the packed (bi)LSTM ("lstm")."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from factories import ENCODER_PARAMS, assert_all_parameters_have_gradients

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.signal import SignalLSTM, SignalResNet1d, downsampled_mask, validate_signal

LEADS, DIM = 3, 16


def build(name: str, **overrides):
    torch.manual_seed(0)
    return ENCODERS["signal"].build(name, **(copy.deepcopy(ENCODER_PARAMS[("signal", name)]) | overrides))


def prefix_mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def padded_batch(lengths: list[int], steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, LEADS, steps) with zero padding after each valid prefix, and the prefix mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), LEADS, steps, generator=generator)
    mask = prefix_mask(lengths, steps)
    return x * mask.unsqueeze(1), mask


def garbage_padding(x: torch.Tensor, mask: torch.Tensor, seed: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = 100 * torch.randn(x.shape, generator=generator)
    return torch.where(mask.unsqueeze(1), x, noise)


def test_registered_under_signal() -> None:
    assert {"resnet1d", "lstm"} <= set(ENCODERS["signal"].names())
    assert isinstance(build("resnet1d"), SignalResNet1d) and isinstance(build("lstm"), SignalLSTM)
    assert build("resnet1d").out_dim == DIM and build("lstm").out_dim == DIM
    assert build("resnet1d").modality == build("lstm").modality == "signal"


def test_downsampled_mask_keeps_ceil_of_length_over_factor() -> None:
    lengths = torch.tensor([0, 1, 4, 5, 8, 9])
    expected = torch.tensor([
        [False, False, False],
        [True, False, False],
        [True, False, False],
        [True, True, False],
        [True, True, False],
        [True, True, True],
    ])
    assert torch.equal(downsampled_mask(lengths, 3, 4), expected)
    assert torch.equal(downsampled_mask(lengths, 10, 1), prefix_mask(lengths.tolist(), 10))


# --- resnet1d ---------------------------------------------------------------------


def test_resnet1d_shapes_and_token_mask() -> None:
    encoder = build("resnet1d").eval()  # widths [8, 16]: two stages, stride 4
    assert encoder.stride == 4
    lengths = [50, 23, 1, 4, 5]
    x, mask = padded_batch(lengths, 50)
    out = encoder(x, mask)
    assert out.pooled.shape == (5, DIM) and out.tokens.shape == (5, 13, DIM) and out.token_mask.shape == (5, 13)
    assert out.token_mask.dtype == torch.bool
    assert out.token_mask.sum(dim=1).tolist() == [math.ceil(n / 4) for n in lengths] == [13, 6, 1, 1, 2]
    assert torch.equal(out.token_mask, prefix_mask([13, 6, 1, 1, 2], 13))
    for row, count in enumerate([13, 6, 1, 1, 2]):  # pooled: mean over the valid tokens
        torch.testing.assert_close(out.pooled[row], out.tokens[row, :count].mean(dim=0))
    unmasked = encoder(x)
    assert unmasked.token_mask.all() and unmasked.tokens.shape == (5, 13, DIM)
    torch.testing.assert_close(unmasked.pooled, unmasked.tokens.mean(dim=1))


@pytest.mark.parametrize("steps", [7, 8, 9, 33])
def test_resnet1d_token_count_is_ceil_of_length_over_stride(steps: int) -> None:
    encoder = build("resnet1d", widths=[4, 4, 8], norm_groups=2).eval()  # three stages: stride 8
    out = encoder(torch.randn(2, LEADS, steps))
    assert out.tokens.shape == (2, math.ceil(steps / 8), DIM)


def test_resnet1d_padding_content_is_ignored() -> None:
    encoder = build("resnet1d").eval()
    x, mask = padded_batch([40, 17, 9], 40)
    noisy = garbage_padding(x, mask)
    assert not torch.equal(noisy, x)
    with torch.no_grad():
        reference, changed = encoder(x, mask), encoder(noisy, mask)
    assert torch.equal(changed.pooled, reference.pooled)
    assert torch.equal(changed.tokens, reference.tokens)
    assert torch.equal(changed.token_mask, reference.token_mask)
    # the padded recording keeps as many real tokens as the same recording alone, unpadded
    for row, length in enumerate([40, 17, 9]):
        alone = encoder(x[row:row + 1, :, :length])
        assert alone.token_mask.sum().item() == changed.token_mask[row].sum().item() == math.ceil(length / 4)
        assert torch.isfinite(changed.pooled[row]).all()


# --- lstm -------------------------------------------------------------------------


@pytest.mark.parametrize("downsample", [1, 4])
def test_lstm_shapes_and_token_mask(downsample: int) -> None:
    encoder = build("lstm", downsample=downsample).eval()
    lengths = [30, 13, 1]
    x, mask = padded_batch(lengths, 30)
    out = encoder(x, mask)
    steps = math.ceil(30 / downsample)
    assert out.pooled.shape == (3, DIM) and out.tokens.shape == (3, steps, DIM)
    counts = [math.ceil(n / downsample) for n in lengths]
    assert torch.equal(out.token_mask, prefix_mask(counts, steps))
    for row, count in enumerate(counts):
        torch.testing.assert_close(out.pooled[row], out.tokens[row, :count].mean(dim=0))


@pytest.mark.parametrize(
    ("downsample", "bidirectional", "layers"),
    [(1, True, 1), (1, False, 2), (4, True, 1), (3, False, 1), (4, True, 2)],
)
def test_lstm_padded_recording_equals_unpadded_alone(downsample: int, bidirectional: bool, layers: int) -> None:
    encoder = build("lstm", downsample=downsample, bidirectional=bidirectional, layers=layers).eval()
    lengths = [24, 10, 13, 1]  # 10, 13 and 1 are not multiples of 3 or 4
    x, mask = padded_batch(lengths, 24)
    noisy = garbage_padding(x, mask)
    with torch.no_grad():
        padded = encoder(noisy, mask)
        for row, length in enumerate(lengths):
            alone = encoder(x[row:row + 1, :, :length])
            count = math.ceil(length / downsample)
            assert padded.token_mask[row].sum().item() == count == alone.tokens.shape[1]
            torch.testing.assert_close(padded.pooled[row], alone.pooled[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(padded.tokens[row, :count], alone.tokens[0], atol=1e-5, rtol=0)


def test_lstm_without_mask_reads_every_step() -> None:
    encoder = build("lstm", downsample=2).eval()
    x = torch.randn(2, LEADS, 9)
    out = encoder(x)
    assert out.tokens.shape == (2, 5, DIM) and out.token_mask.all()
    torch.testing.assert_close(out.pooled, encoder(x, torch.ones(2, 9, dtype=torch.bool)).pooled)


# --- shared behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet1d", "lstm"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_samples_do_not_affect_each_other(name: str, with_mask: bool) -> None:
    encoder = build(name).train()
    x, mask = padded_batch([20, 20, 11], 20)
    mask = mask if with_mask else None
    other = x.clone()
    other[1] = 5 * torch.randn(LEADS, 20, generator=torch.Generator().manual_seed(3))
    reference, changed = encoder(x, mask), encoder(other, mask)
    assert not torch.allclose(changed.pooled[1], reference.pooled[1])
    for row in (0, 2):
        torch.testing.assert_close(changed.pooled[row], reference.pooled[row])
        torch.testing.assert_close(changed.tokens[row], reference.tokens[row])


@pytest.mark.parametrize("name", ENCODERS["signal"].names())
def test_gradients_reach_every_parameter(name: str) -> None:
    encoder = build(name).train()
    x, mask = padded_batch([32, 20, 7, 32], 32)
    out = encoder(x, mask)
    (out.pooled.pow(2).sum() + out.tokens[out.token_mask].pow(2).sum()).backward()
    assert_all_parameters_have_gradients(encoder)


@pytest.mark.parametrize("name", ["resnet1d", "lstm"])
def test_absent_rows_are_not_checked(name: str) -> None:
    encoder = build(name).eval()
    x, mask = padded_batch([16, 16, 16], 16)
    x[1] = float("nan")
    mask[1] = False  # empty mask and NaN values: fine for an absent sample
    mask[2, 3] = False  # not a prefix: fine for an absent sample
    present = torch.tensor([True, False, False])
    out = encoder(x, mask, present)
    assert torch.isfinite(out.pooled[0]).all() and torch.isfinite(out.tokens[0]).all()
    torch.testing.assert_close(out.pooled[0], encoder(x[:1], mask[:1]).pooled[0])


@pytest.mark.parametrize(
    ("x", "mask", "message"),
    [
        (torch.randn(2, LEADS), None, r"signal: expected a 3-D tensor \(B, C, T\), received shape \(2, 3\)"),
        (torch.randn(2, 4, 16), None,
         r"signal: expected size 3 at dim 1 of \(B, C, T\), received shape \(2, 4, 16\)"),
        (torch.ones(2, LEADS, 16, dtype=torch.long), None, r"signal: expected a floating dtype, received torch.int64"),
        ([[0.0] * 16] * LEADS, None, r"signal: expected a torch.Tensor \(B, C, T\), received list"),
        (torch.randn(2, LEADS, 16), torch.ones(2, 16, dtype=torch.long),
         r"signal: expected sample mask \(B, T\) as a bool tensor, received torch.int64"),
        (torch.randn(2, LEADS, 16), torch.ones(2, 15, dtype=torch.bool),
         r"signal: expected sample mask \(B, T\) of shape \(2, 16\), received \(2, 15\)"),
        (torch.randn(2, LEADS, 16), prefix_mask([16, 5], 16).index_fill(1, torch.tensor([8]), True),
         r"signal: sample mask of sample\(s\) \[1\] is not a prefix; expected True for the first `length` steps"),
        (torch.randn(2, LEADS, 16), prefix_mask([16, 0], 16),
         r"signal: sample\(s\) \[1\] have no valid step; expected at least one "
         r"\(mark a missing signal absent instead\)"),
    ],
)
@pytest.mark.parametrize("name", ["resnet1d", "lstm"])
def test_bad_inputs_are_errors(name: str, x, mask, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name)(x, mask)


def test_nan_in_present_sample_is_an_error() -> None:
    x, mask = padded_batch([16, 16], 16)
    x[1, 2, 5] = float("nan")
    with pytest.raises(ValueError, match=r"signal: NaN or Inf in sample\(s\) \[1\]; expected finite values"):
        build("resnet1d")(x, mask)
    with pytest.raises(ValueError, match=r"signal: NaN or Inf in sample\(s\) \[1\]"):
        validate_signal(x, None, torch.tensor([False, True]), LEADS)
    validate_signal(x, None, torch.tensor([True, False]), LEADS)  # the NaN row is absent


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("resnet1d", {"kernel_size": 4}, r"signal encoder: expected an odd kernel_size, received 4"),
        ("resnet1d", {"norm_groups": 3}, r"signal encoder: expected norm_groups=3 to divide every width, "
                                         r"received widths=\[8, 16\]"),
        ("resnet1d", {"widths": []}, r"signal encoder: expected at least one stage width, received widths=\(\)"),
        ("resnet1d", {"widths": [8, 0]}, r"signal encoder: expected each of widths to be an int >= 1, received 0"),
        ("resnet1d", {"in_channels": 0}, r"signal encoder: expected in_channels to be an int >= 1, received 0"),
        ("resnet1d", {"out_dim": True}, r"signal encoder: expected out_dim to be an int >= 1, received True"),
        ("lstm", {"dropout": 1.0}, r"signal encoder: expected dropout in \[0, 1\), received 1.0"),
        ("lstm", {"downsample": 0}, r"signal encoder: expected downsample to be an int >= 1, received 0"),
        ("lstm", {"hidden": 2.5}, r"signal encoder: expected hidden to be an int >= 1, received 2.5"),
    ],
)
def test_bad_arguments_are_errors(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name, **overrides)

"""Signal encoders (ECG, EEG, PPG, respiration; any number of leads, any length).

Input: x (B, C, T) float, one row per lead, and optionally a sample mask (B, T) bool
marking the valid prefix of each recording when recordings of different lengths are
padded into one batch. Output tokens run over time.

- :class:`SignalResNet1d` ("resnet1d"): a 1-D residual CNN (as in Hannun et al. 2019,
  "Cardiologist-level arrhythmia detection ... using a deep neural network"), GroupNorm,
  each stage halving the time resolution; tokens are the time steps of the last stage.
- :class:`SignalLSTM` ("lstm"): average-pooled to a lower rate, then a (bi)LSTM over
  the valid steps only (packed sequences), as in the cardiac example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medfusion.encoders.base import Encoder, ResidualBlock, check_stage_widths, masked_mean, register_encoder
from medfusion.types import EncoderOutput
from medfusion.validation import check_mask, check_tensor


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"signal encoder: expected {name} to be an int >= {minimum}, received {value!r}")


def validate_signal(x: Tensor, mask: Tensor | None, present: Tensor | None, in_channels: int) -> None:
    """Check a (B, C, T) signal batch and its (B, T) valid-prefix mask.

    Raises:
        ValueError: on a wrong rank, dtype or lead count, a non-finite value in a
            present sample, a mask that is not a prefix, or a present sample with no
            valid step.
    """
    check_tensor("signal", x, ndim=3, layout="(B, C, T)", sizes={1: in_channels}, present=present)
    if mask is None:
        return
    check_mask("signal", mask, (x.shape[0], x.shape[2]), "sample mask (B, T)")
    lengths = mask.sum(dim=1)
    prefix = torch.arange(x.shape[2], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
    rows = present if present is not None else torch.ones_like(lengths, dtype=torch.bool)
    not_prefix = rows & (prefix != mask).any(dim=1)
    if not_prefix.any():
        raise ValueError(
            f"signal: sample mask of sample(s) {not_prefix.nonzero().flatten().tolist()[:10]} is not a prefix; "
            "expected True for the first `length` steps and False for the padding after them"
        )
    empty = rows & (lengths == 0)
    if empty.any():
        raise ValueError(
            f"signal: sample(s) {empty.nonzero().flatten().tolist()[:10]} have no valid step; "
            "expected at least one (mark a missing signal absent instead)"
        )


def signal_lengths(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B,) number of valid steps per sample (at least 1)."""
    if mask is None:
        return torch.full((x.shape[0],), x.shape[2], dtype=torch.long, device=x.device)
    return mask.sum(dim=1).clamp_min(1)


def downsampled_mask(lengths: Tensor, steps: int, factor: int) -> Tensor:
    """(B, steps) mask of the steps left after down-sampling valid lengths by ``factor`` (ceil)."""
    kept = torch.div(lengths + factor - 1, factor, rounding_mode="floor")
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < kept.unsqueeze(1)


@register_encoder("signal", "resnet1d")
class SignalResNet1d(Encoder):
    """1-D residual CNN; time tokens from the last stage.

    Args:
        in_channels: number of leads C.
        widths: channels per stage; each stage halves the time axis.
        out_dim: token width D (1x1 projection of the last stage).
        norm_groups: GroupNorm groups; must divide every width.
        kernel_size: odd temporal kernel size.

    Inputs: x (B, C, T), mask (B, T) valid prefix or None.
    Returns pooled (B, D) (mean over valid tokens), tokens (B, ceil(T / 2**stages), D),
    token_mask (B, N) (tokens that saw a valid step).
    """

    def __init__(self, in_channels: int = 12, widths: tuple[int, ...] = (32, 64, 128, 128), out_dim: int = 128,
                 norm_groups: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_dim", out_dim), ("norm_groups", norm_groups),
                            ("kernel_size", kernel_size)):
            _check_int(name, value)
        if kernel_size % 2 == 0:
            raise ValueError(f"signal encoder: expected an odd kernel_size, received {kernel_size}")
        widths = check_stage_widths("signal encoder", widths, norm_groups)
        self.modality = "signal"
        self.in_channels, self.out_dim = in_channels, out_dim
        channels = (in_channels, *widths)
        self.stages = nn.Sequential(*(ResidualBlock(1, channels[i], channels[i + 1], norm_groups, kernel_size)
                                      for i in range(len(widths))))
        self.proj = nn.Conv1d(widths[-1], out_dim, 1)
        self.stride = 2 ** len(widths)

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """See :func:`validate_signal`."""
        validate_signal(x, mask, present, self.in_channels)

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, C, T) into pooled (B, D), tokens (B, N, D), token_mask (B, N)."""
        if mask is not None:
            x = x * mask.unsqueeze(1).to(x.dtype)  # padding reads as silence
        tokens = self.proj(self.stages(x)).transpose(1, 2)
        token_mask = downsampled_mask(signal_lengths(x, mask), tokens.shape[1], self.stride)
        return EncoderOutput(pooled=masked_mean(tokens, token_mask), tokens=tokens, token_mask=token_mask)


@register_encoder("signal", "lstm")
class SignalLSTM(Encoder):
    """Average-pool by ``downsample``, then a (bi)LSTM over the valid steps; step outputs are tokens.

    Args:
        in_channels: number of leads C.
        hidden: LSTM hidden size per direction.
        layers: stacked LSTM layers.
        bidirectional: read the recording both ways.
        out_dim: token width D (linear projection of the LSTM outputs).
        downsample: average-pooling factor before the LSTM (e.g. 500 Hz -> 62.5 Hz with 8).
        dropout: dropout between LSTM layers (layers > 1).

    Inputs: x (B, C, T), mask (B, T) valid prefix or None.
    Returns pooled (B, D), tokens (B, ceil(T / downsample), D), token_mask (B, N).
    """

    def __init__(self, in_channels: int = 12, hidden: int = 64, layers: int = 1, bidirectional: bool = True,
                 out_dim: int = 128, downsample: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden), ("layers", layers),
                            ("out_dim", out_dim), ("downsample", downsample)):
            _check_int(name, value)
        if not 0 <= dropout < 1:
            raise ValueError(f"signal encoder: expected dropout in [0, 1), received {dropout!r}")
        self.modality = "signal"
        self.in_channels, self.out_dim, self.downsample = in_channels, out_dim, downsample
        self.lstm = nn.LSTM(in_channels, hidden, layers, batch_first=True, bidirectional=bidirectional,
                            dropout=dropout if layers > 1 else 0.0)
        self.proj = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """See :func:`validate_signal`."""
        validate_signal(x, mask, present, self.in_channels)

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, C, T) into pooled (B, D), tokens (B, N, D), token_mask (B, N)."""
        lengths = signal_lengths(x, mask)
        if mask is not None:
            x = x * mask.unsqueeze(1).to(x.dtype)
        if self.downsample > 1:
            x = F.avg_pool1d(x, self.downsample, ceil_mode=True)
            if mask is not None:  # average each window over its valid steps only, as without padding
                valid = F.avg_pool1d(mask.unsqueeze(1).to(x.dtype), self.downsample, ceil_mode=True)
                x = x / valid.clamp_min(1.0 / self.downsample)
        steps = x.shape[2]
        token_lengths = torch.div(lengths + self.downsample - 1, self.downsample, rounding_mode="floor")
        packed = pack_padded_sequence(x.transpose(1, 2), token_lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=steps)
        tokens = self.proj(outputs)
        token_mask = downsampled_mask(lengths, steps, self.downsample)
        return EncoderOutput(pooled=masked_mean(tokens, token_mask), tokens=tokens, token_mask=token_mask)

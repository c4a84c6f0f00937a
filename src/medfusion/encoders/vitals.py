"""Vital signs and other tabular features: x (B, F) with an observed mask (B, F).

A missing value is marked False in the mask (its value is ignored, NaN allowed); the
model sees it as 0 after standardisation plus an explicit missing indicator, the usual
treatment for clinical tabular data (Lipton et al. 2016, "Modeling missing data in
clinical time series with RNNs").

- :class:`FeatureStandardizer`: per-feature mean / standard deviation fitted on the
  observed training values (not trained by gradient), stored in the state dict.
- :class:`VitalsMLP` ("mlp"): standardised values + indicators -> MLP summary; tokens
  are one per feature (value embedding, FT-Transformer style: Gorishniy et al. 2021)
  plus the summary token, so cross-attention can point at single vital signs; the
  pooled vector is the mean of all tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medfusion.encoders.base import Encoder, all_tokens, register_encoder
from medfusion.types import EncoderOutput
from medfusion.validation import check_mask, check_tensor


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"vitals encoder: expected {name} to be an int >= {minimum}, received {value!r}")


def split_missing(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(values with 0 at missing entries, observed mask) from x (B, F) and mask (B, F) or None.

    Without a mask, NaN entries are taken as missing.
    """
    observed = ~torch.isnan(x) if mask is None else mask
    return torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device)), observed


class FeatureStandardizer(nn.Module):
    """Per-feature (x - mean) / std over observed values; missing entries become 0.

    Args:
        num_features: F.

    Buffers ``mean`` (F,), ``std`` (F,) start at 0 and 1 (identity) until :meth:`fit`.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        _check_int("num_features", num_features)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: Tensor, observed: Tensor | None = None, min_std: float = 1e-6) -> FeatureStandardizer:
        """Set mean and std of each feature from its observed values in x (N, F).

        A feature never observed keeps mean 0 and std 1; a constant one gets std 1.

        Raises:
            ValueError: on a wrong shape or a non-finite observed value.
        """
        check_tensor("vitals", x, ndim=2, layout="(N, F)", sizes={1: self.mean.numel()}, finite=False)
        if observed is not None:  # before split_missing, which would fail on a bad mask with a RuntimeError
            check_mask("vitals", observed, x.shape, "observed mask (N, F)")
        values, observed = split_missing(x, observed)
        if not torch.isfinite(values).all():
            raise ValueError("vitals: NaN or Inf among observed values; expected finite values or mask=False")
        weights = observed.to(values.dtype)
        count = weights.sum(dim=0)
        mean = (values * weights).sum(dim=0) / count.clamp_min(1)
        var = (((values - mean) ** 2) * weights).sum(dim=0) / (count - 1).clamp_min(1)
        std = var.sqrt()
        self.mean.copy_(torch.where(count > 0, mean, torch.zeros_like(mean)))
        self.std.copy_(torch.where((count > 1) & (std > min_std), std, torch.ones_like(std)))
        self.fitted.fill_(True)
        return self

    def forward(self, x: Tensor, observed: Tensor) -> Tensor:
        """Standardised x (B, F), 0 where not observed."""
        z = (x - self.mean) / self.std
        return torch.where(observed, z, torch.zeros((), dtype=z.dtype, device=z.device))


@register_encoder("vitals", "mlp")
class VitalsMLP(Encoder):
    """MLP over standardised values and missing indicators, with per-feature tokens.

    Args:
        num_features: F (e.g. temperature, heart rate, SpO2, respiratory rate, SBP, DBP).
        hidden: hidden units of each MLP layer.
        out_dim: D.
        depth: number of hidden layers (>= 1).
        dropout: dropout after each hidden layer.

    Inputs: x (B, F) float, mask (B, F) bool (True = observed) or None (NaN = missing).
    Returns tokens (B, F + 1, D) (one per feature, then the MLP summary), token_mask
    (B, F + 1) all True (a missing feature's token says so), pooled (B, D) their mean.
    Fit ``encoder.standardizer`` on the training data before training.
    """

    def __init__(self, num_features: int = 6, hidden: int = 64, out_dim: int = 64, depth: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("hidden", hidden), ("out_dim", out_dim),
                            ("depth", depth)):
            _check_int(name, value)
        if not 0 <= dropout < 1:
            raise ValueError(f"vitals encoder: expected dropout in [0, 1), received {dropout!r}")
        self.modality = "vitals"
        self.num_features, self.out_dim = num_features, out_dim
        self.standardizer = FeatureStandardizer(num_features)
        layers: list[nn.Module] = []
        width = 2 * num_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)
        self.value_weight = nn.Parameter(torch.randn(num_features, out_dim) * 0.02)
        self.feature_embedding = nn.Parameter(torch.randn(num_features, out_dim) * 0.02)
        self.missing_embedding = nn.Parameter(torch.randn(num_features, out_dim) * 0.02)

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """Check x (B, F) float, mask (B, F) bool, finite observed values in present rows.

        Raises:
            ValueError: naming the expected and received shape, dtype or the bad samples.
        """
        check_tensor("vitals", x, ndim=2, layout="(B, F)", sizes={1: self.num_features}, finite=False)
        if mask is not None:  # before split_missing, which would fail on a bad mask with a RuntimeError
            check_mask("vitals", mask, x.shape, "observed mask (B, F)")
        values, observed = split_missing(x, mask)
        check_tensor("vitals", values, ndim=2, layout="(B, F)", present=present)

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, F) into pooled (B, D), tokens (B, F + 1, D), token_mask (B, F + 1)."""
        values, observed = split_missing(x, mask)
        z = self.standardizer(values, observed)
        summary = self.mlp(torch.cat([z, observed.to(z.dtype)], dim=1))
        value_tokens = z.unsqueeze(-1) * self.value_weight + self.feature_embedding
        feature_tokens = torch.where(observed.unsqueeze(-1), value_tokens, self.missing_embedding + self.feature_embedding)
        tokens = torch.cat([feature_tokens, summary.unsqueeze(1)], dim=1)
        return EncoderOutput(pooled=tokens.mean(dim=1), tokens=tokens, token_mask=all_tokens(tokens))

"""Fixed, cheap input featurisations for early (input-level) fusion.

Nothing here is learned (except the vitals statistics, which are fitted, not trained):
each modality's raw input is reduced to a short vector so that one network can read
all modalities concatenated.

| modality | featurisation | out_dim |
|---|---|---|
| text   | hashed bag of token ids (term frequencies) | buckets |
| image  | average-pooled to size x size, flattened | C * size**2 |
| volume | average-pooled to size**3, flattened | C * size**3 |
| signal | resampled (average-pooled) to `length` points per lead | C * length |
| vitals | standardised values + observed indicators | 2 * F |
| video  | average-pooled to frames x size x size | C * frames * size**2 |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.encoders.vitals import FeatureStandardizer
from medfusion.validation import check_mask, check_tensor

# Knuth's multiplicative hash constant: spreads token ids over the buckets.
_HASH_MULTIPLIER = 2654435761


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"featurizer: expected {name} to be a positive int, received {value!r}")


class TextHashFeaturizer(nn.Module):
    """Hashed bag of token ids: term frequency of each hash bucket.

    Args:
        buckets: number of hash buckets (out_dim).

    Inputs: ids (B, L) int64, mask (B, L) bool or None (then ``ids != 0``). Returns (B, buckets).
    """

    modality = "text"

    def __init__(self, buckets: int = 256) -> None:
        super().__init__()
        _check_positive("buckets", buckets)
        self.out_dim = buckets

    def forward(self, ids: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        check_tensor("text", ids, ndim=2, layout="(B, L) token ids", floating=False)
        mask = ids != 0 if mask is None else mask
        check_mask("text", mask, ids.shape, "token mask (B, L)")
        buckets = (ids.long() * _HASH_MULTIPLIER) % self.out_dim
        counts = torch.zeros(ids.shape[0], self.out_dim, device=ids.device)
        counts.scatter_add_(1, buckets, mask.float())
        return counts / mask.sum(dim=1, keepdim=True).clamp_min(1)


class GridFeaturizer(nn.Module):
    """Average-pools an image (spatial_dims=2) or volume (3) to a fixed grid and flattens it.

    Args:
        spatial_dims: 2 for (B, C, H, W), 3 for (B, C, D, H, W).
        channels: C.
        size: grid side.

    Returns (B, C * size**spatial_dims).
    """

    def __init__(self, spatial_dims: int = 2, channels: int = 1, size: int = 16) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"featurizer: expected spatial_dims 2 or 3, received {spatial_dims!r}")
        _check_positive("channels", channels)
        _check_positive("size", size)
        self.modality = "image" if spatial_dims == 2 else "volume"
        self.spatial_dims, self.channels, self.size = spatial_dims, channels, size
        self.out_dim = channels * size**spatial_dims

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
        check_tensor(self.modality, x, ndim=self.spatial_dims + 2, layout=layout,
                     sizes={1: self.channels}, present=present)
        pool = F.adaptive_avg_pool2d if self.spatial_dims == 2 else F.adaptive_avg_pool3d
        return pool(x, self.size).flatten(1)


def _pool_valid_prefix(x: Tensor, mask: Tensor | None, pool) -> Tensor:
    """Apply ``pool`` to each sample's real (unpadded) prefix along dim 2.

    Args:
        x: (B, C, T, ...) with padding at the end of dim 2.
        mask: (B, T) bool or None.
        pool: function of a (1, C, T', ...) tensor.
    """
    if mask is None or bool(mask.all()):
        return pool(x)
    lengths = mask.sum(dim=1).clamp_min(1).tolist()
    return torch.cat([pool(x[i : i + 1, :, :n]) for i, n in enumerate(lengths)])


class SignalFeaturizer(nn.Module):
    """Resamples each lead to ``length`` points by average pooling.

    Inputs: x (B, C, T), mask (B, T) bool or None. Returns (B, C * length).
    """

    modality = "signal"

    def __init__(self, channels: int = 12, length: int = 64) -> None:
        super().__init__()
        _check_positive("channels", channels)
        _check_positive("length", length)
        self.channels, self.length = channels, length
        self.out_dim = channels * length

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        check_tensor("signal", x, ndim=3, layout="(B, C, T)", sizes={1: self.channels}, present=present)
        if mask is not None:
            check_mask("signal", mask, (x.shape[0], x.shape[2]), "sample mask (B, T)")
        pool = lambda s: F.adaptive_avg_pool1d(s, self.length)  # noqa: E731
        return _pool_valid_prefix(x, mask, pool).flatten(1)


class VitalsFeaturizer(nn.Module):
    """Standardised vital signs with 0 at missing values, plus observed indicators.

    Inputs: x (B, F), mask (B, F) bool (True = observed) or None. Returns (B, 2F).
    Fit the statistics with ``featurizer.standardizer.fit(x, observed)``.
    """

    modality = "vitals"

    def __init__(self, num_features: int = 8) -> None:
        super().__init__()
        _check_positive("num_features", num_features)
        self.num_features = num_features
        self.standardizer = FeatureStandardizer(num_features)
        self.out_dim = 2 * num_features

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        check_tensor("vitals", x, ndim=2, layout="(B, F)", sizes={1: self.num_features}, finite=False)
        observed = torch.ones_like(x, dtype=torch.bool) if mask is None else mask
        check_mask("vitals", observed, x.shape, "observed mask (B, F)")
        x = torch.where(observed, x, torch.zeros((), dtype=x.dtype))
        check_tensor("vitals", x, ndim=2, layout="(B, F)", present=present)
        return torch.cat([self.standardizer(x, observed), observed.to(x.dtype)], dim=1)


class VideoFeaturizer(nn.Module):
    """Average-pools a clip to frames x size x size per channel.

    Inputs: x (B, T, C, H, W), mask (B, T) bool or None. Returns (B, C * frames * size**2).
    """

    modality = "video"

    def __init__(self, channels: int = 1, frames: int = 4, size: int = 8) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("frames", frames), ("size", size)):
            _check_positive(name, value)
        self.channels, self.frames, self.size = channels, frames, size
        self.out_dim = channels * frames * size**2

    def forward(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> Tensor:
        check_tensor("video", x, ndim=5, layout="(B, T, C, H, W)", sizes={2: self.channels}, present=present)
        if mask is not None:
            check_mask("video", mask, x.shape[:2], "frame mask (B, T)")
        pool = lambda v: F.adaptive_avg_pool3d(v, (self.frames, self.size, self.size))  # noqa: E731
        return _pool_valid_prefix(x.transpose(1, 2), mask, pool).flatten(1)


def build_featurizer(modality: str, **params) -> nn.Module:
    """The fixed featurizer of ``modality`` built with ``params``.

    Raises:
        ValueError: on an unknown modality or parameter.
    """
    builders = {
        "text": TextHashFeaturizer,
        "image": lambda **p: GridFeaturizer(spatial_dims=2, **p),
        "volume": lambda **p: GridFeaturizer(spatial_dims=3, **p),
        "signal": SignalFeaturizer,
        "vitals": VitalsFeaturizer,
        "video": VideoFeaturizer,
    }
    if modality not in builders:
        raise ValueError(f"early fusion: no featurizer for modality {modality!r}; known: {sorted(builders)}")
    try:
        return builders[modality](**params)
    except TypeError as error:
        raise ValueError(f"early fusion: bad featurizer parameter for {modality}: {error}") from None

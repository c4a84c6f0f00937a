"""Vitals (F,): per-feature standardization with training-split statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medfusion.data.transforms.base import Generator, MapTransform, Transform, _array


class VitalsStandardizer(Transform):
    """Per-feature z-score with statistics of the training split only; NaN (missing) stays NaN.

    Fit on the training split (e.g. ``train_dataset.vitals_matrix()``), then transform
    every split with those statistics. The mean and std (ddof=1) of a feature use its
    observed values; a feature never observed gets mean 0, std 1, a constant one std 1.
    Use it or the encoder's own ``FeatureStandardizer``, not both.

    Raises:
        ValueError: on transform before :meth:`fit`, or a wrong feature count.
    """

    def __init__(self, min_std: float = 1e-6) -> None:
        self.min_std = min_std
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, values: np.ndarray) -> VitalsStandardizer:
        """Fit on (N, F) training values, NaN = missing; returns ``self``."""
        values = _array("VitalsStandardizer", np.asarray(values, dtype=np.float64), ndim=2, layout="(N, F)")
        if np.isinf(values).any():
            raise ValueError("VitalsStandardizer: Inf among the training values; expected finite numbers or NaN")
        observed = ~np.isnan(values)
        count = observed.sum(axis=0)
        mean = np.where(count > 0, np.nansum(values, axis=0) / np.maximum(count, 1), 0.0)
        var = np.nansum((values - mean) ** 2, axis=0) / np.maximum(count - 1, 1)
        std = np.sqrt(var)
        self.mean = mean.astype(np.float32)
        self.std = np.where((count > 1) & (std > self.min_std), std, 1.0).astype(np.float32)
        return self

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise ValueError("VitalsStandardizer: not fitted; call fit(train_values) on the training split first")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"VitalsStandardizer: expected (F,) or (N, F) with F={self.mean.shape[0]}, "
                             f"received shape {x.shape}")
        return ((x - self.mean) / self.std).astype(np.float32)

    transform = __call__

    def state_dict(self) -> dict[str, list[float]]:
        """The fitted statistics as lists (JSON-ready)."""
        if self.mean is None:
            raise ValueError("VitalsStandardizer: not fitted")
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Sequence[float]]) -> VitalsStandardizer:
        """A standardizer with the statistics of :meth:`state_dict`."""
        standardizer = cls()
        standardizer.mean = np.asarray(state["mean"], dtype=np.float32)
        standardizer.std = np.asarray(state["std"], dtype=np.float32)
        if standardizer.mean.shape != standardizer.std.shape or (standardizer.std <= 0).any():
            raise ValueError("VitalsStandardizer: expected mean and std of one length, std > 0")
        return standardizer


class VitalsStandardizerd(MapTransform):
    """Dictionary twin of a fitted :class:`VitalsStandardizer` (passed in, not built)."""

    def __init__(self, keys: str | Sequence[str], standardizer: VitalsStandardizer,
                 allow_missing_keys: bool = False) -> None:
        if not isinstance(standardizer, VitalsStandardizer):
            raise ValueError("VitalsStandardizerd: expected a VitalsStandardizer, "
                             f"received {type(standardizer).__name__}")
        super().__init__(keys, standardizer, allow_missing_keys)

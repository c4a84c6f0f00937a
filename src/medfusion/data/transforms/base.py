"""The :class:`Transform` base (random state), shared argument checks, :class:`Compose` and
the dictionary-twin machinery (:class:`MapTransform`, ``_twin``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Generator = np.random.Generator


def _array(name: str, x: Any, ndim: int | None = None, min_ndim: int | None = None, layout: str = "") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array {layout}, received {type(x).__name__}")
    if (ndim is not None and x.ndim != ndim) or (min_ndim is not None and x.ndim < min_ndim):
        raise ValueError(f"{name}: expected an array {layout}, received shape {x.shape}")
    return x


def _positive(name: str, value: Any, integer: bool = False, zero: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0 or (
            value == 0 and not zero):
        raise ValueError(f"transform: expected {name} to be a {'n int' if integer else ' number'} "
                         f"{'>= 0' if zero else '> 0'}, received {value!r}")


def _probability(name: str, p: Any) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"transform: expected {name} in [0, 1], received {p!r}")


def _range(name: str, values: Any, low: float = -math.inf) -> tuple[float, float]:
    if not isinstance(values, Sequence) or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values) \
            or not low <= values[0] <= values[1]:
        raise ValueError(f"transform: expected {name} as (low, high) with {low} <= low <= high, received {values!r}")
    return float(values[0]), float(values[1])


class Transform(ABC):
    """Base of every transform: ``__call__(x, rng=None)`` and ``set_random_state(seed)``."""

    _rng: Generator | None = None

    def set_random_state(self, seed: int | np.random.SeedSequence | None) -> Transform:
        """Seed this transform's generator; returns ``self``."""
        self._rng = np.random.default_rng(seed)
        return self

    def generator(self, rng: Generator | None = None) -> Generator:
        """``rng`` when given, else this transform's own generator."""
        if rng is not None:
            return rng
        if self._rng is None:
            self._rng = np.random.default_rng()
        return self._rng

    @abstractmethod
    def __call__(self, x: Any, rng: Generator | None = None) -> Any:
        """The transformed ``x``; random draws come from ``rng`` (or this transform's generator)."""


class Compose(Transform):
    """Apply transforms in order, each with its own probability.

    Args:
        transforms: transforms (or plain callables of one argument).
        probabilities: probability of applying each one; default all 1.

    ``set_random_state(seed)`` seeds this Compose and every child from one seed.
    """

    def __init__(self, transforms: Sequence[Callable], probabilities: Sequence[float] | None = None) -> None:
        self.transforms = list(transforms)
        if not all(callable(t) for t in self.transforms):
            raise ValueError("Compose: expected callable transforms")
        self.probabilities = [1.0] * len(self.transforms) if probabilities is None else list(probabilities)
        if len(self.probabilities) != len(self.transforms):
            raise ValueError(f"Compose: expected {len(self.transforms)} probabilities, "
                             f"received {len(self.probabilities)}")
        for p in self.probabilities:
            _probability("each probability", p)

    def set_random_state(self, seed: int | np.random.SeedSequence | None) -> Compose:
        seeds = np.random.SeedSequence(seed).spawn(len(self.transforms) + 1)
        super().set_random_state(seeds[0])
        for transform, child in zip(self.transforms, seeds[1:]):
            if hasattr(transform, "set_random_state"):
                transform.set_random_state(child)
        return self

    def __call__(self, data: Any, rng: Generator | None = None) -> Any:
        g = self.generator(rng)
        for transform, p in zip(self.transforms, self.probabilities):
            if p < 1.0 and g.random() >= p:
                continue
            data = transform(data, rng=rng) if isinstance(transform, Transform) else transform(data)
        return data


class MapTransform(Transform):
    """Apply an array transform to ``sample["inputs"][key]`` for each key; returns a new sample.

    Modalities the sample lacks (input None or ``present`` False) are left alone.

    Args:
        keys: modality keys.
        transform: the array transform.
        allow_missing_keys: ignore keys absent from ``sample["inputs"]`` instead of raising.

    Raises:
        ValueError: at call time on a key not in the sample's inputs (unless allowed).
    """

    def __init__(self, keys: str | Sequence[str], transform: Transform, allow_missing_keys: bool = False) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not self.keys or not all(isinstance(k, str) for k in self.keys):
            raise ValueError(f"{type(self).__name__}: expected one or more modality keys, received {keys!r}")
        self.transform, self.allow_missing_keys = transform, allow_missing_keys

    def set_random_state(self, seed: int | np.random.SeedSequence | None) -> MapTransform:
        self.transform.set_random_state(seed)
        return self

    def __call__(self, sample: dict, rng: Generator | None = None) -> dict:
        if not isinstance(sample, dict) or not isinstance(sample.get("inputs"), dict):
            raise ValueError(f"{type(self).__name__}: expected a sample dict with 'inputs', "
                             f"received {type(sample).__name__}")
        inputs = dict(sample["inputs"])
        for key in self.keys:
            if key not in inputs:
                if self.allow_missing_keys:
                    continue
                raise ValueError(f"{type(self).__name__}: modality {key!r} not in the sample; it has {sorted(inputs)}")
            if inputs[key] is None or not sample.get("present", {}).get(key, True):
                continue
            inputs[key] = self.transform(inputs[key], rng=rng)
        return {**sample, "inputs": inputs}


def _twin(cls: type[Transform]) -> type[MapTransform]:
    def __init__(self, keys: str | Sequence[str], *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, cls(*args, **kwargs), allow_missing_keys)

    doc = (f"Dictionary twin of :class:`{cls.__name__}`: ``{cls.__name__}d(keys, *args, **kwargs)`` applies "
           f"``{cls.__name__}(*args, **kwargs)`` to ``sample['inputs'][key]`` (see :class:`MapTransform`).")
    return type(f"{cls.__name__}d", (MapTransform,),
                {"__init__": __init__, "__doc__": doc, "__module__": cls.__module__})

"""Video (T, C, H, W): temporal crops and frame sampling (as in EchoNet-Dynamic, Ouyang et al. 2020).

Per-frame image transforms (:mod:`~medfusion.data.transforms.image`) also take video.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfusion.data.transforms.base import Generator, Transform, _array, _positive, _twin


def _video(name: str, x: Any) -> np.ndarray:
    return _array(name, x, ndim=4, layout="(T, C, H, W)")


class CenterTemporalCrop(Transform):
    """The middle ``length`` frames (a shorter clip is returned whole; the collate pads it)."""

    def __init__(self, length: int) -> None:
        _positive("length", length, integer=True)
        self.length = int(length)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _video(type(self).__name__, x)
        start = max(0, (x.shape[0] - self.length) // 2)
        return x[start : start + self.length]


class RandTemporalCrop(CenterTemporalCrop):
    """``length`` consecutive frames from a uniform random start."""

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _video("RandTemporalCrop", x)
        start = int(self.generator(rng).integers(0, max(0, x.shape[0] - self.length) + 1))
        return x[start : start + self.length]


class UniformFrameSampling(Transform):
    """``num_frames`` frames evenly spaced over the clip, first and last included
    (indices ``round(linspace(0, T - 1, num_frames))``; frames repeat when T < num_frames)."""

    def __init__(self, num_frames: int) -> None:
        _positive("num_frames", num_frames, integer=True)
        self.num_frames = int(num_frames)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _video("UniformFrameSampling", x)
        return x[np.rint(np.linspace(0, x.shape[0] - 1, self.num_frames)).astype(int)]


# -- dictionary twins -------------------------------------------------------------------------


CenterTemporalCropd = _twin(CenterTemporalCrop)
RandTemporalCropd = _twin(RandTemporalCrop)
UniformFrameSamplingd = _twin(UniformFrameSampling)

"""Images (C, H, W), volumes (C, D, H, W) and video frames: intensity, resize, affine, flips, noise.

Flips: :class:`Flip` / :class:`RandFlip` refuse the left-right axis unless
``allow_left_right=True``. On a chest X-ray the side of a finding is part of the label
("left lower lobe consolidation", a right pneumothorax) and the heart sits on the left;
a mirrored image paired with its unmirrored report or side-specific label teaches the
model the wrong side. Allow it only where anatomy and labels are symmetric (histology).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medfusion.data.transforms.base import Generator, Transform, _array, _positive, _probability, _range, _twin


class NormalizeIntensity(Transform):
    """Z-score ``(x - mean) / std`` or min-max ``low + (x - min) / (max - min) * (high - low)``.

    Args:
        mode: "zscore" or "minmax".
        channel_wise: statistics per index of ``channel_axis`` instead of the whole array.
        channel_axis: 0 for image/volume (C first), 1 for video (T, C, H, W).
        out_range: (low, high) of min-max.
        eps: a std or range below it counts as constant (the output is then 0, or ``low``).

    Raises:
        ValueError: on an unknown mode or a bad range.
    """

    def __init__(self, mode: str = "zscore", channel_wise: bool = False, channel_axis: int = 0,
                 out_range: tuple[float, float] = (0.0, 1.0), eps: float = 1e-8) -> None:
        if mode not in ("zscore", "minmax"):
            raise ValueError(f"NormalizeIntensity: expected mode 'zscore' or 'minmax', received {mode!r}")
        self.mode, self.channel_wise, self.channel_axis, self.eps = mode, channel_wise, channel_axis, eps
        self.out_range = _range("out_range", out_range)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _array("NormalizeIntensity", x, min_ndim=1).astype(np.float32)
        axes = tuple(a for a in range(x.ndim) if a != self.channel_axis % x.ndim) if self.channel_wise else None
        if self.mode == "zscore":
            mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
            return ((x - mean) / np.where(std < self.eps, 1.0, std)).astype(np.float32)
        low, high = self.out_range
        lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
        span = hi - lo
        scaled = np.where(span < self.eps, 0.0, (x - lo) / np.where(span < self.eps, 1.0, span))
        return (low + scaled * (high - low)).astype(np.float32)


class Resize(Transform):
    """Resize the last ``len(spatial_size)`` axes (leading axes are channels / frames).

    Args:
        spatial_size: (H, W) or (D, H, W).
        mode: "linear" (bi-/trilinear), "nearest" or "area" (``torch.nn.functional.interpolate``).
    """

    def __init__(self, spatial_size: Sequence[int], mode: str = "linear") -> None:
        if not isinstance(spatial_size, Sequence) or not 1 <= len(spatial_size) <= 3:
            raise ValueError(f"Resize: expected spatial_size of 1 to 3 sizes, received {spatial_size!r}")
        for size in spatial_size:
            _positive("each of spatial_size", size, integer=True)
        if mode not in ("linear", "nearest", "area"):
            raise ValueError(f"Resize: expected mode 'linear', 'nearest' or 'area', received {mode!r}")
        self.spatial_size, self.mode = tuple(int(s) for s in spatial_size), mode

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        n = len(self.spatial_size)
        x = _array("Resize", x, min_ndim=n + 1, layout=f"(..., {'D, ' if n == 3 else ''}H, W)")
        lead = x.shape[:-n]
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, 1, *x.shape[-n:])
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n] if self.mode == "linear" else self.mode
        out = F.interpolate(t, size=self.spatial_size, mode=mode, **({"align_corners": False}
                                                                     if self.mode == "linear" else {}))
        return out.reshape(*lead, *self.spatial_size).numpy()


def affine(x: np.ndarray, rotate: float = 0.0, translate: Sequence[float] | None = None, scale: float = 1.0,
           spatial_dims: int = 2, order: int = 1, padding_mode: str = "constant", cval: float = 0.0) -> np.ndarray:
    """Rotate (degrees, counter-clockwise as displayed, in the last two axes), scale about the
    centre and translate (voxels, per spatial axis) the last ``spatial_dims`` axes."""
    shape = np.array(x.shape[-spatial_dims:], dtype=float)
    theta = math.radians(rotate)
    forward = np.eye(spatial_dims) * scale
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    forward[-2:, -2:] = scale * rotation  # (row, col): counter-clockwise on screen, like np.rot90
    matrix = np.linalg.inv(forward)
    centre = (shape - 1) / 2
    shift = np.zeros(spatial_dims) if translate is None else np.asarray(translate, dtype=float)
    offset = centre - matrix @ (centre + shift)
    frames = x.reshape(-1, *x.shape[-spatial_dims:]).astype(np.float32)
    out = np.stack([ndimage.affine_transform(f, matrix, offset, order=order, mode=padding_mode, cval=cval)
                    for f in frames])
    return out.reshape(x.shape)


class Affine(Transform):
    """A fixed affine map: rotation (degrees), isotropic scale about the centre, translation (voxels).

    Args:
        rotate: degrees, counter-clockwise as displayed, in the plane of the last two axes.
        translate: shift per spatial axis in voxels (positive = towards higher indices).
        scale: zoom factor (> 1 enlarges).
        spatial_dims: 2 (image, video frames) or 3 (volume); leading axes are channels / frames.
        order: spline order (0 nearest, 1 linear).
        padding_mode: ``scipy.ndimage`` mode for points outside ("constant", "nearest", "reflect").
    """

    def __init__(self, rotate: float = 0.0, translate: Sequence[float] | None = None, scale: float = 1.0,
                 spatial_dims: int = 2, order: int = 1, padding_mode: str = "constant", cval: float = 0.0) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"Affine: expected spatial_dims 2 or 3, received {spatial_dims!r}")
        if translate is not None and len(translate) != spatial_dims:
            raise ValueError(f"Affine: expected {spatial_dims} translations, received {translate!r}")
        _positive("scale", scale)
        if padding_mode not in ("constant", "nearest", "reflect", "mirror", "wrap"):
            raise ValueError(f"Affine: unknown padding_mode {padding_mode!r}")
        self.rotate, self.translate, self.scale = float(rotate), translate, float(scale)
        self.spatial_dims, self.order, self.padding_mode, self.cval = spatial_dims, order, padding_mode, cval

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        _array("Affine", x, min_ndim=self.spatial_dims + 1, layout="(C, *spatial)")
        return affine(x, self.rotate, self.translate, self.scale, self.spatial_dims, self.order,
                      self.padding_mode, self.cval)


class RandAffine(Affine):
    """A random small affine map: rotation in ±``rotate_range`` degrees, translation in
    ±``translate_range`` of each side, scale in ``scale_range``.
    """

    def __init__(self, rotate_range: float = 10.0, translate_range: float = 0.05,
                 scale_range: tuple[float, float] = (0.9, 1.1), spatial_dims: int = 2, order: int = 1,
                 padding_mode: str = "constant", cval: float = 0.0) -> None:
        super().__init__(spatial_dims=spatial_dims, order=order, padding_mode=padding_mode, cval=cval)
        _positive("rotate_range", rotate_range, zero=True)
        _positive("translate_range", translate_range, zero=True)
        self.rotate_range, self.translate_range = float(rotate_range), float(translate_range)
        self.scale_range = _range("scale_range", scale_range, low=1e-6)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        _array("RandAffine", x, min_ndim=self.spatial_dims + 1, layout="(C, *spatial)")
        g = self.generator(rng)
        rotate = g.uniform(-self.rotate_range, self.rotate_range)
        sides = np.array(x.shape[-self.spatial_dims:], dtype=float)
        translate = g.uniform(-self.translate_range, self.translate_range, self.spatial_dims) * sides
        scale = g.uniform(*self.scale_range)
        return affine(x, rotate, translate, scale, self.spatial_dims, self.order, self.padding_mode, self.cval)


class Flip(Transform):
    """Flip the given spatial axes, counted from the end (-1 = W, left-right; -2 = H; -3 = D).

    Args:
        spatial_axes: negative axis indices.
        allow_left_right: permit flipping ``left_right_axis`` (default False: see the module docstring).
        left_right_axis: the axis that runs left-right in the stored orientation.

    Raises:
        ValueError: on a non-negative axis, or the left-right axis without ``allow_left_right``.
    """

    def __init__(self, spatial_axes: Sequence[int], allow_left_right: bool = False, left_right_axis: int = -1) -> None:
        axes = tuple(spatial_axes) if isinstance(spatial_axes, Sequence) else (spatial_axes,)
        if not axes or not all(isinstance(a, int) and -3 <= a <= -1 for a in (*axes, left_right_axis)):
            raise ValueError(f"{type(self).__name__}: expected spatial axes among -1 (W), -2 (H), -3 (D), "
                             f"received {spatial_axes!r} (left_right_axis={left_right_axis!r})")
        if left_right_axis in axes and not allow_left_right:
            raise ValueError(f"{type(self).__name__}: axis {left_right_axis} is left-right; flipping it swaps the side "
                             "of findings (side-specific labels, chest X-rays); pass allow_left_right=True only "
                             "where anatomy and labels are symmetric")
        self.spatial_axes = axes

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        _array(type(self).__name__, x, min_ndim=1 + max(-a for a in self.spatial_axes), layout="(C, *spatial)")
        return np.ascontiguousarray(np.flip(x, axis=self.spatial_axes))


class RandFlip(Flip):
    """Flip each of ``spatial_axes`` independently with probability ``prob`` (see :class:`Flip`)."""

    def __init__(self, spatial_axes: Sequence[int], prob: float = 0.5, allow_left_right: bool = False,
                 left_right_axis: int = -1) -> None:
        super().__init__(spatial_axes, allow_left_right, left_right_axis)
        _probability("prob", prob)
        self.prob = prob

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        _array("RandFlip", x, min_ndim=1 + max(-a for a in self.spatial_axes), layout="(C, *spatial)")
        g = self.generator(rng)
        axes = tuple(a for a in self.spatial_axes if g.random() < self.prob)
        return np.ascontiguousarray(np.flip(x, axis=axes)) if axes else x


class RandGaussianNoise(Transform):
    """Add N(mean, std^2) noise to every value (any layout)."""

    def __init__(self, std: float = 0.05, mean: float = 0.0) -> None:
        _positive("std", std, zero=True)
        self.std, self.mean = float(std), float(mean)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _array("RandGaussianNoise", x)
        return (x + self.generator(rng).normal(self.mean, self.std, x.shape)).astype(np.float32)


# -- dictionary twins -------------------------------------------------------------------------


NormalizeIntensityd = _twin(NormalizeIntensity)
Resized = _twin(Resize)
Affined = _twin(Affine)
RandAffined = _twin(RandAffine)
Flipd = _twin(Flip)
RandFlipd = _twin(RandFlip)
RandGaussianNoised = _twin(RandGaussianNoise)

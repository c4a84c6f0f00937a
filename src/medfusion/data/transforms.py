"""Per-modality preprocessing and augmentation: array transforms and their dictionary twins.

As in MONAI (``transforms/intensity/array.py`` + ``dictionary.py``): each array transform
``T`` acts on one array (or text) and its twin ``Td(keys, ...)`` acts on
``sample["inputs"][key]`` of a dataset sample (see
:class:`~medfusion.data.datasets.manifest.ManifestDataset`), skipping modalities the
sample lacks. Layouts (no batch axis): image (C, H, W), volume (C, D, H, W),
signal (C, T), video (T, C, H, W), vitals (F,), text str.

Randomness: every transform is called as ``t(x, rng=None)``; a random transform draws
from ``rng`` when given, else from its own generator, seeded by
``t.set_random_state(seed)``. The same seed gives the same output.
:class:`Compose` applies each transform with its own probability and seeds its children
from one seed.

Flips: :class:`Flip` / :class:`RandFlip` refuse the left-right axis unless
``allow_left_right=True``. On a chest X-ray the side of a finding is part of the label
("left lower lobe consolidation", a right pneumothorax) and the heart sits on the left;
a mirrored image paired with its unmirrored report or side-specific label teaches the
model the wrong side. Allow it only where anatomy and labels are symmetric (histology).

Methods: zero-phase Butterworth band-pass (``scipy.signal.butter`` as second-order
sections + ``sosfiltfilt``); polyphase resampling (``scipy.signal.resample_poly``);
ECG augmentations after "Data augmentation for deep-learning-based ECG analysis"
(Nonaka & Seita 2020); frame sampling as in EchoNet-Dynamic (Ouyang et al. 2020).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

Generator = np.random.Generator


def _array(name: str, x: Any, ndim: int | None = None, min_ndim: int | None = None, layout: str = "") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array {layout}, received {type(x).__name__}")
    if (ndim is not None and x.ndim != ndim) or (min_ndim is not None and x.ndim < min_ndim):
        raise ValueError(f"{name}: expected an array {layout}, received shape {x.shape}")
    return x


def _text(name: str, x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{name}: expected text (str), received {type(x).__name__}")
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


class Transform:
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

    def __call__(self, x: Any, rng: Generator | None = None) -> Any:
        raise NotImplementedError


# -- images, volumes (and video frames) -------------------------------------------------------


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


# -- signals (C, T) ---------------------------------------------------------------------------


def _signal(name: str, x: Any) -> np.ndarray:
    return _array(name, x, ndim=2, layout="(C, T)")


class Bandpass(Transform):
    """Zero-phase Butterworth filter: band-pass, or high-pass (``high=None``) / low-pass (``low=None``).

    Args:
        sampling_rate: Hz.
        low, high: cut-off frequencies in Hz, 0 < low < high < sampling_rate / 2.
        order: filter order (doubled by the forward-backward pass).

    Raises:
        ValueError: on bad cut-offs; at call time on a signal too short for the filter.
    """

    def __init__(self, sampling_rate: float, low: float | None = 0.5, high: float | None = 40.0,
                 order: int = 4) -> None:
        _positive("sampling_rate", sampling_rate)
        _positive("order", order, integer=True)
        nyquist = sampling_rate / 2
        for name, value in (("low", low), ("high", high)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < nyquist):
                raise ValueError(f"Bandpass: expected {name} in (0, {nyquist}) Hz (Nyquist), received {value!r}")
        if low is None and high is None or (low is not None and high is not None and low >= high):
            raise ValueError(f"Bandpass: expected low < high (or one of them None), received low={low}, high={high}")
        kind, cut = ("bandpass", [low, high]) if low and high else (("highpass", low) if low else ("lowpass", high))
        self.sos = signal.butter(order, cut, btype=kind, fs=sampling_rate, output="sos")
        self.min_length = 3 * (2 * len(self.sos) + 1) + 1  # scipy's default padding + 1
        # pad by ~3 periods of the lowest cut-off so edge transients stay out of the signal
        self.padlen = max(self.min_length - 1, int(3 * sampling_rate / (low or high)))

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("Bandpass", x)
        if x.shape[-1] < self.min_length:
            raise ValueError(f"Bandpass: signal of {x.shape[-1]} samples is too short for this filter; "
                             f"expected at least {self.min_length}")
        padlen = min(self.padlen, x.shape[-1] - 1)
        return signal.sosfiltfilt(self.sos, x, axis=-1, padlen=padlen).astype(np.float32)


class Resample(Transform):
    """Resample (C, T) from ``orig_rate`` to ``target_rate`` Hz: T' = ceil(T * target / orig)."""

    def __init__(self, orig_rate: float, target_rate: float) -> None:
        _positive("orig_rate", orig_rate)
        _positive("target_rate", target_rate)
        ratio = Fraction(target_rate / orig_rate).limit_denominator(1000)
        self.up, self.down = ratio.numerator, ratio.denominator

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("Resample", x)
        if self.up == self.down:
            return x.astype(np.float32)
        return signal.resample_poly(x, self.up, self.down, axis=-1).astype(np.float32)


class ScaleAmplitude(Transform):
    """Multiply by ``factor``."""

    def __init__(self, factor: float) -> None:
        _positive("factor", factor, zero=True)
        self.factor = float(factor)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        return (_array("ScaleAmplitude", x) * self.factor).astype(np.float32)


class RandScaleAmplitude(Transform):
    """Multiply (C, T) by a factor uniform in ``scale_range`` (one per lead with ``per_channel``)."""

    def __init__(self, scale_range: tuple[float, float] = (0.8, 1.2), per_channel: bool = False) -> None:
        self.scale_range, self.per_channel = _range("scale_range", scale_range, low=0.0), per_channel

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("RandScaleAmplitude", x)
        factors = self.generator(rng).uniform(*self.scale_range, (x.shape[0] if self.per_channel else 1, 1))
        return (x * factors).astype(np.float32)


class RandBaselineWander(Transform):
    """Add a slow sinusoidal drift (breathing, electrode motion): per lead, amplitude uniform
    in [0, ``amplitude``], one frequency uniform in ``frequency_range`` Hz, random phase."""

    def __init__(self, sampling_rate: float, amplitude: float = 0.1,
                 frequency_range: tuple[float, float] = (0.05, 0.5)) -> None:
        _positive("sampling_rate", sampling_rate)
        _positive("amplitude", amplitude, zero=True)
        self.sampling_rate, self.amplitude = float(sampling_rate), float(amplitude)
        self.frequency_range = _range("frequency_range", frequency_range, low=0.0)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("RandBaselineWander", x)
        g = self.generator(rng)
        t = np.arange(x.shape[1]) / self.sampling_rate
        frequency = g.uniform(*self.frequency_range)
        amplitude = g.uniform(0.0, self.amplitude, (x.shape[0], 1))
        phase = g.uniform(0.0, 2 * np.pi, (x.shape[0], 1))
        return (x + amplitude * np.sin(2 * np.pi * frequency * t + phase)).astype(np.float32)


def time_shift(x: np.ndarray, shift: int, mode: str) -> np.ndarray:
    """Shift (C, T) by ``shift`` samples (positive = later); "pad" fills with 0, "roll" wraps."""
    if mode == "roll":
        return np.roll(x, shift, axis=-1)
    out = np.zeros_like(x)
    if shift >= 0:
        out[:, shift:] = x[:, : x.shape[1] - shift]
    else:
        out[:, :shift] = x[:, -shift:]
    return out


class TimeShift(Transform):
    """Shift (C, T) by ``shift`` samples (positive = later), zero-padded ("pad") or wrapped ("roll")."""

    def __init__(self, shift: int, mode: str = "pad") -> None:
        if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)):
            raise ValueError(f"TimeShift: expected an int shift, received {shift!r}")
        if mode not in ("pad", "roll"):
            raise ValueError(f"{type(self).__name__}: expected mode 'pad' or 'roll', received {mode!r}")
        self.shift, self.mode = int(shift), mode

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        return time_shift(_signal("TimeShift", x), self.shift, self.mode)


class RandTimeShift(TimeShift):
    """Shift by an integer uniform in [-max_shift, max_shift] samples."""

    def __init__(self, max_shift: int, mode: str = "pad") -> None:
        _positive("max_shift", max_shift, integer=True, zero=True)
        super().__init__(0, mode)
        self.max_shift = int(max_shift)

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("RandTimeShift", x)
        return time_shift(x, int(self.generator(rng).integers(-self.max_shift, self.max_shift + 1)), self.mode)


class RandLeadDropout(Transform):
    """Zero each lead with probability ``p``; at least one lead is kept."""

    def __init__(self, p: float = 0.1) -> None:
        _probability("p", p)
        self.p = p

    def __call__(self, x: np.ndarray, rng: Generator | None = None) -> np.ndarray:
        x = _signal("RandLeadDropout", x)
        g = self.generator(rng)
        drop = g.random(x.shape[0]) < self.p
        if drop.all():
            drop[g.integers(x.shape[0])] = False
        out = x.copy()
        out[drop] = 0.0
        return out


# -- text -------------------------------------------------------------------------------------

#: Common clinical abbreviations -> expansions (matched as whole words, case-insensitively).
CLINICAL_ABBREVIATIONS: dict[str, str] = {
    "SOB": "shortness of breath", "DOE": "dyspnea on exertion", "CP": "chest pain",
    "RLL": "right lower lobe", "LLL": "left lower lobe", "RUL": "right upper lobe", "LUL": "left upper lobe",
    "RML": "right middle lobe", "h/o": "history of", "c/o": "complains of", "s/p": "status post",
    "r/o": "rule out", "w/": "with", "w/o": "without", "b/l": "bilateral", "y/o": "year old",
    "HTN": "hypertension", "DM": "diabetes mellitus", "CHF": "congestive heart failure",
    "AF": "atrial fibrillation", "AFib": "atrial fibrillation", "MI": "myocardial infarction",
    "STEMI": "ST-elevation myocardial infarction", "CAD": "coronary artery disease",
    "COPD": "chronic obstructive pulmonary disease", "PE": "pulmonary embolism", "DVT": "deep vein thrombosis",
    "PNA": "pneumonia", "CXR": "chest x-ray", "ECG": "electrocardiogram", "EKG": "electrocardiogram",
    "LBBB": "left bundle branch block", "RBBB": "right bundle branch block",
    "LVEF": "left ventricular ejection fraction",
    "EF": "ejection fraction", "HR": "heart rate", "BP": "blood pressure", "RR": "respiratory rate",
    "NAD": "no acute distress", "abx": "antibiotics", "hx": "history", "dx": "diagnosis", "tx": "treatment",
}


class Lowercase(Transform):
    """Lower-case the text."""

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        return _text("Lowercase", x).lower()


class ExpandAbbreviations(Transform):
    """Replace whole-word abbreviations by their expansion ("SOB" -> "shortness of breath").

    Args:
        mapping: {abbreviation: expansion}; default :data:`CLINICAL_ABBREVIATIONS`.
        ignore_case: also match other cases ("sob", "Cxr").
    """

    def __init__(self, mapping: Mapping[str, str] | None = None, ignore_case: bool = True) -> None:
        mapping = dict(CLINICAL_ABBREVIATIONS if mapping is None else mapping)
        if not mapping or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in mapping.items()):
            raise ValueError("ExpandAbbreviations: expected a non-empty {abbreviation: expansion} of strings")
        self.ignore_case = ignore_case
        self.mapping = {(k.lower() if ignore_case else k): v for k, v in mapping.items()}
        keys = sorted(mapping, key=len, reverse=True)  # "w/o" before "w/"
        self.pattern = re.compile(r"(?<![\w/])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w/])",
                                  re.IGNORECASE if ignore_case else 0)

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        key = (lambda m: m.group(0).lower()) if self.ignore_case else (lambda m: m.group(0))
        return self.pattern.sub(lambda m: self.mapping[key(m)], _text("ExpandAbbreviations", x))


class RandTokenDropout(Transform):
    """Drop each whitespace-separated word with probability ``p`` (at least one word is kept)."""

    def __init__(self, p: float = 0.1) -> None:
        _probability("p", p)
        self.p = p

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        words = _text("RandTokenDropout", x).split()
        if not words:
            return x
        g = self.generator(rng)
        keep = g.random(len(words)) >= self.p
        if not keep.any():
            keep[g.integers(len(words))] = True
        return " ".join(w for w, k in zip(words, keep) if k)


# -- video (T, C, H, W) -----------------------------------------------------------------------


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


# -- vitals (F,) ------------------------------------------------------------------------------


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


# -- composition and dictionary twins ---------------------------------------------------------


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
    return type(f"{cls.__name__}d", (MapTransform,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


NormalizeIntensityd = _twin(NormalizeIntensity)
Resized = _twin(Resize)
Affined = _twin(Affine)
RandAffined = _twin(RandAffine)
Flipd = _twin(Flip)
RandFlipd = _twin(RandFlip)
RandGaussianNoised = _twin(RandGaussianNoise)
Bandpassd = _twin(Bandpass)
Resampled = _twin(Resample)
ScaleAmplituded = _twin(ScaleAmplitude)
RandScaleAmplituded = _twin(RandScaleAmplitude)
RandBaselineWanderd = _twin(RandBaselineWander)
TimeShiftd = _twin(TimeShift)
RandTimeShiftd = _twin(RandTimeShift)
RandLeadDropoutd = _twin(RandLeadDropout)
Lowercased = _twin(Lowercase)
ExpandAbbreviationsd = _twin(ExpandAbbreviations)
RandTokenDropoutd = _twin(RandTokenDropout)
CenterTemporalCropd = _twin(CenterTemporalCrop)
RandTemporalCropd = _twin(RandTemporalCrop)
UniformFrameSamplingd = _twin(UniformFrameSampling)


class VitalsStandardizerd(MapTransform):
    """Dictionary twin of a fitted :class:`VitalsStandardizer` (passed in, not built)."""

    def __init__(self, keys: str | Sequence[str], standardizer: VitalsStandardizer,
                 allow_missing_keys: bool = False) -> None:
        if not isinstance(standardizer, VitalsStandardizer):
            raise ValueError("VitalsStandardizerd: expected a VitalsStandardizer, "
                             f"received {type(standardizer).__name__}")
        super().__init__(keys, standardizer, allow_missing_keys)

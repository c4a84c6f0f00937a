"""Signals (C, T): filtering, resampling and ECG augmentations.

Methods: zero-phase Butterworth band-pass (``scipy.signal.butter`` as second-order
sections + ``sosfiltfilt``); polyphase resampling (``scipy.signal.resample_poly``);
ECG augmentations after "Data augmentation for deep-learning-based ECG analysis"
(Nonaka & Seita 2020).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
from scipy import signal

from medfusion.data.transforms.base import Generator, Transform, _array, _positive, _probability, _range, _twin


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


# -- dictionary twins -------------------------------------------------------------------------


Bandpassd = _twin(Bandpass)
Resampled = _twin(Resample)
ScaleAmplituded = _twin(ScaleAmplitude)
RandScaleAmplituded = _twin(RandScaleAmplitude)
RandBaselineWanderd = _twin(RandBaselineWander)
TimeShiftd = _twin(TimeShift)
RandTimeShiftd = _twin(RandTimeShift)
RandLeadDropoutd = _twin(RandLeadDropout)

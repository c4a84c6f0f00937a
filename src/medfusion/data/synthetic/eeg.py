"""Vectorised synthetic scalp EEG (10-20 montage) with planted 3 Hz spike-and-wave discharges and artefacts.

A batch of N recordings is drawn at once with numpy: patients are rendered in chunks of
:data:`CHUNK` as whole (m, C, T) arrays (no per-sample or per-time-point Python loop) on a
few threads, each chunk with its own random stream, so the result does not depend on the
number of threads. Values are
microvolts (µV), referential to a common reference; 19 channels (:data:`EEG_CHANNELS`),
default 128 Hz x 20 s (T = 2560).

What a recording is made of (amplitudes are RMS unless stated):

| component | where | spectrum / shape |
|---|---|---|
| background | every channel, 50 % shared (volume conduction) | 1/f^1.5 ("pink"), 12 µV |
| posterior alpha rhythm | one process per patient, weighted posterior (O1/O2 x1, Fp x0.15) | narrow band at 8.5-11.5 Hz, about 14 µV at O1/O2, waxing and waning |
| post-ictal slowing (``postictal``) | every channel | alpha x0.3 and polymorphic delta 0.8-2.2 Hz, 30 µV |
| spike-and-wave discharge | generalised (all 19, frontal maximum) or one hemisphere (8 channels, midline spared) | 2.8-3.2 Hz: 15-ms spike + 50-ms slow wave per cycle, 100-200 µV peak, 3-8 s window, 0.3-s ramps |
| eye blink | frontal: Fp1/Fp2 x1, F7/F3/Fz/F4/F8 x0.4 | 0.4-s positive sin² bump, 80-150 µV peak; 0-6 per recording (Poisson 1.5) |
| muscle | temporal of one side (F7, T3, T5 or F8, T4, T6) | 20-60 Hz noise burst, 0.5-2 s, 25-50 µV; each of 2 slots with p 0.3 |
| electrode pop | one channel | step of ±150-300 µV decaying with tau 50-150 ms (mask: 5 tau); each of 2 slots with p 0.2 |

Ground truth is kept per *event* (:class:`EEGEvents`): for every slot its kind
(:data:`EVENT_KINDS`), active flag, first and end-exclusive sample, and channel set;
:meth:`EEGEvents.masks` expands them to (n, 4, C, T) boolean masks on demand (a full
cohort of masks would not fit in memory) and :meth:`EEGEvents.to_frame` to a table.

**Sides** follow the rest of the package: :data:`RIGHT` (0) = the patient's right
hemisphere (even-numbered electrodes), :data:`LEFT` (1) = left (odd-numbered),
:data:`BOTH` (2) = generalised, :data:`NO_SIDE` (-1) = none.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

#: The 19 channels of the 10-20 system (old temporal names T3/T4/T5/T6), in signal row order.
EEG_CHANNELS: tuple[str, ...] = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T3", "C3", "Cz", "C4", "T4", "T5",
                                 "P3", "Pz", "P4", "T6", "O1", "O2")
#: (C, 2) approximate scalp positions: x from -1 (left) to +1 (right), y from -1 (posterior) to +1 (anterior).
CHANNEL_XY = np.array([
    (-0.3, 0.95), (0.3, 0.95), (-0.8, 0.6), (-0.4, 0.5), (0.0, 0.5), (0.4, 0.5), (0.8, 0.6), (-1.0, 0.0), (-0.5, 0.0),
    (0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (-0.8, -0.6), (-0.4, -0.5), (0.0, -0.5), (0.4, -0.5), (0.8, -0.6),
    (-0.3, -0.95), (0.3, -0.95),
], dtype=np.float32)
RIGHT, LEFT, BOTH, NO_SIDE = 0, 1, 2, -1
#: (2, C) bool: channels of the right (row 0) and left (row 1) hemisphere; midline in neither.
HEMISPHERE = np.stack([CHANNEL_XY[:, 0] > 0, CHANNEL_XY[:, 0] < 0])
#: (2, C) bool: temporal chain (F7/F8, T3/T4, T5/T6) of the right and left side.
TEMPORAL = np.stack([np.isin(EEG_CHANNELS, ("F8", "T4", "T6")), np.isin(EEG_CHANNELS, ("F7", "T3", "T5"))])
#: Event kinds, in mask channel order.
EVENT_KINDS: tuple[str, ...] = ("discharge", "blink", "muscle", "pop")
#: Event slots per recording, by kind (slot k's kind is ``SLOT_KIND[k]``).
SLOTS = {"discharge": 1, "blink": 6, "muscle": 2, "pop": 2}
SLOT_KIND = np.repeat(np.arange(len(EVENT_KINDS)), [SLOTS[k] for k in EVENT_KINDS]).astype(np.int8)
#: Recordings rendered per vectorised chunk.
CHUNK = 64
#: Frontal blink weights per channel (Fp 1, other frontal 0.4, rest 0).
BLINK_WEIGHT = np.where(CHANNEL_XY[:, 1] > 0.9, 1.0, np.where(CHANNEL_XY[:, 1] >= 0.5, 0.4, 0.0)).astype(np.float32)
#: Posterior weighting of the alpha rhythm.
ALPHA_WEIGHT = (0.15 + 0.85 * ((1 - CHANNEL_XY[:, 1]) / 2) ** 2).astype(np.float32)
_F32 = np.float32


@dataclass
class EEGSpec:
    """What to draw for each of N recordings.

    Attributes:
        discharge_side: (N,) int8: :data:`NO_SIDE` (no discharge), :data:`RIGHT` / :data:`LEFT`
            (focal, one hemisphere) or :data:`BOTH` (generalised).
        postictal: (N,) bool, post-ictal slowing (alpha attenuated, diffuse delta).

    Raises:
        ValueError: on mismatched shapes or an unknown side code.
    """

    discharge_side: np.ndarray
    postictal: np.ndarray

    def __post_init__(self) -> None:
        self.discharge_side = np.asarray(self.discharge_side).astype(np.int8)
        self.postictal = np.asarray(self.postictal, dtype=bool)
        n = len(self.discharge_side)
        if self.discharge_side.shape != (n,) or self.postictal.shape != (n,):
            raise ValueError(f"eeg spec: expected discharge_side and postictal of one shape (N,), received "
                             f"{self.discharge_side.shape} and {self.postictal.shape}")
        if not np.isin(self.discharge_side, (NO_SIDE, RIGHT, LEFT, BOTH)).all():
            raise ValueError(f"eeg spec: expected discharge_side in {{-1, 0, 1, 2}}, received "
                             f"{sorted(set(self.discharge_side.tolist()))}")

    def __len__(self) -> int:
        return len(self.discharge_side)


@dataclass
class EEGEvents:
    """Planted events, K slots per recording (kinds in :data:`SLOT_KIND`).

    Attributes:
        active: (N, K) bool, the slot holds an event.
        onset: (N, K) int32 first sample of the event.
        end: (N, K) int32 end-exclusive sample.
        channels: (N, K, C) bool channels the event is planted on.
    """

    active: np.ndarray
    onset: np.ndarray
    end: np.ndarray
    channels: np.ndarray

    def masks(self, n_samples: int, rows=None) -> np.ndarray:
        """(n, len(EVENT_KINDS), C, T) bool masks of where each kind of event is, for ``rows`` (default all)."""
        rows = slice(None) if rows is None else rows
        active, onset, end, channels = self.active[rows], self.onset[rows], self.end[rows], self.channels[rows]
        t = np.arange(n_samples)
        out = np.zeros((len(active), len(EVENT_KINDS), channels.shape[-1], n_samples), dtype=bool)
        for kind in range(len(EVENT_KINDS)):
            slots = SLOT_KIND == kind
            when = (active[:, slots, None] & (t >= onset[:, slots, None]) & (t < end[:, slots, None])).astype(_F32)
            out[:, kind] = np.matmul(channels[:, slots].transpose(0, 2, 1).astype(_F32), when) > 0
        return out

    def to_frame(self, patient_id, sampling_rate: float, channel_names=EEG_CHANNELS):
        """One row per active event: patient_id, kind, channels (space-separated), onset_s,
        duration_s, onset_sample, end_sample (end-exclusive)."""
        import pandas as pd

        rows, slots = np.nonzero(self.active)
        names = np.asarray(channel_names)
        return pd.DataFrame({
            "patient_id": np.asarray(patient_id)[rows],
            "kind": np.asarray(EVENT_KINDS)[SLOT_KIND[slots]],
            "channels": [" ".join(names[mask]) for mask in self.channels[rows, slots]],
            "onset_s": self.onset[rows, slots] / sampling_rate,
            "duration_s": (self.end[rows, slots] - self.onset[rows, slots]) / sampling_rate,
            "onset_sample": self.onset[rows, slots], "end_sample": self.end[rows, slots],
        })


@dataclass
class EEGBatch:
    """Rendered recordings.

    Attributes:
        signals: (N, C, T) float32 µV, channels in :data:`EEG_CHANNELS` order.
        events: the planted events (ground truth).
        spec: what was asked for.
        sampling_rate: Hz.
        alpha_hz: (N,) float32 frequency of the alpha rhythm.
        spike_wave_hz: (N,) float32 discharge frequency (NaN without a discharge).
    """

    signals: np.ndarray
    events: EEGEvents
    spec: EEGSpec
    sampling_rate: float
    alpha_hz: np.ndarray
    spike_wave_hz: np.ndarray

    channel_names: ClassVar[tuple[str, ...]] = EEG_CHANNELS


def _check_timing(sampling_rate, duration_s) -> tuple[int, int]:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate < 128:
        raise ValueError(f"eeg: expected sampling_rate as an int >= 128 Hz, received {sampling_rate!r}")
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float, np.number)) or not duration_s >= 10 \
            or not float(duration_s).is_integer():
        raise ValueError(f"eeg: expected duration_s as a whole number of seconds >= 10 (EDF stores 1-s records), "
                         f"received {duration_s!r}")
    return int(sampling_rate), int(duration_s) * int(sampling_rate)


def _sample_events(spec: EEGSpec, rng: np.random.Generator, rate: int, n_samples: int) -> EEGEvents:
    """Event slots (see the module docstring for the rates and durations)."""
    n, k, c = len(spec), len(SLOT_KIND), len(EEG_CHANNELS)
    duration = n_samples / rate
    active = np.zeros((n, k), dtype=bool)
    length = np.zeros((n, k))  # seconds
    channels = np.zeros((n, k, c), dtype=bool)
    side = spec.discharge_side
    d = SLOT_KIND == 0
    active[:, d] = (side >= 0)[:, None]
    length[:, d] = rng.uniform(3.0, min(8.0, 0.4 * duration), (n, 1))
    channels[:, d] = np.where((side == BOTH)[:, None], True, HEMISPHERE[np.clip(side, 0, 1)])[:, None]
    b = SLOT_KIND == 1
    active[:, b] = np.arange(SLOTS["blink"]) < rng.poisson(1.5, (n, 1))
    length[:, b] = 0.4
    channels[:, b] = BLINK_WEIGHT > 0
    m = SLOT_KIND == 2
    active[:, m] = rng.random((n, SLOTS["muscle"])) < 0.3
    length[:, m] = rng.uniform(0.5, 2.0, (n, SLOTS["muscle"]))
    channels[:, m] = TEMPORAL[rng.integers(0, 2, (n, SLOTS["muscle"]))]
    p = SLOT_KIND == 3
    active[:, p] = rng.random((n, SLOTS["pop"])) < 0.2
    length[:, p] = 5 * rng.uniform(0.05, 0.15, (n, SLOTS["pop"]))  # 5 tau
    channels[:, p] = np.eye(c, dtype=bool)[rng.integers(0, c, (n, SLOTS["pop"]))]
    margin = np.where(d, 1.0, 0.0)  # discharges start >= 1 s in and end >= 1 s before the end
    onset_s = margin + rng.random((n, k)) * (duration - length - 2 * margin)
    onset = np.round(onset_s * rate).astype(np.int32)
    end = np.minimum(onset + np.round(length * rate).astype(np.int32), n_samples).astype(np.int32)
    channels &= active[:, :, None]
    return EEGEvents(active=active, onset=np.where(active, onset, 0), end=np.where(active, end, 0),
                     channels=channels)


def _spectral_noise(rng: np.random.Generator, shape: tuple[int, ...], gain: np.ndarray) -> np.ndarray:
    """(..., T) float32 Gaussian noise with amplitude spectrum ``gain`` (broadcastable to (..., T // 2 + 1)
    over the frequencies of :func:`numpy.fft.rfftfreq`), scaled to unit RMS over the last axis."""
    n_samples = shape[-1]
    spectrum = rng.standard_normal((*shape[:-1], n_samples // 2 + 1, 2), dtype=_F32).view(np.complex64)[..., 0]
    x = np.fft.irfft(spectrum * gain.astype(_F32), n=n_samples, axis=-1).astype(_F32)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-12)


def _band(freqs: np.ndarray, low: float, high: float, edge: float) -> np.ndarray:
    """Amplitude gain 1 inside [low, high] Hz with linear edges ``edge`` Hz wide."""
    return np.clip(np.minimum(freqs - low, high - freqs) / edge + 0.5, 0, 1)


def _spike_wave(t: np.ndarray, hz: np.ndarray) -> np.ndarray:
    """One spike (15 ms, +1) and slow wave (50 ms, -0.6) per cycle; ``t`` seconds since onset."""
    within = np.mod(t, 1 / hz)
    return np.exp(-0.5 * ((within - 0.05) / 0.015) ** 2) - 0.6 * np.exp(-0.5 * ((within - 0.17) / 0.05) ** 2)


def render_eeg(spec: EEGSpec, rng: np.random.Generator, *, sampling_rate: int = 128,
               duration_s: float = 20.0, workers: int | None = None) -> EEGBatch:
    """Render N recordings (see the module docstring).

    Args:
        spec: per-recording discharge side and post-ictal flag.
        rng: the random generator; the same state gives the same recordings.
        sampling_rate: Hz, an int >= 128.
        duration_s: whole seconds, >= 10.
        workers: threads rendering chunks (default: CPU count, at most 4); the signals do
            not depend on it (each chunk has its own random stream).

    Returns:
        :class:`EEGBatch` with signals (N, 19, T) float32 µV, T = duration_s * sampling_rate.

    Raises:
        ValueError: on a bad spec, sampling_rate, duration_s or workers.
    """
    if not isinstance(spec, EEGSpec):
        raise ValueError(f"eeg: expected spec to be an EEGSpec, received {type(spec).__name__}")
    rate, n_samples = _check_timing(sampling_rate, duration_s)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"eeg: expected workers as an int >= 1 or None, received {workers!r}")
    workers = workers or min(4, os.cpu_count() or 1)
    n = len(spec)
    events = _sample_events(spec, rng, rate, n_samples)
    alpha_hz = rng.uniform(8.5, 11.5, n).astype(_F32)
    sw_hz = np.where(spec.discharge_side >= 0, rng.uniform(2.8, 3.2, n), np.nan).astype(_F32)
    weights = _discharge_weights(spec, rng)
    signals = np.empty((n, len(EEG_CHANNELS), n_samples), dtype=_F32)
    starts = range(0, n, CHUNK)
    chunk_rngs = rng.spawn(len(starts))  # one stream per chunk: the result does not depend on `workers`

    def render(i: int) -> None:
        rows = slice(starts[i], min(starts[i] + CHUNK, n))
        part = EEGEvents(events.active[rows], events.onset[rows], events.end[rows], events.channels[rows])
        signals[rows] = _render(EEGSpec(spec.discharge_side[rows], spec.postictal[rows]), part, alpha_hz[rows],
                                sw_hz[rows], weights[rows], chunk_rngs[i], rate, n_samples)

    with ThreadPoolExecutor(workers) as pool:  # numpy's FFT and array loops release the GIL
        list(pool.map(render, range(len(starts))))
    return EEGBatch(signals=signals, events=events, spec=spec, sampling_rate=float(rate), alpha_hz=alpha_hz,
                    spike_wave_hz=sw_hz)


def _discharge_weights(spec: EEGSpec, rng: np.random.Generator) -> np.ndarray:
    """(N, C) float32 discharge amplitude per channel (0 off the discharge field)."""
    n = len(spec)
    side = spec.discharge_side
    frontal = 0.75 + 0.25 * (CHANNEL_XY[:, 1] + 1) / 2  # generalised: frontal maximum
    field = np.where((side == BOTH)[:, None], frontal, HEMISPHERE[np.clip(side, 0, 1)].astype(_F32))
    field = np.where((side >= 0)[:, None], field, 0.0)
    return (field * rng.uniform(0.85, 1.0, (n, len(EEG_CHANNELS)))).astype(_F32)


def _window(t_samples: np.ndarray, onset, end, rate: int, ramp_s: float) -> np.ndarray:
    """(m, k, T) float32 trapezoid: 0 outside [onset, end), ramps of ``ramp_s`` at both ends."""
    ramp = max(ramp_s * rate, 1.0)
    up = (t_samples - onset[..., None] + 0.5) / ramp
    down = (end[..., None] - t_samples - 0.5) / ramp
    return np.clip(np.minimum(up, down), 0, 1).astype(_F32)


def _render(spec, events, alpha_hz, sw_hz, weights, rng, rate, n_samples) -> np.ndarray:
    """(m, C, T) float32 µV for one chunk (see the module docstring)."""
    m, c = len(spec), len(EEG_CHANNELS)
    samples = np.arange(n_samples, dtype=_F32)
    t = samples / rate
    freqs = np.fft.rfftfreq(n_samples, 1 / rate)
    pink = np.where(freqs > 0.5, np.maximum(freqs, 0.5) ** -0.75, 0.0)  # amplitude f^-0.75: power 1/f^1.5
    signal = 12.0 * np.sqrt(0.5) * (_spectral_noise(rng, (m, 1, n_samples), pink)
                                    + _spectral_noise(rng, (m, c, n_samples), pink))
    # alpha: one narrow-band process per patient at its own frequency, weighted posterior
    alpha_gain = np.exp(-0.5 * ((freqs[None, None, :] - alpha_hz[:, None, None]) / 0.35) ** 2)
    alpha = _spectral_noise(rng, (m, 1, n_samples), alpha_gain)
    post = spec.postictal[:, None, None]
    signal += np.where(post, 0.3, 1.0) * 14.0 * ALPHA_WEIGHT[None, :, None] * alpha
    slow = np.flatnonzero(spec.postictal)  # noise only for the rows that need it
    delta_gain = _band(freqs, 0.8, 2.2, 0.3)
    signal[slow] += 30.0 * (np.sqrt(0.6) * _spectral_noise(rng, (len(slow), 1, n_samples), delta_gain)
                            + np.sqrt(0.4) * _spectral_noise(rng, (len(slow), c, n_samples), delta_gain))

    kind = SLOT_KIND
    onset, end, active = events.onset.astype(_F32), events.end.astype(_F32), events.active
    # spike-and-wave: waveform x trapezoid window x channel field
    d = kind == 0
    hz = np.nan_to_num(sw_hz, nan=3.0)[:, None, None]
    since = t[None, None, :] - onset[:, d, None] / rate
    wave = _spike_wave(since, hz) * _window(samples, onset[:, d], end[:, d], rate, 0.3) * active[:, d, None]
    amplitude = rng.uniform(100, 200, (m, 1, 1)).astype(_F32)
    signal += amplitude * weights[:, :, None] * wave  # one discharge slot: (m, C, 1) x (m, 1, T)
    # eye blinks: sin^2 bump on the frontal channels
    b = kind == 1
    phase = np.clip((samples - onset[:, b, None]) / np.maximum(end[:, b, None] - onset[:, b, None], 1), 0, 1)
    bump = np.sin(np.pi * phase) ** 2 * active[:, b, None] * rng.uniform(80, 150, (m, SLOTS["blink"], 1))
    signal += BLINK_WEIGHT[None, :, None] * bump.sum(axis=1, keepdims=True).astype(_F32)
    # muscle: 20-60 Hz noise gated on the temporal chain of one side
    mu = kind == 2
    gate = _window(samples, onset[:, mu], end[:, mu], rate, 0.05) * active[:, mu, None] \
        * rng.uniform(25, 50, (m, SLOTS["muscle"], 1))
    tense = np.flatnonzero(active[:, mu].any(axis=1))
    hf = _spectral_noise(rng, (len(tense), c, n_samples), _band(freqs, 20.0, min(60.0, 0.45 * rate), 2.0))
    signal[tense] += hf * np.matmul(events.channels[tense][:, mu].transpose(0, 2, 1).astype(_F32),
                                    gate[tense].astype(_F32))
    # electrode pops: a step decaying exponentially on one channel
    p = kind == 3
    lag = (samples - onset[:, p, None]) / rate
    tau = np.maximum(end[:, p] - onset[:, p], 1)[..., None] / (5 * rate)
    sign = np.where(rng.random((m, SLOTS["pop"], 1)) < 0.5, -1.0, 1.0)
    step = np.where((lag >= 0) & (samples < end[:, p, None]), np.exp(-np.maximum(lag, 0) / tau), 0.0)
    step = step * active[:, p, None] * sign * rng.uniform(150, 300, (m, SLOTS["pop"], 1))
    signal += np.matmul(events.channels[:, p].transpose(0, 2, 1).astype(_F32), step.astype(_F32))
    return signal.astype(_F32)


__all__ = [
    "BLINK_WEIGHT", "BOTH", "CHANNEL_XY", "CHUNK", "EEG_CHANNELS", "EVENT_KINDS", "HEMISPHERE", "LEFT", "NO_SIDE",
    "RIGHT", "SLOTS", "SLOT_KIND", "TEMPORAL", "EEGBatch", "EEGEvents", "EEGSpec", "render_eeg",
]

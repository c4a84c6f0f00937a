"""Beat timing and the pulse (PPG) and respiration waveforms of the ``cardiac`` scenario.

Heart beats are drawn once per patient (:func:`sample_beats`) and shared by the ECG
(:mod:`.ecg`) and the PPG, so the pulse rate is the ECG's heart rate and an irregular
rhythm (atrial fibrillation) is irregular in both:

- sinus rhythm: RR intervals ``60 / HR * (1 + 0.03 z)`` (coefficient of variation about 0.03);
- atrial fibrillation: RR intervals ``60 / HR * X`` with X log-normal (sigma 0.25, mean 1),
  no shorter than 0.3 s (coefficient of variation about 0.25).

A waveform is the overlap-add of one short template per beat (:func:`overlap_add`): the
template of every beat is evaluated on its own window of samples, all beats of all
patients at once, and summed into the record with one ``bincount`` — no loop over beats.

- PPG (:func:`render_ppg`): a systolic and a diastolic Gaussian per beat, about 0.3 s
  after the R peak (pulse transit); the beat's amplitude follows the preceding RR interval
  (a longer filling time gives a larger stroke, so the AF pulse varies beat to beat); the
  amplitude and baseline breathe with the respiration.
- Respiration (:func:`render_respiration`): a rounded, slightly asymmetric oscillation at
  the respiratory rate with slow (0.02-0.08 Hz) rate and depth variation.

Both are in normalised units (``NU``); ``noise`` scales additive white noise and drift
(0 gives the clean waveform; the underlying draws do not depend on it).
"""

from __future__ import annotations

import numpy as np

#: Shortest RR interval (s) a sampled rhythm may have.
MIN_RR_S = 0.3
_CHUNK = 512


def _as_rates(name: str, values: np.ndarray, low: float, high: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not np.all((values >= low) & (values <= high)):
        raise ValueError(f"waveforms: expected {name} as (N,) values in [{low}, {high}], received shape "
                         f"{values.shape} with range {values.min(initial=np.nan)}..{values.max(initial=np.nan)}")
    return values


def sample_beats(rng: np.random.Generator, heart_rate: np.ndarray, af: np.ndarray, duration_s: float) -> np.ndarray:
    """R-peak times of every patient.

    Args:
        rng: the random generator.
        heart_rate: (N,) mean heart rate in beats/min, in [30, 200].
        af: (N,) bool, atrial fibrillation (irregular RR intervals) instead of sinus rhythm.
        duration_s: record length in seconds (> 0).

    Returns:
        (N, B) float64 beat times in seconds, increasing along each row, covering
        ``[-0.6, duration_s + 0.6]``; NaN pads the rows with fewer beats.

    Raises:
        ValueError: on rates out of range, shapes that differ, or a non-positive duration.
    """
    rate = _as_rates("heart_rate", heart_rate, 30, 200)
    af = np.asarray(af, dtype=bool)
    if af.shape != rate.shape:
        raise ValueError(f"waveforms: expected af of shape {rate.shape} like heart_rate, received {af.shape}")
    if not duration_s > 0:
        raise ValueError(f"waveforms: expected duration_s > 0, received {duration_s!r}")
    n = len(rate)
    beats = int(np.ceil((duration_s + 1.2) / MIN_RR_S)) + 1
    mean_rr = 60.0 / rate[:, None]
    sinus = 1 + 0.03 * rng.standard_normal((n, beats))
    irregular = np.exp(0.25 * rng.standard_normal((n, beats)) - 0.25**2 / 2)
    rr = np.maximum(mean_rr * np.where(af[:, None], irregular, sinus), MIN_RR_S)
    start = -0.6 * rng.random((n, 1))
    times = start + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    times[times > duration_s + 0.6] = np.nan
    return times


def white_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    """float32 uniform white noise of standard deviation ``sd`` (from random bytes: cheaper than normals)."""
    return rng.integers(-128, 127, shape, dtype=np.int8, endpoint=True) * np.float32(sd / np.sqrt((256**2 - 1) / 12))


def rr_intervals(beats: np.ndarray) -> np.ndarray:
    """(N, B) interval (s) from the previous beat to each beat; the first beat gets its row's mean."""
    rr = np.diff(beats, axis=1, prepend=np.nan)
    mean = np.nanmean(rr, axis=1, keepdims=True)
    return np.where(np.isnan(rr) & ~np.isnan(beats), mean, rr)


def overlap_add(beats: np.ndarray, template, sampling_rate: float, n_samples: int,
                window_s: tuple[float, float]) -> np.ndarray:
    """Sum one template per beat into records.

    Args:
        beats: (N, B) beat times in seconds, NaN for no beat.
        template: ``template(rows, cols, tau) -> (M, C, W)``: the C channels of the M
            beats ``beats[rows, cols]`` at ``tau`` (M, W), the times (s) of each beat's
            window samples relative to the beat.
        sampling_rate: Hz.
        n_samples: T, samples per record (time 0 is sample 0).
        window_s: (start, end) of the template window relative to the beat, in seconds.

    Returns:
        (N, C, T) float32 sum of the templates.
    """
    n = beats.shape[0]
    first = int(np.floor(window_s[0] * sampling_rate))
    width = int(np.ceil(window_s[1] * sampling_rate)) - first + 1
    total = n_samples + 2  # one spill-over column each side collects samples outside the record
    out = None
    for lo in range(0, n, _CHUNK):  # blocks of patients bound the (M, C, W) temporaries
        block = beats[lo:lo + _CHUNK]
        local, cols = np.nonzero(~np.isnan(block))
        times = block[local, cols]
        index = np.floor(times * sampling_rate).astype(np.int64)[:, None] + first + np.arange(width)  # (M, W)
        tau = (index / sampling_rate - times[:, None]).astype(np.float32)
        values = template(local + lo, cols, tau)  # (M, C, W)
        channels = values.shape[1]
        flat = (local[:, None, None] * channels + np.arange(channels)[None, :, None]) * total
        flat = flat + (np.clip(index, -1, n_samples) + 1)[:, None, :]
        summed = np.bincount(flat.ravel(), weights=values.ravel(), minlength=len(block) * channels * total)
        if out is None:
            out = np.empty((n, channels, n_samples), dtype=np.float32)
        out[lo:lo + len(block)] = summed.reshape(len(block), channels, total)[:, :, 1:-1]
    return out


def _gauss(tau: np.ndarray, centre, sigma) -> np.ndarray:
    return np.exp(-0.5 * ((tau - centre) / sigma) ** 2)


def render_respiration(rng: np.random.Generator, resp_rate: np.ndarray, sampling_rate: float, n_samples: int,
                       noise: float = 1.0) -> np.ndarray:
    """Respiration waveforms.

    Args:
        rng: the random generator.
        resp_rate: (N,) breaths/min, in [4, 60].
        sampling_rate: Hz.
        n_samples: T.
        noise: scale of the additive noise (0 = clean).

    Returns:
        (N, T) float32, about unit amplitude (inspiration up).
    """
    rate = _as_rates("resp_rate", resp_rate, 4, 60)
    n = len(rate)
    t = (np.arange(n_samples) / sampling_rate).astype(np.float32)
    slow = (2 * np.pi * rng.uniform(0.02, 0.08, (n, 2, 1))).astype(np.float32)  # rate and depth variation
    offsets = (2 * np.pi * rng.random((n, 3, 1))).astype(np.float32)
    cycles = (rate[:, None] / 60).astype(np.float32) * t + 0.15 * np.sin(slow[:, 0] * t + offsets[:, 0])
    phase = 2 * np.pi * cycles + offsets[:, 2]
    depth = 1 + 0.1 * np.sin(slow[:, 1] * t + offsets[:, 1])
    wave = depth * (np.sin(phase) + 0.25 * np.sin(2 * phase + 0.6))
    return (wave + noise * white_noise(rng, (n, n_samples), 0.03)).astype(np.float32)


def render_ppg(rng: np.random.Generator, beats: np.ndarray, respiration: np.ndarray, sampling_rate: float,
               noise: float = 1.0) -> np.ndarray:
    """Photoplethysmogram (finger pulse) waveforms, one pulse per beat.

    Args:
        rng: the random generator.
        beats: (N, B) R-peak times (s) from :func:`sample_beats`.
        respiration: (N, T) respiration from :func:`render_respiration` (modulates the
            pulse amplitude and baseline).
        sampling_rate: Hz.
        noise: scale of the additive white noise and drift (0 = clean).

    Returns:
        (N, T) float32 in normalised units (pulse height about 1).
    """
    n, n_samples = respiration.shape
    rr = rr_intervals(beats)
    stroke = np.clip(1 + 0.9 * (rr / np.nanmean(rr, axis=1, keepdims=True) - 1), 0.25, 1.8).astype(np.float32)
    transit = (0.22 + 0.03 * rng.random((n, 1))).astype(np.float32)
    dicrotic = (0.3 + 0.15 * rng.random((n, 1))).astype(np.float32)

    def template(rows, cols, tau):
        onset = transit[rows]  # (M, 1)
        wave = _gauss(tau, onset + 0.1, 0.055) + dicrotic[rows] * _gauss(tau, onset + 0.38, 0.09)
        return (stroke[rows, cols, None] * wave)[:, None, :]

    pulse = overlap_add(beats, template, sampling_rate, n_samples, (0.0, 1.1))[:, 0]
    t = (np.arange(n_samples) / sampling_rate).astype(np.float32)
    drift_rate, drift_phase = rng.random((2, n, 1)).astype(np.float32)
    drift = np.sin(2 * np.pi * ((0.03 + 0.05 * drift_rate) * t + drift_phase))
    wave = pulse * (1 + 0.1 * respiration) + 0.08 * respiration
    wave += noise * (white_noise(rng, (n, n_samples), 0.02) + 0.1 * drift)
    return wave.astype(np.float32)

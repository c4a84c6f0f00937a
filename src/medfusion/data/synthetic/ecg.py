"""Vectorised synthetic 12-lead ECG: a dipole model of the heart projected on the leads.

Each beat is a sum of Gaussian waves (after McSharry et al., "A dynamical model for
generating synthetic electrocardiogram signals", IEEE TBME 2003), but every wave k carries a
3-D heart vector ``d_k`` (x: patient's left, y: feet, z: anterior) instead of one amplitude.
The heart's vector signal ``v(t) = sum_k d_k g_k(t)`` is projected on each lead's direction
(:data:`LEAD_VECTORS`): lead I = x, II at +60 deg, III = II - I, aVR = -(I + II) / 2,
aVL = I - II / 2, aVF = II - I / 2 (Einthoven and Goldberger hold exactly), V1..V6 in the
horizontal plane from the right-anterior (V1, 115 deg) to the left (V6, 10 deg). One
set of waves therefore gives lead-specific morphology: an rS complex in V1, qR in V6,
positive P and T waves in II.

| wave | centre (s from R) | width sigma (s) | vector | note |
|---|---|---|---|---|
| P | -0.16 | 0.022 | left-inferior | absent in atrial fibrillation |
| Q (septal) | -0.03 | 0.007 | right-anterior | absent in LBBB |
| R1 (apical) | -0.008 | 0.010 | left-inferior-anterior | |
| R2 (lateral) | 0.010 | 0.010 | left-posterior | LBBB: later, broader, larger |
| S (basal) | 0.028 | 0.008 | right-superior-posterior | |
| D (delayed) | 0.07-0.085 | 0.020 | RBBB right-anterior, LBBB left-posterior | bundle branch block only |
| T | 0.30 sqrt(RR) | 0.05 sqrt(RR) | left-inferior | BBB: discordant (secondary) |
| ST plateau | J point (0.045) to the T peak | sigmoid edges | towards the injured territory | ST elevation only |

Planted findings:

- **atrial fibrillation**: no P wave, irregular RR intervals (:func:`.waveforms.sample_beats`),
  a fibrillatory baseline (f waves, 4.5-8 Hz, 0.03-0.08 mV, strongest in V1 and the inferior leads);
- **ST elevation** of 0.15-0.35 mV in a territory's leads (:data:`TERRITORY_LEADS`), with
  reciprocal depression where the leads point away (e.g. aVL in an inferior injury);
- **bundle branch block**: a delayed depolarisation wave widens the QRS to about 145 ms
  (RBBB) or 160 ms (LBBB), measured as the run of high spatial velocity (normal about
  90 ms), with the typical morphology (RBBB: late R' in V1, broad S in I and V6; LBBB: no
  septal q, broad notched R in I, aVL, V5-V6, deep broad S in V1) and discordant T waves.

Every patient also gets a random frontal axis (+-15 deg), amplitude and PR interval.
Noise (scaled by ``noise``; 0 = clean, the draws do not depend on it): baseline wander in
heart coordinates (0.08 mV at the respiratory rate plus a 0.03-0.12 Hz drift of 0.05 mV),
50 Hz mains of 0.008 mV and per-lead uniform white noise of sd 0.015 mV. The white noise
comes from its own stream, so a single lead equals the same lead of the 12-lead ECG up to
that noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfusion.data.synthetic.waveforms import overlap_add, rr_intervals, white_noise

#: Lead names in their standard order.
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: ST-elevation territories (index = the ``st_territory`` code).
TERRITORIES: tuple[str, ...] = ("anterior", "inferior", "lateral")
#: Leads that show ST elevation per territory.
TERRITORY_LEADS: dict[str, tuple[str, ...]] = {
    "anterior": ("V1", "V2", "V3", "V4"),
    "inferior": ("II", "III", "aVF"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
#: Bundle branch block types (index = the ``bbb`` code).
BBB_TYPES: tuple[str, ...] = ("none", "RBBB", "LBBB")
#: Precordial lead gain relative to the limb leads (chest electrodes lie closer to the heart).
PRECORDIAL_GAIN = 1.5


def _lead_vectors() -> np.ndarray:
    lead_i, lead_ii = np.array([1.0, 0, 0]), np.array([0.5, np.sqrt(3) / 2, 0])
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    angles = np.deg2rad([115, 95, 75, 60, 35, 10])
    chest = PRECORDIAL_GAIN * np.stack([np.cos(angles), np.zeros(6), np.sin(angles)], axis=1)
    return np.concatenate([np.stack(limb), chest]).astype(np.float64)


#: (12, 3) direction of each lead in heart coordinates (x left, y feet, z anterior).
LEAD_VECTORS = _lead_vectors()

# Wave order in the template: P, Q, R1, R2, S, D, T (the ST plateau is added apart).
_CENTRE = np.array([-0.16, -0.03, -0.008, 0.010, 0.028, 0.07, 0.30])
_SIGMA = np.array([0.022, 0.007, 0.010, 0.010, 0.008, 0.020, 0.05])
_VECTORS = np.array([
    [0.08, 0.13, 0.02],     # P
    [-0.15, 0.05, 0.25],    # Q
    [0.5, 0.6, 0.6],        # R1
    [0.8, 0.4, -0.5],       # R2
    [-0.25, -0.2, -0.4],    # S
    [0.0, 0.0, 0.0],        # D (bundle branch block only)
    [0.22, 0.25, 0.05],     # T
])
_P, _Q, _R1, _R2, _S, _D, _T = range(7)
_ST_VECTORS = np.array([[-0.2, 0.0, 1.0], [0.0, 1.0, 0.0], [0.9, -0.45, 0.2]])
_AF_VECTOR = np.array([-0.2, 0.5, 0.7])
_CHUNK = 512


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _check(af, st_territory, bbb, resp_rate, beats, leads, noise) -> tuple[np.ndarray, ...]:
    n = beats.shape[0]
    arrays = {"af": np.asarray(af, bool), "st_territory": np.asarray(st_territory, np.int64),
              "bbb": np.asarray(bbb, np.int64), "resp_rate": np.asarray(resp_rate, np.float64)}
    for name, value in arrays.items():
        if value.shape != (n,):
            raise ValueError(f"ecg: expected {name} of shape ({n},) like beats, received {value.shape}")
    if not np.isin(arrays["st_territory"], (-1, 0, 1, 2)).all() or not np.isin(arrays["bbb"], (0, 1, 2)).all():
        raise ValueError(f"ecg: expected st_territory in {{-1, 0, 1, 2}} and bbb in {{0, 1, 2}}, received "
                         f"{sorted(set(arrays['st_territory'].tolist()))} / {sorted(set(arrays['bbb'].tolist()))}")
    unknown = [lead for lead in leads if lead not in LEADS]
    if isinstance(leads, str) or not leads or unknown:
        raise ValueError(f"ecg: expected leads as a non-empty sequence of names from {list(LEADS)}, received {leads!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise <= 10:
        raise ValueError(f"ecg: expected noise in [0, 10], received {noise!r}")
    return tuple(arrays.values())


def _patient_waves(rng: np.random.Generator, af, st_territory, bbb) -> tuple[np.ndarray, ...]:
    """Per-patient wave centres (N, 7), widths (N, 7), vectors (N, 7, 3) and ST vectors (N, 3)."""
    n = len(af)
    centre = np.tile(_CENTRE.astype(np.float32), (n, 1))
    sigma = np.tile(_SIGMA.astype(np.float32), (n, 1))
    vectors = np.tile(_VECTORS.astype(np.float32), (n, 1, 1))
    centre[:, _P] += 0.015 * rng.standard_normal(n)
    vectors[:, _P] *= np.where(af, 0.0, 1 + 0.2 * rng.standard_normal(n))[:, None]
    rbbb, lbbb = bbb == 1, bbb == 2
    vectors[rbbb, _D] = [-0.45, 0.05, 0.55]
    vectors[rbbb, _T] += -0.12 * _unit(np.array([-0.45, 0.05, 0.55]))
    centre[lbbb, _D] = 0.085
    vectors[lbbb, _D] = [0.6, 0.1, -0.5]
    vectors[lbbb, _Q] = 0.0
    vectors[lbbb, _S] = 0.0
    vectors[lbbb, _R1] *= 0.5
    vectors[lbbb, _R2] = [1.0, 0.3, -0.8]
    centre[lbbb, _R2], sigma[lbbb, _R2] = 0.035, 0.02
    vectors[lbbb, _T] = -0.35 * _unit(np.array([1.0, 0.3, -0.8]))
    # random frontal axis and amplitude
    angle = np.deg2rad(15.0) * rng.standard_normal(n)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x, y = vectors[..., 0].copy(), vectors[..., 1].copy()
    vectors[..., 0], vectors[..., 1] = cos * x - sin * y, sin * x + cos * y
    vectors *= np.exp(0.15 * rng.standard_normal(n))[:, None, None]
    st = np.where((st_territory >= 0)[:, None], _unit(_ST_VECTORS)[np.maximum(st_territory, 0)], 0.0)
    st *= rng.uniform(0.15, 0.35, n)[:, None]
    return centre, sigma, vectors, st.astype(np.float32)


def _fibrillation(rng: np.random.Generator, n: int, t: np.ndarray, sampling_rate: float) -> np.ndarray:
    """(n, T) fibrillatory waves in mV (to be projected on the atrial vector)."""
    f0 = rng.uniform(4.5, 8.0, (n, 1))
    wobble = 0.8 * np.sin(2 * np.pi * 0.2 * t + 2 * np.pi * rng.random((n, 1)))
    phase = 2 * np.pi * np.cumsum(f0 + wobble, axis=1) / sampling_rate + 2 * np.pi * rng.random((n, 1))
    amplitude = rng.uniform(0.03, 0.08, (n, 1))
    return (amplitude * (np.sin(phase) + 0.3 * np.sin(2 * phase))).astype(np.float32)


def render_ecg(
    rng: np.random.Generator,
    beats: np.ndarray,
    *,
    af: np.ndarray,
    st_territory: np.ndarray,
    bbb: np.ndarray,
    resp_rate: np.ndarray,
    sampling_rate: float = 250.0,
    duration_s: float = 10.0,
    leads: Sequence[str] = LEADS,
    noise: float = 1.0,
) -> np.ndarray:
    """Render ECGs for the beats of :func:`.waveforms.sample_beats`.

    Args:
        rng: the random generator.
        beats: (N, B) R-peak times in seconds, NaN padded.
        af: (N,) bool atrial fibrillation (no P waves, f waves; the irregular rhythm comes
            from ``beats``).
        st_territory: (N,) int ST elevation territory, -1 none, else an index of :data:`TERRITORIES`.
        bbb: (N,) int bundle branch block, an index of :data:`BBB_TYPES` (0 none).
        resp_rate: (N,) breaths/min, the frequency of the baseline wander.
        sampling_rate: Hz.
        duration_s: seconds; T = round(duration_s * sampling_rate).
        leads: lead names to return, in that order (e.g. ``("II",)`` for a single lead).
        noise: noise scale, 0 (clean) to 10.

    Returns:
        (N, L, T) float32 in mV.

    Raises:
        ValueError: on mismatched shapes, unknown codes or lead names, or a bad noise scale.
    """
    af, st_territory, bbb, resp_rate = _check(af, st_territory, bbb, resp_rate, beats, leads, noise)
    n, n_samples = beats.shape[0], int(round(duration_s * sampling_rate))
    centre, sigma, vectors, st = _patient_waves(rng, af, st_territory, bbb)
    white_rng = rng.spawn(1)[0]  # per-lead noise apart: the rest does not depend on the lead count
    projection = LEAD_VECTORS[[LEADS.index(lead) for lead in leads]].astype(np.float32)  # (L, 3)
    scale = np.sqrt(rr_intervals(beats)).astype(np.float32)  # QT grows with sqrt(RR)
    t = (np.arange(n_samples) / sampling_rate).astype(np.float32)
    out = np.empty((n, len(leads), n_samples), dtype=np.float32)
    for lo in range(0, n, _CHUNK):
        part = slice(lo, min(lo + _CHUNK, n))
        c, s, v, d, k = centre[part], sigma[part], vectors[part], st[part], scale[part]

        def template(rows, cols, tau, c=c, s=s, v=v, d=d, k=k):
            mu, width = c[rows], s[rows]  # (M, 7)
            mu[:, _T] *= k[rows, cols]
            width[:, _T] *= k[rows, cols]
            waves = np.exp(-0.5 * ((tau[:, None, :] - mu[..., None]) / width[..., None]) ** 2)  # (M, 7, W)
            plateau = 1 / (1 + np.exp(-(tau - 0.045) / 0.006)) / (1 + np.exp((tau - mu[:, _T, None]) / 0.04))
            return np.matmul(v[rows].transpose(0, 2, 1), waves) + d[rows, :, None] * plateau[:, None, :]

        vcg = overlap_add(beats[part], template, sampling_rate, n_samples, (-0.3, 0.65))  # (m, 3, T)
        m, fib = vcg.shape[0], np.flatnonzero(af[part])
        vcg[fib] += _fibrillation(rng, len(fib), t, sampling_rate)[:, None, :] * _unit(_AF_VECTOR)[:, None]
        phases = (2 * np.pi * rng.random((m, 3, 2))).astype(np.float32)
        drift = rng.uniform(0.03, 0.12, (m, 1, 1)).astype(np.float32)
        breath = (resp_rate[part] / 60).astype(np.float32)[:, None, None]
        wander = 0.08 * np.sin(2 * np.pi * breath * t + phases[..., :1])
        wander += 0.05 * np.sin(2 * np.pi * drift * t + phases[..., 1:])
        mains = 0.008 * np.sin(2 * np.pi * 50 * t + (2 * np.pi * rng.random((m, 1, 1))).astype(np.float32))
        signal = np.matmul(projection, vcg + np.float32(noise) * wander)  # (m, L, T)
        signal += np.float32(noise) * (mains + white_noise(white_rng, (m, len(leads), n_samples), 0.015))
        out[part] = signal
    return out

"""Disease-conditioned triage vital signs.

Columns (:data:`VITAL_NAMES`, units in :data:`VITAL_UNITS`), each drawn from a normal
distribution whose mean depends on the patient's latent state, clipped to a plausible
range and rounded as a triage nurse charts it:

| vital | driven by | without | with |
|---|---|---|---|
| temperature (deg C, 0.1) | fever | N(36.9, 0.35) | N(38.75, 0.45) |
| heart rate (/min) | fever, hypoxia, tachycardia | N(80, 11) | +15 fever, +10 hypoxia, +15 tachycardia |
| SpO2 (%) | hypoxia | N(97, 1.3) | N(89.5, 2.5) |
| respiratory rate (/min) | hypoxia | N(16, 2.5) | N(26, 4) |
| systolic BP (mmHg) | hypertension, sepsis (fever and hypoxia) | N(126, 15) | +14 hypertension, -8 sepsis |
| diastolic BP (mmHg) | systolic BP | 0.55 * SBP + N(8, 7) | |
"""

from __future__ import annotations

import numpy as np

VITAL_NAMES: tuple[str, ...] = (
    "temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"
)
VITAL_UNITS: tuple[str, ...] = ("degC", "beats/min", "%", "breaths/min", "mmHg", "mmHg")
#: Temperature (deg C) from which a patient counts as febrile.
FEVER_THRESHOLD = 38.0


def sample_vitals(
    rng: np.random.Generator,
    *,
    fever: np.ndarray,
    hypoxia: np.ndarray,
    tachycardia: np.ndarray | None = None,
    hypertension: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one set of vitals per patient.

    Args:
        rng: the random generator.
        fever: (N,) bool latent fever.
        hypoxia: (N,) bool latent hypoxaemia (low SpO2, fast breathing).
        tachycardia: (N,) bool other cause of a fast heart rate (e.g. pneumothorax).
        hypertension: (N,) bool raised blood pressure (e.g. heart failure).

    Returns:
        (N, 6) float32 in :data:`VITAL_NAMES` order, no missing values.

    Raises:
        ValueError: if the flags are not all of the same shape (N,).
    """
    fever = np.asarray(fever, dtype=bool)
    n = fever.shape[0] if fever.ndim == 1 else -1
    flags = {"fever": fever, "hypoxia": np.asarray(hypoxia, dtype=bool)}
    flags["tachycardia"] = np.zeros(n, bool) if tachycardia is None else np.asarray(tachycardia, dtype=bool)
    flags["hypertension"] = np.zeros(n, bool) if hypertension is None else np.asarray(hypertension, dtype=bool)
    for name, flag in flags.items():
        if flag.shape != (n,):
            raise ValueError(f"vitals: expected {name} of shape (N,) like fever {fever.shape}, received {flag.shape}")
    hypoxia, tachy, high = flags["hypoxia"], flags["tachycardia"], flags["hypertension"]
    z = rng.standard_normal((6, n))
    temperature = np.where(fever, 38.75 + 0.45 * z[0], 36.9 + 0.35 * z[0])
    temperature = np.round(np.clip(temperature, np.where(fever, 37.4, 35.5), np.where(fever, 41.0, 38.2)), 1)
    heart_rate = 80 + 11 * z[1] + 15 * fever + 10 * hypoxia + 15 * tachy
    spo2 = np.where(hypoxia, np.clip(89.5 + 2.5 * z[2], 78, 95), np.clip(97 + 1.3 * z[2], 92, 100))
    resp = np.where(hypoxia, np.clip(26 + 4 * z[3], 16, 44), np.clip(16 + 2.5 * z[3], 10, 26))
    systolic = np.clip(126 + 15 * z[4] + 14 * high - 8 * (fever & hypoxia), 80, 210)
    diastolic = np.clip(0.55 * systolic + 8 + 7 * z[5], 40, systolic - 15)
    table = np.stack([
        temperature, np.clip(heart_rate, 45, 170), spo2, resp, systolic, diastolic
    ], axis=1)
    table[:, 1:] = np.round(table[:, 1:])
    return table.astype(np.float32)

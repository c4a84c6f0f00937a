"""Argument checks shared by the neuro and radiology cohort generators."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def check_rate(scenario: str, name: str, value, upper: float = 1.0) -> float:
    """``value`` as a float in [0, upper).

    Raises:
        ValueError: naming ``name``, the range and the received value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < upper:
        raise ValueError(f"{scenario}: expected {name} in [0, {upper}), received {value!r}")
    return float(value)


def check_cohort_args(scenario: str, modalities: tuple[str, ...], n_patients, seed, label_noise, missing,
                      split_fractions) -> dict[str, float]:
    """Check the arguments every scenario shares; return the missing rate of each modality.

    Args:
        scenario: name used in messages.
        modalities: the scenario's modalities (the allowed keys of ``missing``).
        n_patients: int >= 1.
        seed: int >= 0.
        label_noise: in [0, 0.5).
        missing: mapping modality -> rate in [0, 1); modalities not named get 0.
        split_fractions: three numbers >= 0 summing to 1.

    Raises:
        ValueError: naming the argument, what was expected and what was received.
    """
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ValueError(f"{scenario}: expected n_patients to be an int >= 1, received {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{scenario}: expected seed to be an int >= 0, received {seed!r}")
    check_rate(scenario, "label_noise", label_noise, 0.5)
    if not isinstance(missing, Mapping):
        raise ValueError(f"{scenario}: expected missing as a mapping modality -> rate, "
                         f"received {type(missing).__name__}")
    unknown = sorted(set(missing) - set(modalities))
    if unknown:
        raise ValueError(f"{scenario}: unknown modality(ies) {unknown} in missing; expected keys from "
                         f"{list(modalities)}")
    rates = {m: check_rate(scenario, f"missing[{m!r}]", missing.get(m, 0.0)) for m in modalities}
    try:
        fractions = np.asarray(split_fractions, dtype=float)
    except (TypeError, ValueError):
        fractions = np.full(1, np.nan)
    if fractions.shape != (3,) or not (fractions >= 0).all() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"{scenario}: expected split_fractions as three non-negative numbers (train, val, test) "
                         f"summing to 1, received {split_fractions!r}")
    return rates

"""Patient-level, label-stratified train/validation/test splits.

Rows of one patient (several studies, visits or images) always share a split, so no
patient's data is seen in training and again in evaluation: row-level splitting of
medical data inflates test scores (Roberts et al. 2021, "Common pitfalls and
recommendations for using machine learning to detect and prognosticate for COVID-19",
Nature Machine Intelligence).

Stratification is by the patient's label: the largest label among the patient's rows,
so for binary labels a patient with any positive row counts as positive. Within each
stratum the patients are shuffled with the seed and the split sizes are fixed by the
largest-remainder method, so every stratum's split sizes are within one patient of its
fractions. The result does not depend on the order of the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: The default fractions of patients per split.
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
#: Stratum of a patient whose rows have no label.
UNLABELLED = "unlabelled"
#: Patient ids quoted in an error message, at most.
MAX_IDS_SHOWN = 5


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """The split fractions as a dict, checked.

    Raises:
        ValueError: on an empty mapping, a non-string or empty split name, a value that
            is not a finite number >= 0, or values that do not sum to 1.
    """
    if not isinstance(fractions, Mapping) or not fractions:
        raise ValueError(f"splits: expected a non-empty mapping split name -> fraction, received {fractions!r}")
    checked = {}
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"splits: expected split names to be non-empty strings, received {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"splits: expected the fraction of {name!r} to be a finite number >= 0, "
                             f"received {value!r}")
        checked[name] = float(value)
    total = sum(checked.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"splits: expected fractions summing to 1, received {checked} (sum {total:g})")
    return checked


def _patient_ids(patient_ids: Sequence) -> pd.Series:
    ids = pd.Series(list(patient_ids) if not isinstance(patient_ids, pd.Series) else patient_ids.to_list())
    missing = ids.isna() | (ids.astype(str).str.strip() == "")
    if missing.any():
        rows = np.flatnonzero(missing.to_numpy())
        raise ValueError(f"splits: {len(rows)} row(s) have no patient id, e.g. rows {rows[:MAX_IDS_SHOWN].tolist()}; "
                         "expected an id on every row")
    return ids.astype(str)


def _patient_strata(ids: pd.Series, labels: Sequence | None) -> pd.Series:
    """Stratum per patient (index: patient id): the patient's largest label, as text."""
    if labels is None:
        return pd.Series(UNLABELLED, index=pd.Index(ids.unique()))
    values = pd.Series(list(labels) if not isinstance(labels, pd.Series) else labels.to_list())
    if len(values) != len(ids):
        raise ValueError(f"splits: expected one label per row ({len(ids)} patient ids), received {len(values)} labels")
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:MAX_IDS_SHOWN].tolist()
        raise ValueError(f"splits: expected numeric labels, received non-numeric values in "
                         f"{int(bad.sum())} row(s), e.g. rows {rows}")
    largest = numeric.groupby(ids.to_numpy()).max()  # NaN only when every row of the patient is unlabelled
    return largest.map(lambda v: UNLABELLED if pd.isna(v) else f"{v:g}")


def _allocate(count: int, fractions: dict[str, float], rng: np.random.Generator) -> list[int]:
    """Split ``count`` patients by ``fractions`` with the largest-remainder method (random ties)."""
    quotas = np.array([count * f for f in fractions.values()])
    sizes = np.floor(quotas).astype(int)
    remainders = quotas - sizes
    leftover = count - int(sizes.sum())
    order = np.lexsort((rng.random(len(quotas)), -remainders))  # largest remainder first, random tie-break
    sizes[order[:leftover]] += 1
    return sizes.tolist()


def patient_splits(
    patient_ids: Sequence,
    labels: Sequence | None = None,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Split name of each row, with every row of a patient in the same split.

    Args:
        patient_ids: (N,) patient id per row (any values; compared as text).
        labels: (N,) numeric label per row, or None for an unstratified split. NaN
            labels are ignored; a patient with no label forms its own stratum.
        fractions: {split name: fraction of patients}, >= 0 each, summing to 1;
            default :data:`DEFAULT_FRACTIONS`.
        seed: seed of the shuffle; the same inputs and seed give the same splits.

    Returns:
        (N,) object array of split names.

    Raises:
        ValueError: on bad fractions, a row without patient id, a label count that
            differs from the row count, or non-numeric labels.

    Examples::

        splits = patient_splits(df["patient_id"], df["pneumonia"], seed=0)
        train = df[splits == "train"]
    """
    fractions = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"splits: expected an int seed, received {seed!r}")
    ids = _patient_ids(patient_ids)
    strata = _patient_strata(ids, labels)
    rng = np.random.default_rng(int(seed))
    names = list(fractions)
    assignment: dict[str, str] = {}
    for stratum in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata.to_numpy() == stratum]), dtype=object)
        patients = patients[rng.permutation(len(patients))]
        start = 0
        for name, size in zip(names, _allocate(len(patients), fractions, rng)):
            assignment.update(dict.fromkeys(patients[start : start + size], name))
            start += size
    return ids.map(assignment).to_numpy(dtype=object)


def check_no_leakage(patient_ids: Sequence, splits: Sequence) -> None:
    """Check that no patient has rows in two splits.

    Args:
        patient_ids: (N,) patient id per row.
        splits: (N,) split name per row.

    Raises:
        ValueError: naming how many patients leak and the first few of their ids
            (at most :data:`MAX_IDS_SHOWN`), or on different lengths.
    """
    ids = _patient_ids(patient_ids)
    names = pd.Series(list(splits) if not isinstance(splits, pd.Series) else splits.to_list()).astype(str)
    if len(names) != len(ids):
        raise ValueError(f"splits: expected one split per row ({len(ids)} patient ids), received {len(names)}")
    counts = names.groupby(ids.to_numpy()).nunique()
    leaked = sorted(counts.index[counts.to_numpy() > 1])
    if leaked:
        shown = ", ".join(leaked[:MAX_IDS_SHOWN]) + (", ..." if len(leaked) > MAX_IDS_SHOWN else "")
        raise ValueError(f"splits: {len(leaked)} patient(s) have rows in more than one split: {shown}; "
                         "expected every row of a patient in one split")

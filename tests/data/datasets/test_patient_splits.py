"""Patient-level, stratified splits: no leakage, stratification, determinism, checks."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfusion.data.datasets import check_fractions, check_no_leakage, patient_splits

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def cohort(patients: int = 200, seed: int = 0, positive_rate: float = 0.3):
    """Rows of ``patients`` patients with 1-4 rows each; a positive patient has >= 1 positive row."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for p in range(patients):
        rows = int(rng.integers(1, 5))
        positive = rng.random() < positive_rate
        row_labels = np.zeros(rows, dtype=int)
        if positive:
            row_labels[rng.integers(rows)] = 1  # only one of the patient's rows is positive
        ids += [f"P{p:04d}"] * rows
        labels += row_labels.tolist()
    return np.array(ids, dtype=object), np.array(labels)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), min_size=1, max_size=120),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_patient_in_two_splits_and_deterministic(rows, seed) -> None:
    ids = [f"id{p}" for p, _ in rows]
    labels = [label for _, label in rows]
    splits = patient_splits(ids, labels, FRACTIONS, seed=seed)
    assert len(splits) == len(ids)
    assert set(splits) <= set(FRACTIONS)
    check_no_leakage(ids, splits)  # raises on leakage
    assert (patient_splits(ids, labels, FRACTIONS, seed=seed) == splits).all()
    # independent of row order: the same patient gets the same split after shuffling rows
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = patient_splits([ids[i] for i in order], [labels[i] for i in order], FRACTIONS, seed=seed)
    assert dict(zip([ids[i] for i in order], shuffled)) == dict(zip(ids, splits))


def test_stratified_within_one_patient_per_stratum() -> None:
    ids, labels = cohort(400)
    splits = patient_splits(ids, labels, FRACTIONS, seed=3)
    patient_label = collections.defaultdict(int)
    patient_split = {}
    for pid, label, split in zip(ids, labels, splits):
        patient_label[pid] = max(patient_label[pid], label)
        patient_split[pid] = split
    for stratum in (0, 1):
        members = [p for p in patient_label if patient_label[p] == stratum]
        counts = collections.Counter(patient_split[p] for p in members)
        for name, fraction in FRACTIONS.items():
            assert abs(counts[name] - fraction * len(members)) < 1.0, (stratum, name, counts)
    # so the positive rate of every split is close to the overall one
    overall = np.mean(list(patient_label.values()))
    for name in FRACTIONS:
        rate = np.mean([patient_label[p] for p in patient_split if patient_split[p] == name])
        assert abs(rate - overall) < 0.05


def test_any_positive_row_makes_the_patient_positive() -> None:
    # 10 patients with rows (0, 1) and 10 with rows (0, 0): a half/half split puts 5 positives in each
    ids = [f"pos{i}" for i in range(10) for _ in range(2)] + [f"neg{i}" for i in range(10) for _ in range(2)]
    labels = [0, 1] * 10 + [0, 0] * 10
    splits = patient_splits(ids, labels, {"a": 0.5, "b": 0.5}, seed=1)
    per_patient = dict(zip(ids, splits))
    assert sum(per_patient[f"pos{i}"] == "a" for i in range(10)) == 5
    assert sum(per_patient[f"neg{i}"] == "a" for i in range(10)) == 5


def test_seed_changes_the_assignment_and_zero_fraction_gets_nobody() -> None:
    ids, labels = cohort(100)
    a = patient_splits(ids, labels, seed=0)
    b = patient_splits(ids, labels, seed=1)
    assert (a != b).any()
    splits = patient_splits(ids, labels, {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    assert "test" not in set(splits)
    unstratified = patient_splits(ids, None, seed=0)
    check_no_leakage(ids, unstratified)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"train": 0.7, "val": 0.2}, "summing to 1"),
        ({"train": 1.2, "val": -0.2}, ">= 0"),
        ({}, "non-empty"),
        ({"train": "0.5", "val": 0.5}, "finite number"),
        ({"train": float("nan"), "val": 0.5}, "finite number"),
        ({"": 1.0}, "non-empty strings"),
    ],
)
def test_bad_fractions_are_refused(fractions, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_fractions(fractions)
    with pytest.raises(ValueError, match=message):
        patient_splits(["a", "b"], [0, 1], fractions)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="one label per row"):
        patient_splits(["a", "b"], [0])
    with pytest.raises(ValueError, match="no patient id"):
        patient_splits(["a", None, ""], [0, 1, 0])
    with pytest.raises(ValueError, match="numeric labels"):
        patient_splits(["a", "b"], ["yes", "no"])


def test_leakage_names_the_patients_count_and_first_few_only() -> None:
    ids = [f"p{i}" for i in range(8) for _ in range(2)]
    splits = ["train", "test"] * 8  # every patient in two splits
    with pytest.raises(ValueError, match=r"8 patient\(s\)") as info:
        check_no_leakage(ids, splits)
    message = str(info.value)
    assert "p0, p1, p2, p3, p4, ..." in message
    assert "p5" not in message and "p7" not in message
    check_no_leakage(["a", "a", "b"], ["train", "train", "val"])
    with pytest.raises(ValueError, match="one split per row"):
        check_no_leakage(["a"], ["train", "val"])

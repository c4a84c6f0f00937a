"""The triage cohort: determinism, shapes, planted ground truth, noise, missingness, splits, signal."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, uniform_filter

from medfusion.data.synthetic import FINDINGS, VITAL_NAMES, TriageCohort, generate_triage

N = 3000
RIGHT_WORDS = re.compile(r"\b(R|RUL|RML|RLL)\b|\bright\b")
LEFT_WORDS = re.compile(r"\b(L|LUL|LLL)\b|\bleft\b")


@pytest.fixture(scope="module")
def cohort() -> TriageCohort:
    return generate_triage(N, seed=0)


def note_side(text: str) -> int:
    right, left = bool(RIGHT_WORDS.search(text)), bool(LEFT_WORDS.search(text))
    return 0 if right and not left else 1 if left and not right else -1


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 25) -> np.ndarray:
    """Newton's method for L2-regularised logistic regression; returns weights with the bias first."""
    x = np.c_[np.ones(len(x)), x]
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, x.T @ (p - y) + l2 * w)
    return w


def score(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.c_[np.ones(len(x)), x] @ w


@pytest.fixture(scope="module")
def image_feature(cohort) -> np.ndarray:
    """(N, 2) per lung: brightest 7x7 mean inside the lung (heart excluded) minus the lung median."""
    lungs, heart = cohort.anatomy.masks(cohort.images.shape[-1])
    smooth = uniform_filter(cohort.images[:, 0], size=(1, 7, 7))
    out = np.zeros((len(cohort), 2))
    for k in (0, 1):
        field = lungs[:, k] & ~heart
        inner = binary_erosion(field, structure=np.ones((1, 5, 5)))
        median = np.array([np.median(img[m]) for img, m in zip(cohort.images[:, 0], field)])
        out[:, k] = np.where(inner, smooth, -1).max(axis=(1, 2)) - median
    return out


def test_shapes_dtypes_and_ids(cohort):
    n = len(cohort)
    assert n == N
    assert cohort.images.shape == (n, 1, 128, 128) and cohort.images.dtype == np.float32
    assert cohort.images.min() >= 0 and cohort.images.max() <= 1
    assert cohort.masks.shape == (n, len(FINDINGS), 128, 128) and cohort.masks.dtype == bool
    assert cohort.boxes.shape == (n, len(FINDINGS), 4)
    assert cohort.vitals.shape == (n, len(VITAL_NAMES)) and cohort.vitals.dtype == np.float32
    assert cohort.findings.shape == (n, len(FINDINGS)) and cohort.findings.dtype == bool
    assert cohort.pneumonia.dtype == np.int64 and set(np.unique(cohort.pneumonia)) == {0, 1}
    assert len(cohort.notes) == n and all(isinstance(t, str) for t in cohort.notes)
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.patient_id.tolist())) == n
    assert all(re.fullmatch(r"SYN-\d{6}", p) for p in cohort.patient_id)
    assert set(cohort.split.tolist()) == {"train", "val", "test"}
    frame = cohort.to_frame()
    assert len(frame) == n and {"patient_id", "split", "pneumonia", "temperature", "has_image", "note"} <= set(frame)
    assert "prevalence" in cohort.ground_truth


def test_same_seed_identical_other_seed_differs():
    a, b, c = (generate_triage(150, seed=s, image_size=64) for s in (5, 5, 6))
    for name in ("images", "masks", "boxes", "findings", "pneumonia", "split", "patient_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.vitals, b.vitals)  # NaN compare equal here
    assert a.notes == b.notes and a.ground_truth == b.ground_truth
    for m in a.present:
        np.testing.assert_array_equal(a.present[m], b.present[m])
    assert not np.array_equal(a.images, c.images)
    assert a.notes != c.notes
    assert not np.array_equal(a.vitals, c.vitals, equal_nan=True)


def test_changing_missingness_leaves_content_unchanged():
    a = generate_triage(120, seed=3, image_size=64)
    b = generate_triage(120, seed=3, image_size=64, missing={}, label_noise=0.0)
    both = a.present["image"]
    np.testing.assert_array_equal(a.images[both], b.images[both])
    np.testing.assert_array_equal(a.pneumonia_true, b.pneumonia_true)
    assert all(b.present[m].all() for m in b.present)
    np.testing.assert_array_equal(b.pneumonia, b.pneumonia_true)


def test_label_is_the_documented_rule(cohort):
    c = cohort.components
    rule = c["consolidation"] & (c["fever"] | c["hypoxia"]) & (
        ~c["side_named"] | (c["note_side"] == c["consolidation_side"]))
    np.testing.assert_array_equal(cohort.pneumonia_true, rule.astype(np.int64))
    np.testing.assert_array_equal(cohort.findings[:, FINDINGS.index("consolidation")], c["consolidation"])
    assert 0.15 < cohort.pneumonia_true.mean() < 0.27
    # the agreement subgroup is about 22% of patients and balanced
    assert 0.17 < c["agreement_case"].mean() < 0.27
    assert 0.4 < cohort.pneumonia_true[c["agreement_case"]].mean() < 0.6


def test_label_noise_rate(cohort):
    flipped = cohort.pneumonia != cohort.pneumonia_true
    np.testing.assert_array_equal(flipped, cohort.label_flipped)
    assert abs(flipped.mean() - 0.05) < 3 * np.sqrt(0.05 * 0.95 / N)


def test_missingness_rates_and_markers(cohort):
    n = len(cohort)
    tolerance = 3 * np.sqrt(0.1 * 0.9 / n) + 0.002
    assert abs((~cohort.present["image"]).mean() - 0.1) < tolerance
    assert abs((~cohort.present["text"]).mean() - 0.05) < tolerance
    assert abs((~cohort.present["vitals"]).mean() - 0.1) < tolerance
    stacked = np.stack([cohort.present[m] for m in ("image", "text", "vitals")])
    assert stacked.any(axis=0).all()  # every patient keeps a modality
    assert (cohort.images[~cohort.present["image"]] == 0).all()
    assert all(t == "" for t, keep in zip(cohort.notes, cohort.present["text"]) if not keep)
    assert all(t for t, keep in zip(cohort.notes, cohort.present["text"]) if keep)
    assert np.isnan(cohort.vitals[~cohort.present["vitals"]]).all()
    rows = cohort.vitals[cohort.present["vitals"]]
    assert abs(np.isnan(rows).mean() - 0.05) < 0.01
    assert (~np.isnan(rows)).any(axis=1).all()


def test_splits_patient_level_and_stratified(cohort):
    ids = {name: set(cohort.patient_id[cohort.split == name].tolist()) for name in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in ids.values()) == len(cohort)
    overall = cohort.pneumonia.mean()
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01
        assert abs(cohort.pneumonia[part].mean() - overall) < 0.01
    again = generate_triage(150, seed=5, image_size=64)
    np.testing.assert_array_equal(again.split, generate_triage(150, seed=5, image_size=64).split)


def test_vitals_differ_by_label(cohort):
    v, y = cohort.vitals, cohort.pneumonia_true == 1
    mean = {name: (np.nanmean(v[y, j]), np.nanmean(v[~y, j])) for j, name in enumerate(VITAL_NAMES)}
    assert mean["temperature"][0] > mean["temperature"][1] + 0.4
    assert mean["spo2"][0] < mean["spo2"][1] - 1.5
    assert mean["respiratory_rate"][0] > mean["respiratory_rate"][1] + 2
    assert mean["heart_rate"][0] > mean["heart_rate"][1] + 5
    fever = cohort.components["fever"]
    assert np.nanmean(v[fever, 0]) > 38.3 and np.nanmean(v[~fever, 0]) < 37.3


def test_notes_name_the_planted_side_and_negate_absent_fever(cohort):
    c = cohort.components
    for i in np.flatnonzero(cohort.present["text"])[:1500]:
        text = cohort.notes[i]
        assert note_side(text) == c["note_side"][i], text
        if not c["febrile_measured"][i]:
            assert re.search(r"No fever\.|Afebrile\.|Denies fevers\.", text), text
        assert "SpO2 " + str(int(np.nan_to_num(cohort.vitals[i, 2]))) not in text


def test_each_component_carries_signal_and_they_complement(cohort, image_feature):
    """Vitals alone and an image feature alone beat chance; together they beat each (complementarity)."""
    keep = cohort.present["image"] & cohort.present["vitals"]
    y = cohort.pneumonia[keep].astype(float)
    raw = cohort.vitals[keep]
    filled = np.where(np.isnan(raw), np.nanmean(raw, axis=0), raw)
    vitals = np.c_[(filled - filled.mean(0)) / filled.std(0), filled[:, 0] >= 38, filled[:, 2] <= 94,
                   filled[:, 3] >= 22]
    feat = image_feature[keep]
    image = np.c_[feat.max(axis=1), np.abs(feat[:, 0] - feat[:, 1])]
    image = (image - image.mean(0)) / image.std(0)
    train = cohort.split[keep] == "train"
    held = ~train
    result = {}
    for name, x in (("vitals", vitals), ("image", image), ("both", np.c_[vitals, image])):
        w = fit_logistic(x[train].astype(float), y[train])
        result[name] = auroc(score(w, x[held].astype(float)), y[held])
    assert result["vitals"] > 0.6, result
    assert result["image"] > 0.65, result
    assert result["both"] > max(result["vitals"], result["image"]) + 0.02, result


def test_agreement_needs_both_modalities(cohort, image_feature):
    """In the agreement cases only 'note side == image side' decides; either side alone is at chance."""
    c = cohort.components
    rows = np.flatnonzero(c["agreement_case"] & cohort.present["image"] & cohort.present["text"])
    assert rows.size > 300
    image_side = image_feature[rows].argmax(axis=1)
    text_side = np.array([note_side(cohort.notes[i]) for i in rows])
    truth = cohort.pneumonia_true[rows]
    assert (image_side == c["consolidation_side"][rows]).mean() > 0.9  # the feature finds the opacity's side
    assert ((image_side == text_side) == truth).mean() > 0.85
    for side in (image_side, text_side):
        assert abs((side == truth).mean() - 0.5) < 0.08


def test_argument_validation():
    with pytest.raises(ValueError, match="n_patients"):
        generate_triage(0)
    with pytest.raises(ValueError, match="label_noise"):
        generate_triage(10, label_noise=0.7)
    with pytest.raises(ValueError, match="unknown modality"):
        generate_triage(10, missing={"audio": 0.1})
    with pytest.raises(ValueError, match=r"missing\['image'\]"):
        generate_triage(10, missing={"image": 1.5})
    with pytest.raises(ValueError, match="split_fractions"):
        generate_triage(10, split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="seed"):
        generate_triage(10, seed=-1)
    with pytest.raises(ValueError, match="expected size"):
        generate_triage(10, image_size=8)
    with pytest.raises(ValueError, match="unknown finding"):
        generate_triage(10, image_size=32).finding("fracture")

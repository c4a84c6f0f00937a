"""Synthetic triage notes: side named, negations, abbreviations, determinism."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medfusion.data.synthetic import SYMPTOMS, NoteFacts, generate_notes

LEFT_WORDS = re.compile(r"\b(L|LUL|LLL)\b|\bleft\b")
RIGHT_WORDS = re.compile(r"\b(R|RUL|RML|RLL)\b|\bright\b")
UPPER_WORDS = re.compile(r"\b(RUL|LUL)\b|\bupper\b")
LOWER_WORDS = re.compile(r"\b(RLL|LLL)\b|\blower\b|\bbase\b")
NEGATION = {
    "cough": r"No cough\.|Denies [^.]*\bcough\b",
    "chills": r"No chills\.|Denies [^.]*\bchills\b",
    "SOB": r"No SOB\.|Denies [^.]*\bSOB\b",
    "chest pain": r"No (CP|chest pain)\.|Denies [^.]*\b(CP|chest pain)\b",
    "nausea": r"No N/V\.|Denies [^.]*N/V",
}


def make_facts(n: int, seed: int = 0) -> NoteFacts:
    rng = np.random.default_rng(seed)
    side = rng.integers(-1, 2, n)
    return NoteFacts(
        age=rng.integers(18, 95, n), male=rng.random(n) < 0.5,
        temperature=np.round(rng.normal(37.6, 0.9, n), 1), heart_rate=rng.integers(50, 140, n).astype(float),
        systolic_bp=rng.integers(95, 180, n).astype(float), diastolic_bp=rng.integers(50, 95, n).astype(float),
        infection=rng.random(n) < 0.4, dyspnoea=rng.random(n) < 0.2, chest_pain=rng.random(n) < 0.1,
        chf_history=rng.random(n) < 0.1, side=side, zone=rng.integers(0, 2, n),
    )


@pytest.fixture(scope="module")
def notes():
    facts = make_facts(3000)
    return facts, generate_notes(facts, np.random.default_rng(1))


def test_one_note_per_patient_and_deterministic(notes):
    facts, batch = notes
    assert len(batch.texts) == len(facts) and all(isinstance(t, str) and t for t in batch.texts)
    again = generate_notes(facts, np.random.default_rng(1))
    assert again.texts == batch.texts
    other = generate_notes(facts, np.random.default_rng(2))
    assert other.texts != batch.texts


def test_side_named_matches_ground_truth(notes):
    facts, batch = notes
    for text, side, zone in zip(batch.texts, facts.side, facts.zone):
        has_right, has_left = bool(RIGHT_WORDS.search(text)), bool(LEFT_WORDS.search(text))
        if side == 0:
            assert has_right and not has_left, text
        elif side == 1:
            assert has_left and not has_right, text
        else:
            assert not has_right and not has_left, text
        upper, lower = bool(UPPER_WORDS.search(text)), bool(LOWER_WORDS.search(text))
        if side >= 0:  # the named lobe's zone
            assert (upper, lower) == ((True, False) if zone == 0 else (False, True)), text
        else:
            assert not upper and not lower, text


def test_uncertainty_only_with_a_localising_finding(notes):
    facts, batch = notes
    hedges = re.compile(r"Possible|\? |Cannot exclude|suspected|Concern for")
    has_hedge = np.array([bool(hedges.search(t)) for t in batch.texts])
    np.testing.assert_array_equal(has_hedge, batch.uncertain)
    assert not batch.uncertain[facts.side < 0].any()
    assert 0.6 < batch.uncertain[facts.side >= 0].mean() < 0.9


def test_fever_always_stated_and_negated_when_absent(notes):
    facts, batch = notes
    for text, febrile, t in zip(batch.texts, batch.febrile, facts.temperature):
        if febrile:
            assert re.search(r"Febrile to|\+fevers|Reports fevers", text) and f"{t:.1f}" in text, text
        else:
            assert re.search(r"No fever\.|Afebrile\.|Denies fevers\.", text), text
    np.testing.assert_array_equal(batch.febrile, facts.temperature >= 38.0)


def test_symptom_negations_written_for_absent_symptoms(notes):
    _, batch = notes
    assert not (batch.symptoms & batch.negated).any()
    for j, name in enumerate(SYMPTOMS):
        if name not in NEGATION:
            continue
        written = np.array([bool(re.search(NEGATION[name], t)) for t in batch.texts])
        np.testing.assert_array_equal(written, batch.negated[:, j], err_msg=name)
        assert batch.negated[:, j].sum() > 100


def test_symptoms_follow_their_drivers(notes):
    facts, batch = notes
    cough = batch.symptoms[:, SYMPTOMS.index("cough")]
    assert cough[facts.infection].mean() > cough[~facts.infection].mean() + 0.3


def test_abbreviations_and_no_oxygenation_values(notes):
    _, batch = notes
    corpus = "\n".join(batch.texts)
    for word in ("SOB", "CXR", "HR ", "T ", "SpO2", "RR", "BP ", "h/o", "RLL", "LUL", "PNA", "CP", "p/w"):
        assert word in corpus, word
    assert not re.search(r"SpO2 \d|RR \d|O2 sat", corpus)


def test_facts_validation():
    facts = make_facts(4)
    with pytest.raises(ValueError, match="expected side"):
        NoteFacts(**{**facts.__dict__, "side": np.array([0, 1, 2, -1])})
    with pytest.raises(ValueError, match="expected age of shape|expected male of shape"):
        NoteFacts(**{**facts.__dict__, "male": np.ones(3, bool)})
    with pytest.raises(ValueError, match="expected facts"):
        generate_notes({"age": 1}, np.random.default_rng(0))

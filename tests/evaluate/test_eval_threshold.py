"""The F1-best operating point (studies.f1_threshold), checked against hand-counted F1 values."""

from __future__ import annotations

import numpy as np
import pytest

from medfusion.evaluate.metrics import classification_metrics
from medfusion.evaluate.studies import f1_threshold


def test_threshold_of_a_hand_counted_case() -> None:
    # positives 3. t=0.9: TP 1, predicted 1 -> F1 2/4=0.50; t=0.8: TP 1, pred 2 -> 2/5=0.40;
    # t=0.7: TP 2, pred 3 -> 4/6=0.667; t=0.4: TP 3, pred 4 -> 6/7=0.857; t=0.2: TP 3, pred 5 -> 6/8=0.75
    labels = np.array([1, 0, 1, 1, 0])
    probs = np.array([0.9, 0.8, 0.7, 0.4, 0.2])
    assert f1_threshold(labels, probs) == 0.4
    assert classification_metrics(labels, probs, threshold=0.4)["f1"] == pytest.approx(6 / 7)


def test_tied_probabilities_count_together_and_ties_in_f1_take_the_higher_threshold() -> None:
    # t=0.6 predicts both tied samples: TP 1, pred 2, positives 1 -> F1 2/3; no lower t can do better
    assert f1_threshold(np.array([1, 0, 0]), np.array([0.6, 0.6, 0.1])) == 0.6
    # t=0.9: TP 1, pred 1, pos 2 -> 2/3; t=0.5: TP 2, pred 3 -> 4/5; t=0.3: TP 2, pred 4 -> 4/6
    assert f1_threshold(np.array([1, 0, 1, 0]), np.array([0.9, 0.5, 0.5, 0.3])) == 0.5
    # equal F1 at 0.8 (TP 1, pred 1, pos 1 -> 1.0) only; lower thresholds add false positives
    assert f1_threshold(np.array([1, 0]), np.array([0.8, 0.1])) == 0.8


def test_the_chosen_threshold_maximises_f1_over_every_observed_probability() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(0.3 * labels + rng.random(200) * 0.7, 0, 1)
    best = f1_threshold(labels, probs)
    f1_at = {t: classification_metrics(labels, probs, threshold=float(t))["f1"] for t in np.unique(probs)}
    assert f1_at[best] == pytest.approx(max(f1_at.values()))


def test_no_positive_gives_one_half_and_bad_shapes_raise() -> None:
    assert f1_threshold(np.zeros(4), np.linspace(0, 1, 4)) == 0.5
    with pytest.raises(ValueError, match=r"f1_threshold: expected labels and probs of one shape.*\(3,\) and \(2,\)"):
        f1_threshold(np.zeros(3), np.zeros(2))

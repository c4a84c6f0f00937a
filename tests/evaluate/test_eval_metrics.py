from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from medfusion.evaluate.metrics import (
    METRICS,
    Interval,
    bootstrap_ci,
    classification_metrics,
    delong_test,
    metric_table,
    paired_bootstrap,
    seed_summary,
)


def _cohort(n: int, seed: int = 0, shift: float = 1.5, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logistic probabilities whose logits are shifted by ``shift`` for positives."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * labels - shift / 2)))
    return labels, np.round(probs, 1) if ties else probs


def _slow_delong(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """DeLong et al. 1988 from the pairwise kernel psi(x, y) = [x > y] + [x = y] / 2, O(m n)."""
    positive = labels == 1
    aucs, v10, v01 = [], [], []
    for scores in (a, b):
        x, y = scores[positive], scores[~positive]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = positive.sum(), (~positive).sum()
    s = np.zeros((2, 2))
    for k in range(2):
        for j in range(2):
            s10 = np.sum((v10[k] - aucs[k]) * (v10[j] - aucs[j])) / (m - 1)
            s01 = np.sum((v01[k] - aucs[k]) * (v01[j] - aucs[j])) / (n - 1)
            s[k, j] = s10 / m + s01 / n
    z = (aucs[1] - aucs[0]) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return aucs[0], aucs[1], z


# --------------------------------------------------------------------------- hand-computed values


def test_auroc_with_ties_hand_computed() -> None:
    # positives {0.5, 0.9} vs negatives {0.5, 0.5}: 0.5 + 0.5 + 1 + 1 = 3 of 4 pairs
    m = classification_metrics(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.9]))
    assert m["auroc"] == pytest.approx(0.75)


def test_auprc_hand_computed() -> None:
    # ranked 0.9+ 0.8- 0.7+ 0.6- 0.5+: precision at each positive 1, 2/3, 3/5, each recall step 1/3
    m = classification_metrics(np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert m["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # tied at 0.8 (one +, one -): recall 1/2 at precision 1/2, then 1/2 more at precision 2/3
    m = classification_metrics(np.array([1, 0, 1]), np.array([0.8, 0.8, 0.3]))
    assert m["auprc"] == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_f1_and_accuracy_hand_computed() -> None:
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([0.6, 0.4, 0.7, 0.2, 0.5])  # predicted 1 0 1 0 1 (0.5 >= 0.5): TP 2, FP 1, FN 1
    m = classification_metrics(labels, probs)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["accuracy"] == pytest.approx(3 / 5)
    # threshold 0.65: predicted 0 0 1 0 0 -> TP 0, FP 1, FN 3; correct: sample 4 only
    m = classification_metrics(labels, probs, threshold=0.65)
    assert m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(1 / 5)


def test_ece_and_brier_hand_computed() -> None:
    labels = np.array([0, 1, 0, 1])
    probs = np.array([0.05, 0.15, 0.12, 0.95])
    # bins: [0, .1) {0.05 | 0}; [.1, .2) {0.15, 0.12 | 1, 0}; [.9, 1] {0.95 | 1}
    # ece = 1/4 |0.05 - 0| + 2/4 |0.135 - 0.5| + 1/4 |0.95 - 1| = 0.0125 + 0.1825 + 0.0125
    # brier = (0.05^2 + 0.85^2 + 0.12^2 + 0.05^2) / 4 = (0.0025 + 0.7225 + 0.0144 + 0.0025) / 4
    m = classification_metrics(labels, probs)
    assert m["ece"] == pytest.approx(0.2075)
    assert m["brier"] == pytest.approx(0.185475)


def test_ece_bin_edges() -> None:
    # 0.0 falls in the first bin, 1.0 in the last (closed) one: two perfectly calibrated bins
    m = classification_metrics(np.array([0, 1]), np.array([0.0, 1.0]))
    assert m["ece"] == 0.0
    m = classification_metrics(np.array([0, 1, 1]), np.array([0.2, 0.2, 0.3]))
    # bin [0.2, 0.3): 2/3 |0.2 - 0.5|; bin [0.3, 0.4): 1/3 |0.3 - 1|
    assert m["ece"] == pytest.approx(2 / 3 * 0.3 + 1 / 3 * 0.7)


def test_single_class_gives_nan_ranking_metrics() -> None:
    m = classification_metrics(np.array([1, 1, 1]), np.array([0.2, 0.7, 0.9]))
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["brier"] == pytest.approx((0.64 + 0.09 + 0.01) / 3)
    table = metric_table(np.zeros(20, dtype=int), np.linspace(0, 1, 20), n_boot=50)
    assert all(math.isnan(x) for x in table["auroc"])
    assert table["brier"].low <= table["brier"].value <= table["brier"].high


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn(seed: int) -> None:
    labels, probs = _cohort(300, seed, ties=seed == 2)
    m = classification_metrics(labels, probs)
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(labels, probs), abs=1e-12)
    assert m["f1"] == pytest.approx(f1_score(labels, probs >= 0.5), abs=1e-12)


def test_interval_format() -> None:
    assert Interval(0.8123, 0.7711, 0.85).format() == "0.812 (0.771–0.850)"
    assert Interval(0.8123, 0.7711, 0.85).format(1) == "0.8 (0.8–0.8)"
    value, low, high = Interval(1.0, 0.0, 2.0)
    assert (value, low, high) == (1.0, 0.0, 2.0)


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("name", METRICS)
def test_batched_metric_equals_metric_on_each_resample(name: str, grouped: bool) -> None:
    # the vectorised count-weighted metric equals classification_metrics on the resampled arrays
    labels, probs = _cohort(120, seed=3, ties=True)
    groups = np.arange(120) // 4 if grouped else None
    fast = bootstrap_ci(labels, probs, name, n_boot=60, seed=5, groups=groups)
    def by_name(y: np.ndarray, p: np.ndarray) -> float:
        return classification_metrics(y, p)[name]

    slow = bootstrap_ci(labels, probs, by_name, n_boot=60, seed=5, groups=groups)
    assert fast == pytest.approx(slow, abs=1e-12)


def test_metric_table_matches_bootstrap_ci() -> None:
    labels, probs = _cohort(200, seed=4)
    table = metric_table(labels, probs, n_boot=200, seed=1)
    assert list(table) == list(METRICS)
    for name in METRICS:
        assert table[name] == bootstrap_ci(labels, probs, name, n_boot=200, seed=1)


def test_interval_contains_point_estimate() -> None:
    labels, probs = _cohort(300, seed=6)
    table = metric_table(labels, probs)
    # ece left out: it is biased upward on resamples, so its point estimate can sit below
    # the percentile interval for a well-calibrated model
    for name in ("auroc", "auprc", "f1", "accuracy", "brier"):
        assert table[name].low < table[name].value < table[name].high, name


def test_interval_shrinks_with_more_data() -> None:
    small = bootstrap_ci(*_cohort(100, seed=7), "auroc")
    large = bootstrap_ci(*_cohort(2000, seed=7), "auroc")
    assert large.high - large.low < 0.5 * (small.high - small.low)


def test_bootstrap_deterministic_by_seed() -> None:
    labels, probs = _cohort(150, seed=8)
    assert metric_table(labels, probs, n_boot=100, seed=3) == metric_table(labels, probs, n_boot=100, seed=3)
    assert bootstrap_ci(labels, probs, "auroc", n_boot=100, seed=3) != bootstrap_ci(
        labels, probs, "auroc", n_boot=100, seed=4
    )
    first = paired_bootstrap(labels, probs, probs**2, n_boot=100)
    assert first == paired_bootstrap(labels, probs, probs**2, n_boot=100)


def test_single_class_resamples_are_redrawn() -> None:
    # one positive in 6: about a third of plain resamples would miss it
    labels, probs = np.array([0, 0, 0, 1, 0, 0]), np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5])
    seen: list[np.ndarray] = []

    def record(y: np.ndarray, p: np.ndarray) -> float:
        seen.append(y)
        return float(p.mean())

    bootstrap_ci(labels, probs, record, n_boot=200)
    assert len(seen) == 200 + 1  # point estimate + one call per resample
    assert all(0 < y.sum() < len(y) for y in seen)


def test_cluster_bootstrap_draws_whole_groups() -> None:
    labels, probs = _cohort(60, seed=9)
    probs = probs + np.arange(60) * 1e-6  # distinct values identify the samples
    probs = probs / probs.max()
    groups = np.arange(60) % 20  # 20 patients of 3 samples, interleaved
    drawn: list[np.ndarray] = []

    def record(y: np.ndarray, p: np.ndarray) -> float:
        drawn.append(p)
        return 0.0

    bootstrap_ci(labels, probs, record, n_boot=50, groups=groups)
    for p in drawn[1:]:
        times = np.array([np.sum(p == value) for value in probs])  # (60,) draws of each sample
        per_group = times.reshape(3, 20)  # row r holds sample r * 20 + g of group g
        assert (per_group == per_group[0]).all()
        assert len(p) % 3 == 0 and len(p) == 60


def test_cluster_bootstrap_makes_a_difference() -> None:
    # 40 patients, each with 5 identical samples: resampling patients is the plain bootstrap
    # of the 40 distinct samples (exactly, for the same seed), and wider than treating the
    # 200 rows as independent
    labels, probs = _cohort(40, seed=10)
    rows_y, rows_p, patient = np.repeat(labels, 5), np.repeat(probs, 5), np.repeat(np.arange(40), 5)
    per_patient = metric_table(labels, probs, n_boot=300, seed=2)
    clustered = metric_table(rows_y, rows_p, n_boot=300, seed=2, groups=patient)
    naive = metric_table(rows_y, rows_p, n_boot=300, seed=2)
    for name in METRICS:
        assert clustered[name] == pytest.approx(per_patient[name], abs=1e-12), name
    width = {k: t["auroc"].high - t["auroc"].low for k, t in (("clustered", clustered), ("naive", naive))}
    assert width["naive"] < 0.7 * width["clustered"]


def test_groups_of_one_equal_plain_bootstrap() -> None:
    labels, probs = _cohort(80, seed=11)
    assert bootstrap_ci(labels, probs, "auprc", n_boot=100, groups=np.arange(80)) == bootstrap_ci(
        labels, probs, "auprc", n_boot=100
    )


def test_metric_table_speed() -> None:
    labels, probs = _cohort(500, seed=12)
    start = time.perf_counter()
    metric_table(labels, probs, n_boot=1000)
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------- paired comparisons


def test_paired_bootstrap_clearly_better_and_identical() -> None:
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 2, 300)
    signal = rng.normal(size=300) + 2.0 * labels
    weak = 1 / (1 + np.exp(-(signal + rng.normal(0, 3, 300))))
    strong = 1 / (1 + np.exp(-signal))
    better = paired_bootstrap(labels, weak, strong)
    assert better["difference"] > 0.1 and better["p_value"] < 0.01
    assert better["low"] > 0
    assert better["difference"] == pytest.approx(better["value_b"] - better["value_a"])
    same = paired_bootstrap(labels, weak, weak, metric="brier")
    assert same["difference"] == 0 and same["p_value"] == 1.0 and same["low"] == same["high"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_slow_reference(seed: int) -> None:
    labels, a = _cohort(150, seed=seed, ties=True)
    b = np.clip(a + np.random.default_rng(seed + 100).normal(0, 0.15, 150), 0, 1).round(2)
    result = delong_test(labels, a, b)
    auc_a, auc_b, z = _slow_delong(labels, a, b)
    assert result["auroc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert result["auroc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert result["auroc_a"] == pytest.approx(classification_metrics(labels, a)["auroc"], abs=1e-12)
    assert result["difference"] == pytest.approx(auc_b - auc_a, abs=1e-12)
    assert result["z"] == pytest.approx(z, rel=1e-9)
    assert result["p_value"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))), rel=1e-6)


def test_delong_identical_models() -> None:
    labels, probs = _cohort(50, seed=14)
    result = delong_test(labels, probs, probs)
    assert result["z"] == 0 and result["p_value"] == 1.0


def test_delong_agrees_with_paired_bootstrap_on_large_sample() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    signal = rng.normal(size=3000) + labels
    a = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.0, 3000))))
    b = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.9, 3000))))
    delong = delong_test(labels, a, b)["p_value"]
    boot = paired_bootstrap(labels, a, b)["p_value"]
    assert 0.02 < delong < 0.5  # a case where the p-value is not trivially 0 or 1
    assert boot == pytest.approx(delong, abs=0.04)


# --------------------------------------------------------------------------- across seeds


def test_seed_summary_formula() -> None:
    # mean 2, s = 1, t_{0.975, 2} = 4.302652729749462: half width 4.3026... / sqrt(3)
    result = seed_summary(np.array([1.0, 2.0, 3.0]))
    half = 4.302652729749462 / math.sqrt(3)
    assert result == pytest.approx((2.0, 2.0 - half, 2.0 + half), rel=1e-9)
    assert seed_summary([0.7]) == (0.7, 0.7, 0.7)


def test_seed_summary_ignores_nan_with_count() -> None:
    with pytest.warns(RuntimeWarning, match="ignored 2 NaN value"):
        result = seed_summary([1.0, math.nan, 2.0, 3.0, math.nan])
    assert result == seed_summary([1.0, 2.0, 3.0])
    with pytest.warns(RuntimeWarning):
        assert all(math.isnan(x) for x in seed_summary([math.nan]))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("labels", "probs", "match"),
    [
        ([0, 1, 1], [0.2, 0.4], r"probs: expected the length of labels \(3\), received 2"),
        ([0, 2, 1], [0.2, 0.4, 0.5], r"labels: expected values in \{0, 1\}, received \[2\]"),
        ([0, 1, 1], [0.2, 1.4, 0.5], r"probs: expected probabilities in \[0, 1\], received \[1.4\]"),
        ([0, 1, 1], [0.2, -0.1, 0.5], r"probs: expected probabilities in \[0, 1\], received \[-0.1\]"),
        ([0, 1, 1], [0.2, math.nan, 0.5], r"probs: expected probabilities in \[0, 1\], received NaN at"),
        ([[0, 1]], [[0.2, 0.4]], r"labels: expected a 1-D array \(N,\), received shape \(1, 2\)"),
        ([], [], "labels: expected at least one sample, received 0"),
        (["a", "b"], [0.2, 0.4], "labels: expected a numeric array"),
    ],
)
def test_input_errors(labels: list, probs: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(np.array(labels), np.array(probs))


def test_argument_errors() -> None:
    labels, probs = _cohort(30, seed=15)
    with pytest.raises(ValueError, match=r"metric: expected one of \['auroc'.*received 'auc'"):
        bootstrap_ci(labels, probs, "auc")
    with pytest.raises(ValueError, match=r"groups: expected shape \(30,\) like labels, received \(29,\)"):
        metric_table(labels, probs, groups=np.arange(29))
    with pytest.raises(ValueError, match="n_boot: expected an integer >= 1, received 0"):
        bootstrap_ci(labels, probs, "auroc", n_boot=0)
    with pytest.raises(ValueError, match=r"alpha: expected a number in \(0, 1\), received 1.5"):
        bootstrap_ci(labels, probs, "auroc", alpha=1.5)
    with pytest.raises(ValueError, match=r"threshold: expected a number in \[0, 1\], received 2"):
        classification_metrics(labels, probs, threshold=2)
    with pytest.raises(ValueError, match=r"probs_b: expected the length of labels \(30\), received 29"):
        delong_test(labels, probs, probs[:29])
    with pytest.raises(ValueError, match="labels: expected at least 2 positives and 2 negatives, received 0"):
        delong_test(np.zeros(5), np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="metric: expected a defined value for both models"):
        paired_bootstrap(np.ones(5), np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match=r"values: expected a non-empty 1-D array \(S,\), received"):
        seed_summary([])

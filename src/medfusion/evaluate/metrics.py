"""Binary classification metrics with bootstrap intervals and paired model comparisons.

NumPy arrays in, Python floats out. Every function takes ``labels`` (N,) in {0, 1} and
``probs`` (N,) in [0, 1], the predicted probability of the positive class.

Sources:
    - AUROC: Mann-Whitney U with ties counted one half (``medfusion.metrics.binary_auroc``).
    - AUPRC: average precision, step-wise, as scikit-learn's ``average_precision_score``.
    - ECE: Naeini et al., "Obtaining Well Calibrated Probabilities Using Bayesian
      Binning", AAAI 2015; Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    - Bootstrap: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile
      interval; cluster bootstrap resamples whole groups, e.g. patients).
    - DeLong, DeLong & Clarke-Pearson, "Comparing the areas under two or more correlated
      receiver operating characteristic curves: a nonparametric approach", Biometrics 1988;
      fast midrank form: Sun & Xu, "Fast implementation of DeLong's algorithm for comparing
      the areas under correlated receiver operating characteristic curves", IEEE SPL 2014.

The bootstrap is vectorised: one (n_boot, N) matrix of resample counts (how often each
sample is drawn) is built once, and every metric is computed for all resamples at once
as a count-weighted statistic. Metrics depend only on the multiset of samples, so the
counts are all a resample needs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import average_precision_score

from medfusion.metrics import binary_auroc

MetricFn = Callable[[np.ndarray, np.ndarray], float]

METRICS: tuple[str, ...] = ("auroc", "auprc", "f1", "accuracy", "ece", "brier")
"""Names returned by :func:`classification_metrics`, in that order."""

ECE_BINS = 10
_MAX_REDRAWS = 1000


class Interval(NamedTuple):
    """A point estimate with the bounds of its interval."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        """``"0.812 (0.771–0.850)"`` with ``digits`` decimals (an en dash between bounds)."""
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


# --------------------------------------------------------------------------- checks


def _check_labels_probs(
    labels: object, probs: object, probs_name: str = "probs"
) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as float64 0/1 and probs as float64, both (N,).

    Raises:
        ValueError: on a non-1-D array, no samples, a length mismatch, labels not in {0, 1},
            non-numeric input, or probabilities outside [0, 1] or NaN.
    """
    y = np.asarray(labels)
    p = np.asarray(probs)
    for name, arr in (("labels", y), (probs_name, p)):
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array (N,), received shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a numeric array, received dtype {arr.dtype}")
    if len(y) == 0:
        raise ValueError("labels: expected at least one sample, received 0")
    if len(p) != len(y):
        raise ValueError(f"{probs_name}: expected the length of labels ({len(y)}), received {len(p)}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(
            f"labels: expected values in {{0, 1}}, received {np.unique(y[bad])[:5].tolist()} "
            f"at index {np.flatnonzero(bad)[:10].tolist()}"
        )
    p = p.astype(np.float64)
    nan = np.isnan(p)
    if nan.any():
        raise ValueError(
            f"{probs_name}: expected probabilities in [0, 1], received NaN at index "
            f"{np.flatnonzero(nan)[:10].tolist()}"
        )
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise ValueError(
            f"{probs_name}: expected probabilities in [0, 1], received {p[bad][:5].tolist()} "
            f"at index {np.flatnonzero(bad)[:10].tolist()}"
        )
    return y.astype(np.float64), p


def _check_threshold(threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(f"threshold: expected a number in [0, 1], received {threshold!r}")


def _check_bootstrap_args(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, received {n_boot!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a number in (0, 1), received {alpha!r}")


def _check_metric(metric: str | MetricFn) -> None:
    if callable(metric):
        return
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric: expected one of {list(METRICS)} or a callable, received {metric!r}")


# --------------------------------------------------------------------------- point metrics


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, AUPRC, F1, accuracy, ECE and Brier score of one set of predictions.

    Args:
        labels: (N,) true classes in {0, 1}.
        probs: (N,) predicted probability of class 1, in [0, 1].
        threshold: a sample is predicted positive when ``probs >= threshold``.

    Returns:
        ``{name: value}`` for the names in :data:`METRICS`:

        - ``auroc``: P(score of a positive > score of a negative), ties count 1/2.
        - ``auprc``: average precision, sum_k (R_k - R_{k-1}) * P_k over the distinct
          scores k in decreasing order (step-wise, no interpolation; equals
          ``sklearn.metrics.average_precision_score``).
        - ``f1``: 2 TP / (2 TP + FP + FN) of the positive class at ``threshold``; 0 when
          there is no positive label and no positive prediction.
        - ``accuracy``: share of samples with ``(probs >= threshold) == labels``.
        - ``ece``: expected calibration error over 10 equal-width bins
          B_b = [b/10, (b+1)/10) (the last one closed at 1):
          sum_b |B_b| / N * |mean(probs in B_b) - mean(labels in B_b)|.
        - ``brier``: mean((probs - labels)^2).

        When only one class is present, ``auroc`` and ``auprc`` are NaN (undefined);
        the other metrics are still computed.

    Raises:
        ValueError: on a length mismatch, labels not in {0, 1}, probabilities outside [0, 1]
            or NaN, or a threshold outside [0, 1].

    Examples::

        >>> m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        >>> round(m["auroc"], 2), m["accuracy"]
        (0.75, 0.75)
    """
    y, p = _check_labels_probs(labels, probs)
    _check_threshold(threshold)
    if 0 < y.sum() < len(y):
        auroc = binary_auroc(torch.from_numpy(p), torch.from_numpy(y.astype(np.int64)))
        auprc = float(average_precision_score(y, p))
    else:
        auroc = auprc = math.nan
    rest = _weighted_threshold_metrics(y, p, np.ones((1, len(y))), threshold)
    return {"auroc": auroc, "auprc": auprc, **{k: float(v[0]) for k, v in rest.items()}}


# --------------------------------------------------------------------------- count-weighted (batched) metrics


def _weighted_threshold_metrics(
    y: np.ndarray, p: np.ndarray, counts: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """F1, accuracy, ECE and Brier for each row of ``counts``.

    Args:
        y: (N,) float 0/1 labels.
        p: (N,) probabilities.
        counts: (B, N) how often each sample enters each of B (re)samples.

    Returns:
        ``{name: (B,) array}`` for f1, accuracy, ece, brier.
    """
    n = counts.sum(axis=1)
    pred = (p >= threshold).astype(np.float64)
    tp = counts @ (y * pred)
    fp = counts @ ((1 - y) * pred)
    fn = counts @ (y * (1 - pred))
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    accuracy = (counts @ (pred == y).astype(np.float64)) / n
    # per-bin sum of (p - y): |sum_b(p - y)| / N == |B_b| / N * |mean p - mean y|
    bins = np.minimum(np.floor(p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    residual_by_bin = np.zeros((len(p), ECE_BINS))
    residual_by_bin[np.arange(len(p)), bins] = p - y
    ece = np.abs(counts @ residual_by_bin).sum(axis=1) / n
    brier = (counts @ (p - y) ** 2) / n
    return {"f1": f1, "accuracy": accuracy, "ece": ece, "brier": brier}


def _weighted_ranking_metrics(
    y: np.ndarray, p: np.ndarray, counts: np.ndarray, names: tuple[str, ...] = ("auroc", "auprc")
) -> dict[str, np.ndarray]:
    """AUROC and/or AUPRC (``names``) for each row of ``counts`` (B, N); NaN where a row lacks a class.

    Samples are grouped into the K distinct score levels; pos[b, k] and neg[b, k] are the
    count-weighted positives and negatives at level k (increasing score), P_b and N_b
    their totals, and TP[b, k] = sum_{j >= k} pos[b, j], FP[b, k] likewise. Then

        AUROC_b = sum_k pos[b, k] * (sum_{j < k} neg[b, j] + neg[b, k] / 2) / (P_b * N_b)
        AUPRC_b = sum_k pos[b, k] / P_b * TP[b, k] / (TP[b, k] + FP[b, k])

    the Mann-Whitney statistic with ties counted one half, and step-wise average precision.
    """
    # sort by score, negatives before positives within a score: one reduceat then gives
    # the weighted count of every (level, class) segment
    order = np.lexsort((y, p))
    sorted_p, sorted_y = p[order], y[order]
    new_level = np.r_[True, sorted_p[1:] != sorted_p[:-1]]
    starts = np.flatnonzero(new_level | np.r_[True, sorted_y[1:] != sorted_y[:-1]])
    level = np.cumsum(new_level)[starts] - 1
    is_pos = sorted_y[starts] == 1
    segments = np.add.reduceat(counts[:, order], starts, axis=1)
    n_levels = int(level[-1]) + 1
    pos = np.zeros((len(counts), n_levels))
    neg = np.zeros((len(counts), n_levels))
    pos[:, level[is_pos]] = segments[:, is_pos]
    neg[:, level[~is_pos]] = segments[:, ~is_pos]
    del segments
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    valid = (n_pos > 0) & (n_neg > 0)
    cum_neg = np.cumsum(neg, axis=1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "auroc" in names:
            auroc = (pos * (cum_neg - 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
            out["auroc"] = np.where(valid, auroc, np.nan)
        if "auprc" in names:
            tp = n_pos[:, None] - np.cumsum(pos, axis=1) + pos  # positives scoring >= level k
            fp = n_neg[:, None] - cum_neg + neg
            precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=pos > 0)
            auprc = (pos * precision).sum(axis=1) / n_pos
            out["auprc"] = np.where(valid, auprc, np.nan)
    return out


def _batched_metrics(
    y: np.ndarray, p: np.ndarray, counts: np.ndarray, threshold: float, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    ranking = tuple(name for name in names if name in ("auroc", "auprc"))
    if ranking:
        out.update(_weighted_ranking_metrics(y, p, counts, ranking))
    if {"f1", "accuracy", "ece", "brier"} & set(names):
        out.update(_weighted_threshold_metrics(y, p, counts, threshold))
    return {name: out[name] for name in names}


def _metric_values(
    y: np.ndarray, p: np.ndarray, counts: np.ndarray, metric: str | MetricFn, threshold: float
) -> np.ndarray:
    """(B,) value of one metric (name or callable) on each resample in ``counts``."""
    if isinstance(metric, str):
        return _batched_metrics(y, p, counts, threshold, (metric,))[metric]
    index = np.arange(len(y))
    values = np.empty(len(counts))
    for b, row in enumerate(counts.astype(np.int64)):
        drawn = np.repeat(index, row)
        values[b] = metric(y[drawn], p[drawn])
    return values


def _point_value(y: np.ndarray, p: np.ndarray, metric: str | MetricFn, threshold: float) -> float:
    if isinstance(metric, str):
        return classification_metrics(y, p, threshold)[metric]
    return float(metric(y, p))


# --------------------------------------------------------------------------- resampling


def _resample_counts(y: np.ndarray, n_boot: int, seed: int, groups: object | None) -> np.ndarray:
    """(n_boot, N) float counts: how often each sample is drawn in each resample.

    Without ``groups``, each resample draws N samples with replacement. With ``groups``
    (N,) (e.g. patient ids), it draws G of the G distinct groups with replacement and
    takes every sample of each drawn group (cluster bootstrap), so sizes vary.

    When both classes are present in the data, resamples holding a single class are
    redrawn (from the same generator, so the result stays deterministic for a seed).

    Raises:
        ValueError: on groups of the wrong shape, or when resamples with both classes
            cannot be drawn in 1000 rounds.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    if groups is None:
        inverse, n_units = None, n
    else:
        g = np.asarray(groups)
        if g.ndim != 1 or len(g) != n:
            raise ValueError(f"groups: expected shape ({n},) like labels, received {g.shape}")
        _, inverse = np.unique(g, return_inverse=True)
        n_units = int(inverse.max()) + 1

    def draw(rows: int) -> np.ndarray:
        index = rng.integers(0, n_units, size=(rows, n_units))
        flat = (index + n_units * np.arange(rows)[:, None]).ravel()
        unit_counts = np.bincount(flat, minlength=rows * n_units).reshape(rows, n_units)
        counts = unit_counts if inverse is None else unit_counts[:, inverse]
        return counts.astype(np.float64)

    counts = draw(n_boot)
    if 0 < y.sum() < n:
        for attempt in range(_MAX_REDRAWS + 1):
            n_pos = counts @ y
            bad = np.flatnonzero((n_pos == 0) | (n_pos == counts.sum(axis=1)))
            if len(bad) == 0:
                break
            if attempt < _MAX_REDRAWS:
                counts[bad] = draw(len(bad))
                continue
            raise ValueError(
                f"labels: expected resamples with both classes, received {int(y.sum())} positive of "
                f"{n} samples, too few to draw them in {_MAX_REDRAWS} rounds"
            )
    return counts


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]
    if len(finite) == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


# --------------------------------------------------------------------------- public bootstrap API


def bootstrap_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    metric: str | MetricFn,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: np.ndarray | None = None,
    threshold: float = 0.5,
) -> Interval:
    """Percentile bootstrap interval of one metric.

    The interval is the alpha/2 and 1 - alpha/2 percentiles of the metric over ``n_boot``
    resamples; ``value`` is the metric on the full data.

    Args:
        labels: (N,) true classes in {0, 1}.
        probs: (N,) predicted probability of class 1.
        metric: a name in :data:`METRICS`, or a callable ``(labels, probs) -> float``
            (called once per resample, with the resampled arrays; sample order within a
            resample is not the draw order).
        n_boot: number of resamples.
        seed: seed of ``numpy.random.default_rng``; equal seeds give equal intervals.
        alpha: 1 - coverage (0.05 gives a 95% interval).
        groups: (N,) cluster ids (e.g. patient ids); when given, whole groups are
            resampled (cluster bootstrap), keeping correlated samples together.
        threshold: decision threshold for ``f1`` and ``accuracy``.

    Resamples that hold a single class are redrawn (not skipped), so the interval always
    rests on ``n_boot`` resamples with both classes; this conditions on both classes being
    present. When the data hold only one class, nothing is redrawn and ``auroc``/``auprc``
    give ``Interval(nan, nan, nan)``. NaN values a callable returns are left out of the
    percentiles. The percentile interval does not always contain ``value``: ECE, for one,
    is biased upward on resamples, so a well-calibrated model's ECE can lie below it.

    Raises:
        ValueError: on invalid labels/probs, an unknown metric, n_boot < 1, alpha outside
            (0, 1), or groups of the wrong shape.
    """
    y, p = _check_labels_probs(labels, probs)
    _check_metric(metric)
    _check_bootstrap_args(n_boot, alpha)
    _check_threshold(threshold)
    value = _point_value(y, p, metric, threshold)
    if math.isnan(value):
        return Interval(math.nan, math.nan, math.nan)
    counts = _resample_counts(y, n_boot, seed, groups)
    low, high = _percentiles(_metric_values(y, p, counts, metric, threshold), alpha)
    return Interval(value, low, high)


def metric_table(
    labels: np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    alpha: float = 0.05,
    threshold: float = 0.5,
) -> dict[str, Interval]:
    """Bootstrap intervals of every metric of :func:`classification_metrics`.

    All metrics share one resample count matrix, so ``metric_table(...)[name]`` equals
    ``bootstrap_ci(..., metric=name)`` for the same seed. Arguments as in
    :func:`bootstrap_ci`.

    Returns:
        ``{name: Interval}`` in the order of :data:`METRICS`.

    Raises:
        ValueError: as :func:`bootstrap_ci`.
    """
    y, p = _check_labels_probs(labels, probs)
    _check_bootstrap_args(n_boot, alpha)
    _check_threshold(threshold)
    point = classification_metrics(y, p, threshold)
    counts = _resample_counts(y, n_boot, seed, groups)
    values = _batched_metrics(y, p, counts, threshold, METRICS)
    table = {}
    for name in METRICS:
        if math.isnan(point[name]):
            table[name] = Interval(math.nan, math.nan, math.nan)
        else:
            table[name] = Interval(point[name], *_percentiles(values[name], alpha))
    return table


def paired_bootstrap(
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    metric: str | MetricFn = "auroc",
    n_boot: int = 2000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    alpha: float = 0.05,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Paired bootstrap of the difference metric(b) - metric(a) on the same samples.

    Both models are scored on the same resamples (drawn as in :func:`bootstrap_ci`), so
    their correlation is kept. The two-sided p-value is twice the share of resampled
    differences on the other side of 0 from the observed one (0 itself counts as the
    other side), capped at 1: p = min(1, 2 * #{d*_i <= 0} / n_boot) for an observed
    d > 0 (mirrored for d < 0; p = 1 for d = 0). Its resolution is 1 / n_boot, so
    p = 0 means p < 1 / n_boot.

    Args:
        labels: (N,) true classes in {0, 1}.
        probs_a: (N,) probabilities of the reference model a.
        probs_b: (N,) probabilities of the compared model b.
        metric, n_boot, seed, groups, alpha, threshold: as in :func:`bootstrap_ci`.

    Returns:
        ``value_a``, ``value_b``, ``difference`` (b - a), ``low``/``high`` (the
        1 - alpha percentile interval of the difference) and ``p_value``.

    Raises:
        ValueError: as :func:`bootstrap_ci`, or when the metric is undefined (one class).
    """
    y, pa = _check_labels_probs(labels, probs_a, "probs_a")
    _, pb = _check_labels_probs(labels, probs_b, "probs_b")
    _check_metric(metric)
    _check_bootstrap_args(n_boot, alpha)
    _check_threshold(threshold)
    value_a, value_b = _point_value(y, pa, metric, threshold), _point_value(y, pb, metric, threshold)
    if math.isnan(value_a) or math.isnan(value_b):
        raise ValueError(
            f"metric: expected a defined value for both models, received {value_a} and {value_b}"
        )
    counts = _resample_counts(y, n_boot, seed, groups)
    values_a = _metric_values(y, pa, counts, metric, threshold)
    diffs = _metric_values(y, pb, counts, metric, threshold) - values_a
    diffs = diffs[~np.isnan(diffs)]
    difference = value_b - value_a
    if difference > 0:
        p_value = min(1.0, 2 * float(np.mean(diffs <= 0)))
    elif difference < 0:
        p_value = min(1.0, 2 * float(np.mean(diffs >= 0)))
    else:
        p_value = 1.0
    low, high = _percentiles(diffs, alpha)
    return {
        "value_a": value_a,
        "value_b": value_b,
        "difference": difference,
        "low": low,
        "high": high,
        "p_value": p_value,
    }


# --------------------------------------------------------------------------- DeLong


def delong_test(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray) -> dict[str, float]:
    """DeLong's test for two correlated AUROCs measured on the same samples.

    With m positives X and n negatives Y, and midranks (ties averaged) of each model's
    scores among the positives (T_X), the negatives (T_Y) and all samples (T_Z):

        AUC = (sum T_Z[X] - m (m + 1) / 2) / (m n)
        V10_i = (T_Z[X_i] - T_X[X_i]) / n         (structural components, positives)
        V01_j = 1 - (T_Z[Y_j] - T_Y[Y_j]) / m     (structural components, negatives)
        S = cov(V10) / m + cov(V01) / n            (2 x 2, over the two models)
        z = (AUC_b - AUC_a) / sqrt(S_aa + S_bb - 2 S_ab),  p = 2 (1 - Phi(|z|))

    (Sun & Xu 2014 midrank form of DeLong et al. 1988.) When the variance is 0 (e.g.
    identical models), z = 0 and p = 1 for a zero difference.

    Args:
        labels: (N,) true classes in {0, 1}, both present.
        probs_a: (N,) scores of the reference model a.
        probs_b: (N,) scores of the compared model b.

    Returns:
        ``auroc_a``, ``auroc_b``, ``difference`` (b - a), ``se`` (its standard error),
        ``z`` and ``p_value`` (two-sided, normal).

    Raises:
        ValueError: on invalid inputs, or fewer than 2 positives or 2 negatives.
    """
    y, pa = _check_labels_probs(labels, probs_a, "probs_a")
    _, pb = _check_labels_probs(labels, probs_b, "probs_b")
    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError(f"labels: expected at least 2 positives and 2 negatives, received {m} and {n}")
    scores = np.stack([pa, pb])  # (2, N)
    x, z_neg = scores[:, positive], scores[:, ~positive]
    t_x = stats.rankdata(x, axis=1)
    t_y = stats.rankdata(z_neg, axis=1)
    t_z = stats.rankdata(np.concatenate([x, z_neg], axis=1), axis=1)
    auc = (t_z[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1 - (t_z[:, m:] - t_y) / m
    s = np.cov(v10) / m + np.cov(v01) / n
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = float(auc[1] - auc[0])
    if variance > 0:
        se = math.sqrt(variance)
        z = difference / se
    else:
        se = 0.0
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return {
        "auroc_a": float(auc[0]),
        "auroc_b": float(auc[1]),
        "difference": difference,
        "se": se,
        "z": z,
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }


# --------------------------------------------------------------------------- across seeds


def seed_summary(values: np.ndarray, alpha: float = 0.05) -> Interval:
    """Mean of a metric across training seeds with a Student-t interval.

    For the k non-NaN values v: mean ± t_{1 - alpha/2, k - 1} * s / sqrt(k), with s the
    sample standard deviation (ddof = 1). k = 1 gives low = high = mean.

    Args:
        values: (S,) one value per seed. NaN values are ignored; a ``RuntimeWarning``
            gives their count. All NaN gives ``Interval(nan, nan, nan)``.
        alpha: 1 - coverage (0.05 gives a 95% interval).

    Raises:
        ValueError: on a non-1-D or empty input, or alpha outside (0, 1).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"values: expected a non-empty 1-D array (S,), received shape {v.shape}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha: expected a number in (0, 1), received {alpha!r}")
    nan = np.isnan(v)
    if nan.any():
        message = f"seed_summary: ignored {int(nan.sum())} NaN value(s) of {len(v)}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    v = v[~nan]
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if len(v) == 1:
        return Interval(mean, mean, mean)
    half = float(stats.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return Interval(mean, mean - half, mean + half)

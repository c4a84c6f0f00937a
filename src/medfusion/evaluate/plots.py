"""PNG figures of the comparison (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medfusion.files import atomic_path  # noqa: E402


def _save(figure, path: Path) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path.name


def latency_bars(runs: dict[str, Any], path: Path) -> str:
    """Batch-1 CPU latency p50 with p99 whiskers per strategy."""
    names = list(runs)
    p50 = [runs[n]["cost"]["latency_b1_p50_ms"] for n in names]
    p99 = [runs[n]["cost"]["latency_b1_p99_ms"] for n in names]
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.bar(names, p50, color="#4c72b0")
    axis.errorbar(names, p50, yerr=[np.zeros(len(p50)), np.subtract(p99, p50)], fmt="none", color="black",
                  capsize=3)
    axis.set_ylabel("ms (batch 1, p50; whisker p99)")
    axis.tick_params(axis="x", rotation=30)
    axis.set_title("CPU latency per strategy")
    return _save(figure, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> str:
    """ROC curve of each strategy (first seed's test predictions)."""
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    for name, (labels, probs) in curves.items():
        order = np.argsort(-probs, kind="stable")
        hits = labels[order] == 1
        tpr = np.concatenate([[0], np.cumsum(hits) / max(hits.sum(), 1)])
        fpr = np.concatenate([[0], np.cumsum(~hits) / max((~hits).sum(), 1)])
        axis.plot(fpr, tpr, label=name, linewidth=1.4)
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title("ROC (test split, first seed)")
    axis.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def missingness_curves(runs: dict[str, Any], modalities: list[str], path: Path) -> str:
    """Test AUROC as the share of samples missing each modality grows (mean over seeds)."""
    figure, axes = plt.subplots(1, len(modalities), figsize=(4 * len(modalities), 3.3), sharey=True)
    for axis, m in zip(np.atleast_1d(axes), modalities, strict=True):
        for name, run in runs.items():
            curve = run["summary"]["curve"].get(m)
            if curve:
                rates = sorted(curve, key=float)
                axis.plot([float(r) for r in rates], [curve[r] for r in rates], marker="o", label=name, linewidth=1.2)
        axis.set_title(f"{m} missing")
        axis.set_xlabel("share of test samples without it")
    np.atleast_1d(axes)[0].set_ylabel("AUROC")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    return _save(figure, path)


def learning_curves(runs: dict[str, Any], path: Path) -> str:
    """Test AUROC against the share of training patients (first seed)."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, run in runs.items():
        curve = run.get("learning_curve")
        if curve:
            fractions = sorted(curve, key=float)
            axis.plot([100 * float(f) for f in fractions], [curve[f] for f in fractions], marker="o", label=name)
    axis.set_xlabel("% of training patients")
    axis.set_ylabel("test AUROC")
    axis.set_title("Learning curves")
    axis.legend(fontsize=7)
    return _save(figure, path)


def contribution_bars(runs: dict[str, Any], path: Path) -> str:
    """Mean per-modality credit of each strategy's explanation (first seed)."""
    rows = {n: r["seeds"][next(iter(r["seeds"]))]["evaluation"]["explanation"]["mean_attribution"]
            for n, r in runs.items() if "explanation" in r["seeds"][next(iter(r["seeds"]))]["evaluation"]}
    modalities = sorted({m for row in rows.values() for m in row})
    figure, axis = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(modalities), 1)
    x = np.arange(len(rows))
    for j, m in enumerate(modalities):
        axis.bar(x + j * width, [row.get(m, 0.0) for row in rows.values()], width, label=m)
    axis.set_xticks(x + width * (len(modalities) - 1) / 2, list(rows), rotation=30)
    axis.set_ylabel("mean share of credit")
    axis.set_title("Per-modality contributions")
    axis.legend(fontsize=7)
    return _save(figure, path)

"""report.md / report.html and the figures of a comparison: on the real (tiny) comparison of
test_eval_compare (its output folder is reused, nothing is trained again) and on hand-made results."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from medfusion.evaluate import report
from medfusion.evaluate.report import criteria_rows, criteria_won, significance_rows, write_report
from test_eval_compare import STRATEGIES, comparison

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ["latency.png", "roc.png", "missingness.png", "learning_curves.png", "contributions.png"]
GROUPS = ["computational cost", "performance", "interpretability", "missing modality", "training data",
          "modularity", "cross-modal retrieval", "best use case"]
MODALITIES = ["image", "text", "vitals"]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """results of the tiny comparison (trained once per session, see test_eval_compare)."""
    return comparison(tmp_path_factory.getbasetemp())[0]


@pytest.fixture(scope="module")
def written(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert write_report(results, out) == out / "report.md"
    return out


def table_lines(markdown: str) -> list[str]:
    """Lines of the first Markdown table."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| criterion |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# --------------------------------------------------------------------------- on the real comparison


def test_report_files_and_figures_are_written(written) -> None:
    assert (written / "report.md").stat().st_size > 0 and (written / "report.html").stat().st_size > 0
    for name in FIGURES:
        path = written / "figures" / name
        assert path.is_file(), name
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    assert not [p for p in (written / "figures").iterdir() if p.name not in FIGURES], "no temporary files left"


def test_markdown_table_has_one_column_per_strategy_and_every_group(written) -> None:
    markdown = (written / "report.md").read_text()
    lines = table_lines(markdown)
    assert cells(lines[0]) == ["criterion", *STRATEGIES]
    assert all(len(cells(line)) == 1 + len(STRATEGIES) for line in lines[2:]), "every row: a label and one cell each"
    groups = [cells(line)[0].strip("*") for line in lines if line.startswith("| **")]
    assert groups == GROUPS
    labels = [cells(line)[0] for line in lines[2:]]
    for label in ("trainable parameters", "AUROC mean (95% CI across seeds)", "explanation",
                  "AUROC without text (drop from full)", "AUROC with 50% of training patients",
                  "AUROC with 100% of training patients", "Recall@1 text→image / image→text",
                  "criteria this strategy wins (measured)"):
        assert label in labels, label


def test_markdown_cells_are_the_measurements(written, results) -> None:
    lines = table_lines((written / "report.md").read_text())
    row = {cells(line)[0]: cells(line)[1:] for line in lines[2:]}
    for column, name in enumerate(STRATEGIES):
        run = results["runs"][name]
        assert row["trainable parameters"][column] == f"{run['cost']['parameters']['trainable']:,}"
        auroc = run["summary"]["metrics"]["auroc"][0]
        assert row["AUROC mean (95% CI across seeds)"][column].startswith(f"{auroc:.3f} (")
        assert row["explanation"][column] == run["seeds"]["0"]["evaluation"]["explanation"]["method"]
        assert row["Recall@1 text→image / image→text"][column] == report.DASH, "no joint space"
        assert row["AUROC with 50% of training patients"][column] == f"{run['learning_curve']['0.5']:.3f}"


def test_markdown_lists_significance_and_links_existing_figures(written, results) -> None:
    markdown = (written / "report.md").read_text()
    assert "## Are the differences real?" in markdown and "## Best use case (from the measurements)" in markdown
    test = results["significance"][0]
    assert f"| early | late | 0 | {test['auroc_a']:.3f} | {test['auroc_b']:.3f} |" in markdown
    linked = re.findall(r"!\[\w+\]\(figures/([\w.]+)\)", markdown)
    assert sorted(linked) == sorted(FIGURES)
    assert "Scenario **triage**, 120 synthetic patients" in markdown


def test_html_has_the_same_table(written) -> None:
    page = (written / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert "<th>criterion</th><th>early</th><th>late</th>" in page
    for group in GROUPS:
        assert f"<td colspan='3'>{group}</td>" in page
    for name in FIGURES:
        assert f"src='figures/{name}'" in page
    assert "**" not in page


# --------------------------------------------------------------------------- hand-made results


def fake_run(auroc: float, latency: float, parameters: int, ece: float, without_text: float, small_data: float,
             retrieval: bool = False, folder: str = "/nonexistent") -> dict:
    """A results.json run entry with the given measurements (everything else fixed)."""
    interval = [auroc, auroc - 0.05, auroc + 0.05]
    recall = {f"{d}_recall@{k}": 0.5 for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}
    evaluation = {
        "metrics": {m: interval for m in ("auroc", "auprc", "f1", "accuracy", "brier")} | {"ece": [ece] * 3},
        "missing": {"drop": {}, "curve": {}, "ablation": {}},
        "retrieval": {**recall, "pairs": 10} if retrieval else None,
        "explanation": {"method": "modality_weights", "fidelity": {"fidelity": 0.75},
                        "mean_attribution": {m: 1 / 3 for m in MODALITIES},
                        "pointing": {"source": "saliency", "finding": "consolidation", "hit_rate": 0.5}},
    }
    return {
        "seeds": {"0": {"run": {"train_seconds": 2.0}, "dir": folder, "evaluation": evaluation}},
        "cost": {"parameters": {"trainable": parameters}, "macs_per_sample": 2.5e6, "latency_b1_p50_ms": latency,
                 "latency_b1_p99_ms": 2 * latency, "throughput_b32": 1000.0, "peak_memory_mb": 3.0,
                 "train_samples_per_s": 500.0},
        "summary": {"metrics": {m: interval for m in ("auroc", "auprc", "f1", "accuracy", "brier")}
                    | {"ece": [ece] * 3},
                    "drop": {"image": [auroc - 0.1] * 3, "text": [without_text] * 3},
                    "curve": {m: {"0.0": auroc, "0.5": auroc - 0.05} for m in ("image", "text")},
                    "ablation": {}, "train_seconds": 2.0},
        "learning_curve": {"0.25": small_data, "1": auroc},
    }


def hand_made() -> dict:
    return {"a": fake_run(auroc=0.9, latency=5.0, parameters=900, ece=0.02, without_text=0.6, small_data=0.7),
            "b": fake_run(auroc=0.8, latency=1.0, parameters=100, ece=0.10, without_text=0.7, small_data=0.75,
                          retrieval=True),
            "only_image": fake_run(auroc=0.99, latency=0.1, parameters=10, ece=0.0, without_text=0.99,
                                   small_data=0.99) | {"learning_curve": {}}}


def test_criteria_won_by_fusion_strategies_only() -> None:
    won = criteria_won(hand_made(), ["image", "text"])
    assert won == {"a": "highest AUROC; best calibrated; most robust without image",
                   "b": "fastest (batch 1); fewest parameters; most robust without text; least data needed; "
                        "cross-modal search"}


def test_criteria_won_skips_nan_measurements() -> None:
    runs = hand_made()
    runs["a"]["summary"]["metrics"]["ece"] = [float("nan")] * 3
    runs["a"]["summary"]["metrics"]["auroc"] = [float("nan")] * 3
    won = criteria_won(runs, ["image"])
    assert "best calibrated" in won["b"] and "highest AUROC" in won["b"]
    assert won["a"] == "most robust without image", "a NaN never wins (and is not compared as a number)"


@pytest.mark.parametrize(("p_value", "difference", "verdict"), [(0.05, 0.2, "not significant"),
                                                                (0.5, -0.1, "not significant"),
                                                                (0.049, 0.01, "more complex is better"),
                                                                (0.001, -0.2, "more complex is worse"),
                                                                (0.01, 0.0, "more complex is worse")])
def test_verdict(p_value, difference, verdict) -> None:
    assert report._verdict({"p_value": p_value, "difference": difference}) == verdict


def test_significance_rows() -> None:
    test = {"simpler": "a", "complex": "b", "seed": 1, "auroc_a": 0.8, "auroc_b": 0.85, "difference": 0.05,
            "se": 0.01, "z": 5.0, "p_value": 0.0001}
    assert significance_rows([test]) == [["a", "b", "1", "0.800", "0.850", "+0.050", "0.000",
                                          "more complex is better"]]


def test_criteria_rows_of_hand_made_results() -> None:
    rows = criteria_rows(hand_made(), ["image", "text"])
    assert list(dict.fromkeys(group for group, _, _ in rows)) == GROUPS
    assert all(len(cells) == 3 for _, _, cells in rows)
    row = {label: cells for _, label, cells in rows}
    assert row["trainable parameters"] == ["900", "100", "10"]
    assert row["MACs per sample"] == ["2.50 M"] * 3
    assert row["AUROC mean (95% CI across seeds)"][0] == "0.900 (0.850–0.950)"
    assert row["AUROC without text (drop from full)"][:2] == ["0.600 (-0.300)", "0.700 (-0.100)"]
    assert row["AUROC with 25% of training patients"] == ["0.700", "0.750", report.DASH]
    assert row["Recall@5 text→image / image→text"] == [report.DASH, "0.50 / 0.50", report.DASH]
    assert row["pointing game on consolidation (hit rate)"][0] == "0.50 (saliency)"
    assert row["criteria this strategy wins (measured)"][2] == report.DASH


def test_best_use_sentences_name_winners_and_the_significance_caveat() -> None:
    significance = [{"simpler": "a", "complex": "b", "seed": s, "p_value": p} for s, p in ((0, 0.2), (1, 0.06))]
    sentences = report.best_use_sentences(hand_made(), significance, ["text"])
    assert sentences[0] == "Highest test AUROC: **a** (0.900, mean over seeds)."
    assert sentences[1] == "Fastest at batch 1: **b** (1.00 ms p50)."
    assert "a is **not significantly** better than b (DeLong p ≥ 0.05 in every seed: 0.200, 0.060)." in sentences
    assert "Without text: **b** keeps the highest AUROC (0.700)." in sentences
    assert "Cross-modal search needs a joint space: only **b** provides one." in sentences
    significant = [{"simpler": "a", "complex": "b", "seed": 0, "p_value": 0.01}]
    assert not [s for s in report.best_use_sentences(hand_made(), significant, []) if "not significantly" in s]


def test_html_escapes_strategy_names(tmp_path) -> None:
    runs = hand_made()
    runs = {"<b>bold</b>": runs["a"], "x&y": runs["b"]}
    results = {"settings": {"scenario": "triage", "patients": 60, "seeds": [0], "max_epochs": 1, "n_boot": 50},
               "runs": runs, "significance": [{"simpler": "<b>bold</b>", "complex": "x&y", "seed": 0, "auroc_a": 0.9,
                                               "auroc_b": 0.8, "difference": -0.1, "se": 0.1, "z": -1.0,
                                               "p_value": 0.3}], "seconds": 12.0}
    write_report(results, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<b>bold</b>" not in page and "x&y" not in page
    assert f"<th>{html.escape('<b>bold</b>')}</th><th>x&amp;y</th>" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert (tmp_path / "report.md").is_file()
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == sorted(set(FIGURES) - {"roc.png"}), "no test predictions on disk: no ROC figure"
    assert "](figures/roc.png)" not in (tmp_path / "report.md").read_text()

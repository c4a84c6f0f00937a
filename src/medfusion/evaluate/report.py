"""``report.md`` and ``report.html`` of a comparison: one column per strategy, one row per
criterion, every cell a measurement from ``results.json``, plus PNG plots and the tests
of differences between strategies.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from medfusion.evaluate import plots
from medfusion.files import atomic_write_text

DASH = "—"


def _ci(values: list[float], digits: int = 3) -> str:
    value, low, high = values
    if np.isnan(value):
        return DASH
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def _first(run: dict[str, Any]) -> dict[str, Any]:
    return run["seeds"][next(iter(run["seeds"]))]["evaluation"]


def criteria_rows(runs: dict[str, Any], modalities: list[str]) -> list[tuple[str, str, list[str]]]:
    """(group, criterion, one cell per strategy) rows of the comparison table."""
    names = list(runs)
    rows: list[tuple[str, str, list[str]]] = []

    def add(group: str, label: str, cell) -> None:
        rows.append((group, label, [cell(runs[n]) for n in names]))

    add("computational cost", "trainable parameters", lambda r: f"{r['cost']['parameters']['trainable']:,}")
    add("computational cost", "MACs per sample", lambda r: f"{r['cost']['macs_per_sample'] / 1e6:.2f} M")
    add("computational cost", "CPU latency batch 1, p50 / p99 (ms)",
        lambda r: f"{r['cost']['latency_b1_p50_ms']:.2f} / {r['cost']['latency_b1_p99_ms']:.2f}")
    add("computational cost", "throughput batch 32 (samples/s)", lambda r: f"{r['cost']['throughput_b32']:.0f}")
    add("computational cost", "peak forward memory batch 32 (MB)", lambda r: f"{r['cost']['peak_memory_mb']:.1f}")
    add("computational cost", "training throughput batch 32 (samples/s)",
        lambda r: f"{r['cost']['train_samples_per_s']:.0f}")
    add("computational cost", "training time per run (s)", lambda r: f"{r['summary']['train_seconds']:.1f}")
    for metric, label in (("auroc", "AUROC"), ("auprc", "AUPRC"), ("f1", "F1 at the validation F1-best threshold"),
                          ("ece", "ECE")):
        add("performance", f"{label} mean (95% CI across seeds)",
            lambda r, metric=metric: _ci(r["summary"]["metrics"][metric]))
    add("interpretability", "explanation", lambda r: _first(r)["explanation"]["method"])
    add("interpretability", "deletion fidelity (share where removing the most-credited modality hurts most)",
        _fidelity_cell)
    add("interpretability", "pointing game on consolidation (hit rate)", _pointing_cell)
    full = {n: runs[n]["summary"]["metrics"]["auroc"][0] for n in names}
    for m in modalities:
        add("missing modality", f"AUROC without {m} (drop from full)",
            lambda r, m=m: _drop_cell(r, m, full))
    fractions = sorted({f for r in runs.values() for f in r.get("learning_curve", {})}, key=float)
    for fraction in fractions:
        add("training data", f"AUROC with {float(fraction):.0%} of training patients",
            lambda r, f=fraction: f"{r['learning_curve'][f]:.3f}" if f in r.get("learning_curve", {}) else DASH)
    add("modularity", "swap the text encoder: share of parameters retrained", _swap_share_cell)
    add("modularity", "swap the text encoder: test AUROC before → after (change)", _swap_auroc_cell)
    for k in (1, 5, 10):
        add("cross-modal retrieval", f"Recall@{k} text→image / image→text", lambda r, k=k: _retrieval_cell(r, k))
    wins = criteria_won(runs, modalities)
    rows.append(("best use case", "criteria this strategy wins (measured)", [wins.get(n, DASH) for n in names]))
    return rows


def criteria_won(runs: dict[str, Any], modalities: list[str]) -> dict[str, str]:
    """{strategy: the criteria it is best at among the fusion strategies}, from the measurements."""
    fusion = {n: r for n, r in runs.items() if not n.startswith("only_")}
    scores: dict[str, dict[str, float]] = {
        "highest AUROC": {n: r["summary"]["metrics"]["auroc"][0] for n, r in fusion.items()},
        "fastest (batch 1)": {n: -r["cost"]["latency_b1_p50_ms"] for n, r in fusion.items()},
        "fewest parameters": {n: -r["cost"]["parameters"]["trainable"] for n, r in fusion.items()},
        "best calibrated": {n: -r["summary"]["metrics"]["ece"][0] for n, r in fusion.items()},
    }
    for m in modalities:
        scores[f"most robust without {m}"] = {n: r["summary"]["drop"][m][0] for n, r in fusion.items()
                                              if m in r["summary"]["drop"]}
    scores["least data needed"] = {n: r["learning_curve"][min(r["learning_curve"], key=float)]
                                   for n, r in fusion.items() if r.get("learning_curve")}
    scores["most modular (fewest parameters retrained to swap an encoder)"] = {
        n: -r["modularity"]["retrained_share"] for n, r in fusion.items()
        if r.get("modularity", {}).get("swappable")}
    scores["cross-modal search"] = {n: 1.0 for n, r in fusion.items() if _first(r).get("retrieval")}
    won: dict[str, list[str]] = {}
    for criterion, values in scores.items():
        values = {n: v for n, v in values.items() if not np.isnan(v)}
        if values:
            won.setdefault(max(values, key=values.get), []).append(criterion)
    return {n: "; ".join(c) for n, c in won.items()}


def _fidelity_cell(run: dict[str, Any]) -> str:
    fidelity = _first(run)["explanation"]["fidelity"]["fidelity"]
    return DASH if np.isnan(fidelity) else f"{fidelity:.2f}"


def _pointing_cell(run: dict[str, Any]) -> str:
    pointing = _first(run)["explanation"].get("pointing")
    if not pointing:
        return DASH
    return f"{pointing['hit_rate']:.2f} ({pointing['source']})"


def _drop_cell(run: dict[str, Any], modality: str, full: dict[str, float]) -> str:
    drop = run["summary"]["drop"].get(modality)
    if drop is None:
        return DASH
    baseline = run["summary"]["metrics"]["auroc"][0]
    return f"{drop[0]:.3f} ({drop[0] - baseline:+.3f})"


def _swap_share_cell(run: dict[str, Any]) -> str:
    swap = run.get("modularity")
    if not swap:
        return DASH
    if not swap["swappable"]:
        return "100% (no encoder to swap)"
    return f"{swap['retrained_share']:.0%} ({swap['retrained_parameters']:,})"


def _swap_auroc_cell(run: dict[str, Any]) -> str:
    swap = run.get("modularity")
    if not swap or not swap["swappable"]:
        return DASH
    return f"{swap['auroc_before']:.3f} → {swap['auroc_after']:.3f} ({swap['auroc_change']:+.3f})"


def _retrieval_cell(run: dict[str, Any], k: int) -> str:
    retrieval = _first(run).get("retrieval")
    if not retrieval or not retrieval.get("pairs"):
        return DASH
    return f"{retrieval[f'text_to_image_recall@{k}']:.2f} / {retrieval[f'image_to_text_recall@{k}']:.2f}"


def best_use_sentences(runs: dict[str, Any], significance: list[dict[str, Any]], modalities: list[str]) -> list[str]:
    """Sentences naming the measured winner of each criterion, with the significance caveat."""
    fusion = {n: r for n, r in runs.items() if not n.startswith("only_")}
    auroc = {n: r["summary"]["metrics"]["auroc"][0] for n, r in fusion.items()}
    best = max(auroc, key=auroc.get)
    fastest = min(fusion, key=lambda n: fusion[n]["cost"]["latency_b1_p50_ms"])
    sentences = [f"Highest test AUROC: **{best}** ({auroc[best]:.3f}, mean over seeds).",
                 f"Fastest at batch 1: **{fastest}** ({fusion[fastest]['cost']['latency_b1_p50_ms']:.2f} ms p50)."]
    for other in fusion:
        if other == best:
            continue
        tests = [t for t in significance if {t["simpler"], t["complex"]} == {best, other}]
        if tests and all(t["p_value"] >= 0.05 for t in tests):
            sentences.append(f"{best} is **not significantly** better than {other} (DeLong p ≥ 0.05 in every seed: "
                             + ", ".join(f"{t['p_value']:.3f}" for t in tests) + ").")
    for m in modalities:
        robust = {n: r["summary"]["drop"][m][0] for n, r in fusion.items() if m in r["summary"]["drop"]}
        if robust:
            winner = max(robust, key=robust.get)
            sentences.append(f"Without {m}: **{winner}** keeps the highest AUROC ({robust[winner]:.3f}).")
    small = {n: r["learning_curve"][min(r["learning_curve"], key=float)] for n, r in fusion.items()
             if r.get("learning_curve")}
    if small:
        winner = max(small, key=small.get)
        share = float(min(next(iter(fusion.values()))["learning_curve"], key=float))
        sentences.append(f"With {share:.0%} of the training patients: **{winner}** ({small[winner]:.3f}).")
    retrieval = [n for n, r in fusion.items() if _first(r).get("retrieval")]
    if retrieval:
        sentences.append(f"Cross-modal search needs a joint space: only **{', '.join(retrieval)}** provides one.")
    return sentences


def significance_rows(significance: list[dict[str, Any]]) -> list[list[str]]:
    """Rows: simpler, more complex, seed, AUROC a, AUROC b, difference, p, verdict."""
    return [[t["simpler"], t["complex"], str(t["seed"]), f"{t['auroc_a']:.3f}", f"{t['auroc_b']:.3f}",
             f"{t['difference']:+.3f}", f"{t['p_value']:.3f}", _verdict(t)] for t in significance]


def _verdict(test: dict[str, Any]) -> str:
    if test["p_value"] >= 0.05:
        return "not significant"
    return "more complex is better" if test["difference"] > 0 else "more complex is worse"


def write_report(results: dict[str, Any], out: str | Path) -> Path:
    """Write plots, ``report.md`` and ``report.html`` under ``out``; return the Markdown path."""
    out = Path(out)
    figures = out / "figures"
    runs = results["runs"]
    fusion = {n: r for n, r in runs.items() if not n.startswith("only_")}
    modalities = sorted({m for r in runs.values() for m in r["summary"]["curve"]})
    curves = {}
    for name, run in runs.items():
        path = Path(run["seeds"][next(iter(run["seeds"]))]["dir"]) / "test_predictions.npz"
        if path.is_file():
            with np.load(path) as data:
                curves[name] = (data["labels"], data["probs"])
    images = {
        "latency": plots.latency_bars(runs, figures / "latency.png"),
        "roc": plots.roc_curves(curves, figures / "roc.png") if curves else None,
        "missing": plots.missingness_curves(fusion, modalities, figures / "missingness.png"),
        "learning": plots.learning_curves(fusion, figures / "learning_curves.png"),
        "contributions": plots.contribution_bars(runs, figures / "contributions.png"),
    }
    rows = criteria_rows(runs, modalities)
    sentences = best_use_sentences(runs, results.get("significance", []), modalities)
    settings = results["settings"]
    header = (f"Scenario **{settings['scenario']}**, {settings['patients']} synthetic patients, seeds "
              f"{settings['seeds']}, {settings['max_epochs']} epochs max, bootstrap {settings['n_boot']} "
              f"resamples; test split, patient-level. Total time {results.get('seconds', float('nan')):.0f} s.")
    markdown = _markdown(list(runs), rows, sentences, significance_rows(results.get("significance", [])),
                         images, header)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(list(runs), rows, sentences,
                                                 significance_rows(results.get("significance", [])), images, header))
    return out / "report.md"


_SIGNIFICANCE_HEADER = ["simpler", "more complex", "seed", "AUROC simpler", "AUROC complex", "difference",
                        "DeLong p", "verdict"]


def _markdown(names, rows, sentences, significance, images, header) -> str:
    lines = ["# Comparison of fusion strategies", "", header, "", "| criterion | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    group = None
    for row_group, label, cells in rows:
        if row_group != group:
            lines.append(f"| **{row_group}** |" + " |" * len(names))
            group = row_group
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Best use case (from the measurements)", ""]
    lines += [f"- {s}" for s in sentences]
    lines += ["", "## Are the differences real?", "", "| " + " | ".join(_SIGNIFICANCE_HEADER) + " |",
              "|" + "---|" * len(_SIGNIFICANCE_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in significance]
    lines += ["", "## Figures", ""]
    lines += [f"![{key}](figures/{name})" for key, name in images.items() if name]
    return "\n".join(lines) + "\n"


def _html(names, rows, sentences, significance, images, header) -> str:
    esc = html.escape
    table = ["<table><tr><th>criterion</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"]
    group = None
    for row_group, label, cells in rows:
        if row_group != group:
            table.append(f"<tr class='group'><td colspan='{len(names) + 1}'>{esc(row_group)}</td></tr>")
            group = row_group
        table.append(f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    table.append("</table>")
    tests = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _SIGNIFICANCE_HEADER) + "</tr>"]
    tests += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in significance]
    tests.append("</table>")
    bullets = "".join(f"<li>{esc(s).replace('**', '')}</li>" for s in sentences)
    figures = "".join(f"<figure><img src='figures/{esc(name)}' alt='{esc(key)}'><figcaption>{esc(key)}</figcaption>"
                      "</figure>" for key, name in images.items() if name)
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "tr.group td{background:#eef;font-weight:bold}img{max-width:100%}figure{display:inline-block;margin:1em}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>medfusion comparison</title>"
            f"<style>{style}</style></head><body><h1>Comparison of fusion strategies</h1>"
            f"<p>{esc(header).replace('**', '')}</p>{''.join(table)}<h2>Best use case</h2><ul>{bullets}</ul>"
            f"<h2>Are the differences real?</h2>{''.join(tests)}<h2>Figures</h2>{figures}</body></html>")

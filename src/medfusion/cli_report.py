"""Report-generation commands: ``medfusion report`` (one image) and ``medfusion report-eval``.

Training goes through ``medfusion train`` (a config with ``task: report``).

Thin wrappers over :mod:`medfusion.train.report_run`, :mod:`medfusion.evaluate.report_page`
and :mod:`medfusion.evaluate.report_generation`; registered on the main app in :mod:`medfusion.cli`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _fail(error: Exception) -> None:
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None


def report(
    model: Path = typer.Option(..., "--model", help="run folder of a trained report generator"),
    image: Path = typer.Option(..., "--image", help="image file: PNG, JPEG, TIFF or DICOM"),
    explain: Path | None = typer.Option(None, "--explain", help="folder for the attention overlays and report.html"),
    method: str | None = typer.Option(None, help="greedy or beam [default: the run's first decoding method]"),
    beam_size: int | None = typer.Option(None, min=1, help="beams for --method beam [default: the run's]"),
) -> None:
    """Write the report of one image; with --explain also its word-to-region attention maps and an HTML page."""
    from medfusion.evaluate.report_page import explain_report, load_report_image, write_report_page
    from medfusion.train.report_run import load_report_run

    try:
        pixels = load_report_image(image)
        generator, tokenizer, config = load_report_run(model)
        explanation = explain_report(generator, tokenizer, config, pixels, method=method, beam_size=beam_size)
    except ValueError as error:
        _fail(error)
    console.print(explanation.text, markup=False, highlight=False, soft_wrap=True)
    if explain is not None:
        page = write_report_page(explanation, explain)
        console.print(f"{len(page.overlays)} overlays ({len(explanation.sentences)} sentences, "
                      f"{len(explanation.words)} finding words) and {page.html} written", highlight=False,
                      soft_wrap=True)


def report_eval(
    run: Path = typer.Argument(..., help="a finished report run folder"),
    split: str = typer.Option("test", help="split role: train, val or test"),
    domain: str | None = typer.Option(None, help="labeler domain pathology or chest [default: the run's]"),
) -> None:
    """Score the run's generated reports and the nearest-neighbour baseline; writes report_metrics.json/.md."""
    from medfusion.evaluate.report_generation import METRICS_JSON, evaluate_report_run, format_value
    from medfusion.evaluate.report_metrics import TABLE_COLUMNS

    try:
        result = evaluate_report_run(run, split, domain, progress=lambda message: console.log(message))
    except ValueError as error:
        _fail(error)
    rows = result["table"]  # one column per system, one row per metric: fits a narrow terminal
    table = Table(title=f"{run} — {split} split, {result['reports']} reports")
    table.add_column("metric", no_wrap=True)
    for row in rows:
        table.add_column(row["system"])
    for column in TABLE_COLUMNS[1:]:
        table.add_row(column, *(format_value(row[column]) for row in rows))
    console.print(table)
    console.print(f"written {Path(run) / METRICS_JSON} and report_metrics.md", highlight=False, soft_wrap=True)

"""``medfusion export``: a trained run to a verified ONNX or TorchScript file (optionally int8).

A thin wrapper over :func:`medfusion.deploy.export_model`; registered on the main app in
:mod:`medfusion.cli`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def export(
    run: Path = typer.Argument(..., help="a finished run folder (medfusion train)"),
    format: str = typer.Option("onnx", "--format", help="onnx or torchscript"),
    out: Path | None = typer.Option(None, help="model file [default: <run>/export/model[.int8].onnx or .pt]"),
    quantize: bool = typer.Option(False, help="write the dynamic-int8 model and report its AUROC change"),
    batches: int | None = typer.Option(None, min=1, help="verify on the first N test batches [default: all]"),
) -> None:
    """Export RUN's classifier, check it against PyTorch on the test split (with modalities hidden), write a sidecar."""
    from medfusion.deploy import export_model
    from medfusion.deploy.export import suffix

    try:
        if out is None:
            out = run / "export" / f"model{'.int8' if quantize else ''}{suffix(format)}"
        report = export_model(run, out, format, quantize, batches=batches)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    check = report.verification
    table = Table("", "value", title=f"{report.format} export of {run}")
    table.add_row("model file", f"{report.path} ({report.size_bytes:,} bytes)")
    table.add_row("sidecar", str(report.sidecar))
    table.add_row("inputs", ", ".join(item.name for item in report.inputs))
    table.add_row("samples compared", f"{check.rows} ({check.rows_missing} with a modality absent)")
    table.add_row("max |p float export - p PyTorch|", f"{check.max_abs_diff:.2e} (tolerance {check.tolerance:.0e})")
    table.add_row("parity", "[green]passed[/green]" if check.passed else "[red]failed[/red]")
    if report.quantization is not None:
        q = report.quantization
        table.add_row("AUROC float / int8", f"{_number(q.auroc_float)} / {_number(q.auroc_quantized)}")
        table.add_row("AUROC change (int8 - float)", _number(q.auroc_change))
        table.add_row("max |p int8 - p float|", f"{q.max_abs_diff:.2e}")
        table.add_row("size float / int8", f"{q.size_float:,} / {q.size_quantized:,} bytes")
    table.add_row("time", f"{report.seconds:.1f} s")
    console.print(table)
    if not check.passed:
        console.print("[red]the export does not reproduce the PyTorch model within the tolerance[/red]")
        raise typer.Exit(1)

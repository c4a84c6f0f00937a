"""The ``medfusion`` command line: thin commands over library functions (heavy imports are lazy)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="medfusion: multimodal medical AI and the measured comparison of fusion strategies.",
                  no_args_is_help=True, add_completion=False)
console = Console()


@app.command()
def version() -> None:
    """Print the medfusion version."""
    from medfusion import __version__

    console.print(__version__)


@app.command()
def registry() -> None:
    """List the registered encoders (per modality) and fusion strategies with their parameters."""
    from medfusion.models import factory  # noqa: F401  (imports and registers everything)
    from medfusion.encoders.base import ENCODERS
    from medfusion.fusion.base import FUSIONS

    table = Table("kind", "name", "parameters")
    for modality, reg in ENCODERS.items():
        for name in reg.names():
            table.add_row(f"{modality} encoder", name, ", ".join(reg.parameters(name)))
    for name in FUSIONS.names():
        table.add_row("fusion", name, ", ".join(FUSIONS.parameters(name)))
    console.print(table)


@app.command()
def summary(config: Path = typer.Argument(..., help="model config (YAML or JSON)")) -> None:
    """Build the model of CONFIG and print its trainable parameters per part."""
    from medfusion.models import build_model

    try:
        model = build_model(config)
    except ValueError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=2) from None
    table = Table("part", "trainable parameters")
    parts = {f"encoder/{m}": e for m, e in model.encoders.items()}
    parts["fusion"] = model.fusion
    if model.head is not None:
        parts["head"] = model.head
    for name, part in parts.items():
        table.add_row(name, f"{sum(p.numel() for p in part.parameters() if p.requires_grad):,}")
    table.add_row("total", f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}")
    console.print(table)


@app.command()
def demo(
    steps: int = typer.Option(300, min=1, help="training steps per strategy"),
    batch_size: int = typer.Option(32, min=2, help="training batch size"),
    seed: int = typer.Option(0, help="random seed"),
    out: Path = typer.Option(Path("runs/demo"), help="folder for results.json"),
) -> None:
    """Train every fusion strategy briefly on toy tensors and print the measured table."""
    from medfusion.demo import run_demo
    from medfusion.files import atomic_write_text

    results = run_demo(steps=steps, batch_size=batch_size, seed=seed)
    table = Table("strategy", "params", "train s", "forward ms (B=32)", "accuracy", "AUROC", "AUROC no image",
                  title=f"toy text+image+vitals task, {steps} steps, seed {seed}")
    table.columns[0].no_wrap = True
    for r in results:
        table.add_row(r.strategy, f"{r.parameters:,}", f"{r.train_seconds:.1f}", f"{r.forward_ms:.2f}",
                      f"{r.accuracy:.3f}", f"{r.auroc:.3f}", f"{r.auroc_without_image:.3f}")
    console.print(table)
    path = out / "results.json"
    atomic_write_text(path, json.dumps({"seed": seed, "steps": steps, "results": [r.__dict__ for r in results]},
                                       indent=2))
    console.print(f"results written to {path}")


#: Synthetic scenarios the generator can write today.
SCENARIOS = ("triage",)


@app.command()
def synth(
    scenario: str = typer.Option("triage", help=f"scenario: {', '.join(SCENARIOS)}"),
    patients: int = typer.Option(1000, min=1, help="number of patients"),
    seed: int = typer.Option(0, help="random seed (same seed, same cohort)"),
    out: Path = typer.Option(Path("data/triage"), help="output folder"),
    image_format: list[str] = typer.Option(["png", "dicom"], help="image file format(s): png, dicom"),
    image_size: int = typer.Option(128, min=32, help="X-ray side in pixels"),
    label_noise: float = typer.Option(0.05, min=0.0, max=0.5, help="share of labels flipped at random"),
) -> None:
    """Generate a synthetic cohort with known ground truth and write it as real files + a manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medfusion.data.synthetic import generate_triage
    from medfusion.data.synthetic.files import write_triage_cohort

    if scenario not in SCENARIOS:
        console.print(f"[red]unknown scenario {scenario!r}; available: {', '.join(SCENARIOS)}[/red]")
        raise typer.Exit(2)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"generating {patients} patients", total=None)
        try:
            cohort = generate_triage(patients, seed=seed, label_noise=label_noise, image_size=image_size)
            progress.update(task, description="writing files", completed=0, total=None)
            manifest = write_triage_cohort(
                cohort, out, image_formats=image_format,
                progress=lambda done, total: progress.update(task, completed=done, total=total))
        except ValueError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
    counts = {m: int(cohort.present[m].sum()) for m in sorted(cohort.present)}
    console.print(f"{len(cohort)} patients, pneumonia rate {cohort.pneumonia.mean():.3f}, present {counts}")
    console.print(f"manifest written to {manifest}")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="training config (YAML), e.g. configs/triage/late.yaml"),
    resume: bool = typer.Option(False, help="continue the run in run.out from its last checkpoint"),
    out: Path | None = typer.Option(None, help="run folder (overrides run.out)"),
    seed: int | None = typer.Option(None, help="random seed (overrides seed)"),
    max_epochs: int | None = typer.Option(None, help="overrides optim.max_epochs"),
) -> None:
    """Train a multimodal model from a config; checkpoints, logs and run.json go to the run folder."""
    from medfusion.train import load_train_config, train

    overrides: dict = {}
    if out is not None:
        overrides.setdefault("run", {})["out"] = str(out)
    if seed is not None:
        overrides["seed"] = seed
    if max_epochs is not None:
        overrides.setdefault("optim", {})["max_epochs"] = max_epochs
    try:
        summary = train(load_train_config(config, overrides), resume=resume)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(summary))

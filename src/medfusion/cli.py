"""The ``medfusion`` command line: thin commands over library functions (heavy imports are lazy)."""

from __future__ import annotations

import json
import time
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


def _run_comparison(settings) -> None:
    from medfusion.evaluate.compare import run_comparison
    from medfusion.evaluate.report import write_report

    started = time.perf_counter()
    try:
        results = run_comparison(settings, progress=lambda message: console.log(message))
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    report = write_report(results, settings.out)
    console.print(f"report written to {report} and {report.with_suffix('.html')} "
                  f"({time.perf_counter() - started:.0f} s); everything is under {settings.out}")


@app.command()
def compare(
    scenario: str = typer.Option("triage", help="triage, cardiac, neuro, pathology, radiology or retrieval"),
    patients: int = typer.Option(2000, min=50, help="cohort size"),
    seeds: int = typer.Option(3, min=1, help="number of seeds (0, 1, ...)"),
    max_epochs: int = typer.Option(10, min=1, help="epochs per run (early stopping may end sooner)"),
    configs: Path | None = typer.Option(None, help="folder with one <strategy>.yaml per strategy "
                                                    "[default: configs/<scenario>]"),
    out: Path = typer.Option(Path("runs/compare"), help="output folder (reruns reuse finished work)"),
) -> None:
    """Train every strategy and unimodal baseline on the same splits and write report.md / report.html."""
    from medfusion.evaluate.compare import CompareSettings

    _run_comparison(CompareSettings(scenario=scenario, patients=patients, seeds=list(range(seeds)),
                                    max_epochs=max_epochs, configs=configs, out=out,
                                    learning_fractions=[0.1, 0.25, 0.5], n_boot=1000))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    full: bool = typer.Option(False, help="the full comparison (more patients, 3 seeds) instead of the quick one"),
) -> None:
    """The comparison of fusion strategies on a small synthetic triage cohort (a few minutes on 2 cores).

    ``--full``: every scenario (triage, cardiac, neuro, pathology, radiology, retrieval), 3 seeds,
    one report per scenario under OUT/<scenario> (hours on 2 cores; reruns reuse finished runs).
    """
    from medfusion.evaluate.compare import CompareSettings

    if not full:
        _run_comparison(CompareSettings(patients=1200, seeds=[0, 1, 2], max_epochs=10, n_boot=500,
                                        learning_fractions=[0.25, 0.5], out=out))
        return
    for scenario in FULL_SCENARIOS:
        _run_comparison(CompareSettings(scenario=scenario, patients=FULL_PATIENTS.get(scenario, 2000),
                                        seeds=[0, 1, 2], max_epochs=10, n_boot=1000, out=out / scenario))


#: What ``medfusion demo --full`` compares, and the cohort sizes where 2000 would be too slow on CPU.
FULL_SCENARIOS = ("triage", "cardiac", "neuro", "pathology", "radiology", "retrieval")
FULL_PATIENTS = {"radiology": 1000, "retrieval": 3900}


@app.command()
def synth(
    scenario: str = typer.Option("triage", help="triage, cardiac, neuro, pathology, radiology or retrieval"),
    patients: int = typer.Option(1000, min=1, help="number of patients"),
    seed: int = typer.Option(0, help="random seed (same seed, same cohort)"),
    out: Path | None = typer.Option(None, help="output folder [default: data/<scenario>]"),
    label_noise: float | None = typer.Option(None, min=0.0, max=0.5, help="share of labels flipped at random"),
    image_size: int | None = typer.Option(None, min=32, help="image side in pixels (triage, pathology, retrieval)"),
    image_format: list[str] | None = typer.Option(None, help="triage X-ray file format(s): png, dicom"),
    source: str | None = typer.Option(None, help="retrieval reports: auto, openi (at most 3,927) or generated"),
) -> None:
    """Generate a synthetic cohort with known ground truth and write it as real files + a manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medfusion.data.synthetic.scenarios import synthesize

    out = out or Path("data") / scenario
    options = {k: v for k, v in (("label_noise", label_noise), ("image_size", image_size),
                                 ("image_formats", image_format), ("source", source)) if v is not None}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"{scenario}: {patients} patients", total=None)
        try:
            cohort, manifest = synthesize(
                scenario, patients, seed, out, **options,
                progress=lambda done, total: progress.update(task, completed=done, total=total))
        except ValueError as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from None
    counts = {m: int(flags.sum()) for m, flags in sorted(cohort.present.items())}
    console.print(f"{len(cohort)} patients, present {counts}")
    console.print(f"manifest written to {manifest}")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="training config (YAML), e.g. configs/triage/late.yaml"),
    resume: bool = typer.Option(False, help="continue the run in run.out from its last checkpoint"),
    out: Path | None = typer.Option(None, help="run folder (overrides run.out)"),
    seed: int | None = typer.Option(None, help="random seed (overrides seed)"),
    max_epochs: int | None = typer.Option(None, help="overrides optim.max_epochs"),
) -> None:
    """Train a model from a config (a classifier, a dual encoder, or with ``task: report`` a report
    generator); checkpoints, logs and run.json go to the run folder."""
    from medfusion.train import load_train_config, train
    from medfusion.train.report_config import is_report_config, load_report_config
    from medfusion.train.report_run import train_report

    overrides: dict = {}
    if out is not None:
        overrides.setdefault("run", {})["out"] = str(out)
    if seed is not None:
        overrides["seed"] = seed
    if max_epochs is not None:
        overrides.setdefault("optim", {})["max_epochs"] = max_epochs
    try:
        if is_report_config(config):
            summary = train_report(load_report_config(config, overrides), resume=resume)
        else:
            summary = train(load_train_config(config, overrides), resume=resume)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print_json(json.dumps(summary))


@app.command("evaluate")
def evaluate_command(
    run: Path = typer.Argument(..., help="a finished run folder (from medfusion train)"),
    drop: list[str] = typer.Option([], help="modality to remove from every test sample (repeatable)"),
    missing: bool = typer.Option(False, help="also: AUROC per missing rate 0-90% and per modality subset"),
    n_boot: int = typer.Option(1000, min=50, help="bootstrap resamples for the 95% intervals"),
) -> None:
    """Test-split metrics of a run with 95% bootstrap intervals, optionally without some modalities."""
    from medfusion.evaluate import studies
    from medfusion.evaluate.metrics import Interval
    from medfusion.files import atomic_write_text
    from medfusion.train.run import load_trained

    try:
        model, data, config = load_trained(run)
        if config.task == "contrastive":
            _evaluate_retrieval(run, config)
            return
        predictions, metrics, threshold = studies.performance(model, data, n_boot, config.seed, drop=tuple(drop))
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    title = (f"{run} — test split, {len(predictions.labels)} samples, seed {config.seed}, "
             f"F1/accuracy at the validation F1-best threshold {threshold:.3f}")
    view = Table("metric", "value (95% CI)", title=title + (f", without {', '.join(drop)}" if drop else ""))
    for name, interval in metrics.items():
        view.add_row(name, Interval(*interval).format())
    console.print(view)
    result = {"drop": drop, "seed": config.seed, "n_boot": n_boot, "threshold": threshold, "metrics": metrics}
    if missing:
        result["missing"] = studies.missing_modalities(model, data, config.seed)
        console.print_json(json.dumps(result["missing"]))
    path = run / ("test_metrics" + "".join(f"_without_{m}" for m in drop) + ".json")
    atomic_write_text(path, json.dumps(result, indent=2))
    console.print(f"written {path}")


def _evaluate_retrieval(run: Path, config) -> None:
    """Test-split Recall@K (both directions) and finding precision@K of a contrastive run."""
    from medfusion.files import atomic_write_text
    from medfusion.retrieval.embed import JointEmbedder
    from medfusion.retrieval.evaluation import evaluate_retrieval

    modalities = tuple(sorted(config.data.modalities))[:2]
    result = evaluate_retrieval(JointEmbedder(run), config.data.manifest, modalities=modalities)
    view = Table("direction", "R@1", "R@5", "R@10", title=f"{run} — test split, {result['pairs']} pairs, "
                 f"seed {config.seed}")
    for direction, values in result["recall"].items():
        view.add_row(direction, *(f"{values[k]:.3f}" for k in (1, 5, 10)))
    for subset, values in result.get("finding_precision", {}).items():
        if isinstance(values, dict):
            view.add_row(f"text_to_image finding precision ({subset})",
                         *(f"{values[k]:.3f}" if values[k] is not None else "n/a" for k in (1, 5, 10)))
    console.print(view)
    path = run / "retrieval_metrics.json"
    atomic_write_text(path, json.dumps({"seed": config.seed, **result}, indent=2))
    console.print(f"written {path}")


def _register_retrieval() -> None:
    from medfusion.cli_retrieval import index_app, search, zero_shot

    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("zero-shot")(zero_shot)


_register_retrieval()


def _register_report() -> None:
    from medfusion.cli_report import report, report_eval

    app.command("report")(report)
    app.command("report-eval")(report_eval)


def _register_serve() -> None:
    from medfusion.cli_serve import serve

    app.command("serve")(serve)


def _register_export() -> None:
    from medfusion.cli_export import export

    app.command("export")(export)


_register_report()
_register_serve()
_register_export()

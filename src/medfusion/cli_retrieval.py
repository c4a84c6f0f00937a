"""Retrieval commands: ``medfusion index build|add|remove|info``, ``medfusion search``, ``medfusion zero-shot``.

Thin wrappers over :mod:`medfusion.retrieval`; registered on the main app in :mod:`medfusion.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

index_app = typer.Typer(help="Build and maintain an embedding index (FAISS folder or PostgreSQL + pgvector).",
                        no_args_is_help=True)
console = Console()

_STORE_HELP = "index folder, or a postgresql://user@host/db URL (pgvector)"


def _fail(error: Exception) -> None:
    console.print(f"[red]{error}[/red]")
    raise typer.Exit(2) from None


def _fill(model: Path, data: Path, store: str, modality: str, column: str | None, id_column: str, id_prefix: str,
          add: bool, kind: str | None, batch_size: int, workers: int, skip_errors: bool, name: str,
          skip_existing: bool = False) -> None:
    from medfusion.retrieval.embed import JointEmbedder
    from medfusion.retrieval.indexing import build_index

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        embedder = JointEmbedder(model)
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"embedding {modality}", total=None)
            report = build_index(embedder, data, store, modality=modality, column=column, id_column=id_column,
                                 id_prefix=id_prefix, add=add, skip_existing=skip_existing, kind=kind, batch_size=batch_size, num_workers=workers,
                                 on_error="skip" if skip_errors else "raise", store_name=name,
                                 progress=lambda done, total: progress.update(task, completed=done, total=total))
    except (ValueError, OSError) as error:
        _fail(error)
    console.print(f"{report.added} {modality} embedded in {report.seconds:.1f} s ({report.per_second:.0f}/s); "
                  f"{report.absent} rows without {modality}, {report.skipped} unreadable skipped; "
                  f"index {report.location} holds {report.total}")


@index_app.command("build")
def build(
    model: Path = typer.Option(..., help="run folder of a joint-embedding model (task: contrastive)"),
    data: Path = typer.Option(..., help="data folder with manifest.parquet, or a manifest file"),
    out: str = typer.Option(..., "--out", "--store", help=_STORE_HELP),
    modality: str = typer.Option("image", help="modality to embed (image, text: reports, signal, video)"),
    column: str | None = typer.Option(None, help="manifest column of that modality [default: its name]"),
    id_column: str = typer.Option("patient_id", help="manifest column of unique, stable ids"),
    id_prefix: str = typer.Option("", help="prepended to every id (namespace for several manifests)"),
    kind: str | None = typer.Option(None, help="FAISS: exact (default), flat, hnsw or ivf"),
    batch_size: int = typer.Option(64, min=1),
    workers: int = typer.Option(2, min=0, help="DataLoader worker processes"),
    skip_errors: bool = typer.Option(False, help="skip unreadable files instead of stopping"),
    name: str = typer.Option("medfusion", help="table name in PostgreSQL"),
) -> None:
    """Embed every row of a manifest and write a new index."""
    _fill(model, data, out, modality, column, id_column, id_prefix, False, kind, batch_size, workers, skip_errors, name)


@index_app.command("add")
def add(
    model: Path = typer.Option(..., help="the run the index was built with"),
    data: Path = typer.Option(..., help="data folder with manifest.parquet, or a manifest file"),
    store: str = typer.Option(..., "--index", "--store", help=_STORE_HELP),
    modality: str = typer.Option("image"),
    column: str | None = typer.Option(None),
    id_column: str = typer.Option("patient_id"),
    id_prefix: str = typer.Option("", help="prepended to every id (namespace for several manifests)"),
    batch_size: int = typer.Option(64, min=1),
    workers: int = typer.Option(2, min=0),
    skip_errors: bool = typer.Option(False),
    skip_existing: bool = typer.Option(False, help="leave out ids the index holds (resume an interrupted build)"),
    name: str = typer.Option("medfusion"),
) -> None:
    """Append the rows of another manifest to an index (ids must be new, or skipped with --skip-existing)."""
    _fill(model, data, store, modality, column, id_column, id_prefix, True, None, batch_size, workers, skip_errors, name,
          skip_existing)


@index_app.command("remove")
def remove(
    store: str = typer.Option(..., "--index", "--store", help=_STORE_HELP),
    ids: list[str] = typer.Argument(..., help="ids to delete"),
    name: str = typer.Option("medfusion"),
) -> None:
    """Delete entries by id."""
    from medfusion.retrieval.store import open_store

    try:
        removed = open_store(store, name=name).remove(ids)
    except ValueError as error:
        _fail(error)
    console.print(f"removed {removed} entries")


def search(
    query: str | None = typer.Argument(None, help="free-text query, e.g. 'bilateral infiltrates with cardiomegaly'"),
    model: Path = typer.Option(..., help="the run the index was built with"),
    index: str = typer.Option(..., "--index", "--store", help=_STORE_HELP),
    k: int = typer.Option(5, "-k", min=1, help="number of hits"),
    where: str | None = typer.Option(None, help="metadata filter, e.g. \"view = 'PA' and age > 60\""),
    image: Path | None = typer.Option(None, help="search by this image instead of text"),
    sheet: Path | None = typer.Option(None, help="contact-sheet PNG of the hits [default: search.png]"),
    name: str = typer.Option("medfusion", help="table name in PostgreSQL"),
) -> None:
    """Search an index by text or by image; print the hits and write a contact sheet of their images."""
    from medfusion.retrieval.contact_sheet import contact_sheet
    from medfusion.retrieval.embed import JointEmbedder
    from medfusion.retrieval.indexing import search as run_search
    from medfusion.retrieval.store import open_store

    try:
        embedder = JointEmbedder(model)
        hits = run_search(embedder, open_store(index, name=name), text=query, file=image, k=k, where=where)
    except (ValueError, OSError) as error:
        _fail(error)
    shown = ("view", "age", "sex", "study_date", "split")
    table = Table("#", "score", "id", *shown, "path", title=f"{len(hits)} hits for {query or image}")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.id, *(str(hit.metadata.get(f, "")) for f in shown),
                      Path(str(hit.metadata.get("path", ""))).name)
    console.print(table)
    images = [h for h in hits if h.metadata.get("modality") == "image"]
    if images:
        path = contact_sheet(images, sheet or Path("search.png"), title=str(query or image))
        console.print(f"contact sheet written to {path}")


def zero_shot(
    model: Path = typer.Option(..., help="run folder of a joint-embedding model"),
    data: Path = typer.Option(..., help="data folder with manifest.parquet (label columns), or a manifest"),
    classes: str = typer.Option("pneumonia,effusion,normal", help="comma-separated class names"),
    split: str = typer.Option("test", help="manifest split to evaluate"),
    n_boot: int = typer.Option(1000, min=50, help="bootstrap resamples for the 95% intervals"),
    out: Path | None = typer.Option(None, help="JSON file for the results"),
) -> None:
    """Zero-shot classification by class prompts; AUROC per class against the manifest's labels."""
    from medfusion.files import atomic_write_text
    from medfusion.retrieval.embed import JointEmbedder
    from medfusion.retrieval.zero_shot import evaluate_zero_shot, parse_classes

    try:
        names = parse_classes(classes)
        results = evaluate_zero_shot(JointEmbedder(model), data, names, split=split, n_boot=n_boot)
    except (ValueError, OSError) as error:
        _fail(error)
    table = Table("class", "AUROC (95% CI)", "positives", "n", title=f"zero-shot on split {split!r}, seed 0")
    for name, row in results.items():
        table.add_row(name, row["auroc"].format() if row["auroc"] else "n/a (one class)", str(row["positives"]),
                      str(row["n"]))
    console.print(table)
    if out is not None:
        serial = {c: {**r, "auroc": list(r["auroc"]) if r["auroc"] else None} for c, r in results.items()}
        atomic_write_text(out, json.dumps({"split": split, "n_boot": n_boot, "bootstrap_seed": 0,
                                           "classes": serial}, indent=2))
        console.print(f"written {out}")

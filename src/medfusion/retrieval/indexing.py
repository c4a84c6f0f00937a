"""Fill an index from a manifest, and search it by text, image or report.

``build_index`` embeds one modality of every manifest row (images by default) with a
trained joint-embedding run and stores the vectors with stable ids, the file path and the
row's metadata (modality, view, body part, study date, labels, ... : every manifest column
except ground-truth ``gt_*`` columns and the other modalities' paths). ``add`` mode appends
to an existing index. Queries are embedded by the same run and searched with
:meth:`~medfusion.retrieval.store.VectorStore.search` (exact by default, optional filters).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Subset

from medfusion.data.datasets.manifest import ManifestDataset, read_manifest
from medfusion.retrieval.embed import JointEmbedder
from medfusion.retrieval.store import Hit, VectorStore, open_store


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did.

    Attributes:
        location: the index folder or database URL; added: rows embedded and stored;
        absent: rows without the modality; skipped: unreadable rows (``on_error="skip"``);
        seconds: wall time of embedding + storing; per_second: rows embedded per second;
        total: rows in the index afterwards.
    """

    location: str
    added: int
    absent: int
    skipped: int
    seconds: float
    per_second: float
    total: int


def manifest_path(data: str | Path) -> Path:
    """The manifest of a data folder (``manifest.parquet``, else ``manifest.csv``) or the file itself.

    Raises:
        ValueError: when none exists.
    """
    data = Path(data)
    if data.is_file():
        return data
    for name in ("manifest.parquet", "manifest.csv"):
        if (data / name).is_file():
            return data / name
    raise ValueError(f"{data}: expected a manifest file or a folder with manifest.parquet or manifest.csv")


def index_metadata(frame: pd.DataFrame, rows: list[int], modality: str, column: str, id_column: str,
                   base: Path, path_columns: set[str], id_prefix: str = "") -> tuple[list[str], pd.DataFrame]:
    """(ids, metadata) of manifest ``rows``: prefixed ids, ``modality``, absolute ``path``, other columns."""
    picked = frame.loc[rows]
    ids = (id_prefix + picked[id_column].astype(str)).tolist()
    keep = [c for c in frame.columns if c != id_column and not c.startswith("gt_") and c not in path_columns]
    metadata = typed_columns(picked[keep].reset_index(drop=True))
    metadata.insert(0, "modality", modality)
    paths = picked[column].astype(str).map(lambda p: str((base / p).resolve()) if p else "")
    metadata.insert(1, "path", paths.to_list())
    return ids, metadata


def typed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns holding only numbers or true/false (CSV manifests) as numbers or booleans."""
    frame = frame.copy()
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        values = frame[name].astype("string").str.strip()
        filled = values[values.notna() & (values != "")]
        if filled.empty:
            continue
        if filled.str.lower().isin(["true", "false"]).all():
            flags = values.str.lower().map({"true": True, "false": False})
            frame[name] = flags.astype(bool) if flags.notna().all() else flags.astype(object)
            continue
        numbers = pd.to_numeric(filled, errors="coerce")
        if numbers.notna().all():
            column = pd.to_numeric(values.mask(values == ""), errors="coerce")
            whole = (numbers == numbers.round()).all() and column.notna().all()
            frame[name] = column.astype("int64") if whole else column
    return frame


def build_index(embedder: JointEmbedder, data: str | Path, location: str | Path, *, modality: str = "image",
                column: str | None = None, id_column: str = "patient_id", id_prefix: str = "", add: bool = False,
                skip_existing: bool = False, kind: str | None = None, batch_size: int = 64, num_workers: int = 0,
                commit_every: int = 20_000, on_error: str = "raise",
                progress: Callable[[int, int], None] | None = None, store_name: str = "medfusion") -> IndexReport:
    """Embed one modality of a manifest and store it in an index (created, or appended to with ``add``).

    Embeddings are committed to the store every ``commit_every`` rows (each commit is
    atomic), so an interrupted build keeps its finished part; ``add=True,
    skip_existing=True`` then resumes it without embedding those rows again.

    Args:
        embedder: the trained joint-embedding run.
        data: a manifest file or a folder holding ``manifest.parquet``.
        location: index folder (FAISS) or ``postgresql://`` URL (pgvector).
        modality: what to embed; ``column``: its manifest column (default: the modality's name).
        id_column: the manifest column of stable unique ids.
        id_prefix: prepended to every id (a namespace when several manifests share ids, e.g. "site2/").
        add: append to an existing index instead of creating one.
        skip_existing: with ``add``, leave out rows whose id the index already holds.
        kind: store kind (FAISS "exact", "flat", "hnsw", "ivf"); the store's default when None.
        batch_size, num_workers: DataLoader settings.
        commit_every: rows embedded between two writes to the store.
        on_error: "raise" on an unreadable file, or "skip" it (counted in the report).
        progress: called as ``progress(rows_done, rows_total)``.
        store_name: table name of a PostgreSQL index.

    Raises:
        ValueError: on a missing column, duplicate ids, an existing index without ``add``,
            or (with ``add``) an index built by another model.
    """
    if commit_every < 1:
        raise ValueError(f"build_index: expected commit_every >= 1, received {commit_every}")
    path = manifest_path(data)
    column = column or modality
    frame, base = read_manifest(path)
    _check_id_column(path, frame, column, id_column)
    dataset = ManifestDataset(path, {modality: column}, None, on_error=on_error, validate_files=False,
                              check_leakage=False)
    options = {"model": embedder.fingerprint, "dim": embedder.dim, "name": store_name}
    if not add:
        _refuse_existing(location, store_name)
        options.update(create=True, kind=kind)
    store = open_store(location, **options)
    positions = np.flatnonzero(dataset.presence()[modality])
    absent = len(dataset) - len(positions)
    if add and skip_existing:
        stored = set(store.metadata()["id"])
        ids = (id_prefix + frame.loc[dataset.rows[positions], id_column].astype(str)).to_numpy()
        positions = positions[~np.isin(ids, list(stored))]
    path_columns = _path_columns(frame)
    start, added, pending = time.perf_counter(), 0, []

    def commit() -> None:
        nonlocal added, pending
        if pending:
            rows = [r for chunk_rows, _ in pending for r in chunk_rows]
            ids, metadata = index_metadata(frame, rows, modality, column, id_column, base or path.parent,
                                           path_columns, id_prefix)
            store.add(ids, np.concatenate([v for _, v in pending]), metadata)
            added, pending = added + len(ids), []

    for rows, vectors in embedder.embed_manifest(Subset(dataset, positions.tolist()), modality,
                                                 batch_size=batch_size, num_workers=num_workers, progress=progress):
        pending.append((rows, vectors))
        if sum(len(r) for r, _ in pending) >= commit_every:
            commit()
    commit()
    seconds = time.perf_counter() - start
    return IndexReport(location=str(location), added=added, absent=absent, skipped=len(positions) - added,
                       seconds=seconds, per_second=added / max(seconds, 1e-9), total=len(store))


def _check_id_column(path: Path, frame: pd.DataFrame, column: str, id_column: str) -> None:
    for needed in (column, id_column):
        if needed not in frame.columns:
            raise ValueError(f"{path}: column {needed!r} not found; available columns: {list(frame.columns)}")
    duplicated = frame[id_column].astype(str).duplicated()
    if duplicated.any():
        examples = frame[id_column][duplicated].astype(str).head(3).tolist()
        raise ValueError(f"{path}: ids in column {id_column!r} must be unique, e.g. {examples} repeat; "
                         "choose another --id-column")


def _refuse_existing(location: str | Path, store_name: str) -> None:
    """Raise when an index already exists at ``location`` (building never appends by accident)."""
    try:
        open_store(location, name=store_name).close()
    except FileNotFoundError:
        return
    raise ValueError(f"an index already exists at {location}; append with `medfusion index add` "
                     "or choose a new location")


def _path_columns(frame: pd.DataFrame) -> set[str]:
    """Columns holding file paths of some modality (left out of the metadata; ``path`` keeps the indexed one)."""
    columns = set()
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        values = frame[name].dropna().astype(str)
        values = values[values != ""]
        if len(values) and values.str.contains(r"\.\w{2,5}$").mean() > 0.5:
            columns.add(name)
    return columns


def search(embedder: JointEmbedder, store: VectorStore, *, text: str | None = None,
           file: str | Path | None = None, modality: str = "image", k: int = 5,
           where: str | None = None) -> list[Hit]:
    """The ``k`` index entries nearest to a text query or a query file, best first.

    Args:
        embedder: the run that filled ``store``.
        store: the index.
        text: a free-text query (text -> image, or text -> report).
        file: a query file instead (image -> image, image -> report, ...), read as ``modality``.
        modality: the query file's modality.
        k: hits wanted; ``where``: a metadata filter (see :mod:`medfusion.retrieval.filters`).

    Raises:
        ValueError: unless exactly one of ``text`` and ``file`` is given, or when the index
            was built by another model.
    """
    if (text is None) == (file is None):
        raise ValueError("search: expected exactly one of text or file")
    if text is not None:
        if not text.strip():
            raise ValueError("search: the text query is blank")
        query = embedder.embed_texts([text])
    else:
        query = embedder.embed_files([file], modality)
    return store.search(np.ascontiguousarray(query, dtype=np.float32), k, model=embedder.fingerprint,
                        where=where)[0]

"""The vector-store interface shared by the FAISS folder and the PostgreSQL + pgvector table.

A store holds unit float32 embeddings (N, D) of one model, a string id per row and
optional metadata columns, and answers top-k inner-product (cosine) searches, optionally
restricted by a metadata filter (:mod:`medfusion.retrieval.filters`).

Metadata columns: names match ``[A-Za-z][A-Za-z0-9_]*`` (at most 63 characters; ``id``,
``embedding`` and ``score`` are reserved) and each has one kind: text, integer, float or
bool. Datetime columns are stored as ISO 8601 text, which orders correctly under the
filters' text comparisons. Columns may differ between ``add`` calls: the store keeps their
union and rows added without a column hold null there; a column's kind is fixed by the
first batch that has non-null values in it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfusion.retrieval.filters import column_kind

_COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_RESERVED = ("id", "embedding", "score")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the row's id.
        score: inner product of the query and the row's vector (cosine for unit vectors).
        metadata: the row's metadata columns (``path`` among them when stored); missing → None.
    """

    id: str
    score: float
    metadata: dict[str, Any]


class VectorStore(ABC):
    """Top-k inner-product search over unit embeddings of one model, with metadata filters.

    Attributes:
        dim: embedding size D.
        model: fingerprint of the model whose embeddings the store holds; searches with
            another model's queries are refused.
        kind: index kind (backend specific, e.g. ``"exact"``, ``"hnsw"``).
        params: the index parameters (build and search time).
    """

    dim: int
    model: str
    kind: str
    params: dict[str, Any]

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored vectors."""

    @abstractmethod
    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: pd.DataFrame | None = None) -> None:
        """Store new vectors; all or nothing.

        Args:
            ids: N distinct new ids.
            vectors: (N, D) finite float embeddings (stored as float32).
            metadata: N rows of metadata, in the order of ``ids``; an ``id`` column, if
                present, must equal ``ids``.

        Raises:
            ValueError: on a duplicate id (within the call or already stored), a wrong
                shape, a NaN/Inf, a bad column name or a column whose kind changes.
        """

    @abstractmethod
    def remove(self, ids: Sequence[str]) -> int:
        """Delete rows by id and return how many were removed.

        Raises:
            ValueError: naming ids that are not stored.
        """

    @abstractmethod
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        model: str,
        where: str | None = None,
        exact: bool | None = None,
    ) -> list[list[Hit]]:
        """The k best rows per query, best first.

        Args:
            queries: (Q, D) query embeddings.
            k: hits per query (>= 1); fewer come back when fewer rows match.
            model: fingerprint of the model that embedded the queries.
            where: optional filter, e.g. ``"view = 'PA' and age > 60"``.
            exact: force an exact scan; None uses the store's default.

        Returns:
            Q lists of at most k hits.

        Raises:
            ValueError: when ``model`` differs from the store's, on a wrong query shape,
                k < 1, or an invalid filter.
        """

    @abstractmethod
    def metadata(self) -> pd.DataFrame:
        """All rows' ``id`` and metadata columns, in insertion order."""

    @abstractmethod
    def get(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (len(ids), D) float32 vectors of ``ids``.

        Raises:
            ValueError: naming ids that are not stored.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or files (nothing to release by default)."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_model(self, model: str) -> None:
        """Refuse queries embedded by another model than the stored vectors.

        Raises:
            ValueError: when ``model`` differs from :attr:`model`.
        """
        if model != self.model:
            raise ValueError(f"index was built with model {self.model!r}; query embedded with model {model!r}")


def check_fingerprint(model: object) -> str:
    """Validate a model fingerprint (a non-empty string)."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model: expected a non-empty fingerprint string, received {model!r}")
    return model


def check_dim(dim: object) -> int:
    """Validate an embedding size (an integer >= 1)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim: expected an integer >= 1, received {dim!r}")
    return int(dim)


def check_ids(ids: Sequence[str], stored: Any = ()) -> list[str]:
    """Validate new ids: non-empty strings, distinct, none already in ``stored``.

    Raises:
        ValueError: naming the offending ids.
    """
    if isinstance(ids, str):
        raise ValueError(f"ids: expected a sequence of strings, received the string {ids!r}")
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ValueError(f"ids: expected non-empty strings, received {bad[:5]!r}")
    seen: set[str] = set()
    repeated = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if repeated:
        raise ValueError(f"ids: duplicate ids in the call: {repeated[:10]!r}")
    existing = [i for i in ids if i in stored]
    if existing:
        raise ValueError(f"ids: already stored: {existing[:10]!r} (remove them first)")
    return ids


def check_vectors(vectors: np.ndarray, dim: int, rows: int | None = None, what: str = "vectors") -> np.ndarray:
    """Validate (N, dim) finite floats and return them as C-contiguous float32.

    Raises:
        ValueError: on a wrong type, rank, width, row count or a NaN/Inf row.
    """
    if not isinstance(vectors, np.ndarray) or not np.issubdtype(vectors.dtype, np.floating):
        received = getattr(vectors, "dtype", type(vectors).__name__)
        raise ValueError(f"{what}: expected a float numpy array (N, {dim}), received {received}")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what}: expected shape (N, {dim}), received {vectors.shape}")
    if rows is not None and vectors.shape[0] != rows:
        raise ValueError(f"{what}: expected {rows} rows (one per id), received {vectors.shape[0]}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ValueError(f"{what}: NaN or Inf in row(s) {bad[:10].tolist()}; expected finite values")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def check_k(k: int) -> int:
    """Validate the number of hits per query."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, received {k!r}")
    return int(k)


def id_list(ids: Sequence[str]) -> list[str]:
    """Validate a sequence of ids to look up and return it as a list.

    Raises:
        ValueError: on a lone string (a common slip for ``[id]``) or a non-string id.
    """
    if isinstance(ids, str):
        raise ValueError(f"ids: expected a sequence of strings, received the string {ids!r}")
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise ValueError(f"ids: expected strings, received {bad[:5]!r}")
    return ids


def missing_ids(ids: Sequence[str], stored: Any) -> list[str]:
    """Validate ids to look up and return them as a list.

    Raises:
        ValueError: naming the ids that are not stored.
    """
    ids = id_list(ids)
    unknown = [i for i in ids if i not in stored]
    if unknown:
        raise ValueError(f"ids: not stored: {unknown[:10]!r}")
    return ids


def exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product among ``rows`` of ``vectors`` (None: all rows).

    A float32 matrix product, in blocks of queries to bound memory; a selective ``rows``
    is gathered first, a broad one masks the scores of the other rows instead.

    Args:
        queries: (Q, D) float32.
        vectors: (N, D) float32.
        rows: sorted candidate row numbers, or None.
        k: hits per query.

    Returns:
        scores (Q, k') float32 and row numbers (Q, k'), best first, k' = min(k, #rows).
    """
    count = len(vectors) if rows is None else len(rows)
    k = min(k, count)
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    gather = rows is not None and 4 * len(rows) < len(vectors)
    base = vectors[rows] if gather else vectors
    excluded = None
    if rows is not None and not gather:
        excluded = np.ones(len(vectors), dtype=bool)
        excluded[rows] = False
    block = max(1, (1 << 24) // len(base))  # at most 64 MB of scores at once
    all_scores, all_rows = [], []
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ base.T
        if excluded is not None:
            scores[:, excluded] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        all_scores.append(np.take_along_axis(top_scores, order, axis=1))
        all_rows.append(np.take_along_axis(top, order, axis=1))
    found = np.concatenate(all_rows)
    return np.concatenate(all_scores), (rows[found] if gather else found)


def cast_column(column: pd.Series, kind: str) -> pd.Series:
    """Cast a column to its kind's canonical dtype: object (None = missing), Int64, float64, boolean."""
    if kind == "text":
        return column.astype(object).where(column.notna(), None)
    return column.astype({"integer": "Int64", "float": "float64", "bool": "boolean"}[kind])


def cast_metadata(frame: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Give ``frame`` exactly the columns of ``kinds`` (missing → null), in canonical dtypes."""
    columns = {
        name: cast_column(frame[name] if name in frame else pd.Series([None] * len(frame), dtype=object), kind)
        for name, kind in kinds.items()
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(len(frame)))


def prepare_metadata(
    metadata: pd.DataFrame | None, ids: Sequence[str], known: Mapping[str, str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Validate a batch of metadata against the stored column kinds.

    Args:
        metadata: N rows or None.
        ids: the batch's N ids.
        known: {column: kind} already stored.

    Returns:
        (the batch's columns in canonical dtypes without ``id``, the merged {column: kind}).

    Raises:
        ValueError: on a wrong row count, an ``id`` column that differs from ``ids``, a bad
            or reserved column name, non-string objects in a text column, or a kind change.
    """
    kinds = dict(known)
    if metadata is None:
        return pd.DataFrame(index=pd.RangeIndex(len(ids))), kinds
    if not isinstance(metadata, pd.DataFrame):
        raise ValueError(f"metadata: expected a pandas DataFrame or None, received {type(metadata).__name__}")
    if len(metadata) != len(ids):
        raise ValueError(f"metadata: expected {len(ids)} rows (one per id), received {len(metadata)}")
    frame = metadata.reset_index(drop=True)
    if "id" in frame.columns:
        if frame["id"].tolist() != list(ids):
            raise ValueError("metadata: its 'id' column differs from ids; drop it or make it equal")
        frame = frame.drop(columns="id")
    columns = {}
    for name in frame.columns:
        if not isinstance(name, str) or not _COLUMN_NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(
                f"metadata: column name {name!r} must match [A-Za-z][A-Za-z0-9_]* (at most 63 "
                f"characters) and not be one of {_RESERVED}"
            )
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            column = column.map(lambda t: t.isoformat() if pd.notna(t) else None).astype(object)
        kind = column_kind(column)
        if name in known and column.isna().all():
            kind = known[name]
        elif kind == "text":
            odd = [v for v in column.dropna() if not isinstance(v, str)]
            if odd:
                raise ValueError(
                    f"metadata column {name!r}: expected str, int, float or bool values of one "
                    f"type, received {type(odd[0]).__name__} {odd[0]!r} among others"
                )
        if name in known and known[name] != kind:
            raise ValueError(f"metadata column {name!r}: stored as {known[name]}, received {kind} values")
        kinds[name] = kind
        columns[name] = cast_column(column, kind)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(ids))), kinds


def resolve_params(
    kind: str,
    given: Mapping[str, Any] | None,
    defaults: Mapping[str, Mapping[str, Any]],
    search_keys: Sequence[str],
    stored: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge index parameters: defaults of ``kind`` ← stored ← given.

    Args:
        kind: the index kind, a key of ``defaults``.
        given: parameters passed by the caller.
        defaults: {kind: {parameter: default}}; a None default means "chosen at build".
        search_keys: parameters that may change after the build.
        stored: the parameters of an existing index (None when creating).

    Raises:
        ValueError: on an unknown kind or parameter (the known ones listed), a value that
            is not an integer >= 1, or a build parameter that differs from the stored one.
    """
    if kind not in defaults:
        raise ValueError(f"kind: unknown index kind {kind!r}; known kinds: {', '.join(defaults)}")
    params = {**defaults[kind], **(stored or {})}
    for key, value in (given or {}).items():
        if key not in defaults[kind]:
            known = ", ".join(defaults[kind]) or "none"
            raise ValueError(f"params: unknown parameter {key!r} for kind {kind!r}; known: {known}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"params: {key} must be an integer >= 1, received {value!r}")
        if stored is not None and key not in search_keys and stored.get(key) != value:
            raise ValueError(
                f"params: {key} is fixed when the index is built (stored {stored.get(key)!r}, "
                f"received {value!r}); rebuild the index to change it"
            )
        params[key] = value
    return params


def check_existing(location: str, stored: Mapping[str, Any], **requested: Any) -> None:
    """Compare the model/dim/kind asked for with those of an existing index.

    Raises:
        ValueError: naming the first field that differs.
    """
    for field, value in requested.items():
        if value is not None and value != stored[field]:
            raise ValueError(f"index at {location} has {field} {stored[field]!r}; received {field} {value!r}")


def open_store(
    location: str | Path,
    *,
    model: str | None = None,
    dim: int | None = None,
    kind: str | None = None,
    params: Mapping[str, Any] | None = None,
    create: bool = False,
    name: str = "medfusion",
    exact: bool = False,
) -> VectorStore:
    """Open (or create) a vector store.

    Args:
        location: a folder → :class:`~medfusion.retrieval.faiss_store.FaissStore`; a
            ``postgresql://`` URL → :class:`~medfusion.retrieval.pgvector_store.PgVectorStore`.
        model: model fingerprint; required to create, checked when opening.
        dim: embedding size; required to create, checked when opening.
        kind: index kind; None = the backend's default (FAISS ``"exact"``, pgvector ``"hnsw"``).
        params: index parameters; on an existing index only search-time ones may change.
        create: create the index when none exists at ``location``.
        name: table name (PostgreSQL only).
        exact: default for ``search(exact=...)``.

    Raises:
        ValueError: when the index exists with another model/dim/kind, or when creating
            without model and dim.
        FileNotFoundError: when no index exists and ``create`` is False.

    Examples::

        store = open_store("index/", model="clip-run-7", dim=512, create=True)
        store.add(ids, vectors, metadata)
        hits = store.search(query, 5, model="clip-run-7", where="view = 'PA'")
    """
    options = dict(model=model, dim=dim, kind=kind, params=params, create=create, exact=exact)
    if isinstance(location, str) and location.startswith(_POSTGRES_SCHEMES):
        from medfusion.retrieval.pgvector_store import PgVectorStore

        return PgVectorStore.open(location, name=name, **options)
    from medfusion.retrieval.faiss_store import FaissStore

    return FaissStore.open(location, **options)

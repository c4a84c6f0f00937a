"""PostgreSQL + pgvector vector store: one table per index, for collections that outgrow a folder.

Table ``name``: ``_row`` (insertion order), ``id text primary key``, ``embedding vector(D)``
and one column per metadata column (text, bigint, double precision or boolean). The
registry table ``medfusion_indexes(name, model, dim, kind, params, created)`` records each
index so that opening checks the model and dimension.

Kinds: ``"hnsw"`` (default; pgvector HNSW index with ``vector_ip_ops``, params ``m``,
``ef_construction`` and ``ef_search``) and ``"flat"`` (no ANN index: every search is an
exact sequential scan). ``exact=True`` forces a sequential scan on an HNSW table too.
Searches order by ``embedding <#> query`` (negative inner product); the score is its
negation. A ``where`` filter is compiled to parameterised SQL; on an HNSW index scan
pgvector (before 0.8) applies it to the ``ef_search`` nearest candidates, so a selective
filter can return fewer than k hits: use ``exact=True`` for exact filtered results.
``ef_search`` is raised to k for each search (pgvector's maximum is 1000).

Every write runs in one transaction (a failed ``add`` leaves the table unchanged). ``add``
streams rows with binary COPY; deleted rows stay in the HNSW graph until VACUUM.
Vectors travel in pgvector's binary format, so no extra package is needed beyond psycopg.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medfusion.retrieval.filters import to_sql
from medfusion.retrieval.store import (
    Hit,
    VectorStore,
    cast_metadata,
    check_dim,
    check_existing,
    check_fingerprint,
    check_ids,
    check_k,
    check_vectors,
    id_list,
    missing_ids,
    prepare_metadata,
    resolve_params,
)

#: Parameters per kind and their defaults (pgvector's own defaults).
DEFAULTS: dict[str, dict[str, Any]] = {"hnsw": {"m": 16, "ef_construction": 64, "ef_search": 40}, "flat": {}}
SEARCH_KEYS = ("ef_search",)
REGISTRY = "medfusion_indexes"
_MAX_EF_SEARCH = 1000
_MAX_HNSW_DIM = 2000
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_SQL_TYPES = {"text": "text", "integer": "bigint", "float": "double precision", "bool": "boolean"}
_KIND_OF_SQL = {sql_type: kind for kind, sql_type in _SQL_TYPES.items()}
_COPY_TYPES = {"text": "text", "integer": "int8", "float": "float8", "bool": "bool"}
_HIDDEN = ("_row", "id", "embedding")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("PgVectorStore needs the 'psycopg' package: pip install 'psycopg[binary]'") from error
    return psycopg


class _Vector:
    """A float32 row marked for the binary ``vector`` dumper."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


def _register_vector(conn: Any) -> None:
    """Teach a connection pgvector's binary format (int16 dim, int16 0, big-endian float32s)."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise ValueError("the database lacks the pgvector extension: run CREATE EXTENSION vector")
    info.register(conn)

    class VectorDumper(Dumper):
        format = Format.BINARY
        oid = info.oid

        def dump(self, obj: _Vector) -> bytes:
            return struct.pack(">HH", len(obj.values), 0) + obj.values.astype(">f4").tobytes()

    class VectorLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            dim = struct.unpack_from(">H", data)[0]
            return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)

    conn.adapters.register_dumper(_Vector, VectorDumper)
    conn.adapters.register_loader(info.oid, VectorLoader)


#: Rows from which an add into an empty HNSW table loads first and builds the index after
#: (pgvector's advice: much faster than inserting into the graph row by row).
BULK_ROWS = 1_000


def _create_hnsw(conn: Any, name: str, params: dict[str, Any]) -> None:
    """CREATE INDEX <name>_embedding_hnsw (inner product) with the build params ``m`` and ``ef_construction``."""
    sql = _psycopg().sql
    statement = "CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) WITH (m = {}, ef_construction = {})"
    conn.execute("SET LOCAL maintenance_work_mem = '1GB'")  # the graph built in memory, not spilled
    conn.execute(sql.SQL(statement).format(sql.Identifier(f"{name}_embedding_hnsw"), sql.Identifier(name),
                                           sql.Literal(params["m"]), sql.Literal(params["ef_construction"])))


def _rows(ids: Sequence[str], vectors: np.ndarray, batch: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
    """COPY rows: id, vector, then the metadata values (None for missing)."""
    values = batch.astype(object).where(batch.notna(), None)
    # without metadata columns itertuples yields nothing: one empty row per id instead
    rows = values.itertuples(index=False, name=None) if len(values.columns) else [()] * len(ids)
    for id_, vector, row in zip(ids, vectors, rows, strict=True):
        yield (id_, _Vector(vector), *row)


class PgVectorStore(VectorStore):
    """Vector store in a PostgreSQL table with pgvector; see the module docstring.

    Use :meth:`open` (or :func:`~medfusion.retrieval.store.open_store` with a
    ``postgresql://`` URL) rather than the constructor.

    Args:
        conn: an autocommit psycopg connection with the vector type registered.
        name: the table.
        record: the table's registry row (model, dim, kind, params).
        params: effective parameters.
        exact: default of ``search(exact=...)``.
    """

    def __init__(self, conn: Any, name: str, record: Mapping[str, Any], params: dict[str, Any], exact: bool) -> None:
        self._conn = conn
        self.name = name
        self.dim = record["dim"]
        self.model = record["model"]
        self.kind = record["kind"]
        self.params = params
        self.exact = exact
        self._sql = _psycopg().sql
        self._table = self._sql.Identifier(name)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        name: str = "medfusion",
        model: str | None = None,
        dim: int | None = None,
        kind: str | None = None,
        params: Mapping[str, Any] | None = None,
        create: bool = False,
        exact: bool = False,
    ) -> PgVectorStore:
        """Connect and open index ``name``; with ``create``, make it when it is not registered.

        Args:
            url: ``postgresql://`` connection URL.
            name: table name, ``[a-z_][a-z0-9_]*`` (at most 48 characters).
            model, dim, kind: checked against the registry when given; required to
                create (kind defaults to ``"hnsw"``).
            params: ``m``, ``ef_construction`` (build) and ``ef_search``; on an existing
                index, only ``ef_search``, for this connection.
            create: create the table, its index and the registry row when absent.
            exact: default of ``search(exact=...)``.

        Raises:
            FileNotFoundError: when the index is not registered and ``create`` is False.
            ValueError: on a bad name, model/dim/kind that differ from the registry's, or
                bad params.
        """
        psycopg = _psycopg()
        if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or name == REGISTRY:
            raise ValueError(
                f"name: expected [a-z_][a-z0-9_]* (at most 48 characters, not {REGISTRY!r}), received {name!r}"
            )
        conn = psycopg.connect(url, autocommit=True)
        try:
            record = cls._lookup(conn, name)
            if record is None:
                if not create:
                    raise FileNotFoundError(
                        f"no index {name!r} in database {conn.info.dbname!r}; pass create=True to make one"
                    )
                record = cls._create(conn, name, model, dim, kind or "hnsw", params)
            where = f"index {name!r} in database {conn.info.dbname!r}"
            check_existing(where, record, model=model, dim=dim, kind=kind)
            params = resolve_params(record["kind"], params, DEFAULTS, SEARCH_KEYS, stored=record["params"])
            _register_vector(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, name, record, params, exact)

    @staticmethod
    def _lookup(conn: Any, name: str) -> dict[str, Any] | None:
        if conn.execute("SELECT to_regclass(%s)", [REGISTRY]).fetchone()[0] is None:
            return None
        row = conn.execute(f"SELECT model, dim, kind, params FROM {REGISTRY} WHERE name = %s", [name]).fetchone()
        return None if row is None else dict(zip(("model", "dim", "kind", "params"), row, strict=True))

    @staticmethod
    def _create(
        conn: Any, name: str, model: str | None, dim: int | None, kind: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        sql, jsonb = _psycopg().sql, _psycopg().types.json.Jsonb
        if model is None or dim is None:
            raise ValueError(f"creating index {name!r} needs model and dim; received {model!r}, {dim!r}")
        model, dim = check_fingerprint(model), check_dim(dim)
        params = resolve_params(kind, params, DEFAULTS, SEARCH_KEYS)
        if kind == "hnsw" and dim > _MAX_HNSW_DIM:
            raise ValueError(f"dim: pgvector's HNSW index takes at most {_MAX_HNSW_DIM} dimensions, received {dim}")
        table = sql.Identifier(name)
        with conn.transaction():
            if conn.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is not None:
                raise ValueError(f"cannot create index {name!r}: a table of that name exists and is not an index")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {REGISTRY} (name text PRIMARY KEY, model text NOT NULL, "
                "dim integer NOT NULL, kind text NOT NULL, params jsonb NOT NULL, "
                "created timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (_row bigint GENERATED ALWAYS AS IDENTITY, "
                    "id text PRIMARY KEY, embedding vector({}) NOT NULL)"
                ).format(table, sql.Literal(dim))
            )
            if kind == "hnsw":
                _create_hnsw(conn, name, params)
            conn.execute(
                f"INSERT INTO {REGISTRY} (name, model, dim, kind, params) VALUES (%s, %s, %s, %s, %s)",
                [name, model, dim, kind, jsonb(params)],
            )
        return {"model": model, "dim": dim, "kind": kind, "params": params}

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _kinds(self) -> dict[str, str]:
        """{metadata column: kind} from the catalog, in column order."""
        rows = self._conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [self.name],
        ).fetchall()
        return {column: _KIND_OF_SQL[data_type] for column, data_type in rows if column not in _HIDDEN}

    def __len__(self) -> int:
        return self._conn.execute(self._sql.SQL("SELECT count(*) FROM {}").format(self._table)).fetchone()[0]

    def _stored(self, ids: list[str]) -> set[str]:
        query = self._sql.SQL("SELECT id FROM {} WHERE id = ANY(%s)").format(self._table)
        return {row[0] for row in self._conn.execute(query, [ids])}

    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: pd.DataFrame | None = None) -> None:
        """Insert rows in one transaction with binary COPY (see :meth:`VectorStore.add`).

        New metadata columns are added to the table in the same transaction. A first add of
        at least :data:`BULK_ROWS` rows into an HNSW table drops the (empty) index, loads, and
        builds the index over the loaded rows, in the same transaction.
        """
        sql = self._sql
        ids = check_ids(ids)
        vectors = check_vectors(vectors, self.dim, rows=len(ids))
        with self._conn.transaction():
            self._conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self._table))
            check_ids(ids, self._stored(ids))
            known = self._kinds()
            batch, kinds = prepare_metadata(metadata, ids, known)
            for column in [name for name in kinds if name not in known]:
                self._conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        self._table, sql.Identifier(column), sql.SQL(_SQL_TYPES[kinds[column]])
                    )
                )
            bulk = self.kind == "hnsw" and len(ids) >= BULK_ROWS and len(self) == 0
            if bulk:
                self._conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{self.name}_embedding_hnsw")))
            columns = ["id", "embedding", *batch.columns]
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                self._table, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with self._conn.cursor() as cursor, cursor.copy(statement) as copy:
                copy.set_types(["text", "vector", *(_COPY_TYPES[kinds[c]] for c in batch.columns)])
                for row in _rows(ids, vectors, batch):
                    copy.write_row(row)
            if bulk:
                _create_hnsw(self._conn, self.name, self.params)

    def remove(self, ids: Sequence[str]) -> int:
        """Delete rows by id in one transaction (see :meth:`VectorStore.remove`)."""
        ids = id_list(ids)
        with self._conn.transaction():
            missing_ids(ids, self._stored(ids))
            query = self._sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(self._table)
            return self._conn.execute(query, [ids]).rowcount

    def _prepare(self, where: str | None, exact: bool | None, k: int) -> tuple[Any, list[Any], list[str]]:
        """Start a search inside the current transaction: set the plan options, compile the filter.

        Returns:
            (statement with params: vector, filter params..., k), filter params, column names.
        """
        sql = self._sql
        kinds = self._kinds()
        condition, params = to_sql(where, {"id": "text", **kinds}) if where is not None else ("TRUE", [])
        if (self.exact if exact is None else exact) or self.kind == "flat":
            self._conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
        else:
            ef_search = min(max(self.params["ef_search"], k), _MAX_EF_SEARCH)
            self._conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        names = ["id", *kinds]
        statement = sql.SQL("SELECT {}, embedding <#> %s AS distance FROM {} WHERE {} ORDER BY distance LIMIT %s")
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        return statement.format(columns, self._table, sql.SQL(condition)), params, names

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        model: str,
        where: str | None = None,
        exact: bool | None = None,
    ) -> list[list[Hit]]:
        """The k best rows per query (see :meth:`VectorStore.search` and the module docstring)."""
        self.check_model(model)
        k = check_k(k)
        queries = check_vectors(queries, self.dim, what="queries")
        results = []
        with self._conn.transaction():
            statement, params, names = self._prepare(where, exact, k)
            for vector in queries:
                rows = self._conn.execute(statement, [_Vector(vector), *params, k]).fetchall()
                results.append(
                    [Hit(id=row[0], score=-float(row[-1]), metadata=dict(zip(names[1:], row[1:-1], strict=True)))
                     for row in rows]  # fmt: skip
                )
        return results

    def explain(self, query: np.ndarray, k: int, *, where: str | None = None, exact: bool | None = None) -> str:
        """PostgreSQL's plan for one search, e.g. to check that the HNSW index is used.

        Args:
            query: (D,) query embedding.
            k: hits.
            where: optional filter.
            exact: as in :meth:`search`.
        """
        vector = check_vectors(np.asarray(query)[None], self.dim, what="query")[0]
        k = check_k(k)
        with self._conn.transaction():
            statement, params, _ = self._prepare(where, exact, k)
            rows = self._conn.execute(self._sql.SQL("EXPLAIN ") + statement, [_Vector(vector), *params, k]).fetchall()
        return "\n".join(row[0] for row in rows)

    def metadata(self) -> pd.DataFrame:
        """All rows' ``id`` and metadata columns, in insertion order."""
        sql = self._sql
        kinds = {"id": "text", **self._kinds()}
        query = sql.SQL("SELECT {} FROM {} ORDER BY _row").format(
            sql.SQL(", ").join(map(sql.Identifier, kinds)), self._table
        )
        rows = self._conn.execute(query).fetchall()
        return cast_metadata(pd.DataFrame(rows, columns=list(kinds), dtype=object), kinds)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (len(ids), D) float32 vectors of ``ids``."""
        ids = id_list(ids)
        query = self._sql.SQL("SELECT id, embedding FROM {} WHERE id = ANY(%s)").format(self._table)
        with self._conn.cursor(binary=True) as cursor:
            found = dict(cursor.execute(query, [ids]).fetchall())
        missing_ids(ids, found)
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

"""PgVectorStore against a real PostgreSQL 16 + pgvector started from the ``pgserver`` wheel.

Each test gets its own database. As root, pgserver runs PostgreSQL as a system user
``pgserver`` it creates with ``useradd``, and opens read/execute access on the parents of
the data folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from medfusion.retrieval import pgvector_store
from medfusion.retrieval.faiss_store import FaissStore
from medfusion.retrieval.pgvector_store import PgVectorStore
from medfusion.retrieval.store import open_store

psycopg = pytest.importorskip("psycopg")
pgserver = pytest.importorskip("pgserver")

MODEL = "sha256:clip-test"
DIM = 32


def clustered(n: int, seed: int, clusters: int = 20, spread: float = 0.6) -> np.ndarray:
    """(n, DIM) unit float32 vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(clusters, size=n)] + spread * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    age = pd.Series(rng.integers(20, 90, size=n), dtype="Int64")
    age[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame(
        {
            "view": pd.Series(rng.choice(["PA", "AP", "LATERAL"], size=n), dtype=object).where(rng.random(n) > 0.05),
            "age": age,
            "weight": np.where(rng.random(n) < 0.1, np.nan, rng.normal(70, 10, size=n)),
            "urgent": rng.random(n) < 0.3,
            "path": [f"img/{i:05d}.png" for i in range(n)],
        }
    )


VECTORS, QUERIES = np.split(clustered(1212, seed=0), [1200])  # queries: held-out points
IDS = [f"s{i:05d}" for i in range(len(VECTORS))]
META = table(len(VECTORS))


def assert_exact(result, queries, vectors, rows, k):
    """Hits equal the brute-force top-k among ``rows`` (scores compared, so ties cannot flake)."""
    for query, hits in zip(queries, result, strict=True):
        scores = vectors[rows] @ query
        best = np.sort(scores)[::-1][:k]
        np.testing.assert_allclose([h.score for h in hits], best, atol=1e-5)
        truth = {IDS[r]: s for r, s in zip(rows, scores, strict=True)}
        np.testing.assert_allclose([truth[h.id] for h in hits], [h.score for h in hits], atol=1e-5)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@contextmanager
def database(server) -> Iterator[str]:
    """URL of a new database, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.get_uri(name)
    finally:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def filled(url: str) -> Iterator[PgVectorStore]:
    with open_store(url, model=MODEL, dim=DIM, create=True, name="images") as store:
        store.add(IDS, VECTORS, META)
        yield store


@pytest.fixture
def url(server):
    with database(server) as url:
        yield url


@pytest.fixture
def store(url):
    """A filled store of one test's own (for tests that write)."""
    with filled(url) as store:
        yield store


@pytest.fixture(scope="module")
def shared(server):
    """A filled store shared by the read-only tests."""
    with database(server) as url, filled(url) as store:
        yield store


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A FaissStore with the same content."""
    store = FaissStore.create(tmp_path_factory.mktemp("faiss") / "index", model=MODEL, dim=DIM)
    store.add(IDS, VECTORS, META)
    return store


def test_exact_search_equals_brute_force(shared):
    store = shared
    assert len(store) == len(IDS)
    result = store.search(QUERIES, 10, model=MODEL, exact=True)
    assert_exact(result, QUERIES, VECTORS, np.arange(len(IDS)), 10)
    hit = result[0][0]
    assert set(hit.metadata) == {"view", "age", "weight", "urgent", "path"}
    assert hit.metadata["path"] == f"img/{int(hit.id[1:]):05d}.png"


def test_hnsw_recall_and_plan(shared):
    store = shared
    exact = store.search(QUERIES, 10, model=MODEL, exact=True)
    approximate = store.search(QUERIES, 10, model=MODEL)
    recall = np.mean([len({h.id for h in a} & {h.id for h in e}) / 10 for a, e in zip(approximate, exact)])
    assert recall >= 0.95
    assert "images_embedding_hnsw" in store.explain(QUERIES[0], 10)
    assert "images_embedding_hnsw" not in store.explain(QUERIES[0], 10, exact=True)


@pytest.mark.parametrize(
    "where",
    [
        "view = 'PA'",
        "view = 'PA' and age > 60",
        "not (view = 'AP' or urgent = true)",
        "age in (30, 31, 32, 33) or weight >= 85.5",
        "path like 'img/001%' and view <> 'LATERAL'",
        "view < 'B'",
        "id = 's00007'",
        "age > 200",
    ],
)
def test_filters_match_faiss(shared, reference, where):
    expected = reference.search(QUERIES, 7, model=MODEL, where=where)
    received = shared.search(QUERIES, 7, model=MODEL, where=where, exact=True)
    assert [[h.id for h in hits] for hits in received] == [[h.id for h in hits] for hits in expected]
    assert [[h.metadata for h in hits] for hits in received] == [[h.metadata for h in hits] for hits in expected]


def test_metadata_and_get_round_trip(shared):
    store = shared
    frame = store.metadata()
    expected = pd.concat([pd.Series(IDS, name="id", dtype=object), META], axis=1)
    expected["urgent"] = expected["urgent"].astype("boolean")
    expected["view"] = expected["view"].where(expected["view"].notna(), None)
    pd.testing.assert_frame_equal(frame, expected)
    np.testing.assert_array_equal(store.get(["s00003", "s00001"]), VECTORS[[3, 1]])
    with pytest.raises(ValueError, match="not stored: \\['nope'\\]"):
        store.get(["s00001", "nope"])


def test_add_union_of_columns_and_remove(url):
    with open_store(url, model=MODEL, dim=DIM, kind="flat", create=True) as store:
        store.add(IDS[:3], VECTORS[:3], pd.DataFrame({"view": ["PA", "AP", "PA"]}))
        store.add(IDS[3:5], VECTORS[3:5], pd.DataFrame({"age": [40, 50]}))
        frame = store.metadata()
        assert frame["view"].tolist() == ["PA", "AP", "PA", None, None]
        assert frame["age"].tolist() == [pd.NA] * 3 + [40, 50]
        with pytest.raises(ValueError, match="already stored: \\['s00001'\\]"):
            store.add(IDS[1:2], VECTORS[1:2])
        with pytest.raises(ValueError, match="stored as text, received integer"):
            store.add(IDS[5:6], VECTORS[5:6], pd.DataFrame({"view": [3]}))
        with pytest.raises(ValueError, match="not stored: \\['zzz'\\]"):
            store.remove(["s00000", "zzz"])
        assert len(store) == 5
        assert store.remove(["s00000", "s00004"]) == 2
        assert store.metadata()["id"].tolist() == ["s00001", "s00002", "s00003"]
        hits = store.search(VECTORS[:1], 10, model=MODEL)[0]
        assert {h.id for h in hits} == {"s00001", "s00002", "s00003"}


def test_failed_add_leaves_table_unchanged(store, monkeypatch):
    real_rows = pgvector_store._rows

    def broken(*args):
        for number, row in enumerate(real_rows(*args)):
            if number == 3:
                raise RuntimeError("disk full")
            yield row

    monkeypatch.setattr(pgvector_store, "_rows", broken)
    vectors = clustered(10, seed=9)
    with pytest.raises(RuntimeError, match="disk full"):
        store.add([f"new{i}" for i in range(10)], vectors, pd.DataFrame({"site": ["x"] * 10}))
    assert len(store) == len(IDS)
    assert list(store.metadata().columns) == ["id", "view", "age", "weight", "urgent", "path"]
    monkeypatch.undo()
    store.add([f"new{i}" for i in range(10)], vectors, pd.DataFrame({"site": ["x"] * 10}))
    assert len(store) == len(IDS) + 10


def test_reopen_and_refusals(url, store):
    with pytest.raises(ValueError, match=f"index was built with model '{MODEL}'; query embedded with model 'x'"):
        store.search(QUERIES, 3, model="x")
    with pytest.raises(ValueError, match="expected shape \\(N, 32\\)"):
        store.search(QUERIES[:, :5], 3, model=MODEL)
    with pytest.raises(ValueError, match="NaN or Inf in row\\(s\\) \\[1\\]"):
        store.add(["a", "b"], np.stack([VECTORS[0], np.full(DIM, np.nan, np.float32)]))
    with open_store(url, name="images", params={"ef_search": 100}) as again:
        assert (len(again), again.model, again.dim, again.kind) == (len(IDS), MODEL, DIM, "hnsw")
        assert again.params == {"m": 16, "ef_construction": 64, "ef_search": 100}
        first = again.search(QUERIES[:1], 3, model=MODEL, exact=True)
        assert first == store.search(QUERIES[:1], 3, model=MODEL, exact=True)
    with pytest.raises(ValueError, match="has dim 32; received dim 64"):
        open_store(url, name="images", dim=64)
    with pytest.raises(ValueError, match="has model 'sha256:clip-test'; received model 'other'"):
        open_store(url, name="images", model="other")
    with pytest.raises(ValueError, match="m is fixed when the index is built"):
        open_store(url, name="images", params={"m": 8})
    with pytest.raises(FileNotFoundError, match="no index 'other'"):
        open_store(url, name="other")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE plain (x int)")
    with pytest.raises(ValueError, match="a table of that name exists and is not an index"):
        open_store(url, name="plain", model=MODEL, dim=DIM, create=True)
    with pytest.raises(ValueError, match="name: expected"):
        open_store(url, name="Robert'); DROP TABLE images;--")


def test_add_without_metadata(url):
    store = open_store(url, name="bare", model=MODEL, dim=DIM, create=True)
    try:
        store.add(IDS[:20], VECTORS[:20])
        assert len(store) == 20
        hits = store.search(VECTORS[3:4], 1, model=MODEL, exact=True)[0]
        assert hits[0].id == IDS[3] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    finally:
        store.close()


def test_a_bulk_first_add_builds_the_hnsw_index_after_loading(url):
    n = pgvector_store.BULK_ROWS
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = open_store(url, name="bulk", model=MODEL, dim=DIM, create=True)
    try:
        store.add([f"b{i}" for i in range(n)], vectors)
        indexes = store._conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'bulk'").fetchall()
        assert ("bulk_embedding_hnsw",) in indexes
        assert "hnsw" in store.explain(vectors[0], 5).lower()
        assert store.search(vectors[7:8], 1, model=MODEL)[0][0].id == "b7"
    finally:
        store.close()

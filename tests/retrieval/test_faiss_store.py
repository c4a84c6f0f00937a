"""FaissStore: round trips, exactness against brute force, filters, errors, crash safety."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from medfusion.retrieval import faiss_store
from medfusion.retrieval.faiss_store import FaissStore
from medfusion.retrieval.store import Hit, open_store

MODEL = "sha256:clip-test"
DIM = 64
KINDS = ["exact", "flat", "hnsw", "ivf"]


def clustered(n: int, seed: int, clusters: int = 20, spread: float = 0.6) -> np.ndarray:
    """(n, DIM) unit float32 vectors around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    x = centres[rng.integers(clusters, size=n)] + spread * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


VECTORS, QUERIES = np.split(clustered(2020, seed=0), [2000])  # queries: held-out points
IDS = [f"s{i:05d}" for i in range(len(VECTORS))]
RNG = np.random.default_rng(3)
META = pd.DataFrame(
    {
        "view": RNG.choice(["PA", "AP", "LATERAL"], size=len(IDS)),
        "age": RNG.integers(20, 90, size=len(IDS)),
        "urgent": RNG.random(len(IDS)) < 0.3,
        "path": [f"img/{i:05d}.png" for i in range(len(IDS))],
    }
)


def brute_force(queries: np.ndarray, rows: np.ndarray, k: int) -> list[list[str]]:
    scores = queries.astype(np.float64) @ VECTORS[rows].astype(np.float64).T
    return [[IDS[rows[j]] for j in np.argsort(-s, kind="stable")[:k]] for s in scores]


def ids_of(result: list[list[Hit]]) -> list[list[str]]:
    return [[hit.id for hit in hits] for hits in result]


def recall(result: list[list[Hit]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(ids_of([r])[0]) & set(t)) / len(t) for r, t in zip(result, truth)]))


@pytest.fixture(scope="module", params=KINDS)
def built(request, tmp_path_factory) -> FaissStore:
    """A store of each kind filled in two batches, then reopened from disk."""
    folder = tmp_path_factory.mktemp(request.param) / "index"
    params = {"nlist": 32} if request.param == "ivf" else None
    store = open_store(folder, model=MODEL, dim=DIM, kind=request.param, params=params, create=True)
    store.add(IDS[:1500], VECTORS[:1500], META[:1500])
    store.add(IDS[1500:], VECTORS[1500:], META[1500:])
    return open_store(folder, model=MODEL, dim=DIM)


def test_search_matches_brute_force(built):
    truth = brute_force(QUERIES, np.arange(len(IDS)), 10)
    result = built.search(QUERIES, 10, model=MODEL)
    if built.kind in ("exact", "flat"):
        assert ids_of(result) == truth
    else:
        assert recall(result, truth) >= 0.95
    assert ids_of(built.search(QUERIES, 10, model=MODEL, exact=True)) == truth
    scores = [[hit.score for hit in hits] for hits in result]
    assert all(s == sorted(s, reverse=True) for s in scores)
    np.testing.assert_allclose(result[0][0].score, QUERIES[0] @ built.get([result[0][0].id])[0], rtol=1e-5)


FILTERS = {
    "view = 'PA' and age > 60": (META["view"] == "PA") & (META["age"] > 60),
    "urgent = true or path like 'img/0001%'": META["urgent"] | META["path"].str.startswith("img/0001"),
    "not (view in ('AP', 'LATERAL') or age <= 30)": ~(META["view"].isin(["AP", "LATERAL"]) | (META["age"] <= 30)),
    "age = 33": META["age"] == 33,
    "age > 1000": META["age"] > 1000,
}


def row(i: int) -> dict:
    return {key: value.item() if hasattr(value, "item") else value for key, value in META.iloc[i].items()}


@pytest.mark.parametrize("where", list(FILTERS))
def test_filtered_search_is_exact(built, where):
    result = built.search(QUERIES, 5, model=MODEL, where=where)
    assert ids_of(result) == brute_force(QUERIES, np.flatnonzero(FILTERS[where].to_numpy()), 5)
    assert all(hit.metadata == row(int(hit.id[1:])) for hits in result for hit in hits)


def test_reopened_content(built):
    frame = built.metadata()
    assert frame["id"].tolist() == IDS
    assert frame.dtypes.astype(str).tolist() == ["object", "object", "Int64", "boolean", "object"]
    np.testing.assert_array_equal(built.get(["s01999", "s00000"]), VECTORS[[1999, 0]])
    info = json.loads((built.folder / "v000003" / "index.json").read_text())
    assert {key: info[key] for key in ("format", "kind", "dim", "model", "count")} == {
        "format": 1, "kind": built.kind, "dim": DIM, "model": MODEL, "count": len(IDS)
    }  # fmt: skip
    assert info["columns"] == {"view": "text", "age": "integer", "urgent": "bool", "path": "text"}
    assert info["created"] <= info["updated"] and info["updated"].endswith("+00:00")
    expected = {"index.json", "vectors.npy", "metadata.parquet"}
    expected |= {"index.faiss"} if built.kind in ("hnsw", "ivf") else set()
    assert {p.name for p in (built.folder / "v000003").iterdir()} == expected
    assert sorted(p.name for p in built.folder.iterdir()) == ["CURRENT", "v000003"]


def test_remove_rebuilds(tmp_path):
    for kind in KINDS:
        store = FaissStore.create(tmp_path / kind, model=MODEL, dim=DIM, kind=kind)
        store.add(IDS[:300], VECTORS[:300], META[:300])
        gone = [hit.id for hit in store.search(QUERIES[:1], 5, model=MODEL)[0]]
        assert store.remove(gone) == 5
        assert len(store) == 295
        assert not set(gone) & set(ids_of(store.search(QUERIES[:1], 5, model=MODEL))[0])
        again = FaissStore.open(tmp_path / kind)
        assert len(again) == 295 and not set(gone) & set(again.metadata()["id"])
        with pytest.raises(ValueError, match=f"not stored: \\['{gone[0]}'\\]"):
            again.remove([gone[0]])


def test_small_and_empty_stores(tmp_path):
    store = FaissStore.create(tmp_path / "index", model=MODEL, dim=DIM)
    assert store.search(QUERIES[:2], 3, model=MODEL) == [[], []]
    assert store.search(QUERIES[:1], 3, model=MODEL, where="id = 'x'") == [[]]
    store.add(IDS[:2], VECTORS[:2])
    hits = store.search(QUERIES[:1], 10, model=MODEL)[0]
    assert sorted(hit.id for hit in hits) == IDS[:2] and hits[0].metadata == {}
    with pytest.raises(ValueError, match="k: expected an integer >= 1, received 0"):
        store.search(QUERIES[:1], 0, model=MODEL)


def test_metadata_union_and_kinds(tmp_path):
    store = FaissStore.create(tmp_path / "index", model=MODEL, dim=DIM)
    store.add(IDS[:2], VECTORS[:2], pd.DataFrame({"view": ["PA", "AP"], "id": IDS[:2]}))
    store.add(IDS[2:4], VECTORS[2:4], pd.DataFrame({"age": [40, 50], "view": [None, None]}))
    when = pd.to_datetime(["2020-01-02", None])
    store.add(IDS[4:6], VECTORS[4:6], pd.DataFrame({"taken": when}))
    frame = FaissStore.open(tmp_path / "index").metadata()
    assert frame["view"].tolist() == ["PA", "AP", None, None, None, None]
    assert frame["age"].tolist() == [pd.NA, pd.NA, 40, 50, pd.NA, pd.NA]
    assert frame["taken"].tolist() == [None] * 4 + ["2020-01-02T00:00:00", None]
    assert ids_of(store.search(VECTORS[:1], 6, model=MODEL, where="taken >= '2020'")) == [["s00004"]]
    with pytest.raises(ValueError, match="'view': stored as text, received integer"):
        store.add(["x"], VECTORS[:1], pd.DataFrame({"view": [1]}))
    with pytest.raises(ValueError, match="column name 'score'"):
        store.add(["x"], VECTORS[:1], pd.DataFrame({"score": [1]}))
    with pytest.raises(ValueError, match="column name 'a b'"):
        store.add(["x"], VECTORS[:1], pd.DataFrame({"a b": [1]}))
    with pytest.raises(ValueError, match="'id' column differs from ids"):
        store.add(["x"], VECTORS[:1], pd.DataFrame({"id": ["y"]}))
    with pytest.raises(ValueError, match="expected 1 rows \\(one per id\\), received 2"):
        store.add(["x"], VECTORS[:1], pd.DataFrame({"v": ["a", "b"]}))
    with pytest.raises(ValueError, match="'mixed': expected str, int, float or bool values"):
        store.add(["x", "y"], VECTORS[:2], pd.DataFrame({"mixed": ["a", 3]}))
    assert len(store) == 6


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (["a", "a"], VECTORS[:2], "duplicate ids in the call: \\['a'\\]"),
        (["s00000"], VECTORS[:1], "already stored: \\['s00000'\\]"),
        ("abc", VECTORS[:3], "received the string 'abc'"),
        (["a", ""], VECTORS[:2], "non-empty strings"),
        (["a"], VECTORS[:1, :10], "expected shape \\(N, 64\\), received \\(1, 10\\)"),
        (["a"], VECTORS[0], "expected shape \\(N, 64\\), received \\(64,\\)"),
        (["a", "b"], VECTORS[:1], "expected 2 rows \\(one per id\\), received 1"),
        (["a", "b"], np.stack([VECTORS[0], np.full(DIM, np.inf, np.float32)]), "NaN or Inf in row\\(s\\) \\[1\\]"),
        (["a"], VECTORS[:1].astype(np.int64), "expected a float numpy array"),
    ],
)
def test_add_errors(tmp_path, ids, vectors, message):
    store = FaissStore.create(tmp_path / "index", model=MODEL, dim=DIM)
    store.add(IDS[:1], VECTORS[:1])
    with pytest.raises(ValueError, match=message):
        store.add(ids, vectors)
    assert len(store) == 1 and len(FaissStore.open(tmp_path / "index")) == 1


def test_open_errors_and_params(tmp_path):
    folder = tmp_path / "index"
    with pytest.raises(FileNotFoundError, match="pass create=True"):
        open_store(folder)
    with pytest.raises(ValueError, match="needs model and dim"):
        open_store(folder, create=True)
    with pytest.raises(ValueError, match="unknown index kind 'lsh'; known kinds: exact, flat, hnsw, ivf"):
        open_store(folder, model=MODEL, dim=DIM, kind="lsh", create=True)
    with pytest.raises(ValueError, match="unknown parameter 'nprobe' for kind 'hnsw'; known: m, ef_construction"):
        open_store(folder, model=MODEL, dim=DIM, kind="hnsw", params={"nprobe": 3}, create=True)
    store = open_store(folder, model=MODEL, dim=DIM, kind="hnsw", params={"m": 8}, create=True)
    store.add(IDS[:50], VECTORS[:50])
    with pytest.raises(ValueError, match=f"index was built with model '{MODEL}'; query embedded with model 'b'"):
        store.search(QUERIES, 1, model="b")
    with pytest.raises(ValueError, match="has dim 64; received dim 32"):
        open_store(folder, dim=32)
    with pytest.raises(ValueError, match="has model 'sha256:clip-test'; received model 'other'"):
        open_store(folder, model="other", create=True)
    with pytest.raises(ValueError, match="has kind 'hnsw'; received kind 'flat'"):
        open_store(folder, kind="flat")
    with pytest.raises(ValueError, match="m is fixed when the index is built"):
        open_store(folder, params={"m": 16})
    tuned = open_store(folder, params={"ef_search": 200})
    assert tuned.params == {"m": 8, "ef_construction": 80, "ef_search": 200}
    tuned.add(IDS[50:60], VECTORS[50:60])  # session params are not saved
    assert FaissStore.open(folder).params["ef_search"] == 64
    with pytest.raises(ValueError, match="folder is not empty"):
        FaissStore.create(folder, model=MODEL, dim=DIM)
    with pytest.raises(ValueError, match="threads: expected an integer >= 1"):
        FaissStore.open(folder, threads=0)


def test_ivf_trains_on_first_add_and_rebuild_retrains(tmp_path):
    store = FaissStore.create(tmp_path / "index", model=MODEL, dim=DIM, kind="ivf")
    store.add(IDS[:100], VECTORS[:100])
    assert store._state.index.nlist == 40  # 4·√100
    store.add(IDS[100:], VECTORS[100:])
    store.rebuild({"nlist": 24, "nprobe": 8})
    again = FaissStore.open(tmp_path / "index")
    assert again._state.index.nlist == 24 and again._state.index.nprobe == 8
    assert again.params == {"nlist": 24, "nprobe": 8}
    assert recall(again.search(QUERIES, 10, model=MODEL), brute_force(QUERIES, np.arange(len(IDS)), 10)) >= 0.9


def test_threads_are_restored(tmp_path):
    before = faiss.omp_get_max_threads()
    store = FaissStore.create(tmp_path / "index", model=MODEL, dim=DIM, threads=1)
    store.add(IDS[:10], VECTORS[:10])
    store.search(QUERIES, 3, model=MODEL)
    assert faiss.omp_get_max_threads() == before


def test_crash_while_writing_keeps_previous_version(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    store = FaissStore.create(folder, model=MODEL, dim=DIM, kind="hnsw")
    store.add(IDS[:100], VECTORS[:100], META[:100])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)  # after vectors.npy, before the rename
    with pytest.raises(OSError, match="disk full"):
        store.add(IDS[100:200], VECTORS[100:200], META[100:200])
    monkeypatch.undo()
    assert len(store) == 100 and store._state.index.ntotal == 100  # the object is unchanged too
    assert sorted(p.name for p in folder.iterdir()) == ["CURRENT", "v000002"]
    reopened = FaissStore.open(folder)
    assert reopened.metadata()["id"].tolist() == IDS[:100]
    assert ids_of(reopened.search(QUERIES, 3, model=MODEL)) == ids_of(store.search(QUERIES, 3, model=MODEL))


def test_crash_before_switching_current(tmp_path, monkeypatch):
    folder = tmp_path / "index"
    store = FaissStore.create(folder, model=MODEL, dim=DIM)
    store.add(IDS[:100], VECTORS[:100])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after renaming v000003, before CURRENT names it

    monkeypatch.setattr(faiss_store, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        store.remove(IDS[:10])
    monkeypatch.undo()
    (folder / ".tmp-v000009-deadbeef").mkdir()  # a temporary folder left by a hard crash
    (folder / ".tmp-v000009-deadbeef" / "vectors.npy").write_bytes(b"garbage")
    assert (folder / "CURRENT").read_text() == "v000002\n"
    reopened = FaissStore.open(folder)
    assert len(reopened) == 100
    reopened.add(IDS[100:110], VECTORS[100:110])
    assert sorted(p.name for p in folder.iterdir()) == ["CURRENT", "v000004"]
    assert len(FaissStore.open(folder)) == 110

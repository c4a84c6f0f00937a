"""Vector search at 100k and 1M embeddings: build time, memory, latency, recall against exact.

Vectors: the trained CLIP model's image embeddings read from a FAISS index folder
(``--index``, e.g. the 100k-image index of the synthetic retrieval cohort); the 1M set
is 10 jittered copies of each (Gaussian noise of ``--jitter`` per dimension, renormalised),
so it keeps the clusters of the real embedding space. Without ``--index``, clustered
synthetic vectors (uniform random vectors would make every ANN index look bad: recall@5
about 0.24). Queries: text embeddings of report sentences by the same model (``--model``),
the text -> image use case; else held-out jittered vectors.

Per method: build seconds, index memory (bytes the index holds), single-query top-5 p50/p99
latency in ms, and recall@5 / recall@10 against float32 brute force. Methods: numpy brute
force and FAISS ``IndexFlatIP`` (baselines), the store's ``exact`` (fp16 scan + float32
re-rank), ``hnsw`` and ``ivf``; with ``--pg``, pgvector (exact scan and HNSW) at 100k on a
PostgreSQL started from the ``pgserver`` wheel. End to end: text encoding + exact search.

    .venv/bin/python benchmarks/retrieval.py --index index/retrieval_100k --model runs/retrieval/clip --pg

Writes ``benchmarks/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from medfusion.files import atomic_write_text
from medfusion.retrieval.faiss_store import FaissStore
from medfusion.retrieval.store import open_store

QUERY_TEXTS = (
    "bilateral infiltrates with cardiomegaly", "right pleural effusion", "left lower lobe consolidation",
    "no acute cardiopulmonary abnormality", "the heart is enlarged", "small right apical pneumothorax",
    "calcified granuloma in the right upper lobe", "diffuse interstitial opacities", "left basilar opacity",
    "moderate cardiomegaly without effusion", "pulmonary nodule", "clear lungs, normal heart size",
)
TEMPLATES = ("{}.", "chest x-ray showing {}.", "findings: {}.", "there is {}.", "impression: {}.")


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(values.mean())}


def recall(found: list[np.ndarray], exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(e[:k].tolist())) / k for f, e in zip(found, exact)]))


def jittered(base: np.ndarray, copies: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.repeat(base, copies, axis=0)
    for start in range(0, len(out), 100_000):  # float32 noise in chunks: no float64 copy of 1M x 512
        chunk = out[start:start + 100_000]
        chunk += sigma * rng.standard_normal(chunk.shape, dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    x = centres[rng.integers(0, 256, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def timed_queries(search, queries: np.ndarray) -> tuple[dict, list[np.ndarray]]:
    """Run each query alone (batch 1) after 3 warm-ups; latencies and the returned row indices."""
    for q in queries[:3]:
        search(q[None])
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        rows = search(q[None])
        times.append(time.perf_counter() - start)
        found.append(np.asarray(rows))
    return percentiles(times), found


def store_rows(store, ids_to_row: dict[str, int], k: int):
    def search(q: np.ndarray) -> list[int]:
        return [ids_to_row[h.id] for h in store.search(q, k, model="bench")[0]]
    return search


def bench_size(vectors: np.ndarray, queries: np.ndarray, k: int, work: Path, kinds: dict[str, dict]) -> dict:
    n, dim = vectors.shape
    print(f"--- {n:,} x {dim} vectors, {len(queries)} queries", flush=True)
    exact_rows = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    results: dict[str, dict] = {}

    def numpy_search(q):
        scores = vectors @ q[0]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]
    latency, found = timed_queries(numpy_search, queries)
    results["numpy brute force"] = {"build_s": 0.0, "memory_bytes": vectors.nbytes, **latency,
                                    "recall@5": recall(found, exact_rows, 5)}
    flat = faiss.IndexFlatIP(dim)
    start = time.perf_counter()
    flat.add(vectors)
    build = time.perf_counter() - start
    faiss.omp_set_num_threads(2)
    latency, found = timed_queries(lambda q: flat.search(q, 10)[1][0], queries)
    results["faiss IndexFlatIP"] = {"build_s": build, "memory_bytes": vectors.nbytes, **latency,
                                    "recall@5": recall(found, exact_rows, 5), "recall@10": recall(found, exact_rows, 10)}
    ids = [f"v{i}" for i in range(n)]
    rows = {v: i for i, v in enumerate(ids)}
    for name, (kind, params) in kinds.items():
        folder = work / f"{name}_{n}"
        before, start = rss_bytes(), time.perf_counter()
        store = FaissStore.create(folder, model="bench", dim=dim, kind=kind, params=params)
        store.add(ids, vectors)
        build, memory = time.perf_counter() - start, rss_bytes() - before  # store: float32 copy + index
        latency, found = timed_queries(store_rows(store, rows, 10), queries)
        results[f"store {name}"] = {"kind": kind, "params": store.params, "build_s": build, "rss_growth_bytes": memory,
                                    **latency, "recall@5": recall(found, exact_rows, 5),
                                    "recall@10": recall(found, exact_rows, 10)}
        print(f"{name}: {results[f'store {name}']}", flush=True)
        if kind == "ivf":  # the recall/latency trade-off: more lists probed per query
            for nprobe in (64, 128):
                tuned = FaissStore.open(folder, params={"nprobe": nprobe})
                latency, found = timed_queries(store_rows(tuned, rows, 10), queries)
                results[f"store ivf nprobe {nprobe}"] = {"kind": kind, "params": tuned.params, **latency,
                                                         "recall@5": recall(found, exact_rows, 5),
                                                         "recall@10": recall(found, exact_rows, 10)}
                print(f"ivf nprobe {nprobe}: {results[f'store ivf nprobe {nprobe}']}", flush=True)
                del tuned
        del store
    for name in ("numpy brute force", "faiss IndexFlatIP"):
        print(f"{name}: {results[name]}", flush=True)
    return results


def bench_pgvector(vectors: np.ndarray, queries: np.ndarray, work: Path) -> dict:
    import pgserver

    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    url = server.get_uri()
    ids = [f"v{i}" for i in range(len(vectors))]
    rows = {v: i for i, v in enumerate(ids)}
    exact_rows = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    start = time.perf_counter()
    store = open_store(url, name="bench", model="bench", dim=vectors.shape[1], kind="hnsw", create=True)
    store.add(ids, vectors)  # one bulk add: loaded first, HNSW index built after
    build = time.perf_counter() - start
    results = {}
    for mode, exact in (("pgvector exact scan", True), ("pgvector hnsw", False)):
        def search(q, exact=exact):
            return [rows[h.id] for h in store.search(q, 10, model="bench", exact=exact)[0]]
        latency, found = timed_queries(search, queries)
        results[mode] = {"build_s": build, **latency, "recall@5": recall(found, exact_rows, 5),
                         "recall@10": recall(found, exact_rows, 10)}
        print(f"{mode}: {results[mode]}", flush=True)
    store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="FAISS index folder of trained image embeddings")
    parser.add_argument("--model", type=Path, help="the CLIP run (text queries, end-to-end latency)")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--jitter", type=float, default=0.02, help="per-dimension noise of the 1M copies")
    parser.add_argument("--pg", action="store_true", help="also pgvector at the first size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.index:
        base_store = open_store(args.index)
        base = base_store.get(base_store.metadata()["id"].tolist())
        source = f"trained image embeddings from {args.index} ({len(base):,}), 1M = 10 jittered copies"
    else:
        base = clustered(sizes[0], 512, 0)
        source = "clustered synthetic vectors (256 Gaussian clusters)"
    embedder = None
    if args.model:
        from medfusion.retrieval.embed import JointEmbedder

        embedder = JointEmbedder(args.model)
        texts = [t.format(q) for q in QUERY_TEXTS for t in TEMPLATES]
        texts = (texts * (args.queries // len(texts) + 1))[: args.queries]
        queries = embedder.embed_texts(texts)
    else:
        queries = jittered(base[np.random.default_rng(1).choice(len(base), args.queries)], 1, 0.05, 2)
    report = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, faiss {faiss.__version__}",
              "vectors": source, "queries": f"{len(queries)} " + ("text embeddings of report phrases" if embedder
                                                                   else "jittered held-out vectors"),
              "k": 5, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in sizes:
            vectors = base[:size] if size <= len(base) else jittered(base, -(-size // len(base)), args.jitter, 3)[:size]
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            kinds = {"exact": ("exact", None), "hnsw": ("hnsw", None)} if size <= 200_000 else {
                "exact": ("exact", None), "ivf nprobe 32": ("ivf", {"nlist": 1024, "nprobe": 32})}
            report["sizes"][str(size)] = bench_size(vectors, queries, 5, work, kinds)
            if args.pg and size == sizes[0]:
                report["sizes"][str(size)].update(bench_pgvector(vectors, queries, work))
            if embedder is not None and size == sizes[0]:
                store = FaissStore.create(work / "e2e", model=embedder.fingerprint, dim=vectors.shape[1])
                store.add([f"v{i}" for i in range(len(vectors))], vectors)
                times = []
                for text in texts[:100]:
                    start = time.perf_counter()
                    store.search(embedder.embed_texts([text]), 5, model=embedder.fingerprint)
                    times.append(time.perf_counter() - start)
                report["sizes"][str(size)]["end to end text -> image (exact)"] = percentiles(times)
                print(f"end to end: {percentiles(times)}", flush=True)
            del vectors
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

"""Held-out retrieval quality of a joint-embedding run: paired Recall@K and finding-level precision@K.

**Recall@K** (both directions): a query's one relevant item is its own pair (the report
of the same study). It is the standard figure but undercounts on chest X-rays, where most
studies are normal and their reports interchangeable. **Finding precision@K** (text ->
image) therefore also counts a retrieved image as relevant when its finding labels equal
the query study's (all label columns the same), reported over every query and over the
queries with at least one finding (the ones a clinician searches for).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medfusion.data.datasets.manifest import ManifestDataset, read_manifest
from medfusion.metrics import recall_at_k
from medfusion.retrieval.embed import JointEmbedder
from medfusion.retrieval.indexing import manifest_path


def label_columns_of(data: str | Path) -> list[str]:
    """Finding label columns named by the cohort's ``cohort.json`` (``labels``), or [] when there is none."""
    folder = manifest_path(data).parent
    path = folder / "cohort.json"
    if not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("labels", []))


def finding_precision(similarity: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(Q,) share of each query's top-k candidates whose label row equals the query's.

    Args:
        similarity: (Q, N) scores, query i's own row in ``labels`` is i.
        labels: (N, F) bool labels; (Q <= N).
        k: cut-off.
    """
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    same = (labels[top] == labels[: similarity.shape[0], None, :]).all(axis=2)  # (Q, k)
    return same.mean(axis=1)


def evaluate_retrieval(embedder: JointEmbedder, data: str | Path, *, split: str = "test",
                       modalities: tuple[str, str] = ("image", "text"), ks: Sequence[int] = (1, 5, 10),
                       label_columns: Sequence[str] | None = None, batch_size: int = 64) -> dict:
    """Recall@K both ways between two modalities on one split, and text -> image finding precision@K.

    Returns:
        {"split", "pairs", "recall": {"a_to_b": {K: value}, "b_to_a": {...}},
        "finding_precision": {"all": {K: value}, "with_finding": {K: value}, "queries_with_finding": int}
        (the last only with label columns)}.

    Raises:
        ValueError: when the split has fewer than 2 complete pairs.
    """
    path = manifest_path(data)
    first, second = modalities
    dataset = ManifestDataset(path, {first: first, second: second}, None, split=split, validate_files=False,
                              check_leakage=False)
    vectors = {}
    for modality in modalities:
        rows, chunks = [], []
        for batch_rows, batch_vectors in embedder.embed_manifest(dataset, modality, batch_size=batch_size):
            rows += batch_rows
            chunks.append(batch_vectors)
        vectors[modality] = dict(zip(rows, np.concatenate(chunks) if chunks else [], strict=True))
    paired = sorted(set(vectors[first]) & set(vectors[second]))
    if len(paired) < 2:
        raise ValueError(f"{path}: split {split!r} has {len(paired)} complete {first}-{second} pair(s); expected >= 2")
    a = np.stack([vectors[first][r] for r in paired])
    b = np.stack([vectors[second][r] for r in paired])
    similarity = torch.from_numpy(a @ b.T)
    result: dict = {"split": split, "pairs": len(paired), "recall": {
        f"{first}_to_{second}": recall_at_k(similarity, tuple(ks)),
        f"{second}_to_{first}": recall_at_k(similarity.T.contiguous(), tuple(ks))}}
    columns = list(label_columns) if label_columns is not None else label_columns_of(data)
    if columns and "text" in modalities and "image" in modalities:
        frame, _ = read_manifest(path)
        labels = frame.loc[paired, columns].astype(bool).to_numpy()
        text_to_image = (b @ a.T) if first == "image" else (a @ b.T)
        with_finding = labels.any(axis=1)
        per_query = {k: finding_precision(text_to_image, labels, k) for k in ks}
        result["finding_precision"] = {
            "all": {k: float(values.mean()) for k, values in per_query.items()},
            "with_finding": {k: float(values[with_finding].mean()) if with_finding.any() else None
                             for k, values in per_query.items()},
            "queries_with_finding": int(with_finding.sum()), "label_columns": columns}
    return result

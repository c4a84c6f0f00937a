"""Does text search find the right images? Finding precision@K of text queries over an image index.

Each query names one finding; a hit is relevant when the indexed study has that finding
(the synthetic cohort's label column, metadata of the index). Printed next to the finding's
prevalence in the index (the precision of a random ranking).

    .venv/bin/python scripts/search_relevance.py --model runs/retrieval/clip --index index/retrieval_100k

Writes ``benchmarks/results/search_relevance.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medfusion.files import atomic_write_text
from medfusion.retrieval.embed import JointEmbedder
from medfusion.retrieval.indexing import search
from medfusion.retrieval.store import open_store

QUERIES = {"moderate cardiomegaly": "cardiomegaly", "right pleural effusion": "effusion",
           "left lower lobe consolidation": "consolidation", "pulmonary nodule": "nodule",
           "diffuse bilateral interstitial opacities": "infiltrates", "pneumothorax": "pneumothorax"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("-k", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_relevance.json"))
    args = parser.parse_args()
    embedder, store = JointEmbedder(args.model), open_store(args.index)
    metadata = store.metadata()
    results = {"model": embedder.fingerprint, "index": args.index, "entries": len(store), "k": args.k, "queries": {}}
    for query, finding in QUERIES.items():
        hits = search(embedder, store, text=query, k=args.k)
        precision = float(np.mean([bool(h.metadata[finding]) for h in hits]))
        prevalence = float(metadata[finding].astype(bool).mean())
        results["queries"][query] = {"finding": finding, f"precision@{args.k}": precision, "prevalence": prevalence}
        print(f"{query!r}: precision@{args.k} {precision:.2f} (prevalence of {finding} {prevalence:.3f})")
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

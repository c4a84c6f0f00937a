"""Embedding index for cross-modal search: vector stores, metadata filters, top-k search.

``open_store(path_or_url, ...)`` opens a :class:`FaissStore` folder (the embedded default)
or a :class:`PgVectorStore` table for a ``postgresql://`` URL (psycopg is imported only
when one is opened).
"""

from medfusion.retrieval.faiss_store import FaissStore
from medfusion.retrieval.filters import parse, to_mask, to_sql
from medfusion.retrieval.pgvector_store import PgVectorStore
from medfusion.retrieval.store import Hit, VectorStore, open_store

__all__ = ["FaissStore", "Hit", "PgVectorStore", "VectorStore", "open_store", "parse", "to_mask", "to_sql"]

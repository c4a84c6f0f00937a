"""Embed files, texts and manifests with a trained joint-embedding run.

A run trained with ``task: contrastive`` (e.g. ``configs/retrieval/clip.yaml``) holds one
encoder per modality and the projections to the shared unit-sphere space. Any of its
modalities can be embedded alone: images to fill an index, a text query to search it, a
report to find images. Inputs are read and laid out exactly as in training (the
manifest loaders), so a query image goes through the same path as the indexed ones.

The run's **fingerprint** (a hash of its best checkpoint and tokenizer) is recorded in
every index it fills; an index refuses queries embedded by another model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from medfusion.data.collate import MultimodalCollate
from medfusion.data.datasets.manifest import default_loader, to_layout
from medfusion.fusion.joint_embedding import JointEmbeddingFusion
from medfusion.train.run import load_trained, run_fingerprint
from medfusion.types import MultimodalBatch


class _RowsCollate:
    """Collate that also returns the manifest rows of the samples it kept (skipped ones are dropped)."""

    def __init__(self, collate: MultimodalCollate) -> None:
        self.collate = collate

    def __call__(self, samples: Sequence[dict | None]) -> tuple[list[int], MultimodalBatch | None]:
        kept = [s for s in samples if s is not None]
        return [int(s["row"]) for s in kept], (self.collate(kept) if kept else None)


class JointEmbedder:
    """A trained joint-embedding run, ready to embed any of its modalities.

    Args:
        run_dir: run folder of a joint-embedding model (``medfusion train``).
        checkpoint: "best" or "last".

    Attributes:
        modalities: the modalities the run embeds; dim: E; fingerprint: see :func:`run_fingerprint`.

    Raises:
        ValueError: when the run is not finished or its fusion is not a joint embedding.
    """

    def __init__(self, run_dir: str | Path, checkpoint: str = "best") -> None:
        self.run_dir = Path(run_dir)
        model, data, config = load_trained(self.run_dir, checkpoint)
        if not isinstance(model.fusion, JointEmbeddingFusion):
            raise ValueError(f"{self.run_dir}: expected a joint_embedding model (e.g. trained with "
                             f"configs/retrieval/clip.yaml), received fusion {config.model.fusion.name!r}")
        self.model, self.tokenizer, self.max_length = model, data.tokenizer, config.data.max_length
        self.modalities = model.modalities
        self.dim = model.fusion.out_dim
        self.fingerprint = run_fingerprint(self.run_dir, checkpoint)

    def _check(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ValueError(f"{self.run_dir}: the model embeds {self.modalities}, received modality {modality!r}")

    def collate(self, modality: str) -> MultimodalCollate:
        """The collate of one modality (text: the run's tokenizer and max_length)."""
        self._check(modality)
        return MultimodalCollate([modality], tokenizer=self.tokenizer, max_length=self.max_length)

    @torch.no_grad()
    def embed_batch(self, batch: MultimodalBatch, modality: str) -> Tensor:
        """Unit-norm embeddings (B, E) of ``batch.inputs[modality]``; rows of absent samples are zero."""
        self._check(modality)
        present = batch.presence(modality)
        features = self.model.encoders[modality](batch.inputs[modality], batch.masks.get(modality), present)
        return self.model.fusion.encode({modality: features}, {modality: present})[modality]

    def embed_samples(self, samples: Sequence[dict], modality: str, batch_size: int = 64) -> np.ndarray:
        """(N, E) float32 embeddings of samples ``{"inputs": {modality: value}}``."""
        collate = self.collate(modality)
        chunks = [self.embed_batch(collate(list(samples[i:i + batch_size])), modality).numpy()
                  for i in range(0, len(samples), batch_size)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(N, E) float32 embeddings of texts (queries, prompts or reports).

        Raises:
            ValueError: on a blank text or a model without a text encoder.
        """
        if isinstance(texts, str):
            raise ValueError("embed_texts: expected a list of texts, received one str")
        return self.embed_samples([{"inputs": {"text": t}} for t in texts], "text", batch_size)

    def embed_files(self, paths: Sequence[str | Path], modality: str) -> np.ndarray:
        """(N, E) float32 embeddings of files (DICOM, PNG, WFDB, MP4, ``.txt``, ...) read as in training.

        Raises:
            DataReadError: naming an unreadable file.
            ValueError: on a modality the model does not embed.
        """
        self._check(modality)
        samples = [{"inputs": {modality: to_layout(default_loader(Path(p), modality), modality)}} for p in paths]
        return self.embed_samples(samples, modality)

    def embed_manifest(self, dataset: Dataset, modality: str, *, batch_size: int = 64,
                       num_workers: int = 0, progress: Callable[[int, int], None] | None = None
                       ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Embed one modality of a manifest dataset (or a Subset of one) in batches, with DataLoader workers.

        Samples where the modality is absent are left out; unreadable ones are skipped
        when the dataset was built with ``on_error="skip"``.

        Yields:
            (manifest rows, (n, E) float32 embeddings) per batch.
        """
        self._check(modality)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_RowsCollate(self.collate(modality)))
        done = 0
        for rows, batch in loader:
            done += batch_size
            if progress is not None:
                progress(min(done, len(dataset)), len(dataset))
            if batch is None or modality not in batch.inputs:
                continue
            present = batch.presence(modality).numpy()
            vectors = self.embed_batch(batch, modality).numpy()[present]
            yield [r for r, keep in zip(rows, present, strict=True) if keep], vectors.astype(np.float32)

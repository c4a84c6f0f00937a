"""From a manifest to training batches: datasets per split, tokenizer, vitals statistics, loaders.

Everything fitted on data (the WordPiece vocabulary, the vital-sign statistics) is fitted
on the training split only, and saved in the run folder so evaluation and serving use the
same.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from medfusion.data.collate import MultimodalCollate, make_loader
from medfusion.data.datasets import ManifestDataset
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.train.config import DataConfig

TOKENIZER_FILE = "tokenizer.json"


def subsample_patients(patient_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the samples of a random ``fraction`` of the patients (at least one patient).

    Deterministic for a seed; every sample of a chosen patient is kept.
    """
    patients = np.unique(patient_ids)
    keep = max(1, round(fraction * len(patients)))
    chosen = np.random.default_rng(seed).permutation(patients)[:keep]
    return np.flatnonzero(np.isin(patient_ids, chosen))


class ManifestDataModule(L.LightningDataModule):
    """Train / val / test loaders over one manifest.

    Args:
        config: the data section of the training config.
        batch_size: samples per batch.
        seed: shuffle, subsampling and worker seed.
        tokenizer: an already fitted tokenizer (evaluation of a trained run); trained on
            the training notes when ``None`` and text is used.
    """

    def __init__(self, config: DataConfig, batch_size: int, seed: int = 0,
                 tokenizer: WordPieceTokenizer | None = None) -> None:
        super().__init__()
        self.config, self.batch_size, self.seed = config, batch_size, seed
        self.path_modalities = dict(config.modalities)
        self.modalities = sorted(set(self.path_modalities) | ({"vitals"} if config.vitals_columns else set()))
        self.datasets: dict[str, ManifestDataset] = {}
        self.tokenizer = tokenizer
        self.train_indices: np.ndarray | None = None

    def dataset(self, role: str) -> ManifestDataset:
        """The dataset of split role "train", "val" or "test" (built on first use)."""
        if role not in self.datasets:
            self.datasets[role] = ManifestDataset(
                self.config.manifest, self.path_modalities, self.config.label, split=self.config.splits[role],
                vitals_columns=self.config.vitals_columns or None, on_error=self.config.on_error)
        return self.datasets[role]

    def usable(self, role: str) -> np.ndarray:
        """Indices of the samples of a split that have at least one of the modalities used.

        A unimodal model cannot learn from (or be validated on) a patient without its
        modality; evaluation with :func:`medfusion.evaluate.predict.predict` still covers
        every test patient (uninformed prediction for those).
        """
        present = self.dataset(role).presence()
        return np.flatnonzero(np.any([present[m] for m in self.modalities], axis=0))

    def setup(self, stage: str | None = None) -> None:
        train = self.dataset("train")
        usable = self.usable("train")
        chosen = subsample_patients(train.patient_ids[usable], self.config.train_fraction, self.seed)
        self.train_indices = usable[chosen]
        if "text" in self.modalities and self.tokenizer is None:
            self.tokenizer = WordPieceTokenizer.train(self._training_notes(), vocab_size=self.config.vocab_size)

    def _training_notes(self) -> list[str]:
        notes = ManifestDataset(self.config.manifest, {"text": self.path_modalities["text"]}, None,
                                split=self.config.splits["train"], on_error=self.config.on_error)
        texts = []
        for i in self.train_indices:
            sample = notes[int(i)]
            if sample is not None and sample["present"]["text"]:
                texts.append(sample["inputs"]["text"])
        if not texts:
            raise ValueError("data: no training sample has a note; expected text to train the tokenizer")
        return texts

    def training_vitals(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(values (N, F) with 0 at missing, observed (N, F) bool) of the training samples, or None."""
        if "vitals" not in self.modalities:
            return None
        matrix = torch.from_numpy(self.dataset("train").vitals_matrix()[self.train_indices])
        observed = ~torch.isnan(matrix)
        return torch.nan_to_num(matrix, nan=0.0), observed

    def class_counts(self) -> np.ndarray:
        """(2,) number of training samples per class."""
        labels = self.dataset("train").labels[self.train_indices]
        return np.bincount(labels, minlength=2)

    def collate(self) -> MultimodalCollate:
        """The collate turning samples into a :class:`~medfusion.types.MultimodalBatch`."""
        return MultimodalCollate(self.modalities, tokenizer=self.tokenizer, max_length=self.config.max_length,
                                 shapes=self._shapes())

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each fixed-size modality, read from the first training sample that has it."""
        shapes: dict[str, tuple[int, ...]] = {}
        train = self.dataset("train")
        wanted = [m for m in self.modalities if m in ("image", "volume", "vitals")]
        for i in range(len(train)):
            if len(shapes) == len(wanted):
                break
            sample = train[i]
            if sample is None:
                continue
            for m in wanted:
                if m not in shapes and sample["present"][m]:
                    shapes[m] = tuple(np.asarray(sample["inputs"][m]).shape)
        return shapes

    def save_fitted(self, folder: str | Path) -> None:
        """Save what was fitted on the training data (the tokenizer) into the run folder."""
        if self.tokenizer is not None:
            self.tokenizer.save(Path(folder) / TOKENIZER_FILE)

    def train_dataloader(self) -> DataLoader:
        subset = Subset(self.dataset("train"), self.train_indices.tolist())
        return make_loader(subset, self.batch_size, shuffle=True, num_workers=self.config.num_workers,
                           seed=self.seed, collate=self.collate(), drop_last=len(subset) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", usable_only=True)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", usable_only=True)

    def loader(self, role: str, usable_only: bool = False) -> DataLoader:
        """An unshuffled loader over a split role (all its samples, or only those with a used modality)."""
        dataset = self.dataset(role)
        if usable_only:
            dataset = Subset(dataset, self.usable(role).tolist())
        return make_loader(dataset, self.batch_size, num_workers=self.config.num_workers,
                           seed=self.seed, collate=self.collate())

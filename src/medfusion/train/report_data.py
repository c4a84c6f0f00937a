"""Image-report pairs of a manifest: datasets per split, the report tokenizer, loaders.

Only samples with both an image and a report are used (a report cannot be learned, or
scored, without both). The WordPiece vocabulary is fitted on the training reports alone
and saved in the run folder, so evaluation and ``medfusion report`` read the same ids.
Images are read as (C, H, W) in [0, 1] and brought to the model's channels and size by
:func:`prepare_image`, in training and at inference alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Subset

from medfusion.data.collate import MultimodalCollate, make_loader
from medfusion.data.datasets import ManifestDataset
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.data.transforms.image import Resize
from medfusion.train.report_config import ReportDataConfig

#: Tokenizer file in a run folder.
TOKENIZER_FILE = "tokenizer.json"


class SpecialIds(NamedTuple):
    """Token ids the generator needs from its tokenizer."""

    pad: int
    bos: int
    eos: int


def special_ids(tokenizer: WordPieceTokenizer) -> SpecialIds:
    """Padding id and the ids framing every encoded text (``[CLS]`` = bos, ``[SEP]`` = eos)."""
    framed = tokenizer.encode(["."], max_length=8).ids[0].tolist()
    return SpecialIds(pad=tokenizer.pad_id, bos=framed[0], eos=framed[-1])


def prepare_image(image: np.ndarray, channels: int, size: int | None = None) -> np.ndarray:
    """An image (C, H, W) or (H, W) with ``channels`` channels, resized to (size, size) when given.

    Grayscale becomes RGB by repetition, RGB becomes grayscale by the channel mean.

    Returns:
        (channels, H', W') float32.

    Raises:
        ValueError: on a rank other than 2 or 3, or channels that cannot be converted.
    """
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"report image: expected (C, H, W) or (H, W), received shape {array.shape}")
    if array.shape[0] != channels:
        if array.shape[0] == 1:
            array = np.repeat(array, channels, axis=0)
        elif channels == 1:
            array = array.mean(axis=0, keepdims=True)
        else:
            raise ValueError(f"report image: expected {channels} channel(s) (or 1 to repeat), "
                             f"received {array.shape[0]}")
    if size is not None and array.shape[1:] != (size, size):
        array = Resize((size, size), mode="area" if min(array.shape[1:]) > size else "linear")(array)
    return np.ascontiguousarray(array, dtype=np.float32)


class PrepareImage:
    """Dictionary transform: :func:`prepare_image` on a sample's image (picklable for workers)."""

    def __init__(self, channels: int, size: int | None) -> None:
        self.channels, self.size = channels, size

    def __call__(self, sample: dict) -> dict:
        image = sample["inputs"].get("image")
        if image is not None:
            sample["inputs"]["image"] = prepare_image(image, self.channels, self.size)
        return sample


class ReportPair(NamedTuple):
    """One usable sample: patient, image (C, H, W) as prepared, report text."""

    patient_id: str
    image: np.ndarray
    report: str


class ReportDataModule(L.LightningDataModule):
    """Train / val / test loaders of image-report pairs.

    Batches are :class:`~medfusion.types.MultimodalBatch` with ``inputs["image"]`` (B, C, H, W),
    ``inputs["text"]`` (B, T) token ids framed by bos/eos and ``masks["text"]`` (B, T).

    Args:
        config: the data section of the report config.
        channels: image channels the model's encoder takes.
        batch_size: samples per batch.
        seed: shuffle and worker seed.
        tokenizer: an already fitted tokenizer (resuming, evaluation); trained on the
            training reports at :meth:`setup` when ``None``.
    """

    def __init__(self, config: ReportDataConfig, channels: int, batch_size: int, seed: int = 0,
                 tokenizer: WordPieceTokenizer | None = None) -> None:
        super().__init__()
        self.config, self.channels, self.batch_size, self.seed = config, channels, batch_size, seed
        self.tokenizer = tokenizer
        self._datasets: dict[str, ManifestDataset] = {}

    def dataset(self, role: str) -> ManifestDataset:
        """The dataset of a split role ("train", "val", "test"), built on first use.

        Raises:
            ValueError: on an unknown role, or a manifest without the columns or the split.
        """
        if role not in self.config.splits:
            raise ValueError(f"report data: unknown split role {role!r}; expected one of {list(self.config.splits)}")
        if role not in self._datasets:
            self._datasets[role] = ManifestDataset(
                self.config.manifest, {"image": self.config.image_column, "text": self.config.report_column}, None,
                split=self.config.splits[role], on_error=self.config.on_error,
                transforms=PrepareImage(self.channels, self.config.image_size))
        return self._datasets[role]

    def usable(self, role: str) -> np.ndarray:
        """Indices of the samples of a split with both an image and a report.

        Raises:
            ValueError: when the split has no such sample.
        """
        present = self.dataset(role).presence()
        indices = np.flatnonzero(present["image"] & present["text"])
        if not len(indices):
            raise ValueError(f"report data: split {self.config.splits[role]!r} has no sample with both an image "
                             f"({self.config.image_column!r}) and a report ({self.config.report_column!r})")
        return indices

    def pairs(self, role: str) -> Iterator[ReportPair]:
        """The usable samples of a split, in manifest order (unreadable ones skipped with on_error="skip")."""
        dataset = self.dataset(role)
        patients = dataset.patient_ids
        for index in self.usable(role).tolist():
            sample = dataset[index]
            if sample is not None:
                yield ReportPair(str(patients[index]), sample["inputs"]["image"], sample["inputs"]["text"])

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            self.tokenizer = WordPieceTokenizer.train(self._training_reports(), vocab_size=self.config.vocab_size)

    def _training_reports(self) -> Iterator[str]:
        """The reports of the usable training samples, without reading their images."""
        reports = ManifestDataset(self.config.manifest, {"text": self.config.report_column}, None,
                                  split=self.config.splits["train"], on_error=self.config.on_error)
        train = self.dataset("train")
        wanted = set(train.rows[self.usable("train")].tolist())  # manifest rows: robust to skipped files
        for index, row in enumerate(reports.rows.tolist()):
            sample = reports[index] if row in wanted else None
            if sample is not None:
                yield sample["inputs"]["text"]

    def save_fitted(self, folder: str | Path) -> None:
        """Write the tokenizer into the run folder.

        Raises:
            ValueError: before :meth:`setup` (no tokenizer yet).
        """
        if self.tokenizer is None:
            raise ValueError("report data: no tokenizer yet; call setup() first")
        self.tokenizer.save(Path(folder) / TOKENIZER_FILE)

    def collate(self) -> MultimodalCollate:
        """Samples -> batch, reports tokenized to at most ``max_length`` tokens."""
        return MultimodalCollate(["image", "text"], tokenizer=self.tokenizer, max_length=self.config.max_length)

    def loader(self, role: str, shuffle: bool = False) -> DataLoader:
        """A loader over the usable samples of a split (shuffled per (seed, epoch) when asked)."""
        subset = Subset(self.dataset(role), self.usable(role).tolist())
        return make_loader(subset, self.batch_size, shuffle=shuffle, num_workers=self.config.num_workers,
                           seed=self.seed, collate=self.collate(),
                           drop_last=shuffle and len(subset) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

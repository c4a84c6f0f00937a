"""Samples -> :class:`~medfusion.types.MultimodalBatch`, and a seeded DataLoader.

:class:`MultimodalCollate` turns the sample dicts of
:class:`~medfusion.data.datasets.manifest.ManifestDataset` (``inputs``: {modality: array,
str or None}, ``present``: {modality: bool}, ``label``) into one batch:

| modality | tensor | mask |
|---|---|---|
| text   | token ids (B, L), padded with the tokenizer's pad id | (B, L) real tokens |
| image  | (B, C, H, W) | — |
| volume | (B, C, D, H, W) | — |
| signal | (B, C, T), zero-padded to the longest | (B, T) valid prefix |
| vitals | (B, F), NaN -> 0 | (B, F) observed |
| video  | (B, T, C, H, W), zero-padded to the longest clip | (B, T) valid frames |

A sample without a modality gets a zero row (and an all-False mask) and
``present[modality]`` False. A modality no sample of the batch has is left out of the
batch (models treat a missing key as absent for every sample) unless its per-sample
shape is given in ``shapes``. Samples that are None (skipped by a dataset in
``on_error="skip"`` mode) are dropped with a warning.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, get_worker_info

from medfusion.types import MultimodalBatch, check_modality

logger = logging.getLogger(__name__)

#: Per-sample rank, layout and the axis padded across samples (None: sizes must agree).
LAYOUTS: dict[str, tuple[int, str, int | None]] = {
    "image": (3, "(C, H, W)", None),
    "volume": (4, "(C, D, H, W)", None),
    "signal": (2, "(C, T)", 1),
    "video": (4, "(T, C, H, W)", 0),
    "vitals": (1, "(F,)", None),
}


class MultimodalCollate:
    """Collate sample dicts into a :class:`MultimodalBatch`.

    Args:
        modalities: modalities to put in the batch (others in the samples are ignored).
        tokenizer: a tokenizer with ``encode(texts, max_length) -> TokenizedText`` and
            ``pad_id`` (:class:`~medfusion.data.tokenizer.WordPieceTokenizer`); needed for text.
        max_length: longest token sequence, special tokens included.
        shapes: {modality: per-sample shape} used to zero-fill a modality that no sample
            of a batch has (for padded modalities the padded axis may be any size, e.g. 1).

    Raises:
        ValueError: on an unknown modality, text without a tokenizer, or a bad shape;
            at call time on an empty batch, a wrong rank, sizes that disagree in a
            non-padded dimension (naming the modality and the sample index), blank
            present text, or labels on some samples only.

    Examples::

        collate = MultimodalCollate(["image", "text", "vitals"], tokenizer=tok, max_length=64)
        batch = collate([dataset[0], dataset[1]])
        batch.inputs["image"].shape  # (2, 1, 256, 256)
    """

    def __init__(self, modalities: Sequence[str], tokenizer: Any = None, max_length: int = 128,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> None:
        if isinstance(modalities, str) or not modalities:
            raise ValueError(f"collate: expected a non-empty list of modalities, received {modalities!r}")
        self.modalities = sorted({check_modality(m) for m in modalities})
        if "text" in self.modalities and tokenizer is None:
            raise ValueError("collate: text needs a tokenizer (e.g. WordPieceTokenizer); received tokenizer=None")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"collate: expected max_length to be an int >= 2, received {max_length!r}")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.shapes: dict[str, tuple[int, ...]] = {}
        for m, shape in (shapes or {}).items():
            m = check_modality(m)
            if m == "text" or m not in LAYOUTS:
                raise ValueError(f"collate: shapes are for array modalities {sorted(LAYOUTS)}, received {m!r}")
            shape = tuple(int(s) for s in shape)
            if len(shape) != LAYOUTS[m][0] or min(shape) < 1:
                raise ValueError(f"collate: expected a {m} shape {LAYOUTS[m][1]} of positive sizes, received {shape}")
            self.shapes[m] = shape

    def __call__(self, samples: Sequence[dict | None]) -> MultimodalBatch:
        kept = [s for s in samples if s is not None]
        if len(kept) < len(samples):
            logger.warning("collate: dropped %d skipped sample(s) from a batch of %d", len(samples) - len(kept),
                           len(samples))
        if not kept:
            raise ValueError("collate: every sample of the batch was skipped or the batch is empty; "
                             "run dataset.verify() to drop unreadable samples beforehand")
        for index, sample in enumerate(kept):
            if not isinstance(sample, Mapping) or not isinstance(sample.get("inputs"), Mapping):
                raise ValueError(f"collate: sample {index} is not a dict with 'inputs' "
                                 f"(received {type(sample).__name__})")
        batch = MultimodalBatch(inputs={}, labels=self._labels(kept))
        for m in self.modalities:
            values = [_value(sample, m) for sample in kept]
            present = torch.tensor([v is not None for v in values], dtype=torch.bool)
            if m == "text":
                x, mask = self._text(values)
            else:
                stacked = self._arrays(m, values)
                if stacked is None:
                    continue
                x, mask = stacked
            batch.inputs[m], batch.present[m] = x, present
            if mask is not None:
                batch.masks[m] = mask
        return batch

    @staticmethod
    def _labels(samples: Sequence[Mapping]) -> Tensor | None:
        labels = [sample.get("label") for sample in samples]
        if all(label is None for label in labels):
            return None
        missing = [i for i, label in enumerate(labels) if label is None]
        if missing:
            raise ValueError(f"collate: sample(s) {missing[:10]} have no label while others do; "
                             "expected labels on every sample or none")
        try:
            return torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"collate: expected integer labels, received {type(labels[0]).__name__} "
                             f"({error})") from error

    def _text(self, texts: list[Any]) -> tuple[Tensor, Tensor]:
        rows = [i for i, t in enumerate(texts) if t is not None]
        for i in rows:
            if not isinstance(texts[i], str) or not texts[i].strip():
                raise ValueError(f"text: sample {i} is marked present but its text is "
                                 f"{'blank' if isinstance(texts[i], str) else type(texts[i]).__name__}; "
                                 "expected non-blank str (mark it absent instead)")
        if not rows:
            pad = self.tokenizer.pad_id
            return (torch.full((len(texts), 1), pad, dtype=torch.int64),
                    torch.zeros((len(texts), 1), dtype=torch.bool))
        encoded = self.tokenizer.encode([texts[i] for i in rows], max_length=self.max_length)
        length = encoded.ids.shape[1]
        ids = torch.full((len(texts), length), self.tokenizer.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(texts), length), dtype=torch.bool)
        index = torch.tensor(rows)
        ids[index], mask[index] = encoded.ids, encoded.mask.bool()
        return ids, mask

    def _arrays(self, m: str, values: list[Any]) -> tuple[Tensor, Tensor | None] | None:
        ndim, layout, pad_axis = LAYOUTS[m]
        arrays: dict[int, np.ndarray] = {}
        for i, value in enumerate(values):
            if value is None:
                continue
            array = value.numpy() if isinstance(value, Tensor) else value
            if not isinstance(array, np.ndarray) or array.ndim != ndim:
                received = f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"{m}: sample {i} must be an array {layout}, received {received}")
            arrays[i] = array
        if not arrays and m not in self.shapes:
            return None
        reference = next(iter(arrays.values())).shape if arrays else self.shapes[m]
        for i, array in arrays.items():
            fixed = [d for d in range(ndim) if d != pad_axis]
            if any(array.shape[d] != reference[d] for d in fixed):
                padded = f" (dimension {pad_axis} may differ)" if pad_axis is not None else ""
                raise ValueError(f"{m}: sample {i} has shape {array.shape}, expected {layout} = {tuple(reference)}"
                                 f"{padded}; every sample of a batch must agree")
        shape = list(reference)
        if pad_axis is not None and arrays:
            shape[pad_axis] = max(a.shape[pad_axis] for a in arrays.values())
        x = torch.zeros((len(values), *shape), dtype=torch.float32)
        mask = None
        if m == "vitals":
            mask = torch.zeros((len(values), shape[0]), dtype=torch.bool)
        elif pad_axis is not None:
            mask = torch.zeros((len(values), shape[pad_axis]), dtype=torch.bool)
        for i, array in arrays.items():
            t = torch.from_numpy(np.asarray(array, dtype=np.float32))
            if m == "vitals":
                observed = ~torch.isnan(t)
                x[i], mask[i] = torch.where(observed, t, torch.zeros(())), observed
            elif pad_axis is not None:
                length = array.shape[pad_axis]
                x[i].narrow(pad_axis, 0, length).copy_(t)
                mask[i, :length] = True
            else:
                x[i] = t
        return x, mask


def _value(sample: Mapping, modality: str) -> Any:
    """The sample's input for ``modality``, or None when it lacks it."""
    value = sample["inputs"].get(modality)
    present = sample.get("present", {}).get(modality, value is not None)
    return value if present and value is not None else None


class EpochShuffleSampler(Sampler[int]):
    """A shuffle whose order is a function of (seed, epoch) only.

    Unlike ``shuffle=True`` (a generator that advances across epochs), a run resumed at
    epoch e draws exactly the order an uninterrupted run draws there. The trainer calls
    :meth:`set_epoch` before each epoch (Lightning does so for any sampler with it).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python, numpy and the dataset's random transforms in a worker.

    The seed is the worker's torch seed (derived from the loader's generator and the
    worker id), so a seeded loader gives the same augmentations on every run.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "set_random_state"):
        info.dataset.set_random_state(seed)


def make_loader(dataset: Any, batch_size: int, shuffle: bool = False, num_workers: int = 0, seed: int = 0,
                collate: MultimodalCollate | None = None, drop_last: bool = False,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader with a seeded generator (shuffle order) and seeded workers.

    Args:
        dataset: a map-style dataset of sample dicts.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch (the order is fixed by ``seed`` and the epoch, see
            :class:`EpochShuffleSampler`).
        num_workers: worker processes (0 loads in the main process).
        seed: seeds the shuffle, the workers and (with no workers) the dataset's transforms.
        collate: the collate; default ``MultimodalCollate(dataset.modalities)``.
        drop_last: drop a last incomplete batch.
        pin_memory: pin batches in page-locked memory (GPU training).

    Raises:
        ValueError: on a bad batch size / worker count, or no collate for a dataset
            without ``modalities``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"loader: expected batch_size to be an int >= 1, received {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"loader: expected num_workers to be an int >= 0, received {num_workers!r}")
    if collate is None:
        if not hasattr(dataset, "modalities"):
            raise ValueError("loader: pass a collate (MultimodalCollate) for a dataset without `modalities`")
        collate = MultimodalCollate(dataset.modalities)
    if num_workers == 0 and hasattr(dataset, "set_random_state"):
        dataset.set_random_state(seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = EpochShuffleSampler(len(dataset), seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, worker_init_fn=seed_worker, generator=generator, drop_last=drop_last,
                      pin_memory=pin_memory, persistent_workers=False)

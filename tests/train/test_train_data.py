"""Class weights, patient subsampling, the epoch-seeded shuffle, and the manifest data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfusion.data.collate import EpochShuffleSampler, make_loader
from medfusion.train.config import TrainConfig
from medfusion.train.data import ManifestDataModule, subsample_patients
from medfusion.train.run import class_weights


def test_class_weights_are_inverse_frequencies_with_mean_one_over_samples() -> None:
    weights = class_weights(np.array([30, 10]))
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor([40 / (2 * 30), 40 / (2 * 10)]))  # [0.667, 2.0]
    assert float((weights * torch.tensor([30.0, 10.0])).sum() / 40) == pytest.approx(1.0)
    torch.testing.assert_close(class_weights(np.array([7, 7])), torch.tensor([1.0, 1.0]))


def test_class_weights_of_an_empty_class_count_it_as_one() -> None:
    # counts [5, 0] -> [5, 1]: 6 / (2 * 5), 6 / (2 * 1)
    torch.testing.assert_close(class_weights(np.array([5, 0])), torch.tensor([0.6, 3.0]))


def _patients() -> np.ndarray:
    # 20 patients, 1 to 4 samples each, interleaved
    rng = np.random.default_rng(3)
    ids = np.repeat([f"P{i:02d}" for i in range(20)], rng.integers(1, 5, 20))
    return rng.permutation(ids)


def test_subsample_patients_keeps_whole_patients_and_respects_the_fraction() -> None:
    ids = _patients()
    kept = subsample_patients(ids, 0.25, seed=0)
    assert np.all(np.diff(kept) > 0)  # sorted, unique
    chosen = set(ids[kept])
    assert len(chosen) == 5  # round(0.25 * 20)
    assert set(np.flatnonzero(np.isin(ids, list(chosen)))) == set(kept)  # every sample of a chosen patient


def test_subsample_patients_is_deterministic_per_seed() -> None:
    ids = _patients()
    assert np.array_equal(subsample_patients(ids, 0.5, seed=1), subsample_patients(ids, 0.5, seed=1))
    draws = {tuple(subsample_patients(ids, 0.5, seed=s)) for s in range(5)}
    assert len(draws) > 1


def test_subsample_patients_edge_fractions() -> None:
    ids = _patients()
    assert np.array_equal(subsample_patients(ids, 1.0, seed=0), np.arange(len(ids)))
    assert len(set(ids[subsample_patients(ids, 0.001, seed=0)])) == 1  # at least one patient


def test_epoch_shuffle_sampler_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(50, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and len(sampler) == 50
    assert list(sampler) == first  # same epoch, same order, however often it is drawn
    other = EpochShuffleSampler(50, seed=4)
    sampler.set_epoch(3)
    other.set_epoch(3)
    third = list(sampler)
    assert third == list(other) and sorted(third) == list(range(50))
    assert third != first
    orders = set()
    for epoch in range(6):
        sampler.set_epoch(epoch)
        orders.add(tuple(sampler))
    assert len(orders) == 6
    assert list(EpochShuffleSampler(50, seed=5)) != first


def test_make_loader_shuffles_with_the_epoch_sampler_only_when_asked() -> None:
    data = [{"inputs": {"vitals": np.full(2, float(i), dtype=np.float32)}, "present": {"vitals": True}, "label": 0}
            for i in range(10)]
    shuffled = make_loader(data, 4, shuffle=True, seed=2, collate=lambda batch: batch)
    assert isinstance(shuffled.sampler, EpochShuffleSampler)
    assert make_loader(data, 4, collate=lambda batch: batch).sampler.__class__.__name__ == "SequentialSampler"


def test_the_data_module_fits_on_the_training_split_only(make_config, tmp_path) -> None:
    config = TrainConfig.model_validate(make_config(tmp_path / "run", data={"train_fraction": 0.5}))
    data = ManifestDataModule(config.data, batch_size=16, seed=0)
    data.setup("fit")
    train = data.dataset("train")
    assert data.modalities == ["image", "text", "vitals"]
    patients = np.unique(train.patient_ids[data.train_indices])
    assert len(patients) == round(0.5 * len(np.unique(train.patient_ids)))
    assert data.class_counts().sum() == len(data.train_indices)
    values, observed = data.training_vitals()
    assert values.shape == observed.shape == (len(data.train_indices), 6)
    assert not torch.isnan(values).any()
    assert data.tokenizer is not None and data.tokenizer.vocab_size <= 100

    batch = next(iter(data.train_dataloader()))
    assert batch.labels.shape == (16,)
    assert set(batch.inputs) == {"image", "text", "vitals"} and batch.inputs["image"].shape[1:] == (1, 32, 32)
    total = sum(len(b.labels) for b in data.val_dataloader())
    assert total == len(data.dataset("val"))
    folder = tmp_path / "fitted"
    folder.mkdir()
    data.save_fitted(folder)
    assert (folder / "tokenizer.json").is_file()

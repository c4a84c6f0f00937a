"""MultimodalCollate against hand-built batches, padding and masks, errors, the seeded loader,
and collated batches running through models built by ``build_model``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from factories import model_config
from medfusion.data.collate import MultimodalCollate, make_loader
from medfusion.data.datasets import ManifestDataset
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.data.transforms import Compose, RandGaussianNoised
from medfusion.models import build_model

CORPUS = ["no fever", "cough and fever for three days", "right lower lobe opacity", "lungs clear",
          "shortness of breath", "chest pain", "possible consolidation on the left"] * 3


@pytest.fixture(scope="module")
def tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(CORPUS, vocab_size=50, min_frequency=1)  # ids < 50 = factories.VOCAB


def sample(i: int, present: dict[str, bool], *, signal_length: int = 16, frames: int = 4, label: int | None = 0,
           channels: int = 3) -> dict:
    rng = np.random.default_rng(i)
    inputs = {
        "image": rng.normal(size=(1, 32, 32)).astype(np.float32),
        "signal": rng.normal(size=(channels, signal_length)).astype(np.float32),
        "video": rng.normal(size=(frames, 1, 32, 32)).astype(np.float32),
        "vitals": np.array([37.0, np.nan, 98.0, 80.0, np.nan], dtype=np.float32),
        "text": CORPUS[i % 7],
    }
    inputs = {m: (v if present.get(m, True) else None) for m, v in inputs.items()}
    return {"patient_id": f"p{i}", "label": label, "inputs": inputs,
            "present": {m: present.get(m, True) for m in inputs}}


ALL = ["image", "signal", "text", "video", "vitals"]


def test_against_a_hand_built_batch(tokenizer) -> None:
    samples = [
        sample(0, {"image": True, "text": True}, signal_length=5, frames=2, label=1),
        sample(1, {"image": False, "vitals": False}, signal_length=3, frames=3, label=0),
        sample(2, {"signal": False, "video": False, "text": False}, label=2),
    ]
    batch = MultimodalCollate(ALL, tokenizer=tokenizer, max_length=12)(samples)
    assert batch.labels.dtype == torch.int64 and batch.labels.tolist() == [1, 0, 2]
    assert {m: batch.present[m].tolist() for m in ALL} == {
        "image": [True, False, True], "signal": [True, True, False], "text": [True, True, False],
        "video": [True, True, False], "vitals": [True, False, True]}
    # image: stacked, absent row zero
    image = batch.inputs["image"]
    assert image.shape == (3, 1, 32, 32) and image.dtype == torch.float32
    torch.testing.assert_close(image[0], torch.from_numpy(samples[0]["inputs"]["image"]))
    assert (image[1] == 0).all()
    # signal: padded to the longest (5), valid-prefix mask
    signal = batch.inputs["signal"]
    assert signal.shape == (3, 3, 5)
    torch.testing.assert_close(signal[1, :, :3], torch.from_numpy(samples[1]["inputs"]["signal"]))
    assert (signal[1, :, 3:] == 0).all() and (signal[2] == 0).all()
    assert batch.masks["signal"].tolist() == [[True] * 5, [True] * 3 + [False] * 2, [False] * 5]
    # video: padded frames, frame mask
    assert batch.inputs["video"].shape == (3, 3, 1, 32, 32)
    assert batch.masks["video"].tolist() == [[True, True, False], [True, True, True], [False, False, False]]
    assert (batch.inputs["video"][0, 2] == 0).all()
    # vitals: NaN -> 0 with the observed mask; absent row all unobserved
    torch.testing.assert_close(batch.inputs["vitals"][0], torch.tensor([37.0, 0.0, 98.0, 80.0, 0.0]))
    assert batch.masks["vitals"].tolist() == [[True, False, True, True, False], [False] * 5,
                                              [True, False, True, True, False]]
    assert (batch.inputs["vitals"][1] == 0).all()
    # text: the tokenizer's own ids, padded with pad id 0; absent row all padding
    expected = tokenizer.encode([CORPUS[0], CORPUS[1]], max_length=12)
    ids, mask = batch.inputs["text"], batch.masks["text"]
    assert ids.shape == (3, expected.ids.shape[1])
    torch.testing.assert_close(ids[:2], expected.ids)
    torch.testing.assert_close(mask[:2], expected.mask)
    assert (ids[2] == tokenizer.pad_id).all() and not mask[2].any()


def test_absent_everywhere_is_left_out_or_zero_filled_from_shapes(tokenizer) -> None:
    samples = [sample(i, {"image": False, "text": False}) for i in range(2)]
    batch = MultimodalCollate(ALL, tokenizer=tokenizer)(samples)
    assert "image" not in batch.inputs and "image" not in batch.present
    assert batch.inputs["text"].shape == (2, 1) and not batch.masks["text"].any()
    assert not batch.present["text"].any()
    filled = MultimodalCollate(["image", "signal"], shapes={"image": (1, 8, 8)})(samples)
    assert filled.inputs["image"].shape == (2, 1, 8, 8) and not filled.present["image"].any()
    assert (filled.inputs["image"] == 0).all()
    with pytest.raises(ValueError, match=r"expected a image shape \(C, H, W\)"):
        MultimodalCollate(["image"], shapes={"image": (8, 8)})


def test_shape_disagreement_names_modality_and_sample(tokenizer) -> None:
    good, other = sample(0, {}), sample(1, {}, channels=2)
    with pytest.raises(ValueError, match=r"signal: sample 1 has shape \(2, 16\), expected \(C, T\) = \(3, 16\) "
                                         r"\(dimension 1 may differ\)"):
        MultimodalCollate(["signal"])([good, other])
    bad_image = sample(1, {})
    bad_image["inputs"]["image"] = np.zeros((1, 16, 32), np.float32)
    with pytest.raises(ValueError,
                       match=r"image: sample 1 has shape \(1, 16, 32\), expected \(C, H, W\) = \(1, 32, 32\)"):
        MultimodalCollate(["image"])([good, bad_image])
    bad_rank = sample(2, {})
    bad_rank["inputs"]["video"] = np.zeros((4, 32, 32), np.float32)
    with pytest.raises(ValueError,
                       match=r"video: sample 2 must be an array \(T, C, H, W\), received shape \(4, 32, 32\)"):
        MultimodalCollate(["video"])([good, good, bad_rank])
    blank = sample(1, {})
    blank["inputs"]["text"] = "   "
    with pytest.raises(ValueError, match="text: sample 1 is marked present but its text is blank"):
        MultimodalCollate(["text"], tokenizer=tokenizer)([good, blank])


def test_labels_skipped_samples_and_options(tokenizer, caplog) -> None:
    collate = MultimodalCollate(["image"])
    assert collate([sample(0, {}, label=None)]).labels is None
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have no label"):
        collate([sample(0, {}), sample(1, {}, label=None)])
    batch = collate([None, sample(0, {}), None])
    assert batch.batch_size == 1 and "dropped 2 skipped sample(s)" in caplog.text
    with pytest.raises(ValueError, match="every sample of the batch was skipped"):
        collate([None])
    with pytest.raises(ValueError, match="text needs a tokenizer"):
        MultimodalCollate(["text", "image"])
    with pytest.raises(ValueError, match="unknown modality 'ecg'"):
        MultimodalCollate(["ecg"])


@pytest.mark.parametrize("variant", ["intermediate", "late-learned", "cross_attention", "joint_embedding", "early"])
def test_collated_batch_runs_through_build_model(variant, tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(variant, ALL))
    samples = [
        sample(0, {}, signal_length=64, frames=3, label=0),
        sample(1, {"image": False, "text": False}, signal_length=40, frames=2, label=1),
        sample(2, {"signal": False, "video": False, "vitals": False}, label=2),
        sample(3, {"image": False}, signal_length=20, frames=1, label=1),
    ]
    batch = MultimodalCollate(ALL, tokenizer=tokenizer, max_length=12)(samples)
    output, losses = model.loss(batch)
    assert output.logits.shape == (4, 3) and torch.isfinite(output.logits).all()
    assert torch.isfinite(losses["total"])
    losses["total"].backward()


def write_dataset(folder) -> ManifestDataset:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        np.save(folder / f"img{i}.npy", rng.normal(size=(1, 32, 32)).astype(np.float32))
        np.save(folder / f"ecg{i}.npy", rng.normal(size=(3, 30 + 5 * i)).astype(np.float32))
        rows.append({"patient_id": f"p{i // 2}", "label": i % 3, "image": f"img{i}.npy" if i != 1 else "",
                     "ecg": f"ecg{i}.npy", "note": CORPUS[i], "t": 36.5 + i, "hr": np.nan if i % 2 else 80.0 + i,
                     "spo2": 97.0, "rr": 18.0, "sbp": 120.0})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return ManifestDataset(folder / "manifest.csv", {"image": "image", "signal": "ecg", "text": "note"}, "label",
                           vitals_columns=["t", "hr", "spo2", "rr", "sbp"],
                           transforms=Compose([RandGaussianNoised("image", std=0.1)]))


def test_manifest_to_loader_to_model(tmp_path, tokenizer) -> None:
    dataset = write_dataset(tmp_path)
    collate = MultimodalCollate(dataset.modalities, tokenizer=tokenizer, max_length=12)
    order = [b.labels.tolist() for b in make_loader(dataset, 4, shuffle=True, seed=3, collate=collate)]
    again = [b.labels.tolist() for b in make_loader(dataset, 4, shuffle=True, seed=3, collate=collate)]
    assert order == again and sum(len(o) for o in order) == 6
    first = next(iter(make_loader(dataset, 3, seed=1, collate=collate)))
    repeat = next(iter(make_loader(dataset, 3, seed=1, collate=collate)))
    torch.testing.assert_close(first.inputs["image"], repeat.inputs["image"])  # seeded augmentation
    assert first.present["image"].tolist() == [True, False, True]
    assert first.masks["signal"].sum(dim=1).tolist() == [30, 35, 40]
    model = build_model(model_config("intermediate", dataset.modalities))
    assert model(first).logits.shape == (3, 3)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(dataset, 0, collate=collate)


def test_workers_are_seeded(tmp_path, tokenizer) -> None:
    dataset = write_dataset(tmp_path)
    collate = MultimodalCollate(dataset.modalities, tokenizer=tokenizer, max_length=12)
    runs = [torch.cat([b.inputs["image"] for b in make_loader(dataset, 2, shuffle=True, num_workers=2, seed=7,
                                                               collate=collate)]) for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1])

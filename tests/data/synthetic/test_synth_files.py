"""The triage cohort on disk: real-format files, a manifest the dataset reads, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from factories import assert_all_parameters_have_gradients
from medfusion.cli import app
from medfusion.data.collate import MultimodalCollate
from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_any, read_dicom, read_image
from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import load_masks, write_triage_cohort
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.models import build_model

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cohort = generate_triage(40, seed=3)
    out = tmp_path_factory.mktemp("triage")
    return cohort, out, write_triage_cohort(cohort, out)


def test_manifest_columns_and_missing_modalities(written) -> None:
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    assert frame["patient_id"].tolist() == cohort.patient_id.tolist()
    assert frame["pneumonia"].tolist() == cohort.pneumonia.astype(int).tolist()
    assert (frame["image"] != "").tolist() == cohort.present["image"].tolist()
    assert (frame["text"] != "").tolist() == cohort.present["text"].tolist()
    np.testing.assert_array_equal(frame[VITALS].to_numpy(np.float32), cohort.vitals)
    csv = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert csv["patient_id"].tolist() == frame["patient_id"].tolist()
    assert set(frame["split"]) <= {"train", "val", "test"}
    description = json.loads((out / "cohort.json").read_text())
    assert description["patients"] == 40 and description["settings"]["seed"] == 3
    assert description["ground_truth"] == cohort.ground_truth


def test_files_round_trip_through_the_readers(written) -> None:
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    i = int(np.flatnonzero(cohort.present["image"])[0])
    png = read_image(out / frame.loc[i, "image"])
    expected = np.rint(cohort.images[i] * 255) / 255
    np.testing.assert_allclose(png.array, expected, atol=1e-6)
    dicom = read_dicom(out / frame.loc[i, "image_dicom"])
    np.testing.assert_array_equal(dicom.array, np.rint(cohort.images[i] * 255))
    assert dicom.meta["modality"] == "DX" and dicom.meta["body_part"] == "CHEST"
    assert read_any(out / frame.loc[i, "image_dicom"]).modality == "image"
    j = int(np.flatnonzero(cohort.present["text"])[0])
    assert (out / frame.loc[j, "text"]).read_text(encoding="utf-8") == cohort.notes[j]


def test_masks_round_trip(written) -> None:
    cohort, out, _ = written
    masks = load_masks(out)
    np.testing.assert_array_equal(masks["masks"], cohort.masks)
    np.testing.assert_array_equal(masks["boxes"], cohort.boxes)
    assert masks["patient_id"].tolist() == cohort.patient_id.tolist()


def test_manifest_dataset_collate_and_model(written) -> None:
    cohort, out, manifest = written
    dataset = ManifestDataset(manifest, {"image": "image", "text": "text"}, "pneumonia", split="train",
                              vitals_columns=VITALS)
    tokenizer = WordPieceTokenizer.train(cohort.notes, vocab_size=200, min_frequency=1)
    collate = MultimodalCollate(["image", "text", "vitals"], tokenizer=tokenizer, max_length=64,
                                shapes={"image": (1, 128, 128), "vitals": (6,)})
    samples = [dataset[k] for k in range(8)]
    batch = collate(samples)
    rows = [int(np.flatnonzero(cohort.patient_id == s["patient_id"])[0]) for s in samples]
    assert batch.inputs["image"].shape == (8, 1, 128, 128)
    assert batch.present["image"].tolist() == cohort.present["image"][rows].tolist()
    assert batch.labels.tolist() == cohort.pneumonia[rows].astype(int).tolist()
    config = {"num_classes": 2, "fusion": {"name": "late", "params": {"rule": "learned", "hidden": 8}},
              "modalities": {
                  "image": {"encoder": {"name": "cnn", "params": {"widths": [4, 8], "out_dim": 8, "norm_groups": 2}}},
                  "text": {"encoder": {"name": "transformer", "params": {"vocab_size": tokenizer.vocab_size,
                                                                         "dim": 8, "heads": 2, "depth": 1,
                                                                         "max_length": 64}}},
                  "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 8, "out_dim": 8}}}}}
    torch.manual_seed(0)
    model = build_model(config).train()
    output, losses = model.loss(batch)
    losses["total"].backward()
    assert output.logits.shape == (8, 2) and torch.isfinite(losses["total"])
    assert_all_parameters_have_gradients(model)


def test_unknown_image_format_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"expected image formats among \['png', 'dicom'\], received \['jpeg'\]"):
        write_triage_cohort(generate_triage(5, seed=0), tmp_path, image_formats=["jpeg"])
    assert not (tmp_path / "manifest.parquet").exists()


def test_cli_synth_writes_a_cohort_and_refuses_unknown_scenarios(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--patients", "12", "--seed", "5", "--out", str(tmp_path / "c"),
                                 "--image-format", "png"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(tmp_path / "c" / "manifest.parquet")
    assert len(frame) == 12 and (frame["image_dicom"] == "").all()
    assert frame["patient_id"].tolist() == generate_triage(12, seed=5).patient_id.tolist()
    bad = runner.invoke(app, ["synth", "--scenario", "oncology", "--out", str(tmp_path / "d")], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "unknown scenario 'oncology'; available: triage" in bad.output

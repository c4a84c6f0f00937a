"""Embedding with a trained CLIP run, index build/add/remove, search, contact sheet, zero-shot, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.metrics import recall_at_k
from medfusion.retrieval.contact_sheet import contact_sheet
from medfusion.retrieval.embed import JointEmbedder
from medfusion.train.run import run_fingerprint
from medfusion.retrieval.indexing import build_index, search
from medfusion.retrieval.store import open_store
from medfusion.retrieval.zero_shot import (
    ZeroShotClassifier, class_prompts, evaluate_zero_shot, label_matrix, parse_classes,
)


@pytest.fixture(scope="module")
def embedder(clip_run) -> JointEmbedder:
    return JointEmbedder(clip_run)


@pytest.fixture(scope="module")
def image_index(embedder, retrieval_data, tmp_path_factory):
    location = tmp_path_factory.mktemp("index") / "images"
    report = build_index(embedder, retrieval_data, location)
    return location, report


def test_recall_at_k_hand_computed() -> None:
    similarity = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.3]])
    # ranks of the diagonal: query 0 first; query 1 second; query 2 ties with column 1 -> counted second
    assert recall_at_k(similarity, (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0)}
    with pytest.raises(ValueError, match="1 <= Q <= N"):
        recall_at_k(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="K >= 1"):
        recall_at_k(torch.eye(3), (0,))


def test_training_logs_recall_and_temperature(clip_run) -> None:
    summary = json.loads((clip_run / "run.json").read_text())
    assert summary["task"] == "contrastive" and summary["best_val_recall_mean"] is not None
    metrics = pd.read_csv(clip_run / "logs" / "metrics.csv")
    for column in ("val/recall@1/image_to_text", "val/recall@10/text_to_image", "val/recall_mean",
                   "train/temperature", "train/contrastive"):
        assert metrics[column].notna().any(), column
    recall = metrics["val/recall@10/image_to_text"].dropna()
    assert ((recall >= 0) & (recall <= 1)).all()


def test_embeddings_are_unit_and_match_between_paths(embedder, retrieval_data) -> None:
    frame = pd.read_parquet(retrieval_data / "manifest.parquet")
    paths = [retrieval_data / p for p in frame["image"].head(3)]
    from_files = embedder.embed_files(paths, "image")
    assert from_files.shape == (3, embedder.dim) and from_files.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_files, axis=1), 1.0, atol=1e-5)
    texts = embedder.embed_texts(["cardiomegaly", "no acute abnormality"])
    assert texts.shape == (2, embedder.dim)
    assert embedder.fingerprint == run_fingerprint(embedder.run_dir) and embedder.fingerprint.startswith("sha256:")
    with pytest.raises(ValueError, match="embeds \\['image', 'text'\\], received modality 'video'"):
        embedder.embed_files(paths, "video")
    with pytest.raises(ValueError, match="list of texts"):
        embedder.embed_texts("one string")


def test_build_index_stores_every_image_with_metadata(image_index, embedder, retrieval_data) -> None:
    location, report = image_index
    frame = pd.read_parquet(retrieval_data / "manifest.parquet")
    assert report.added == report.total == int((frame["image"] != "").sum()) and report.skipped == 0
    store = open_store(location)
    assert store.model == embedder.fingerprint and len(store) == report.added
    metadata = store.metadata()
    for column in ("modality", "path", "view", "body_part", "study_date", "age", "cardiomegaly", "split"):
        assert column in metadata.columns, column
    assert not any(c.startswith("gt_") for c in metadata.columns)
    assert "image_dicom" not in metadata.columns and "text" not in metadata.columns


def test_index_vectors_equal_direct_embeddings(image_index, embedder, retrieval_data) -> None:
    location, _ = image_index
    store = open_store(location)
    frame = pd.read_parquet(retrieval_data / "manifest.parquet").head(2)
    direct = embedder.embed_files([retrieval_data / p for p in frame["image"]], "image")
    np.testing.assert_allclose(store.get(frame["patient_id"].tolist()), direct, atol=1e-5)


def test_search_by_image_finds_itself_first(image_index, embedder, retrieval_data) -> None:
    location, _ = image_index
    frame = pd.read_parquet(retrieval_data / "manifest.parquet")
    row = frame.iloc[7]
    hits = search(embedder, open_store(location), file=retrieval_data / row["image"], k=3)
    assert hits[0].id == row["patient_id"] and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_by_text_with_filter(image_index, embedder) -> None:
    location, _ = image_index
    hits = search(embedder, open_store(location), text="cardiomegaly", k=5, where="view = 'AP' and age > 40")
    assert hits and all(h.metadata["view"] == "AP" and h.metadata["age"] > 40 for h in hits)
    with pytest.raises(ValueError, match="exactly one of text or file"):
        search(embedder, open_store(location), k=5)
    with pytest.raises(ValueError, match="blank"):
        search(embedder, open_store(location), text="  ", k=5)


def test_build_refuses_an_existing_index_and_add_appends(image_index, embedder, retrieval_data, tmp_path) -> None:
    location, report = image_index
    with pytest.raises(ValueError, match="already exists"):
        build_index(embedder, retrieval_data, location)
    frame = pd.read_parquet(retrieval_data / "manifest.parquet").head(5)
    frame["patient_id"] = "NEW-" + frame["patient_id"]
    extra = tmp_path / "manifest.csv"
    frame["image"] = [str(retrieval_data / p) for p in frame["image"]]
    frame.to_csv(extra, index=False)
    copy = tmp_path / "copy"
    build_index(embedder, retrieval_data, copy)
    added = build_index(embedder, extra, copy, add=True)
    assert added.added == 5 and added.total == report.total + 5
    assert open_store(copy).remove([frame["patient_id"].iloc[0]]) == 1
    assert open_store(copy).metadata().set_index("id").loc[frame["patient_id"].iloc[1], "abnormal"] in (0, 1)
    namespaced = build_index(embedder, retrieval_data, copy, add=True, id_prefix="site2/")
    assert namespaced.total == 2 * report.total + 4
    assert "site2/" + frame["patient_id"].iloc[1].removeprefix("NEW-") in set(open_store(copy).metadata()["id"])


def test_index_refuses_queries_from_another_model(image_index) -> None:
    location, _ = image_index
    store = open_store(location)
    with pytest.raises(ValueError, match="another model|built with model"):
        store.search(np.ones((1, store.dim), np.float32) / np.sqrt(store.dim), 1, model="sha256:0000")


def test_contact_sheet_draws_every_hit(image_index, embedder, tmp_path) -> None:
    location, _ = image_index
    hits = search(embedder, open_store(location), text="pleural effusion", k=7)
    path = contact_sheet(hits, tmp_path / "sheet.png", columns=4, size=64, title="pleural effusion")
    with Image.open(path) as image:
        assert image.size[0] == 4 * (64 + 8) + 8 and image.size[1] > 2 * 64
    with pytest.raises(ValueError, match="no hits"):
        contact_sheet([], tmp_path / "empty.png")


def test_class_prompts_templates_and_parse() -> None:
    prompts = class_prompts("effusion", ("{}.", "there is {}."))
    assert prompts == ["pleural effusion.", "there is pleural effusion.", "blunting of the costophrenic angle.",
                       "there is blunting of the costophrenic angle."]
    assert class_prompts("Atelectasis", ("{}",)) == ["Atelectasis"]
    assert parse_classes(" pneumonia, effusion,normal ") == ["pneumonia", "effusion", "normal"]
    with pytest.raises(ValueError, match="at least 2 distinct"):
        parse_classes("pneumonia")
    with pytest.raises(ValueError, match="templates containing"):
        class_prompts("nodule", ("no placeholder",))


def test_label_matrix_maps_aliases_and_normal() -> None:
    frame = pd.DataFrame({"consolidation": [True, False, False], "effusion": [False, True, False],
                          "abnormal": [1, 1, 0]})
    np.testing.assert_array_equal(label_matrix(frame, ["pneumonia", "effusion", "normal"]),
                                  [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="class 'fracture' has no label column"):
        label_matrix(frame, ["fracture", "normal"])


def test_zero_shot_probabilities_and_evaluation(embedder, retrieval_data) -> None:
    classifier = ZeroShotClassifier(embedder, ["cardiomegaly", "effusion", "normal"])
    assert classifier.prompt_embeddings.shape[:2] == (3, max(len(p) for p in classifier.prompts.values()))
    probabilities = classifier.probabilities(embedder.embed_texts(["heart enlarged", "clear lungs"]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    results = evaluate_zero_shot(embedder, retrieval_data, ["cardiomegaly", "normal"], split="test", n_boot=50)
    assert set(results) == {"cardiomegaly", "normal"}
    for row in results.values():
        assert row["n"] > 0
        if row["auroc"] is not None:
            assert 0.0 <= row["auroc"].low <= row["auroc"].value <= row["auroc"].high <= 1.0


def test_cli_index_search_and_zero_shot(clip_run, retrieval_data, tmp_path) -> None:
    runner = CliRunner()
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", "build", "--model", str(clip_run), "--data", str(retrieval_data),
                                 "--out", str(index), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "embedded" in result.output and (index / "CURRENT").is_file()
    sheet = tmp_path / "hits.png"
    result = runner.invoke(app, ["search", "bilateral infiltrates with cardiomegaly", "--model", str(clip_run),
                                 "--index", str(index), "-k", "3", "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert "3 hits" in result.output and sheet.is_file()
    result = runner.invoke(app, ["search", "x", "--model", str(clip_run), "--index", str(index),
                                 "--where", "colour = 'red'"])
    assert result.exit_code == 2 and "colour" in result.output
    out = tmp_path / "zero_shot.json"
    result = runner.invoke(app, ["zero-shot", "--model", str(clip_run), "--data", str(retrieval_data),
                                 "--classes", "cardiomegaly,normal", "--n-boot", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())["classes"]) == {"cardiomegaly", "normal"}


def test_finding_precision_hand_computed() -> None:
    from medfusion.retrieval.evaluation import finding_precision

    labels = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)
    similarity = np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.9], [0.5, 0.4, 0.3]])
    # query 0: top-2 = {0, 1} both [1, 0] -> 1.0; query 1: top-2 = {2, 0} -> 0.5; query 2: {0, 1} -> 0.0
    np.testing.assert_allclose(finding_precision(similarity, labels, 2), [1.0, 0.5, 0.0])


def test_evaluate_retrieval_reports_recall_and_precision(embedder, retrieval_data) -> None:
    from medfusion.retrieval.evaluation import evaluate_retrieval

    result = evaluate_retrieval(embedder, retrieval_data, split="test")
    assert result["pairs"] > 10
    for direction in ("image_to_text", "text_to_image"):
        values = result["recall"][direction]
        assert 0 <= values[1] <= values[5] <= values[10] <= 1
    precision = result["finding_precision"]
    assert precision["label_columns"][:2] == ["consolidation", "infiltrates"]
    assert all(0 <= v <= 1 for v in precision["all"].values())


def test_cli_evaluate_a_contrastive_run(clip_run) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(clip_run)])
    assert result.exit_code == 0, result.output
    assert "R@10" in result.output and "finding precision" in result.output
    saved = json.loads((clip_run / "retrieval_metrics.json").read_text())
    assert set(saved["recall"]) == {"image_to_text", "text_to_image"}


def test_interrupted_build_keeps_committed_rows_and_resumes(embedder, retrieval_data, tmp_path) -> None:
    location = tmp_path / "index"

    def crash(done: int, total: int) -> None:
        if done >= 96:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(embedder, retrieval_data, location, batch_size=16, commit_every=32, progress=crash)
    kept = len(open_store(location))
    assert kept >= 32 and kept % 32 == 0 and kept < 160
    resumed = build_index(embedder, retrieval_data, location, add=True, skip_existing=True, batch_size=16)
    assert resumed.added == 160 - kept and resumed.total == 160
    assert open_store(location).metadata()["id"].is_unique

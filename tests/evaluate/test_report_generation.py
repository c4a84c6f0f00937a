"""Report-generation evaluation, attention pages and the report commands (tiny pathology run)."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from medfusion.cli import app as medfusion_app
from medfusion.cli_report import report, report_eval
from medfusion.data.synthetic.scenarios import synthesize
from medfusion.evaluate.labeler import FindingLabeler
from medfusion.evaluate.report_generation import (
    NEAREST_NEIGHBOUR, GroundingScores, GroundTruthMasks, Highlight, WrittenReport, evaluate_report_run,
    finding_highlights, sentence_highlights, token_text,
)
from medfusion.evaluate.report_metrics import GROUNDING_KEYS, TABLE_COLUMNS
from medfusion.evaluate.report_page import (
    ReportExplanation, explain_report, load_report_image, overlay, page_figure, write_report_page,
)
from medfusion.train.report_config import ReportTrainConfig
from medfusion.train.report_run import load_report_run, train_report

CONFIG = {
    "data": {"image_size": 32, "vocab_size": 150, "max_length": 48},
    "model": {"encoder": {"name": "cnn", "params": {"in_channels": 3, "widths": [8, 16], "out_dim": 16,
                                                    "norm_groups": 4}},
              "decoder": {"dim": 16, "layers": 1, "heads": 2, "ff_mult": 2, "max_length": 48}},
    "optim": {"batch_size": 8, "max_epochs": 1, "lr": 0.003},
    "decode": {"methods": ["beam", "greedy"], "beam_size": 2, "max_length": 12},
    "run": {"progress": False, "threads": 1},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 48-patient pathology cohort on disk: (cohort, manifest path)."""
    return synthesize("pathology", 48, 0, tmp_path_factory.mktemp("pathology"), image_size=64)


@pytest.fixture(scope="module")
def run(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = copy.deepcopy(CONFIG)
    config["data"]["manifest"], config["run"]["out"] = str(cohort[1]), str(out)
    train_report(ReportTrainConfig.model_validate(config))
    return out


@pytest.fixture(scope="module")
def evaluated(run) -> dict:
    return evaluate_report_run(run, "test")


def image_path(cohort) -> Path:
    data, manifest = cohort
    index = int(np.flatnonzero((data.split == "test") & data.present["image"])[0])
    return manifest.parent / "images" / f"{data.patient_id[index]}.png"


# -- text and highlights ----------------------------------------------------------------------------


def test_token_text_matches_decode_and_spans_cover_the_pieces(run, cohort) -> None:
    _, tokenizer, _ = load_report_run(run)
    for text in [r for r in cohort[0].reports if r][:10]:
        ids = tokenizer.encode([text]).ids[0].tolist()
        rebuilt, spans = token_text(tokenizer, ids)
        assert rebuilt == tokenizer.decode(ids).replace(" ;", ";")
        assert len(spans) == len(ids) and spans[0] == (0, 0) and spans[-1][0] == spans[-1][1]  # [CLS], [SEP]
        for token, (start, end) in zip(ids[1:-1], spans[1:-1]):
            assert rebuilt[start:end] == tokenizer.decode([token]).removeprefix("##")


def written(text: str, grid: tuple[int, int] = (3, 3), peaks: dict[str, int] | None = None) -> WrittenReport:
    """A report whose tokens are its words, each attending uniformly except the words in ``peaks``."""
    spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
    attention = np.full((len(spans), *grid), 1.0 / math.prod(grid), dtype=np.float32)
    for word, cell in (peaks or {}).items():
        for i, (a, b) in enumerate(spans):
            if text[a:b] == word:
                attention[i] = 0.0
                attention[i].flat[cell] = 1.0
    return WrittenReport(text, spans, attention, 0.0)


def test_highlights_keep_positive_mentions_with_their_tokens_attention() -> None:
    report = written("Sheets of tumour cells in the center region. No necrosis identified.",
                     peaks={"tumour": 4, "cells": 4})
    words = finding_highlights(report, FindingLabeler("pathology"))
    assert [(w.text, w.finding) for w in words] == [("tumour cells", "tumour")]  # negated necrosis left out
    assert words[0].attention[1, 1] == 1.0 and words[0].attention.sum() == pytest.approx(1.0)
    sentences = sentence_highlights(report)
    assert [s.text for s in sentences] == ["Sheets of tumour cells in the center region.", "No necrosis identified."]
    assert sentences[1].attention == pytest.approx(np.full((3, 3), 1 / 9))


def test_grounding_scores_hand_computed(cohort, tmp_path: Path) -> None:
    truth = GroundTruthMasks(cohort[1].parent)
    data = cohort[0]
    patient = int(np.flatnonzero(data.findings[:, 0])[0])  # a patient with a tumour
    mask = truth.mask(str(data.patient_id[patient]), "tumour")
    assert mask is not None and np.array_equal(mask, data.masks[patient, 0])
    assert truth.mask(str(data.patient_id[patient]), "no such finding") is None
    grid = np.zeros((8, 8))
    rows, cols = np.nonzero(mask)
    grid[rows[0] * 8 // mask.shape[0], cols[0] * 8 // mask.shape[1]] = 1.0  # all attention on a tumour cell
    outside = np.ones((8, 8)) - mask.reshape(8, mask.shape[0] // 8, 8, mask.shape[1] // 8).any(axis=(1, 3))
    grounded = GroundingScores()
    sentences = [Highlight("tumour gland", 0, 13, None, outside)]  # the sentence looks only off the tumour
    grounded.add([Highlight("tumour", 0, 6, "tumour", grid), Highlight("gland", 7, 12, "necrosis", grid)],
                 sentences, str(data.patient_id[patient]), truth)
    summary = grounded.summary()
    expected_chance = mask.mean()
    assert summary["words"] == 1 + int(data.masks[patient, 2].any())
    tumour = summary["findings"]["tumour"]
    assert tumour["words"] == 1 and tumour["uniform_mass_inside"] == pytest.approx(expected_chance)
    block = mask.reshape(8, mask.shape[0] // 8, 8, mask.shape[1] // 8).mean(axis=(1, 3))
    assert tumour["mass_inside"] == pytest.approx(block[rows[0] * 8 // mask.shape[0], cols[0] * 8 // mask.shape[1]])
    assert tumour["sentence_mass_inside"] == 0.0 and tumour["sentence_pointing_game"] == 0.0
    empty = GroundingScores().summary()
    assert empty["words"] == 0 and all(math.isnan(empty[key]) for key in GroundingScores.KEYS[1:])


# -- evaluation -----------------------------------------------------------------------------------------


def test_evaluation_table(evaluated, run) -> None:
    table = evaluated["table"]
    assert [row["system"] for row in table] == ["generator, beam 2", "generator, greedy", NEAREST_NEIGHBOUR]
    for row in table:
        assert list(row) == list(TABLE_COLUMNS)
        for column in TABLE_COLUMNS[1:7]:
            assert 0.0 <= row[column] <= 1.0, (row["system"], column)
    assert all(math.isnan(table[-1][key]) for key in GROUNDING_KEYS)  # no attention
    assert evaluated["domain"] == "pathology" and evaluated["ground_truth_masks"]
    assert evaluated["reports"] == len(load_split_pairs(run))
    for name in ("generator, beam 2", "generator, greedy"):
        grounding = evaluated["grounding"][name]
        assert set(grounding) == {*GroundingScores.KEYS, "findings"}
        assert grounding["words"] == 0 or 0.0 <= grounding["mass_inside"] <= 1.0
        assert grounding["words"] == 0 or 0.0 <= grounding["sentence_pointing_game"] <= 1.0
    assert set(evaluated["clinical"][NEAREST_NEIGHBOUR]["findings"]) == set(FindingLabeler("pathology").findings)
    saved = json.loads((run / "report_metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert saved["table"][-1]["pointing_game"] is None
    markdown = (run / "report_metrics.md").read_text()
    assert "| nearest neighbour |" in markdown and "| – | – |" in markdown


def load_split_pairs(run: Path) -> list:
    from medfusion.train.report_data import ReportDataModule

    model, tokenizer, config = load_report_run(run)
    return list(ReportDataModule(config.data, 3, 8, tokenizer=tokenizer).pairs("test"))


def test_nearest_neighbour_copies_training_reports(run) -> None:
    from medfusion.evaluate.report_metrics import nearest_neighbour_reports
    from medfusion.train.report_data import ReportDataModule

    model, tokenizer, config = load_report_run(run)
    train = list(ReportDataModule(config.data, 3, 8, tokenizer=tokenizer).pairs("train"))
    with torch.no_grad():
        features = model.image_encoder(torch.from_numpy(np.stack([p.image for p in train]))).pooled.numpy()
    copied = nearest_neighbour_reports(features, [p.report for p in train], features[:5])
    assert copied == [p.report for p in train[:5]]  # a training image is its own nearest neighbour


def test_evaluation_rejects_unknown_split_and_domain(run) -> None:
    with pytest.raises(ValueError, match="unknown split role"):
        evaluate_report_run(run, "holdout")
    with pytest.raises(ValueError, match="unknown domain"):
        evaluate_report_run(run, "test", "cardiac")


# -- page -------------------------------------------------------------------------------------------------


def explanation() -> ReportExplanation:
    text = "Sheets of tumour cells in the center region. Necrotic debris fills the upper left region."
    first, second = np.zeros((4, 4)), np.zeros((4, 4))
    first[1, 1], second[0, 0] = 1.0, 1.0
    sentences = [Highlight(text[:44], 0, 44, None, first), Highlight(text[45:], 45, len(text), None, second)]
    words = [Highlight("tumour cells", 10, 22, "tumour", first),
             Highlight("Necrotic debris", 45, 60, "necrosis", second)]
    image = np.random.default_rng(0).random((64, 64, 3))
    return ReportExplanation(text, image, sentences, words, "greedy")


def test_overlay_colours_where_attention_peaks() -> None:
    image = np.full((64, 64, 3), 0.5)
    attention = np.zeros((4, 4))
    attention[0, 0] = 1.0
    pixels = overlay(image, attention)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert not np.array_equal(pixels[4, 4], [128, 128, 128]) and np.array_equal(pixels[60, 60], [128, 128, 128])
    assert np.array_equal(overlay(image, np.ones((4, 4))), np.full((64, 64, 3), 128))  # flat map: image only


def test_page_has_one_map_per_finding_word_and_no_external_resource(tmp_path: Path) -> None:
    page = write_report_page(explanation(), tmp_path)
    assert sorted(p.name for p in page.overlays) == ["sentence_01.png", "sentence_02.png",
                                                     "word_01_tumour.png", "word_02_necrosis.png"]
    assert page.text.read_text() == explanation().text + "\n"
    content = page.html.read_text()
    assert content.count('class="word"') == 2 and content.count('class="sentence"') == 2
    assert re.findall(r'data-map="(w\d+)"', content) == ["w1", "w2"]
    maps = json.loads(re.search(r"const MAPS = (\{.*?\});", content).group(1))
    assert set(maps) == {"plain", "s1", "s2", "w1", "w2"}
    assert all(uri.startswith("data:image/png;base64,") for uri in maps.values())
    assert content.count('tabindex="0"') == 4 and 'addEventListener("focus"' in content
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", content)
    assert not re.search(r"https?:|//|<link|@import|url\(", outside_images)
    assert [v[:5] for v in re.findall(r'src="([^"]*)"', content)] == ["data:"]  # the one <img>
    assert ">tumour cells</span>" in content and "Sheets of" in content


def test_page_figure(tmp_path: Path) -> None:
    path = page_figure(explanation(), tmp_path / "figure.png", reference="Sheets of tumour cells.")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_report_on_a_trained_run(run, cohort, tmp_path: Path) -> None:
    model, tokenizer, config = load_report_run(run)
    image = load_report_image(image_path(cohort))
    assert image.shape == (3, 64, 64) and 0.0 <= image.min() and image.max() <= 1.0
    result = explain_report(model, tokenizer, config, image, method="greedy")
    assert result.image.shape == (256, 256, 3) and result.method == "greedy"
    for highlight in [*result.sentences, *result.words]:
        assert highlight.attention.shape == (8, 8)
        assert result.text[highlight.start:highlight.end] == highlight.text
    assert explain_report(model, tokenizer, config, image, method="beam", beam_size=2).method == "beam 2"
    with pytest.raises(ValueError, match="beam_size"):
        explain_report(model, tokenizer, config, image, method="greedy", beam_size=2)


def test_load_report_image_rescales_dicom(tmp_path: Path) -> None:
    from medfusion.data.io import write_dicom

    pixels = (np.arange(64 * 64).reshape(64, 64) % 3000).astype(np.uint16)
    write_dicom(tmp_path / "x.dcm", pixels, modality="DX")
    image = load_report_image(tmp_path / "x.dcm")
    assert image.shape == (1, 64, 64) and image.min() == 0.0 and image.max() == 1.0
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt"):
        load_report_image(tmp_path / "notes.txt")


# -- commands -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(report)
    app.command("report-eval")(report_eval)
    return app


def test_report_command_writes_the_page(cli, run, cohort, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", "--model", str(run), "--image", str(image_path(cohort)),
                                      "--explain", str(tmp_path / "out"), "--method", "greedy"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "report.txt").is_file()
    assert (tmp_path / "out" / "report.txt").read_text().strip() in result.output


def test_report_command_fails_on_a_bad_image_path(cli, run, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    result = CliRunner().invoke(cli, ["report", "--model", str(run), "--image", str(missing)])
    assert result.exit_code == 2
    assert "nowhere.png" in result.output.replace("\n", "")


def test_report_eval_and_train_commands(cli, run, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report-eval", str(run), "--split", "val"])
    assert result.exit_code == 0, result.output
    assert "sentence_pointing_game" in result.output and "report_metrics.json" in result.output.replace("\n", "")
    assert "neighbour" in result.output  # the baseline's column (its header may wrap)
    assert json.loads((run / "report_metrics.json").read_text())["split"] == "val"
    bad = CliRunner().invoke(medfusion_app, ["train", str(tmp_path / "absent.yaml")])
    assert bad.exit_code == 2 and "no such config file" in bad.output.replace("\n", "")

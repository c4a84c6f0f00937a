"""Report-generation metrics: BLEU / ROUGE-L by hand, clinical scores, grounding maps, nearest-neighbour baseline."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_fscore_support

from medfusion.data.synthetic.pathology import generate_pathology, word_masks
from medfusion.evaluate.labeler import FindingLabeler
from medfusion.evaluate.report_metrics import (
    GROUNDING_KEYS,
    TABLE_COLUMNS,
    attention_mass_inside,
    attention_mass_inside_batch,
    bleu_scores,
    clinical_scores,
    nearest_neighbour_reports,
    normalise_report,
    pointing_game,
    pointing_game_batch,
    report_generation_table,
    rouge_l,
    upsample_attention,
)

CHEST = FindingLabeler("chest")
PEAK_TOP_RIGHT = np.array([[0.0, 1.0], [0.0, 0.0]])


def only(pixel: tuple[int, int], size: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[pixel] = True
    return mask


# --------------------------------------------------------------------------- text overlap


def test_normalise_report():
    text = "FINDINGS: No  pleural-effusion.\n3.5 cm Nodule!"
    assert normalise_report(text) == "findings no pleural effusion 3 5 cm nodule"


def test_identical_texts_score_one():
    refs = ["The heart is mildly enlarged. No pleural effusion.", "Small right apical pneumothorax is seen."]
    assert bleu_scores(refs, refs) == pytest.approx({f"bleu_{n}": 1.0 for n in (1, 2, 3, 4)})
    assert rouge_l(refs, refs) == pytest.approx(1.0)
    # case and punctuation do not count
    assert bleu_scores(refs, [r.upper().replace(".", "") for r in refs])["bleu_4"] == pytest.approx(1.0)


def test_bleu_brevity_penalty_by_hand():
    # all 1-, 2- and 3-grams of "the cat sat" match; c = 3 < r = 6: BP = exp(1 - 6 / 3)
    scores = bleu_scores(["the cat sat on the mat"], ["the cat sat"])
    assert scores["bleu_1"] == pytest.approx(math.exp(-1))
    assert scores["bleu_3"] == pytest.approx(math.exp(-1))
    assert scores["bleu_4"] == 0.0  # no 4-gram at all and no smoothing


def test_bleu_is_pooled_over_the_corpus_and_clipped():
    # unigrams: 3 of 4 + 2 of 2 = 5 / 6; bigrams: 1 of 3 + 1 of 1 = 2 / 4; lengths equal: BP = 1
    scores = bleu_scores(["a b c d", "e f"], ["a b x d", "e f"])
    assert scores["bleu_1"] == pytest.approx(5 / 6)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 2 / 4))
    # "the" counts at most as often as in the reference; c = 4 > r = 2: BP = 1
    assert bleu_scores(["the cat"], ["the the the the"])["bleu_1"] == pytest.approx(1 / 4)


def test_rouge_l_by_hand():
    # LCS("a b c d e", "a c e f") = "a c e": P = 3/4, R = 3/5, F1 = 2/3; the second pair scores 0
    assert rouge_l(["a b c d e"], ["a c e f"]) == pytest.approx(2 / 3)
    assert rouge_l(["a b c d e", "x y"], ["a c e f", "z"]) == pytest.approx(1 / 3)
    assert rouge_l(["a b"], [""]) == 0.0


@pytest.mark.parametrize("refs, hyps, match", [
    (["a"], ["a", "b"], "as many hypotheses as references"),
    ([], [], "as many hypotheses as references"),
    ("a", "a", "references as a sequence of strings, received str"),
    (["a"], [None], "hypotheses to hold strings, received NoneType at index 0"),
])
def test_text_metrics_reject_bad_input(refs, hyps, match):
    for metric in (bleu_scores, rouge_l):
        with pytest.raises(ValueError, match=match):
            metric(refs, hyps)


# --------------------------------------------------------------------------- clinical correctness


def test_clinical_scores_by_hand():
    refs = ["Small right pleural effusion.", "Cardiomegaly. Small left effusion.", "No acute abnormality."]
    hyps = ["Right pleural effusion.", "No effusion. Mild cardiomegaly.", "Small pneumothorax."]
    scores = clinical_scores(refs, hyps, CHEST)
    # effusion: tp 1, fn 1; cardiomegaly: tp 1; pneumothorax: fp 1; no finding: fn 1
    assert scores["findings"]["effusion"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert scores["findings"]["cardiomegaly"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["findings"]["pneumothorax"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # micro: tp 2, fp 1, fn 2 -> P 2/3, R 1/2, F1 4/7
    assert scores["micro"] == pytest.approx({"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4})
    truth, predicted = CHEST.label_matrix(refs), CHEST.label_matrix(hyps)
    for average in ("micro", "macro"):
        expected = precision_recall_fscore_support(truth, predicted, average=average, zero_division=0)[:3]
        got = scores[average]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(expected)


def test_clinical_scores_reject_a_non_labeler():
    with pytest.raises(ValueError, match="labeler to be a FindingLabeler, received str"):
        clinical_scores(["a"], ["a"], "chest")


# --------------------------------------------------------------------------- grounding maps


def test_upsample_by_hand():
    # bilinear, half-pixel centres: rows weigh the top cell by 1, 3/4, 1/4, 0; columns the right cell by 0, 1/4, 3/4, 1
    up = upsample_attention(PEAK_TOP_RIGHT, (4, 4))
    assert up == pytest.approx(np.outer([1, 0.75, 0.25, 0], [0, 0.25, 0.75, 1]))
    assert upsample_attention(PEAK_TOP_RIGHT, (4, 4), mode="nearest") == pytest.approx(np.kron(PEAK_TOP_RIGHT,
                                                                                                np.ones((2, 2))))
    # mass kept: the token's 1 spread over its 2 x 2 block
    kept = upsample_attention(PEAK_TOP_RIGHT, (4, 4), mode="nearest", preserve_mass=True)
    assert kept == pytest.approx(np.kron(PEAK_TOP_RIGHT, np.full((2, 2), 0.25)))


@pytest.mark.parametrize("grid, size", [((2, 2), (4, 4)), ((3, 3), (64, 64)), ((4, 5), (17, 23)), ((7, 3), (7, 3))])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_matches_torch_and_keeps_mass(grid, size, mode):
    attention = np.random.default_rng(0).random((2, *grid))
    options = {"align_corners": False} if mode == "bilinear" else {}
    expected = F.interpolate(torch.from_numpy(attention)[:, None], size=size, mode=mode, **options)[:, 0].numpy()
    assert upsample_attention(attention, size, mode=mode) == pytest.approx(expected, abs=1e-12)
    kept = upsample_attention(attention, size, mode=mode, preserve_mass=True)
    assert kept.shape == (2, *size) and kept.sum(axis=(1, 2)) == pytest.approx(attention.sum(axis=(1, 2)))


def test_pointing_game_by_hand():
    # bilinear: the peak pixel is the top-right corner (0, 3)
    assert pointing_game(PEAK_TOP_RIGHT, only((0, 3)))
    assert not pointing_game(PEAK_TOP_RIGHT, only((0, 2)))
    # nearest: the centre of the peak token's block (rows 0-1, columns 2-3), rounded down, is (0, 2)
    assert pointing_game(PEAK_TOP_RIGHT, only((0, 2)), mode="nearest")
    assert not pointing_game(PEAK_TOP_RIGHT, only((0, 3)), mode="nearest")
    # 3 tokens on 7 pixels: blocks 0-2, 3-4, 5-6 (rows as histology.region_map); the middle of 3-4 is 3
    column = np.array([[0.0], [1.0], [0.0]])
    assert pointing_game(column, np.eye(7, 1, -3, dtype=bool), mode="nearest")
    # a constant map points nowhere
    assert not pointing_game(np.ones((2, 2)), np.ones((4, 4), dtype=bool))


def test_attention_mass_inside_by_hand():
    diagonal = np.eye(4, dtype=bool)
    # token (0, 0) holds half the mass and 2 of its 4 pixels are on the diagonal; token (0, 1) none
    assert attention_mass_inside(np.array([[0.5, 0.5], [0.0, 0.0]]), diagonal) == pytest.approx(0.25)
    assert attention_mass_inside(np.array([[3.0, 3.0], [0.0, 0.0]]), diagonal) == pytest.approx(0.25)  # renormalised
    assert attention_mass_inside(np.zeros((2, 2)), diagonal) == 0.0
    # uniform attention puts the mask's area share inside
    assert attention_mass_inside(np.ones((2, 2)), diagonal) == pytest.approx(4 / 16)
    # bilinear: token (0, 0) spreads 1/2, 3/8, 1/8, 0 along each axis; the top-left block holds (1/2 + 3/8)^2
    top_left = np.kron(np.array([[1, 0], [0, 0]]), np.ones((2, 2))).astype(bool)
    assert attention_mass_inside(np.array([[1.0, 0.0], [0.0, 0.0]]), top_left, mode="bilinear") == \
        pytest.approx((7 / 8) ** 2)


def test_batch_versions_equal_single_ones():
    rng = np.random.default_rng(1)
    attention = rng.random((5, 3, 3))
    masks = rng.random((5, 12, 12)) < 0.3
    for mode in ("bilinear", "nearest"):
        hits = pointing_game_batch(attention, masks, mode=mode)
        mass = attention_mass_inside_batch(attention, masks, mode=mode)
        assert hits.tolist() == [pointing_game(a, m, mode=mode) for a, m in zip(attention, masks)]
        assert mass == pytest.approx([attention_mass_inside(a, m, mode=mode) for a, m in zip(attention, masks)])


@pytest.mark.parametrize("attention, mask, match", [
    (np.ones((2, 2)), np.zeros((4, 4), dtype=bool), "non-empty masks.*indices \\[0\\]"),
    (np.ones(4), np.ones((4, 4), dtype=bool), "attention as a numeric array \\(..., h, w\\)"),
    (np.ones((2, 2, 2)), np.ones((4, 4), dtype=bool), "attention of shape \\(h, w\\)"),
    (np.ones((2, 2)), np.ones((4, 4, 1), dtype=bool), "mask of shape \\(H, W\\)"),
    (np.ones((2, 2)), np.full((4, 4), 0.5), "bool \\(or 0/1\\) mask"),
    (np.array([[1.0, -1.0], [0.0, 0.0]]), np.ones((4, 4), dtype=bool), "finite non-negative attention"),
    (np.array([[1.0, np.nan], [0.0, 0.0]]), np.ones((4, 4), dtype=bool), "finite non-negative attention"),
    (np.ones((8, 8)), np.ones((4, 4), dtype=bool), "the attention grid \\(8, 8\\), received \\(4, 4\\)"),
])
def test_grounding_rejects_bad_input(attention, mask, match):
    for metric in (pointing_game, attention_mass_inside):
        with pytest.raises(ValueError, match=match):
            metric(attention, mask)


def test_grounding_rejects_bad_mode_and_size():
    with pytest.raises(ValueError, match="unknown mode 'area'"):
        pointing_game(PEAK_TOP_RIGHT, only((0, 3)), mode="area")
    with pytest.raises(ValueError, match="size as two ints"):
        upsample_attention(PEAK_TOP_RIGHT, (4,))
    with pytest.raises(ValueError, match="masks of shape \\(B=2, H, W\\)"):
        pointing_game_batch(np.ones((2, 2, 2)), np.ones((3, 4, 4), dtype=bool))


def test_grounding_on_pathology_word_masks():
    """An attention pooled from the word's own mask points into it; random attention rarely does."""
    cohort = generate_pathology(60, seed=0, missing={"image": 0.0, "text": 0.0}, image_size=64)
    words = cohort.sentences[~cohort.sentences["negated"]]
    masks = word_masks(words, cohort.masks, cohort.patient_id)  # (R, 64, 64)
    oracle = masks.reshape(len(masks), 8, 8, 8, 8).mean(axis=(2, 4))  # area-pooled onto an 8 x 8 grid
    random = np.random.default_rng(0).random(oracle.shape)
    assert pointing_game_batch(oracle, masks).mean() > 0.75  # misses: mitoses are 3-pixel discs
    assert pointing_game_batch(random, masks).mean() < 0.1
    assert attention_mass_inside_batch(oracle, masks).mean() > 0.4
    assert attention_mass_inside_batch(random, masks).mean() < 0.1


# --------------------------------------------------------------------------- baseline and table


def test_nearest_neighbour_reports_by_hand():
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    reports = ["a", "b", "c", "d"]
    # cosines of (2, 0.1): 0.999, 0.050, 0.741, 0.999 (rows 0 and 3 tie exactly: the lowest index wins)
    query = np.array([[2.0, 0.1], [1.0, 1.0], [0.0, -1.0], [3.0, 0.0]])
    assert nearest_neighbour_reports(train, reports, query) == ["a", "c", "a", "a"]
    assert nearest_neighbour_reports(train, np.array(reports), query[1:2]) == ["c"]  # any sequence of reports


@pytest.mark.parametrize("train, reports, query, match", [
    (np.zeros((2, 2)), ["a", "b"], np.ones((1, 2)), "finite non-zero rows of train_features"),
    (np.eye(2), ["a", "b"], np.ones((1, 3)), "D=2 like train_features, received D=3"),
    (np.eye(2), ["a"], np.ones((1, 2)), "2 train_reports.*received 1"),
    (np.eye(2), "ab", np.ones((1, 2)), "train_reports as a sequence of strings, received str"),
    (np.ones(2), ["a", "b"], np.ones((1, 2)), "train_features as a non-empty numeric \\(rows, D\\)"),
])
def test_nearest_neighbour_rejects_bad_input(train, reports, query, match):
    with pytest.raises(ValueError, match=match):
        nearest_neighbour_reports(train, reports, query)


def test_report_generation_table():
    refs = ["Small right pleural effusion. No pneumothorax.", "Mild cardiomegaly. Lungs are clear."]
    rows = report_generation_table(refs, {"copy": refs, "normal": ["No acute abnormality."] * 2}, CHEST,
                                   grounding={"copy": {"pointing_game": 0.5, "mass_inside": 0.25}})
    assert [row["system"] for row in rows] == ["copy", "normal"] and all(tuple(r) == TABLE_COLUMNS for r in rows)
    copy, normal = rows
    assert copy["bleu_4"] == pytest.approx(1.0) and copy["rouge_l"] == pytest.approx(1.0)
    assert copy["clinical_micro_f1"] == 1.0 and copy["pointing_game"] == 0.5 and copy["mass_inside"] == 0.25
    assert normal["clinical_micro_f1"] == 0.0 and math.isnan(normal["pointing_game"])
    with pytest.raises(ValueError, match="unknown system\\(s\\) \\['other'\\]"):
        report_generation_table(refs, {"copy": refs}, CHEST, grounding={"other": {"pointing_game": 1.0}})
    keys = re.escape(str(list(GROUNDING_KEYS)))
    with pytest.raises(ValueError, match=f"keys from {keys}"):
        report_generation_table(refs, {"copy": refs}, CHEST, grounding={"copy": {"hits": 1.0}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        report_generation_table(refs, {}, CHEST)

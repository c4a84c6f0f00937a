"""The pathology cohort: H&E patches measured from pixel colour, reports linked to masks, label design, files."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_image
from medfusion.data.synthetic.files import load_masks
from medfusion.data.synthetic.histology import (
    EOSIN, GLAND, HAEMATOXYLIN, HISTOLOGY_FINDINGS, LYMPHOCYTES, MITOSIS, NECROSIS, REGION_NAMES, TUMOUR,
    HistologySpec, region_masks, render_histology,
)
from medfusion.data.synthetic.pathology import (
    MITOSIS_THRESHOLD, PathologyCohort, generate_pathology, word_masks, write_pathology_cohort,
)

N = 1200
REGION_WORDS = re.compile("|".join(sorted(REGION_NAMES, key=len, reverse=True)))
CELLS = region_masks(128)


@pytest.fixture(scope="module")
def cohort() -> PathologyCohort:
    return generate_pathology(N, seed=0)


@pytest.fixture(scope="module")
def stain(cohort) -> np.ndarray:
    """(N, H, W) haematoxylin per pixel, unmixed from the RGB colour (Beer-Lambert, two stains)."""
    od = -np.log(np.clip(cohort.images, 1e-3, 1)).transpose(0, 2, 3, 1)
    unmix = np.linalg.pinv(np.stack([HAEMATOXYLIN, EOSIN], axis=1))  # (2, 3)
    return od @ unmix[0]


@pytest.fixture(scope="module")
def seen(cohort) -> np.ndarray:
    """(N, F, H, W) finding masks of the patients whose image is present."""
    return cohort.masks & cohort.present["image"][:, None, None, None]


def nuclear_fraction(stain: np.ndarray, masks: np.ndarray) -> float:
    return float((stain[masks] > 0.4).mean())


def test_shapes_dtypes_ids(cohort):
    n = len(cohort)
    assert cohort.images.shape == (n, 3, 128, 128) and cohort.images.dtype == np.float32
    assert 0 <= cohort.images.min() and cohort.images.max() <= 1
    assert cohort.masks.shape == (n, len(HISTOLOGY_FINDINGS), 128, 128) and cohort.masks.dtype == bool
    assert cohort.boxes.shape == (n, len(HISTOLOGY_FINDINGS), 4)
    assert cohort.regions.shape == (n, len(HISTOLOGY_FINDINGS), 9) and cohort.mitoses.shape == (n, 9)
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.patient_id.tolist())) == n
    assert cohort.high_grade.dtype == np.int64 and set(np.unique(cohort.high_grade)) == {0, 1}
    np.testing.assert_array_equal(cohort.masks.any(axis=(2, 3)), cohort.findings)


def test_deterministic_and_missingness_leaves_content_unchanged():
    a, b = generate_pathology(30, seed=4), generate_pathology(30, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.reports == b.reports
    pd.testing.assert_frame_equal(a.sentences, b.sentences)
    assert not np.array_equal(a.images, generate_pathology(30, seed=5).images)
    full = generate_pathology(30, seed=4, missing={}, label_noise=0.0)
    keep = a.present["image"]
    np.testing.assert_array_equal(a.images[keep], full.images[keep])
    assert [r for r, k in zip(a.reports, a.present["text"]) if k] == \
        [r for r, k in zip(full.reports, a.present["text"]) if k]
    np.testing.assert_array_equal(full.high_grade, full.high_grade_true)


def test_tumour_is_denser_in_nuclei_than_stroma(cohort, stain, seen):
    stroma = ~seen.any(axis=1) & cohort.present["image"][:, None, None]
    tumour = nuclear_fraction(stain, seen[:, TUMOUR])
    lymphoid = nuclear_fraction(stain, seen[:, LYMPHOCYTES])
    assert tumour > 0.4 and lymphoid > 0.4 and nuclear_fraction(stain, stroma) < 0.05
    # lymphocytes: uniformly dark; tumour nuclei: paler and pleomorphic (their darkness varies more)
    tumour_nuclei = stain[seen[:, TUMOUR] & ~seen[:, MITOSIS] & (stain > 0.4)]
    lymphocyte_nuclei = stain[seen[:, LYMPHOCYTES] & (stain > 0.4)]
    assert np.median(lymphocyte_nuclei) > np.median(tumour_nuclei) + 0.2
    assert tumour_nuclei.std() / tumour_nuclei.mean() > lymphocyte_nuclei.std() / lymphocyte_nuclei.mean()


def test_mitoses_are_darker_and_countable(cohort, stain):
    rows = np.flatnonzero(cohort.findings[:, MITOSIS] & cohort.present["image"])
    mitosis_peak = np.array([stain[i][cohort.masks[i, MITOSIS]].max() for i in rows])
    others = cohort.masks[:, TUMOUR] & ~cohort.masks[:, MITOSIS]
    nucleus_peak = np.array([np.percentile(stain[i][others[i]], 99.5) for i in rows if others[i].any()])
    assert np.median(mitosis_peak) > 2.5 and np.median(nucleus_peak) < 1.7
    measured, truth = [], []
    for i in np.flatnonzero(cohort.findings[:, TUMOUR] & cohort.present["image"]):
        for r in np.flatnonzero(cohort.regions[i, TUMOUR]):
            measured.append(ndimage.label((stain[i] > 2.0) & CELLS[r])[1])
            truth.append(cohort.mitoses[i, r])
    measured, truth = np.array(measured), np.array(truth)
    assert np.corrcoef(measured, truth)[0, 1] > 0.9
    assert ((measured >= MITOSIS_THRESHOLD) == (truth >= MITOSIS_THRESHOLD)).mean() > 0.9


def test_necrosis_has_few_nuclei_and_glands_a_white_lumen(cohort, stain, seen):
    assert nuclear_fraction(stain, seen[:, NECROSIS]) < 0.01
    white = cohort.images.min(axis=1) > 0.85  # (N, H, W)
    stroma = ~seen.any(axis=1) & cohort.present["image"][:, None, None]
    assert white[seen[:, GLAND]].mean() > 0.1 and white[stroma].mean() < 0.01


def test_masks_lie_in_their_named_regions(cohort):
    for f in range(len(HISTOLOGY_FINDINGS)):
        allowed = np.einsum("nr,rhw->nhw", cohort.regions[:, f].astype(np.uint8), CELLS.astype(np.uint8)) > 0
        assert not (cohort.masks[:, f] & ~allowed).any(), HISTOLOGY_FINDINGS[f]
        per_region = (cohort.masks[:, f, None] & CELLS[None]).any(axis=(2, 3))  # (N, 9)
        np.testing.assert_array_equal(per_region, cohort.regions[:, f])
    tissue = cohort.regions[:, [TUMOUR, NECROSIS, LYMPHOCYTES, GLAND]].sum(axis=1)
    assert tissue.max() == 1  # one tissue per region
    assert (cohort.mitoses[~cohort.regions[:, TUMOUR]] == 0).all()


def test_reports_name_exactly_the_present_findings_and_regions(cohort):
    words = cohort.sentences
    names = np.array(REGION_NAMES)
    for i in np.flatnonzero(cohort.present["text"])[:400]:
        report, rows = cohort.reports[i], words[words.patient_id == cohort.patient_id[i]]
        for row in rows.itertuples():
            assert report[row.start:row.end] == row.word
            assert row.sentence_start <= row.start < row.end <= row.sentence_end
        named = rows[~rows.negated & (rows.kind == "finding")].finding_index.unique()
        assert sorted(named) == np.flatnonzero(cohort.findings[i]).tolist(), report
        assert set(REGION_WORDS.findall(report)) == set(names[cohort.regions[i].any(axis=0)]), report
        for row in rows[rows.kind == "region"].itertuples():
            assert cohort.regions[i, row.finding_index, REGION_NAMES.index(row.region)]
        # each sentence names only the regions of its own finding(s)
        for _, sentence in rows.groupby("sentence"):
            text = report[sentence.sentence_start.iloc[0]:sentence.sentence_end.iloc[0]]
            assert sorted(REGION_WORDS.findall(text)) == sorted(sentence[sentence.kind == "region"].region)


def test_word_masks_are_the_finding_inside_the_named_region(cohort):
    words = cohort.sentences.iloc[:3000]
    masks = word_masks(words, cohort.masks, cohort.patient_id)
    assert masks.shape == (len(words), 128, 128)
    negated = words.negated.to_numpy()
    assert not masks[negated].any() and masks[~negated].any(axis=(1, 2)).all()
    for j in np.flatnonzero(words.kind.to_numpy() == "region")[:300]:
        assert not (masks[j] & ~CELLS[REGION_NAMES.index(words.region.iloc[j])]).any()


def test_mitotic_grading_in_text_only_when_quantified(cohort):
    graded = re.compile(r"frequent|occasional|scant|Brisk", re.IGNORECASE)
    c = cohort.components
    for i in np.flatnonzero(cohort.present["text"] & c["tumour"]):
        report = cohort.reports[i]
        if not c["quantified"][i] or cohort.mitoses[i].sum() == 0:
            assert not graded.search(report), report
        else:
            assert bool(re.search("frequent|Brisk", report)) == (cohort.mitoses[i].max() >= MITOSIS_THRESHOLD), report


def test_label_rule_and_agreement_subgroup(cohort):
    c = cohort.components
    rows = np.arange(len(cohort))
    invasive = cohort.mitoses[rows, np.maximum(c["invasive_region"], 0)]
    rule = c["tumour"] & ((invasive >= MITOSIS_THRESHOLD) | c["necrosis"])
    np.testing.assert_array_equal(cohort.high_grade_true, rule.astype(np.int64))
    assert 0.34 < cohort.high_grade_true.mean() < 0.48
    case = c["agreement_case"]
    assert 0.11 < case.mean() < 0.19
    np.testing.assert_array_equal(cohort.high_grade_true[case], c["regions_agree"][case].astype(np.int64))
    assert 0.4 < cohort.high_grade_true[case].mean() < 0.6


def test_agreement_needs_the_image_and_the_report(cohort, stain):
    """Agreement cases: the invasive focus read from the report vs the active focus counted in the image."""
    c = cohort.components
    rows = np.flatnonzero(c["agreement_case"] & cohort.present["text"] & cohort.present["image"])
    assert rows.size > 100
    invasion = re.compile(r"invasion in the (" + REGION_WORDS.pattern + ") focus")
    text_focus = np.array([REGION_NAMES.index(invasion.search(cohort.reports[i]).group(1)) for i in rows])
    image_focus = []
    for i in rows:
        foci = np.flatnonzero(cohort.regions[i, TUMOUR])
        image_focus.append(foci[np.argmax([ndimage.label((stain[i] > 2.0) & CELLS[r])[1] for r in foci])])
    truth = cohort.high_grade_true[rows]
    assert ((np.array(image_focus) == text_focus) == truth).mean() > 0.9
    for focus in (text_focus, np.array(image_focus)):  # either modality alone: chance
        first = focus == np.array([np.flatnonzero(cohort.regions[i, TUMOUR])[0] for i in rows])
        assert abs((first == truth).mean() - 0.5) < 0.1


def test_noise_missingness_and_splits(cohort):
    flipped = cohort.high_grade != cohort.high_grade_true
    np.testing.assert_array_equal(flipped, cohort.label_flipped)
    assert abs(flipped.mean() - 0.05) < 3 * np.sqrt(0.05 * 0.95 / N)
    assert abs((~cohort.present["image"]).mean() - 0.05 * 0.9) < 0.02
    assert abs((~cohort.present["text"]).mean() - 0.1) < 0.03
    assert (cohort.present["image"] | cohort.present["text"]).all()
    assert (cohort.images[~cohort.present["image"]] == 0).all()
    absent = set(cohort.patient_id[~cohort.present["text"]].tolist())
    assert all(cohort.reports[i] == "" for i in np.flatnonzero(~cohort.present["text"]))
    assert not absent & set(cohort.sentences.patient_id)
    ids = {name: set(cohort.patient_id[cohort.split == name].tolist()) for name in ("train", "val", "test")}
    assert sum(len(v) for v in ids.values()) == N and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01
        assert abs(cohort.high_grade[part].mean() - cohort.high_grade.mean()) < 0.015


def test_write_read_round_trip(tmp_path):
    cohort = generate_pathology(40, seed=2, missing={"image": 0.1, "text": 0.2})
    manifest = write_pathology_cohort(cohort, tmp_path)
    frame = pd.read_parquet(manifest)
    assert frame.patient_id.tolist() == cohort.patient_id.tolist()
    assert frame.high_grade.tolist() == cohort.high_grade.tolist()
    assert ((frame.image != "").to_numpy() == cohort.present["image"]).all()
    i = int(np.flatnonzero(cohort.present["image"])[0])
    record = read_image(tmp_path / frame.image[i])
    assert record.array.shape == (3, 128, 128) and record.meta["mode"] == "RGB"
    np.testing.assert_allclose(record.array, np.rint(cohort.images[i] * 255) / 255, atol=1e-6)
    j = int(np.flatnonzero(cohort.present["text"])[0])
    assert (tmp_path / frame.text[j]).read_text(encoding="utf-8") == cohort.reports[j]
    masks = load_masks(tmp_path)
    np.testing.assert_array_equal(masks["masks"], cohort.masks)
    words = pd.read_parquet(tmp_path / "ground_truth" / "sentences.parquet")
    assert len(words) == len(cohort.sentences)
    np.testing.assert_array_equal(word_masks(words, masks["masks"], masks["patient_id"]),
                                  word_masks(cohort.sentences, cohort.masks, cohort.patient_id))
    description = json.loads((tmp_path / "cohort.json").read_text())
    assert description["scenario"] == "pathology" and description["region_names"] == list(REGION_NAMES)
    dataset = ManifestDataset(manifest, {"image": "image", "text": "text"}, "high_grade")
    sample = dataset[j]
    assert sample["present"]["text"] and sample["inputs"]["text"] == cohort.reports[j]
    k = int(np.flatnonzero(~cohort.present["text"])[0])
    assert dataset[k]["inputs"]["text"] is None and dataset[k]["inputs"]["image"].shape == (3, 128, 128)
    assert len(ManifestDataset(manifest, {"image": "image"}, "high_grade", split="train")) == (cohort.split == "train").sum()


def test_renderer_scales_and_rejects_bad_specs():
    rng = np.random.default_rng(0)
    spec = HistologySpec(np.array([[1, 0, 0, 0, 2, 0, 0, 0, 3]]), np.array([[4, 0, 0, 0, 0, 0, 0, 0, 0]]))
    batch = render_histology(spec, rng, (96, 160))
    assert batch.images.shape == (1, 3, 96, 160) and batch.mitosis_centres.shape == (4, 3)
    with pytest.raises(ValueError, match="tissue of shape"):
        HistologySpec(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="tissue codes"):
        HistologySpec(np.full((1, 9), 7), np.zeros((1, 9)))
    with pytest.raises(ValueError, match="mitoses in"):
        HistologySpec(np.zeros((1, 9)), np.full((1, 9), 9))
    with pytest.raises(ValueError, match="mitoses only in stroma or tumour"):
        HistologySpec(np.array([[2] + [0] * 8]), np.array([[1] + [0] * 8]))
    with pytest.raises(ValueError, match="expected size"):
        render_histology(spec, rng, 32)


def test_argument_validation():
    with pytest.raises(ValueError, match="n_patients"):
        generate_pathology(0)
    with pytest.raises(ValueError, match="seed"):
        generate_pathology(5, seed=-1)
    with pytest.raises(ValueError, match="label_noise"):
        generate_pathology(5, label_noise=0.5)
    with pytest.raises(ValueError, match="unknown modality"):
        generate_pathology(5, missing={"video": 0.1})
    with pytest.raises(ValueError, match=r"missing\['text'\]"):
        generate_pathology(5, missing={"text": 1.0})
    with pytest.raises(ValueError, match="split_fractions"):
        generate_pathology(5, split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="expected size"):
        generate_pathology(5, image_size=16)
    with pytest.raises(ValueError, match="unknown ids"):
        word_masks(pd.DataFrame({"patient_id": ["SYN-999999"], "finding_index": [0], "regions": [[0]]}),
                   np.zeros((1, 5, 64, 64), bool), np.array(["SYN-000001"]))

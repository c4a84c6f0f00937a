"""The radiology cohort (CT volume + baseline report): determinism, anatomy in HU, nodules, label design, files."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_any, read_dicom_series, read_nifti
from medfusion.data.synthetic.ct import CT_FINDINGS, LOBE_NAMES, LOBES, CTSpec, boxes_3d, render_ct
from medfusion.data.synthetic.files import load_masks
from medfusion.data.synthetic.radiology import (
    RadiologyCohort, dicom_slices, generate_radiology, write_radiology_cohort,
)

N = 500
SPACING = (5.0, 5.0, 5.0)
NODULE, EMPHYSEMA, EFFUSION, GRANULOMA = range(4)
LOBE_RE = re.compile(r"\b(right|left) (upper|middle|lower) lobe\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def cohort() -> RadiologyCohort:
    return generate_radiology(N, seed=0, label_noise=0.1, missing={"volume": 0.2, "text": 0.1})


@pytest.fixture(scope="module")
def lobes(cohort) -> np.ndarray:
    return cohort.anatomy.lobe_map(cohort.volumes.shape[2:])


def report_lobe(text: str) -> int:
    """The lobe a report names (-1 if none or several)."""
    found = {" ".join(m).lower() for m in LOBE_RE.findall(text)}
    return LOBE_NAMES.index(found.pop() + " lobe") if len(found) == 1 else -1


def smoker_in_text(text: str) -> bool:
    match = re.search(r"(\d+) pack-years", text)
    return bool(match) and int(match.group(1)) >= 30


def measure_nodule(volume: np.ndarray, lung: np.ndarray, centre: np.ndarray, reach_mm: float = 12.0):
    """(equivalent diameter mm, centre HU) measured from the HU values around a known nodule centre.

    The excess over the local lung background (median of the lung voxels within 25 mm), divided
    by the nodule's contrast (solid +30 HU or ground-glass -550 HU, chosen from the centre HU),
    summed over the lung voxels within ``reach_mm``, estimates the nodule's volume.
    """
    d, h, w = volume.shape
    grid = np.stack(np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij"), axis=-1)
    dist = np.linalg.norm((grid - centre) * np.asarray(SPACING), axis=-1)
    background = np.median(volume[(dist < 25) & lung & (volume < -700)])
    core = float(volume[tuple(np.round(centre).astype(int))])
    contrast = (30.0 if core > -300 else -550.0) - background
    fraction = np.clip((volume[(dist < reach_mm) & lung] - background) / contrast, 0, 1)
    return float((6 * fraction.sum() * np.prod(SPACING) / np.pi) ** (1 / 3)), core


@pytest.fixture(scope="module")
def measured(cohort, lobes) -> dict[str, np.ndarray]:
    """Per patient with a nodule on a present volume: diameter and centre HU measured from the image."""
    c = cohort.components
    rows = np.flatnonzero(c["nodule"] & cohort.present["volume"])
    centres = np.stack([c["nodule_center_d"], c["nodule_center_h"], c["nodule_center_w"]], axis=1)
    values = np.array([measure_nodule(cohort.volumes[i, 0], lobes[i] >= 0, centres[i]) for i in rows])
    return {"rows": rows, "diameter": values[:, 0], "core": values[:, 1]}


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def test_shapes_dtypes_ids_and_frame(cohort):
    assert cohort.volumes.shape == (N, 1, 32, 64, 64) and cohort.volumes.dtype == np.float32
    assert cohort.masks.shape == (N, len(CT_FINDINGS), 32, 64, 64) and cohort.masks.dtype == bool
    assert cohort.boxes.shape == (N, len(CT_FINDINGS), 6) and cohort.spacing == SPACING
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.patient_id.tolist())) == N
    assert all(re.fullmatch(r"SYN-\d{6}", p) for p in cohort.patient_id)
    assert set(np.unique(cohort.suspicious)) == {0, 1} and cohort.suspicious.dtype == np.int64
    frame = cohort.to_frame()
    assert len(frame) == N and {"patient_id", "split", "suspicious", "nodule", "nodule_lobe", "report"} <= set(frame)
    assert set(frame["nodule_lobe"]) <= {"", *LOBES}
    assert "prevalence" in cohort.ground_truth
    np.testing.assert_array_equal(boxes_3d(cohort.masks[:20]), cohort.boxes[:20])
    small = generate_radiology(3, seed=1, shape=(16, 32, 48), spacing=(10.0, 8.0, 6.0))
    assert small.volumes.shape == (3, 1, 16, 32, 48) and small.spacing == (10.0, 8.0, 6.0)


def test_same_seed_identical_other_seed_differs():
    kw = dict(shape=(16, 32, 32), spacing=(10.0, 10.0, 10.0))
    a, b, c = (generate_radiology(30, seed=s, **kw) for s in (5, 5, 6))
    for name in ("volumes", "masks", "boxes", "suspicious", "split", "patient_id"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.reports == b.reports and a.ground_truth == b.ground_truth
    assert not np.array_equal(a.volumes, c.volumes) and a.reports != c.reports
    np.testing.assert_array_equal(generate_radiology(30, seed=5, workers=1, **kw).volumes, a.volumes)
    d = generate_radiology(30, seed=5, missing={}, label_noise=0.0, **kw)
    keep = a.present["volume"]
    np.testing.assert_array_equal(a.volumes[keep], d.volumes[keep])
    np.testing.assert_array_equal(d.suspicious, a.suspicious_true)


def test_label_is_the_documented_rule(cohort):
    c = cohort.components
    morphology = c["nodule"] & ((np.nan_to_num(c["nodule_diameter_mm"]) > 8) | c["nodule_spiculated"])
    np.testing.assert_array_equal(morphology, c["suspicious_morphology"])
    rule = morphology & (c["smoker"] | c["emphysema"]) & c["nodule"] & (c["report_lobe"] == c["nodule_lobe"])
    np.testing.assert_array_equal(cohort.suspicious_true, rule.astype(np.int64))
    assert 0.1 < cohort.suspicious_true.mean() < 0.22
    assert 0.25 < c["agreement_case"].mean() < 0.4
    assert 0.38 < c["lobes_agree"][c["agreement_case"]].mean() < 0.62
    np.testing.assert_array_equal(cohort.findings[:, NODULE], c["nodule"])
    np.testing.assert_array_equal(cohort.findings[:, EMPHYSEMA], c["emphysema"])


def test_label_noise_missingness_and_splits(cohort):
    flipped = cohort.suspicious != cohort.suspicious_true
    np.testing.assert_array_equal(flipped, cohort.label_flipped)
    assert abs(flipped.mean() - 0.1) < 3 * np.sqrt(0.09 / N)
    assert abs((~cohort.present["volume"]).mean() - 0.2) < 3 * np.sqrt(0.16 / N)
    assert abs((~cohort.present["text"]).mean() - 0.08) < 3 * np.sqrt(0.08 * 0.92 / N)
    assert (cohort.present["volume"] | cohort.present["text"]).all()
    assert (cohort.volumes[~cohort.present["volume"]] == 0).all()
    assert all((t == "") != keep for t, keep in zip(cohort.reports, cohort.present["text"]))
    ids = {name: set(cohort.patient_id[cohort.split == name].tolist()) for name in ("train", "val", "test")}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01
        assert abs(cohort.suspicious[part].mean() - cohort.suspicious.mean()) < 0.02


def test_tissue_hounsfield_ranges(cohort, lobes):
    rows = np.flatnonzero(cohort.present["volume"])[:60]
    v, lung = cohort.volumes[rows, 0], lobes[rows] >= 0
    clean = lung & ~cohort.masks[rows].any(axis=1)
    assert -880 < np.median(v[clean]) < -820  # lung parenchyma
    assert np.median(v[:, :, :, :2]) < -980 and np.median(v[:, :, :2, :]) < -980  # air beside and behind the body
    assert v.min() >= -1024 and v.max() < 1200
    assert 0 < np.median(v[:, 5:11, 38, 30:34]) < 80  # heart: anterior, left of the midline, inferior
    assert np.median(v[:, :, 19, 32]) > 200  # vertebral body, posterior midline
    assert -150 < np.median(v[:, :, 32, 2:5][v[:, :, 32, 2:5] > -500]) < -50  # subcutaneous fat at the flank


def test_lobes_follow_the_anatomy(cohort, lobes):
    counts = np.stack([(lobes == k).sum(axis=(1, 2, 3)) for k in range(5)], axis=1)
    assert (counts > 500).all()
    zz, hh, ww = np.meshgrid(np.arange(32), np.arange(64), np.arange(64), indexing="ij")
    centroid = {k: np.array([[g[lobes[i] == k].mean() for g in (zz, hh, ww)] for i in range(20)]) for k in range(5)}
    assert (centroid[0][:, 2] > 32).all() and (centroid[3][:, 2] < 32).all()  # right lung at large W (RAS)
    assert (centroid[2][:, 0] < centroid[0][:, 0]).all() and (centroid[2][:, 1] < centroid[0][:, 1]).all()
    assert (centroid[4][:, 0] < centroid[3][:, 0]).all()  # lower lobes inferior (and posterior)
    assert (centroid[1][:, 1] > centroid[2][:, 1]).all()  # middle lobe anterior of the lower lobe


def test_nodule_inside_its_lobe_with_the_planted_size(cohort, lobes, measured):
    c = cohort.components
    for i in np.flatnonzero(c["nodule"]):
        mask = cohort.masks[i, NODULE]
        assert mask.any() and (lobes[i][mask] == c["nodule_lobe"][i]).all()
    assert not cohort.masks[~c["nodule"], NODULE].any()
    planted = c["nodule_diameter_mm"][c["nodule"]]
    equivalent = (6 * c["nodule_volume_mm3"][c["nodule"]] / np.pi) ** (1 / 3)
    assert (np.abs(equivalent - planted) <= np.maximum(0.1 * planted, 0.6)).all()
    # from the image's HU values at the nodule: solid, smooth nodules >= 8 mm (1.6 voxels)
    rows = measured["rows"]
    keep = c["nodule_solid"][rows] & ~c["nodule_spiculated"][rows] & (c["nodule_diameter_mm"][rows] >= 8)
    error = np.abs(measured["diameter"][keep] / c["nodule_diameter_mm"][rows][keep] - 1)
    assert keep.sum() > 40 and np.median(error) < 0.06 and np.percentile(error, 90) < 0.15


def test_composition_and_spiculation_are_visible(cohort, measured):
    c = cohort.components
    rows, core = measured["rows"], measured["core"]
    big = c["nodule_diameter_mm"][rows] >= 10
    solid = c["nodule_solid"][rows]
    assert np.median(core[big & solid]) > -150 and -750 < np.median(core[big & ~solid]) < -350
    # spikes add attenuation beyond the sphere: HU excess in the shell r + 2.5 .. r + 10 mm
    excess = []
    for i in rows:
        centre = np.array([c["nodule_center_d"][i], c["nodule_center_h"][i], c["nodule_center_w"][i]])
        grid = np.stack(np.meshgrid(*(np.arange(s) for s in (32, 64, 64)), indexing="ij"), axis=-1)
        dist = np.linalg.norm((grid - centre) * np.asarray(SPACING), axis=-1)
        r = c["nodule_diameter_mm"][i] / 2
        shell = (dist > r + 2.5) & (dist < r + 10) & (cohort.volumes[i, 0] < 200)
        excess.append(np.mean(cohort.volumes[i, 0][shell] > -600))
    excess = np.array(excess)
    spiculated = c["nodule_spiculated"][rows]
    solid_big = solid & (c["nodule_diameter_mm"][rows] >= 8)
    assert np.median(excess[spiculated & solid_big]) > 2 * np.median(excess[~spiculated & solid_big])


def test_emphysema_effusion_and_granuloma(cohort, lobes):
    c = cohort.components
    seen = cohort.present["volume"]
    v, m = cohort.volumes[:, 0], cohort.masks
    low = np.array([np.mean(v[i][lobes[i] >= 0] < -930) for i in range(N)])
    assert np.median(low[c["emphysema"] & seen]) > 3 * np.median(low[~c["emphysema"] & seen])
    assert -990 < np.median(v[m[:, EMPHYSEMA] & seen[:, None, None, None]]) < -930
    rows = np.flatnonzero((c["effusion_side"] >= 0) & seen)
    assert rows.size > 10
    for i in rows:
        fluid = m[i, EFFUSION]
        assert -20 < np.median(v[i][fluid]) < 40
        w = np.nonzero(fluid)[2].mean()
        assert (w > 32) == (c["effusion_side"][i] == 0)  # right side at large W
    assert not m[c["effusion_side"] < 0, EFFUSION].any()
    for i in np.flatnonzero((c["granuloma_lobe"] >= 0) & seen):
        assert v[i][m[i, GRANULOMA]].max() > -400  # calcified: bright even when partial-volumed
        assert (lobes[i][m[i, GRANULOMA]] == c["granuloma_lobe"][i]).all()
        assert c["granuloma_lobe"][i] != c["nodule_lobe"][i]


def test_reports_state_the_planted_facts(cohort):
    c = cohort.components
    for i in np.flatnonzero(cohort.present["text"]):
        text = cohort.reports[i]
        assert text.startswith("EXAM:") and "FINDINGS:" in text and "IMPRESSION:" in text
        assert report_lobe(text) == c["report_lobe"][i], text
        findings = text.split("FINDINGS:")[1].split("Pleura:")[0]
        assert len(LOBE_RE.findall(findings)) == 1  # lobe named once in FINDINGS (and once in IMPRESSION)
        assert f"{c['report_size_mm'][i]} mm" in findings
        assert ("spiculated" in findings) == bool(c["report_spiculated"][i])
        assert ("ground-glass" in findings) == (not c["report_solid"][i])
        assert bool(re.search(r"[Cc]entrilobular (and paraseptal )?emphysema", text)) == bool(c["emphysema"][i])
        assert ("2. Emphysema." in text) == bool(c["emphysema"][i])
        assert not ("No emphysema." in text and c["emphysema"][i])
        assert smoker_in_text(text) == bool(c["smoker"][i]), text
        if c["report_effusion_side"][i] < 0:
            assert re.search(r"No pleural (or pericardial )?effusion\.", text)
    joined = " ".join(cohort.reports)
    for phrase in ("No pleural effusion.", "possibly", "cannot be excluded", "never smoker", "No emphysema."):
        assert phrase in joined


def test_agreement_needs_both_modalities(cohort, lobes):
    """In the agreement cases only 'report lobe == volume lobe' decides; either lobe alone is at chance."""
    c = cohort.components
    rows = np.flatnonzero(c["agreement_case"] & cohort.present["volume"] & cohort.present["text"])
    assert rows.size > 80
    volume_lobe = np.array([np.bincount(lobes[i][cohort.masks[i, NODULE]], minlength=5).argmax() for i in rows])
    text_lobe = np.array([report_lobe(cohort.reports[i]) for i in rows])
    truth = cohort.suspicious_true[rows]
    assert ((volume_lobe == text_lobe) == truth).all()
    for lobe in (volume_lobe, text_lobe):  # a lobe alone says nothing about the label: same rate in each lobe
        rates = [truth[lobe == k].mean() for k in range(5) if (lobe == k).sum() >= 10]
        assert max(rates) - min(rates) < 0.35 and abs(truth.mean() - 0.5) < 0.12


def test_image_and_report_complement(cohort, measured):
    """Nodule size measured from the image and the risk factors read from the report each carry the label;
    together they rank better than either. (The nodule's location comes from the ground truth: detection is
    not under test; without a nodule the image score is 0.)"""
    rows = np.flatnonzero(cohort.present["volume"] & cohort.present["text"])
    diameter = np.zeros(len(cohort))
    diameter[measured["rows"]] = measured["diameter"]
    y = cohort.suspicious_true[rows]
    image = (diameter[rows] > 8).astype(float)
    text = np.array([smoker_in_text(cohort.reports[i]) or "2. Emphysema." in cohort.reports[i] for i in rows], float)
    auc = {"image": _auroc(image, y), "text": _auroc(text, y), "both": _auroc(image + text, y)}
    assert auc["image"] > 0.62 and auc["text"] > 0.65, auc
    assert auc["both"] > max(auc["image"], auc["text"]) + 0.05, auc


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cohort = generate_radiology(10, seed=4, missing={"volume": 0.2, "text": 0.1})
    out = tmp_path_factory.mktemp("radiology")
    return cohort, out, write_radiology_cohort(cohort, out, dicom_fraction=0.3)


def test_written_files_round_trip(written):
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    assert frame["patient_id"].tolist() == cohort.patient_id.tolist()
    assert frame["suspicious"].tolist() == cohort.suspicious.tolist()
    assert (frame["volume"] != "").tolist() == cohort.present["volume"].tolist()
    assert (frame["text"] != "").tolist() == cohort.present["text"].tolist()
    assert {"gt_nodule_lobe", "gt_report_lobe", "gt_lobes_agree", "gt_agreement_case"} <= set(frame)
    i = int(np.flatnonzero(cohort.present["volume"])[0])
    record = read_nifti(out / frame.loc[i, "volume"])
    assert record.meta["spacing"] == SPACING and record.array.shape == (1, 32, 64, 64)
    np.testing.assert_array_equal(record.array, np.rint(cohort.volumes[i]))
    assert read_any(out / frame.loc[i, "volume"]).modality == "volume"
    j = int(np.flatnonzero(cohort.present["text"])[0])
    assert (out / frame.loc[j, "text"]).read_text(encoding="utf-8") == cohort.reports[j]
    masks = load_masks(out)
    np.testing.assert_array_equal(masks["masks"], cohort.masks)
    np.testing.assert_array_equal(masks["boxes"], cohort.boxes)
    description = json.loads((out / "cohort.json").read_text())
    assert description["scenario"] == "radiology" and description["spacing"] == list(SPACING)


def test_dicom_series_round_trip(written):
    cohort, out, manifest = written
    frame = pd.read_parquet(manifest)
    series = np.flatnonzero(frame["volume_dicom"] != "")
    assert len(series) == 3 and cohort.present["volume"][series].all()
    i = int(series[0])
    record = read_dicom_series(out / frame.loc[i, "volume_dicom"])
    assert record.meta["modality"] == "CT" and record.meta["axis_codes"] == ("S", "P", "L")
    assert tuple(record.meta["spacing"]) == SPACING
    # DICOM rows run anterior -> posterior and columns right -> left: flip back to RAS
    np.testing.assert_array_equal(record.array[:, :, ::-1, ::-1], np.rint(cohort.volumes[i]))
    slices = dicom_slices(cohort.volumes[i, 0], SPACING)
    assert len(slices) == 32 and slices[0][0].dtype == np.uint16


def test_manifest_dataset_loads_the_cohort(written):
    cohort, out, manifest = written
    dataset = ManifestDataset(manifest, {"volume": "volume", "text": "text"}, "suspicious")
    for k in range(len(dataset)):
        sample = dataset[k]
        i = int(np.flatnonzero(cohort.patient_id == sample["patient_id"])[0])
        assert sample["label"] == cohort.suspicious[i]
        assert sample["present"] == {"volume": bool(cohort.present["volume"][i]),
                                     "text": bool(cohort.present["text"][i])}
        if cohort.present["volume"][i]:
            np.testing.assert_array_equal(sample["inputs"]["volume"], np.rint(cohort.volumes[i]))
        if cohort.present["text"][i]:
            assert sample["inputs"]["text"] == cohort.reports[i]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_patients"):
        generate_radiology(0)
    with pytest.raises(ValueError, match="label_noise"):
        generate_radiology(5, label_noise=-0.1)
    with pytest.raises(ValueError, match=r"unknown modality\(ies\) \['signal'\]"):
        generate_radiology(5, missing={"signal": 0.1})
    with pytest.raises(ValueError, match=r"expected shape as three ints \(D, H, W\) >= 16, received \(8, 64, 64\)"):
        generate_radiology(5, shape=(8, 64, 64))
    with pytest.raises(ValueError, match="expected spacing as three positive mm"):
        generate_radiology(5, spacing=(5.0, 0.0, 5.0))
    with pytest.raises(ValueError, match="split_fractions"):
        generate_radiology(5, split_fractions=(0.8, 0.3, -0.1))
    with pytest.raises(ValueError, match="workers"):
        generate_radiology(5, workers=0)
    with pytest.raises(ValueError, match="nodule_diameter_mm in \\[3, 30\\]"):
        CTSpec(nodule=[True], nodule_lobe=[0], nodule_diameter_mm=[50.0], nodule_spiculated=[False],
               nodule_solid=[True], emphysema=[False], effusion_side=[-1], granuloma=[False])
    with pytest.raises(ValueError, match="expected spec to be a CTSpec"):
        render_ct(None, np.random.default_rng(0))
    cohort = generate_radiology(3, seed=0, shape=(16, 32, 32), spacing=(10.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="expected dicom_fraction in \\[0, 1\\], received 1.5"):
        write_radiology_cohort(cohort, tmp_path, dicom_fraction=1.5)
    with pytest.raises(ValueError, match="expected cohort to be a RadiologyCohort, received dict"):
        write_radiology_cohort({}, tmp_path)
    assert not (tmp_path / "manifest.parquet").exists()

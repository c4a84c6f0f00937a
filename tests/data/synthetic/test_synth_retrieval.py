"""The retrieval cohort: real Open-i reports parsed, MeSH terms drawn where they say, fallback, files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medfusion.data.datasets import ManifestDataset
from medfusion.data.io import read_dicom, read_image
from medfusion.data.io.base import DataReadError
from medfusion.data.synthetic import openi
from medfusion.data.synthetic.files import load_masks
from medfusion.data.synthetic.retrieval import RetrievalCohort, generate_retrieval, write_retrieval_cohort
from medfusion.data.synthetic.xray import BOTH, FINDINGS, LEFT, LOWER, NO_SIDE, NO_ZONE, RIGHT, UPPER

F = {name: j for j, name in enumerate(FINDINGS)}
needs_archive = pytest.mark.skipif(openi.find_openi_archive() is None, reason="torchxrayvision data not installed")


@pytest.fixture(scope="module")
def cohort() -> RetrievalCohort:
    if openi.find_openi_archive() is None:
        pytest.skip("torchxrayvision data not installed")
    return generate_retrieval(700, seed=0, source="openi")


@pytest.fixture(scope="module")
def heart_and_lungs(cohort):
    lungs, heart = cohort.anatomy.masks(128)
    return lungs, heart


@needs_archive
def test_parser_reads_the_real_archive():
    reports = openi.read_openi_reports()
    assert len(reports) == 3955 and len({r.uid for r in reports}) == 3955
    first = reports[0]
    assert first.uid == "CXR1" and first.mesh == ("normal",) and first.indication == "Positive TB test"
    assert first.findings.startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert first.impression == "Normal chest x-XXXX." and first.n_images == 2
    assert first.caption == "Xray Chest PA and Lateral"
    assert first.text.startswith("FINDINGS: The cardiac") and "\n\nIMPRESSION: Normal chest" in first.text
    by_id = {r.uid: r for r in reports}
    assert by_id["CXR101"].mesh[:3] == ("Cardiomegaly/mild", "Technical Quality of Image Unsatisfactory",
                                        "Lung/hypoinflation")
    assert "Atelectasis" in by_id["CXR101"].mesh_automatic
    assert sum(bool(r.text) for r in reports) == 3927
    assert openi.read_openi_reports() is reports  # parsed once per file


def test_mesh_terms_map_to_renderer_findings():
    cases = {
        "Cardiomegaly/mild": (F["cardiomegaly"], NO_SIDE, NO_ZONE, "mild"),
        "Opacity/lung/base/left": (F["consolidation"], LEFT, LOWER, ""),
        "Airspace Disease/lung/upper lobe/right": (F["consolidation"], RIGHT, UPPER, ""),
        "Opacity/lung/middle lobe/right": (F["consolidation"], RIGHT, LOWER, ""),
        "Opacity/lung/lingula": (F["consolidation"], LEFT, LOWER, ""),
        "Opacity/lung/base/bilateral/streaky": (F["infiltrates"], BOTH, LOWER, ""),
        "Pulmonary Edema/interstitial/mild": (F["infiltrates"], NO_SIDE, NO_ZONE, "mild"),
        "Pleural Effusion/right/small": (F["effusion"], RIGHT, NO_ZONE, "small"),
        "Pleural Effusion/bilateral": (F["effusion"], BOTH, NO_ZONE, ""),
        "Pneumothorax/apex/left/small": (F["pneumothorax"], LEFT, UPPER, "small"),
        "Calcified Granuloma/lung/upper lobe/right": (F["nodule"], RIGHT, UPPER, ""),
        "Opacity/lung/hilum/right/round": (F["nodule"], RIGHT, NO_ZONE, ""),
    }
    for term, (finding, side, zone, severity) in cases.items():
        found = openi.map_mesh_term(term)
        assert (found.finding, found.side, found.zone, found.severity) == (finding, side, zone, severity), term
    for term in ("normal", "Cardiomegaly/borderline", "Opacity/pleura/right", "Density/mediastinum",
                 "Mass/breast/large", "Pulmonary Atelectasis/base/left", "Opacity"):
        assert openi.map_mesh_term(term) is None, term
    assert openi.parse_mesh_term("Opacity/lung/Base/left ") == ("Opacity", ("lung", "base", "left"))


def test_terms_combine_into_one_spec():
    mesh = [("Opacity/lung/base/left", "Airspace Disease/lung/base/right"), ("Cardiomegaly/severe",),
            ("Cardiomegaly/borderline",), ("Nodule",), ("Pleural Effusion/right", "Pleural Effusion/left"),
            ("Pneumonia/lower lobe/left", "Pneumonia/upper lobe/left"), ("Pleural Effusion",)]
    mapping = openi.mesh_to_spec(mesh, np.random.default_rng(0))
    spec = mapping.spec
    assert spec.present[0, F["infiltrates"]] and not spec.present[0, F["consolidation"]]  # both sides
    assert spec.present[1, F["cardiomegaly"]] and 0.62 <= spec.ctr[1] <= 0.66
    assert not spec.present[2].any() and spec.ctr[2] < 0.5 and mapping.unrendered[2] == ("Cardiomegaly/borderline",)
    assert spec.present[3, F["nodule"]] and mapping.imputed[3, F["nodule"]]
    assert spec.side[4, F["effusion"]] == BOTH and not mapping.imputed[4].any()
    assert (spec.side[5, F["consolidation"]], spec.zone[5, F["consolidation"]]) == (LEFT, LOWER)
    assert mapping.imputed[6, F["effusion"]] and mapping.rendered[6] == ("Pleural Effusion",)


def test_rendered_findings_match_the_mesh_terms(cohort, heart_and_lungs):
    lungs, heart = heart_and_lungs
    heart_width = heart.sum(axis=2).max(axis=1)
    columns = (lungs[:, 0] | lungs[:, 1]).any(axis=1)
    thorax = 128 - columns[:, ::-1].argmax(axis=1) - columns.argmax(axis=1)
    ctr = heart_width / thorax
    enlarged = np.array([any(openi.map_mesh_term(t) is not None and t.lower().startswith("cardiomegaly")
                             for t in terms) for terms in cohort.mesh])
    assert enlarged.sum() > 30
    np.testing.assert_array_equal(enlarged, cohort.labels_true[:, F["cardiomegaly"]])
    assert (ctr[enlarged] > 0.5).all() and (ctr[~enlarged] < 0.5).all()
    checked = 0
    for i, terms in enumerate(cohort.mesh):
        for term in terms:
            found = openi.map_mesh_term(term)
            if found is None or found.finding not in (F["effusion"], F["nodule"]) or found.side not in (RIGHT, LEFT):
                continue
            if len({openi.map_mesh_term(t).side for t in terms if openi.map_mesh_term(t)
                    and openi.map_mesh_term(t).finding == found.finding}) > 1:
                continue
            mask = cohort.masks[i, found.finding]
            assert (mask & lungs[i, found.side]).any() and not (mask & lungs[i, 1 - found.side]).any(), term
            checked += 1
    assert checked > 40
    with_zone = (cohort.labels_true[:, F["consolidation"]] & ~cohort.imputed[:, F["consolidation"]])
    for i in np.flatnonzero(with_zone):
        ys, xs = np.nonzero(cohort.masks[i, F["consolidation"]])
        side, zone = cohort.finding_side[i, F["consolidation"]], cohort.finding_zone[i, F["consolidation"]]
        midline = cohort.anatomy.midline[i] * 128
        assert (xs.mean() < midline) == (side == RIGHT)
        assert (ys.mean() > cohort.anatomy.zone_split[i, side] * 128) == (zone == LOWER)


def test_cohort_fields_and_metadata(cohort):
    n = len(cohort)
    assert cohort.source == "openi" and cohort.source_note == ""
    assert cohort.images.shape == (n, 1, 128, 128) and cohort.masks.shape == (n, len(FINDINGS), 128, 128)
    assert cohort.patient_id[0] == "SYN-000001" and len(set(cohort.source_id.tolist())) == n
    by_id = {r.uid: r for r in openi.read_openi_reports()}
    for i in range(0, n, 37):
        report = by_id[cohort.source_id[i]]
        assert cohort.reports[i] == report.text and cohort.mesh[i] == report.mesh
        words = f"{report.indication} {report.findings} {report.impression}".lower()
        if " female" in f" {words}" or " woman" in f" {words}":
            assert cohort.sex[i] == "F"
    np.testing.assert_array_equal(cohort.masks.any(axis=(2, 3)), cohort.labels_true)
    np.testing.assert_array_equal(cohort.labels, cohort.labels_true)  # default: no label noise
    np.testing.assert_array_equal(cohort.abnormal, cohort.labels.any(axis=1))
    assert 0.2 < cohort.abnormal.mean() < 0.45
    assert set(cohort.view) <= {"PA", "AP"} and (cohort.view == "AP").any()
    assert ((cohort.view == "AP") == cohort.components["view_from_report"]).all()
    assert (cohort.body_part == "CHEST").all()
    dates = cohort.study_date.astype("datetime64[D]")
    assert dates.min() >= np.datetime64("2010-01-01") and dates.max() <= np.datetime64("2014-12-31")
    assert 0.15 < cohort.components["sex_from_report"].mean() < 0.45
    assert abs(cohort.has_dicom.mean() - 0.1) < 0.04


def test_deterministic_and_seeded_sample():
    a, b = generate_retrieval(25, seed=3, source="generated"), generate_retrieval(25, seed=3, source="generated")
    np.testing.assert_array_equal(a.images, b.images)
    assert a.reports == b.reports and a.study_date.tolist() == b.study_date.tolist()
    assert a.reports != generate_retrieval(25, seed=4, source="generated").reports
    if openi.find_openi_archive() is not None:
        first, again = generate_retrieval(20, seed=1, source="openi"), generate_retrieval(20, seed=1, source="openi")
        assert first.source_id.tolist() == again.source_id.tolist()
        assert first.source_id.tolist() != generate_retrieval(20, seed=2, source="openi").source_id.tolist()


def test_fallback_to_generated_reports_when_the_archive_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(openi, "find_openi_archive", lambda: None)
    cohort = generate_retrieval(60, seed=0, source="auto")
    assert cohort.source == "generated" and "not found" in cohort.source_note
    assert cohort.source_id[0] == "GEN-000001" and all(r.startswith("FINDINGS: ") for r in cohort.reports)
    assert not cohort.imputed.any()  # generated terms always name the side and zone
    named = {RIGHT: "right", LEFT: "left"}
    for i in np.flatnonzero(cohort.labels_true[:, F["consolidation"]]):
        assert f"{named[cohort.finding_side[i, F['consolidation']]]} " in cohort.reports[i].lower()
    write_retrieval_cohort(cohort, tmp_path)
    description = json.loads((tmp_path / "cohort.json").read_text())
    assert description["source"] == "generated" and "not found" in description["source_note"]
    with pytest.raises(DataReadError, match="not installed"):
        generate_retrieval(5, seed=0, source="openi")


def test_label_noise_missingness_and_splits():
    cohort = generate_retrieval(800, seed=1, source="generated", label_noise=0.1,
                                missing={"image": 0.2, "text": 0.1})
    assert abs(cohort.label_flipped.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(cohort.labels ^ cohort.labels_true, cohort.label_flipped)
    assert abs((~cohort.present["image"]).mean() - 0.2) < 0.04
    assert abs((~cohort.present["text"]).mean() - 0.1 * 0.8) < 0.03
    assert (cohort.present["image"] | cohort.present["text"]).all()
    assert (cohort.images[~cohort.present["image"]] == 0).all() and not cohort.has_dicom[~cohort.present["image"]].any()
    assert all(r == "" for r, keep in zip(cohort.reports, cohort.present["text"]) if not keep)
    for name, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = cohort.split == name
        assert abs(part.mean() - share) < 0.01 and abs(cohort.abnormal[part].mean() - cohort.abnormal.mean()) < 0.02


def test_write_read_round_trip(tmp_path):
    cohort = generate_retrieval(30, seed=2, dicom_fraction=0.5)
    manifest = write_retrieval_cohort(cohort, tmp_path)
    frame = pd.read_parquet(manifest)
    assert frame.patient_id.tolist() == cohort.patient_id.tolist()
    assert frame.source_id.tolist() == cohort.source_id.tolist()
    np.testing.assert_array_equal(frame[list(FINDINGS)].to_numpy(), cohort.labels)
    i = 0
    png = read_image(tmp_path / frame.image[i])
    np.testing.assert_allclose(png.array, np.rint(cohort.images[i] * 255) / 255, atol=1e-6)
    assert (tmp_path / frame.text[i]).read_text(encoding="utf-8") == cohort.reports[i]
    j = int(np.flatnonzero(cohort.has_dicom)[0])
    dicom = read_dicom(tmp_path / frame.image_dicom[j])
    np.testing.assert_array_equal(dicom.array, np.rint(cohort.images[j] * 255))
    assert dicom.meta["view"] == cohort.view[j] and dicom.meta["body_part"] == "CHEST"
    assert ((frame.image_dicom != "").to_numpy() == cohort.has_dicom).all()
    np.testing.assert_array_equal(load_masks(tmp_path)["masks"], cohort.masks)
    dataset = ManifestDataset(manifest, {"image": "image", "text": "text"}, "abnormal")
    sample = dataset[i]
    assert sample["inputs"]["image"].shape == (1, 128, 128) and sample["inputs"]["text"] == cohort.reports[i]
    assert sample["label"] == cohort.abnormal[i]
    csv = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    assert csv.study_date.tolist() == cohort.study_date.tolist()


def test_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="n_patients"):
        generate_retrieval(0)
    with pytest.raises(ValueError, match="source"):
        generate_retrieval(5, source="mimic")
    with pytest.raises(ValueError, match="dicom_fraction"):
        generate_retrieval(5, dicom_fraction=1.5)
    with pytest.raises(ValueError, match="label_noise"):
        generate_retrieval(5, label_noise=-0.1)
    with pytest.raises(ValueError, match="unknown modality"):
        generate_retrieval(5, missing={"vitals": 0.1})
    with pytest.raises(ValueError, match="split_fractions"):
        generate_retrieval(5, split_fractions=(1.0, 0.0))
    with pytest.raises(ValueError, match="expected size"):
        generate_retrieval(5, image_size=16)
    if openi.find_openi_archive() is not None:
        with pytest.raises(ValueError, match=r"n_patients <= 3927"):
            generate_retrieval(4000, source="openi")
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"not a tar archive")
    with pytest.raises(DataReadError, match="not a readable Open-i report archive"):
        openi.read_openi_reports(broken)
    with pytest.raises(DataReadError, match="no such file"):
        openi.read_openi_reports(tmp_path / "missing.tgz")

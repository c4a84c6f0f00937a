"""MIMIC-CXR-JPG adapter on a miniature copy of the layout: gzipped tables, JPEGs, report files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medfusion.data.datasets.mimic_cxr import CHEXPERT_LABELS, MimicCxrDataset, mimic_cxr_manifest, report_text
from medfusion.data.io.base import DataReadError

# (subject, study, dicom_id, official split, view)
IMAGES = [
    ("10000032", "50414267", "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "train", "PA"),
    ("10000032", "50414267", "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "train", "LATERAL"),
    ("10000032", "53189527", "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "train", "AP"),
    ("10000764", "57375967", "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "validate", "PA"),
    ("11000011", "51234567", "8959e402-2175d68d-edba5a6c-520a0c4b-1c2d3e4f", "test", "PA"),
    ("12000022", "59999999", "ffffffff-00000000-11111111-22222222-33333333", "train", "PA"),
]
# CheXpert labels per study (1 / 0 / -1; others blank); study 59999999 has no label row
LABELS = {
    "50414267": {"No Finding": 1},
    "53189527": {"Pneumonia": -1, "Edema": 1, "Cardiomegaly": 0},
    "57375967": {"Pleural Effusion": 1, "Atelectasis": -1},
    "51234567": {"Pneumonia": 1, "Lung Opacity": 1},
}
REPORT_FULL = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  Shortness of breath.

 IMPRESSION:  Mild pulmonary edema.  Possible early pneumonia at the right base.
"""
REPORT_NO_SECTION = """                                 FINAL REPORT
 PA and lateral views of the chest.  Small left pleural effusion with adjacent
 atelectasis.
"""
REPORTS = {"50414267": REPORT_FULL, "53189527": REPORT_IMPRESSION_ONLY, "57375967": REPORT_NO_SECTION,
           "59999999": REPORT_FULL}  # study 51234567 has no report file
SIZE = (20, 16)  # (W, H) of the JPEGs


def image_path(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def write_layout(root: Path, *, gzip: bool = True) -> Path:
    rng = np.random.default_rng(0)
    suffix = ".csv.gz" if gzip else ".csv"
    for subject, study, dicom, _, _ in IMAGES:
        path = root / image_path(subject, study, dicom)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=SIZE[::-1], dtype=np.uint8), mode="L").save(path, quality=90)
    for subject, study, *_ in IMAGES:
        if study in REPORTS:
            (root / f"files/p{subject[:2]}/p{subject}/s{study}.txt").write_text(REPORTS[study], encoding="utf-8")
    pd.DataFrame([{"dicom_id": d, "study_id": int(st), "subject_id": int(su), "split": sp}
                  for su, st, d, sp, _ in IMAGES]).to_csv(root / f"mimic-cxr-2.0.0-split{suffix}", index=False)
    studies = list(dict.fromkeys((su, st) for su, st, *_ in IMAGES if st in LABELS))
    chexpert = pd.DataFrame([{"subject_id": int(su), "study_id": int(st),
                              **{name: LABELS[st].get(name, np.nan) for name in CHEXPERT_LABELS}}
                             for su, st in studies])
    chexpert.to_csv(root / f"mimic-cxr-2.0.0-chexpert{suffix}", index=False)
    pd.DataFrame([{"dicom_id": d, "subject_id": int(su), "study_id": int(st),
                   "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                   "Rows": SIZE[1], "Columns": SIZE[0], "StudyDate": 21800506, "StudyTime": 213014.531,
                   "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                   "ViewCodeSequence_CodeMeaning": "postero-anterior",
                   "PatientOrientationCodeSequence_CodeMeaning": "Erect"}
                  for su, st, d, _, view in IMAGES]).to_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}", index=False)
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "mimic-cxr-jpg")


def test_manifest_rows_paths_labels_and_official_split(root: Path) -> None:
    frame = mimic_cxr_manifest(root)
    assert len(frame) == len(IMAGES)
    assert list(frame.columns[:8]) == ["patient_id", "study_id", "dicom_id", "split", "view", "image",
                                       "report_path", "report"]
    assert list(frame.columns[8:]) == list(CHEXPERT_LABELS)
    assert frame["image"].tolist() == [image_path(*row[:3]) for row in IMAGES]
    assert all((root / p).is_file() for p in frame["image"])
    assert frame["patient_id"].tolist() == [row[0] for row in IMAGES]
    assert frame["split"].tolist() == ["train", "train", "train", "val", "test", "train"]  # validate -> val
    assert frame["view"].tolist() == [row[4] for row in IMAGES]
    by_dicom = frame.set_index("dicom_id")
    first, second = by_dicom.loc[IMAGES[0][2]], by_dicom.loc[IMAGES[1][2]]
    assert first["No Finding"] == 1 and second["No Finding"] == 1  # study labels on each image
    assert first[[c for c in CHEXPERT_LABELS if c != "No Finding"]].eq(0).all()  # blank = not mentioned = 0
    assert by_dicom.loc[IMAGES[2][2], "Edema"] == 1 and by_dicom.loc[IMAGES[2][2], "Pneumonia"] == 0  # -1 -> zeros
    assert by_dicom.loc[IMAGES[5][2], list(CHEXPERT_LABELS)].isna().all()  # study without a label row
    # the official split is patient-level: no subject in two splits
    assert frame.groupby("patient_id")["split"].nunique().max() == 1
    assert frame.attrs.get("skipped", []) == []


@pytest.mark.parametrize(("policy", "expected"), [("ones", 1.0), ("zeros", 0.0), ("ignore", np.nan)])
def test_uncertain_policy(root: Path, policy: str, expected: float) -> None:
    frame = mimic_cxr_manifest(root, uncertain=policy).set_index("dicom_id")
    pneumonia = frame.loc[IMAGES[2][2], "Pneumonia"]  # -1 in the table
    atelectasis = frame.loc[IMAGES[3][2], "Atelectasis"]
    assert (np.isnan(pneumonia) and np.isnan(atelectasis)) if np.isnan(expected) else \
        (pneumonia == expected and atelectasis == expected)
    assert frame.loc[IMAGES[4][2], "Pneumonia"] == 1  # certain labels untouched
    with pytest.raises(ValueError, match=r"expected uncertain in \['ones', 'zeros', 'ignore'\], received 'maybe'"):
        mimic_cxr_manifest(root, uncertain="maybe")


def test_dataset_leaves_out_images_without_the_label(root: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        train = MimicCxrDataset(root, "train", label="Pneumonia", uncertain="ignore")
    # train: 4 images; the AP image is uncertain for pneumonia, the last study has no label row
    assert len(train) == 2 and train.unlabelled == 2
    assert "left out 2 sample(s) with no 'Pneumonia' label" in caplog.text
    assert len(MimicCxrDataset(root, "train", label="Pneumonia", uncertain="ones")) == 3
    with pytest.raises(ValueError, match=r"unknown label 'pneumonia'; expected one of \['Atelectasis'"):
        MimicCxrDataset(root, "train", label="pneumonia")


def test_dataset_loads_images_and_report_sections_per_split(root: Path) -> None:
    splits = {name: MimicCxrDataset(root, name) for name in ("train", "val", "test")}
    assert [len(splits[n]) for n in ("train", "val", "test")] == [3, 1, 1]  # the unlabelled study is left out
    owners = [set(ds.patient_ids) for ds in splits.values()]
    assert sum(len(o) for o in owners) == len(set().union(*owners)) == 3  # no patient in two splits
    sample = splits["train"][0]
    assert sample["patient_id"] == "10000032" and sample["label"] == 1
    image = sample["inputs"]["image"]
    assert image.shape == (1, SIZE[1], SIZE[0]) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    assert sample["inputs"]["text"] == ("FINDINGS: There is no focal consolidation, pleural effusion or "
                                        "pneumothorax. Bilateral nodular opacities that most likely represent nipple "
                                        "shadows. The cardiomediastinal silhouette is normal. "
                                        "IMPRESSION: No acute cardiopulmonary process.")
    assert splits["train"][2]["inputs"]["text"] == ("IMPRESSION: Mild pulmonary edema. Possible early pneumonia at "
                                                    "the right base.")
    assert splits["val"][0]["inputs"]["text"].startswith("PA and lateral views of the chest.")  # no section: all
    test = splits["test"][0]  # no report file: text absent, image present
    assert test["present"] == {"image": True, "text": False} and test["inputs"]["text"] is None
    frontal = MimicCxrDataset(root, "train", views=["PA", "AP"])
    assert len(frontal) == 2 and set(frontal.column("view")) == {"PA", "AP"}


def test_views_need_the_metadata_table(root: Path) -> None:
    assert mimic_cxr_manifest(root, views=["pa"])["dicom_id"].tolist() == [IMAGES[i][2] for i in (0, 3, 4, 5)]
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    frame = mimic_cxr_manifest(root)
    assert "view" not in frame and len(frame) == len(IMAGES)  # optional without a view filter
    with pytest.raises(ValueError, match=r"'mimic-cxr-2.0.0-metadata.csv.gz' or 'mimic-cxr-2.0.0-metadata.csv' "
                                         r"not found in .* \(needed to filter by views\)"):
        mimic_cxr_manifest(root, views=["PA"])
    with pytest.raises(ValueError, match=r"expected views as a non-empty list of strings .* received 'PA'"):
        mimic_cxr_manifest(root, views="PA")


def test_report_options(root: Path, tmp_path: Path) -> None:
    assert "report" not in mimic_cxr_manifest(root, reports=False)
    whole = MimicCxrDataset(root, "train", report_sections=None)
    assert whole.manifest["report"].iloc[0] == whole.manifest["report_path"].iloc[0] != ""
    text = whole[0]["inputs"]["text"]
    assert text.startswith("EXAMINATION: CHEST (PA AND LAT) INDICATION:") and "FINAL REPORT" not in text
    missing = "files/p11/p11000011/s51234567.txt"
    with pytest.raises(DataReadError, match=rf"{missing}: no such file \(listed in the study's report\)"):
        mimic_cxr_manifest(root, reports=True)
    skipped = mimic_cxr_manifest(root, reports=True, on_error="skip")
    assert len(skipped) == len(IMAGES) - 1 and skipped.attrs["skipped"][0].row == "study_id=51234567"
    # an empty or non-UTF-8 report is a bad file, not an absent text
    empty = root / "files/p10/p10000764/s57375967.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataReadError, match=r"s57375967\.txt: file is empty \(0 bytes\) \(listed in the study's "
                                            r"report\), row study_id=57375967"):
        mimic_cxr_manifest(root)
    empty.write_bytes(b"FINDINGS: \xff\xfe bad bytes")
    with pytest.raises(DataReadError, match=r"s57375967\.txt: not valid UTF-8.*\(a study's report"):
        mimic_cxr_manifest(root)
    frame = mimic_cxr_manifest(root, on_error="skip")
    assert IMAGES[3][2] not in set(frame["dicom_id"]) and len(frame) == len(IMAGES) - 1
    assert [(s.row, s.column) for s in frame.attrs["skipped"]] == [(f"dicom_id={IMAGES[3][2]}", "report_path")]
    assert MimicCxrDataset(root, "val", on_error="skip").skip_report()["by_column"] == {"report_path": 1}
    empty.write_text(REPORT_NO_SECTION, encoding="utf-8")
    # reports kept apart from the images: absolute paths under reports_root
    elsewhere = tmp_path / "mimic-cxr-reports"
    for path in (root / "files").rglob("*.txt"):
        target = elsewhere / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    assert "report" not in mimic_cxr_manifest(root)  # none found under root
    frame = mimic_cxr_manifest(root, reports_root=elsewhere)
    assert Path(frame["report_path"].iloc[0]).is_absolute() and frame["report"].iloc[0].startswith("FINDINGS:")


def test_missing_images_raise_or_are_skipped_and_counted(root: Path, caplog) -> None:
    lost = root / image_path(*IMAGES[3][:3])
    lost.unlink()
    (root / image_path(*IMAGES[1][:3])).write_bytes(b"")
    with pytest.raises(DataReadError, match=rf"{IMAGES[1][2]}\.jpg: file is empty \(0 bytes\) \(listed in "
                                            r"mimic-cxr-2.0.0-split.csv.gz\), row dicom_id=.*1 more sample"):
        mimic_cxr_manifest(root)
    with caplog.at_level(logging.WARNING):
        frame = mimic_cxr_manifest(root, on_error="skip")
    assert len(frame) == len(IMAGES) - 2
    assert [(s.row, s.column) for s in frame.attrs["skipped"]] == [(f"dicom_id={IMAGES[1][2]}", "image"),
                                                                   (f"dicom_id={IMAGES[3][2]}", "image")]
    assert "skipped 2 of 6 samples whose files are missing or empty" in caplog.text
    assert IMAGES[3][2] not in caplog.text and "10000764" not in caplog.text  # counts only in the log
    train = MimicCxrDataset(root, "train", on_error="skip")
    assert len(train) == 2 and train.skip_report()["samples"] == 1  # the empty one, in its split
    val = MimicCxrDataset(root, "val", on_error="skip", label=None)
    assert len(val) == 0 and val.skip_report()["by_reason"] == {
        "no such file (listed in mimic-cxr-2.0.0-split.csv.gz)": 1}


def test_root_without_the_layout_is_a_clear_error(tmp_path: Path, root: Path) -> None:
    with pytest.raises(ValueError, match=r"root '.*nowhere' is not a folder"):
        mimic_cxr_manifest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'mimic-cxr-2.0.0-split.csv.gz' or 'mimic-cxr-2.0.0-split.csv' not found "
                                         r"in '.*empty'"):
        mimic_cxr_manifest(tmp_path / "empty")
    plain = write_layout(tmp_path / "plain", gzip=False)  # uncompressed tables work as well
    assert len(mimic_cxr_manifest(plain)) == len(IMAGES)
    (plain / "files").rename(plain / "jpgs")
    with pytest.raises(ValueError, match=r"folder 'files' \(the JPEG images.*\) not found in '.*plain'"):
        mimic_cxr_manifest(plain)
    pd.DataFrame({"dicom_id": ["x"], "subject_id": [1]}).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(ValueError, match=r"mimic-cxr-2.0.0-split.csv.gz lacks column\(s\) \['study_id', 'split'\]"):
        mimic_cxr_manifest(root)
    with pytest.raises(ValueError, match="on_error"):
        mimic_cxr_manifest(root, on_error="ignore")


def test_unknown_split_and_label_values_are_refused(root: Path) -> None:
    table = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    table.loc[0, "Edema"] = 2
    table.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    with pytest.raises(ValueError, match=r"column 'Edema' holds values other than 1, 0, -1 or blank"):
        mimic_cxr_manifest(root)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    split.loc[0, "split"] = "holdout"
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(ValueError, match=r"unknown split value\(s\) \['holdout'\]; expected \['test', 'train', "
                                         r"'validate'\]"):
        mimic_cxr_manifest(root)


def test_report_text_sections() -> None:
    assert report_text(REPORT_FULL, ["impression"]) == "IMPRESSION: No acute cardiopulmonary process."
    assert report_text(REPORT_FULL, ["impression", "findings"]).startswith("IMPRESSION: No acute")
    assert report_text(REPORT_NO_SECTION) == ("PA and lateral views of the chest. Small left pleural effusion with "
                                              "adjacent atelectasis.")
    assert report_text(REPORT_IMPRESSION_ONLY, None) == ("INDICATION: Shortness of breath. IMPRESSION: Mild pulmonary "
                                                         "edema. Possible early pneumonia at the right base.")

"""IU X-ray / Open-i adapter on a miniature copy: report XML files in the Open-i schema, PNG images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfusion.data.datasets.iu_xray import (
    MESH_TERMS,
    IuXrayDataset,
    iu_xray_manifest,
    mesh_labels,
    parse_report,
    term_column,
)
from medfusion.data.io import write_png
from medfusion.data.io.base import DataReadError

# One Open-i report as the collection ships it (ecgen-radiology/<n>.xml), with placeholders.
REPORT_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleURL/>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <note>The data are drawn from multiple hospital systems.</note>
   <specialty>pulmonary diseases</specialty>
   <subset>CXR</subset>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Journal>
            <JournalIssue>
               <PubDate>
                  <Year>2013</Year>
                  <Month>08</Month>
                  <Day>01</Day>
               </PubDate>
            </JournalIssue>
         </Journal>
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{abstract}
         </Abstract>
         <Affiliation>Indiana University</Affiliation>
         <AuthorList CompleteYN="Y">
            <Author ValidYN="Y">
               <LastName>Kohli</LastName>
               <ForeName>Marc</ForeName>
               <Initials>MD</Initials>
            </Author>
         </AuthorList>
         <Language>eng</Language>
         <PublicationTypeList>
            <PublicationType>Radiology Report</PublicationType>
         </PublicationTypeList>
      </Article>
      <EssieArticleTitle>Indiana University Chest X-ray Collection</EssieArticleTitle>
      <IMedAuthor>Marc David Kohli MD</IMedAuthor>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>
"""
IMAGE_XML = """   <parentImage id="{id}">
      <figureId>F{k}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{id}.jpg</url>
         <imgModality>7</imgModality>
         <region type="panel">
            <globalImageFeatures>
               <CEDD>f2p0k1352</CEDD>
               <ColorLayout>f1p0k36</ColorLayout>
               <EdgeHistogram>f0p0k969</EdgeHistogram>
               <FCTH>f4p0k2423</FCTH>
               <SemanticContext60>f3p0k305</SemanticContext60>
            </globalImageFeatures>
         </region>
      </panel>
   </parentImage>"""

REPORTS = {
    1: {"sections": {"COMPARISON": "None.", "INDICATION": "Positive TB test",
                     "FINDINGS": "The cardiac silhouette and mediastinum size are within normal limits. There is no "
                                 "pulmonary edema. There is no focal consolidation. There are no XXXX of a pleural "
                                 "effusion. There is no evidence of pneumothorax.",
                     "IMPRESSION": "Normal chest x-XXXX."},
        "major": ["normal"], "automatic": [], "images": ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]},
    2: {"sections": {"COMPARISON": "Chest radiographs XXXX.", "INDICATION": "XXXX-year-old male, chest pain.",
                     "FINDINGS": "The cardiomediastinal silhouette is enlarged. Patchy opacity in the left lung "
                                 "base with volume loss.\n               No pneumothorax.",
                     "IMPRESSION": "1. Mild cardiomegaly. 2. Left basilar atelectasis."},
        "major": ["Cardiomegaly/mild", "Opacity/lung/base/left/patchy", "Pulmonary Atelectasis/base/left"],
        "automatic": ["Atelectasis"], "images": ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]},
    3: {"sections": {"COMPARISON": "None.", "INDICATION": "Cough.", "IMPRESSION": "No acute disease."},
        "major": ["No Indexing"], "automatic": [], "images": ["CXR3_IM-1384-1001-0001"]},
}
VIEWS = {"CXR1_1_IM-0001-3001": "PA", "CXR1_1_IM-0001-4001": "LL", "CXR2_IM-0652-1001": "AP",
         "CXR2_IM-0652-2001": "LATERAL", "CXR3_IM-1384-1001-0001": ""}
SHAPE = (24, 20)  # (H, W)


def report_xml(n: int, sections: dict, major: list, automatic: list, images: list) -> str:
    abstract = "\n".join(f'            <AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    mesh = "\n".join([f"      <major>{t}</major>" for t in major] + [f"      <automatic>{t}</automatic>"
                                                                    for t in automatic])
    pictures = "\n".join(IMAGE_XML.format(id=i, k=k) for k, i in enumerate(images, start=1))
    return REPORT_XML.format(n=n, abstract=abstract, mesh=mesh, images=pictures)


def write_report(root: Path, n: int, report: dict, *, with_images: bool = True) -> None:
    (root / "ecgen-radiology" / f"{n}.xml").write_text(report_xml(n, **report), encoding="utf-8")
    if with_images:
        rng = np.random.default_rng(n)
        for image in report["images"]:
            write_png(root / "NLMCXR_png" / f"{image}.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "openi"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "NLMCXR_png").mkdir()
    for n, report in REPORTS.items():
        write_report(root, n, report)
    return root


def write_views(root: Path) -> None:
    pd.DataFrame({"imageid": list(VIEWS), "Modality": "CR", "View Position": list(VIEWS.values())}).to_csv(
        root / "nlmcxr_dicom_metadata.csv.gz", index=False)


def test_parse_report_reads_the_open_i_schema(root: Path) -> None:
    report = parse_report(root / "ecgen-radiology" / "2.xml")
    assert report["report_id"] == "CXR2"
    assert report["sections"]["IMPRESSION"] == "1. Mild cardiomegaly. 2. Left basilar atelectasis."
    assert report["sections"]["FINDINGS"].endswith("with volume loss. No pneumothorax.")  # whitespace normalised
    assert report["mesh_major"] == REPORTS[2]["major"] and report["mesh_automatic"] == ["Atelectasis"]
    assert report["images"] == REPORTS[2]["images"]


def test_manifest_one_row_per_image_with_text_and_mesh_labels(root: Path) -> None:
    frame = iu_xray_manifest(root)
    assert len(frame) == 5
    assert frame["image_id"].tolist() == [i for r in REPORTS.values() for i in r["images"]]
    assert frame["image"].tolist() == [f"NLMCXR_png/{i}.png" for i in frame["image_id"]]
    assert frame["patient_id"].tolist() == ["CXR1", "CXR1", "CXR2", "CXR2", "CXR3"]  # report id: no patient id
    assert (frame["patient_id"] == frame["report_id"]).all()
    first = frame.iloc[0]
    assert first["report"] == ("FINDINGS: The cardiac silhouette and mediastinum size are within normal limits. "
                               "There is no pulmonary edema. There is no focal consolidation. There are no XXXX of a "
                               "pleural effusion. There is no evidence of pneumothorax. "
                               "IMPRESSION: Normal chest x-XXXX.")
    assert frame.iloc[4]["report"] == "IMPRESSION: No acute disease."  # no FINDINGS section
    assert first["normal"] == 1 and first["abnormal"] == 0
    assert frame.loc[0, [term_column(t) for t in MESH_TERMS]].eq(0).all()
    abnormal = frame.iloc[2]
    assert abnormal["normal"] == 0 and abnormal["abnormal"] == 1
    flagged = {t for t in MESH_TERMS if abnormal[term_column(t)] == 1}
    assert flagged == {"Cardiomegaly", "Opacity", "Pulmonary Atelectasis"}
    assert abnormal["mesh_major"] == "Cardiomegaly/mild; Opacity/lung/base/left/patchy; Pulmonary Atelectasis/base/left"
    assert frame.iloc[4][["normal", "abnormal", "mesh_cardiomegaly"]].isna().all()  # "No Indexing": unknown
    assert frame.groupby("report_id")["split"].nunique().max() == 1  # images of a report share a split


def test_mesh_labels_match_terms_and_their_parts() -> None:
    labels = mesh_labels(["Lung/hypoinflation", "Technical Quality of Image Unsatisfactory "], ["hypoinflation",
                                                                                               "Lung", "Nodule"])
    assert labels == {"normal": 0.0, "abnormal": 1.0, "mesh_hypoinflation": 1.0, "mesh_lung": 1.0, "mesh_nodule": 0.0}
    assert mesh_labels(["normal", "normal"], ["Nodule"])["normal"] == 1.0
    assert np.isnan(mesh_labels([], ["Nodule"])["mesh_nodule"])


def test_patient_level_split_over_report_ids(root: Path) -> None:
    for n in range(4, 16):  # more reports, some abnormal, each with two images
        major = ["normal"] if n % 2 else ["Cardiomegaly/borderline"]
        write_report(root, n, {"sections": {"IMPRESSION": f"Report {n}."}, "major": major, "automatic": [],
                               "images": [f"CXR{n}_IM-{n:04d}-1001", f"CXR{n}_IM-{n:04d}-2001"]})
    frame = iu_xray_manifest(root, split_seed=3)
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.groupby("patient_id")["split"].nunique().max() == 1
    assert frame["split"].tolist() == iu_xray_manifest(root, split_seed=3)["split"].tolist()  # deterministic
    parts = {name: IuXrayDataset(root, name, split_seed=3) for name in ("train", "val", "test")}
    owners = [set(ds.patient_ids) for ds in parts.values()]
    assert sum(len(o) for o in owners) == len(set().union(*owners)) == 14  # CXR3 has no label
    assert parts["val"].unlabelled + parts["train"].unlabelled + parts["test"].unlabelled == 1
    halves = iu_xray_manifest(root, split_fractions={"a": 0.5, "b": 0.5})
    assert set(halves["split"]) == {"a", "b"}
    assert len(IuXrayDataset(root, "b", split_fractions={"a": 0.5, "b": 0.5}, label=None)) > 0


def test_dataset_loads_images_and_text(root: Path) -> None:
    ds = IuXrayDataset(root, label="abnormal")
    assert len(ds) == 4 and ds.unlabelled == 1  # the "No Indexing" report has no label
    assert ds.labels.tolist() == [0, 0, 1, 1]
    sample = ds[2]
    assert sample["patient_id"] == "CXR2" and sample["label"] == 1
    image = sample["inputs"]["image"]
    assert image.shape == (1, *SHAPE) and image.dtype == np.float32 and image.max() <= 1
    assert sample["inputs"]["text"].startswith("FINDINGS: The cardiomediastinal silhouette is enlarged.")
    assert IuXrayDataset(root, label="mesh_pulmonary_atelectasis").labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"unknown label 'cardiomegaly'; expected one of \['normal', 'abnormal', "
                                         r"'mesh_cardiomegaly'"):
        IuXrayDataset(root, label="cardiomegaly")


def test_views_from_the_dicom_metadata_table_and_one_image_per_report(root: Path) -> None:
    assert "view" not in iu_xray_manifest(root)
    with pytest.raises(ValueError, match=r"'nlmcxr_dicom_metadata.csv.gz' or 'nlmcxr_dicom_metadata.csv' not found "
                                         r"in .* \(needed to filter by views; or pass view_table\)"):
        iu_xray_manifest(root, views=["PA", "AP"])
    write_views(root)
    frame = iu_xray_manifest(root)
    assert frame["view"].tolist() == list(VIEWS.values())
    frontal = iu_xray_manifest(root, views=["PA", "AP"], one_per_report=True)
    assert frontal["image_id"].tolist() == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001"]
    first = iu_xray_manifest(root, one_per_report=True)
    assert first["image_id"].tolist() == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR3_IM-1384-1001-0001"]
    moved = root.parent / "views.csv"
    pd.read_csv(root / "nlmcxr_dicom_metadata.csv.gz").to_csv(moved, index=False)
    (root / "nlmcxr_dicom_metadata.csv.gz").unlink()
    assert len(iu_xray_manifest(root, views=["LL", "LATERAL"], view_table=moved)) == 2


def test_report_without_image_is_a_text_only_row(root: Path) -> None:
    write_report(root, 3, {**REPORTS[3], "images": []})
    frame = iu_xray_manifest(root)
    row = frame[frame["report_id"] == "CXR3"]
    assert len(row) == 1 and row["image"].iloc[0] == "" and row["image_id"].iloc[0] == ""
    sample = IuXrayDataset(root, label=None)[len(frame) - 1]
    assert sample["present"] == {"image": False, "text": True}


def test_missing_image_and_malformed_report(root: Path, caplog) -> None:
    (root / "NLMCXR_png" / "CXR2_IM-0652-2001.png").unlink()
    with pytest.raises(DataReadError, match=r"CXR2_IM-0652-2001\.png: no such file \(listed in "
                                            r"ecgen-radiology/<report>\.xml\), row image_id=CXR2_IM-0652-2001"):
        iu_xray_manifest(root)
    (root / "ecgen-radiology" / "1.xml").write_text(report_xml(1, **REPORTS[1])[:900], encoding="utf-8")
    with pytest.raises(DataReadError, match=r"1\.xml: malformed XML"):
        iu_xray_manifest(root)
    with caplog.at_level(logging.WARNING):
        frame = iu_xray_manifest(root, on_error="skip")
    assert frame["report_id"].tolist() == ["CXR2", "CXR3"]
    assert [(s.row, s.column) for s in frame.attrs["skipped"]] == [("report=1.xml", "report"),
                                                                   ("image_id=CXR2_IM-0652-2001", "image")]
    assert "skipped 1 of 3 report files" in caplog.text and "skipped 1 of 3 samples" in caplog.text
    ds = IuXrayDataset(root, "train", on_error="skip", label=None)
    assert ds.skip_report()["samples"] == 2  # the unreadable report counts in every split
    (root / "ecgen-radiology" / "2.xml").write_text("<html><body>not a report</body></html>", encoding="utf-8")
    with pytest.raises(DataReadError, match=r"2\.xml: not an Open-i report: expected <eCitation>"):
        parse_report(root / "ecgen-radiology" / "2.xml")


def test_root_without_the_layout_is_a_clear_error(tmp_path: Path, root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"folder 'ecgen-radiology' \(the report XML files\) not found in "
                                         r"'.*empty'"):
        iu_xray_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "ecgen-radiology").mkdir()
    with pytest.raises(ValueError, match=r"folder 'NLMCXR_png' \(the PNG images\) not found"):
        iu_xray_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "NLMCXR_png").mkdir()
    with pytest.raises(ValueError, match=r"no \*\.xml report in '.*ecgen-radiology'"):
        iu_xray_manifest(tmp_path / "empty")
    with pytest.raises(ValueError, match="repeated or reserved columns"):
        iu_xray_manifest(root, mesh_terms=["Pleural Effusion", "pleural-effusion"])
    with pytest.raises(ValueError, match=r"split 'validation' not found; available splits: \['train', 'val', 'test'\]"):
        IuXrayDataset(root, "validation")


def test_real_open_i_reports_parse(tmp_path: Path, caplog) -> None:
    """The first 500 of the 3,955 real Open-i reports shipped in torchxrayvision's package data."""
    import importlib.util
    import tarfile

    spec = importlib.util.find_spec("torchxrayvision")
    archive = Path(spec.submodule_search_locations[0]) / "data" / "NLMCXR_reports.tgz" if spec else None
    if archive is None or not archive.is_file():
        pytest.skip("torchxrayvision's NLMCXR_reports.tgz is not installed")
    root = tmp_path / "openi"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "NLMCXR_png").mkdir()  # reports only: every listed image is missing
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")),
                         key=lambda m: int(Path(m.name).stem))[:500]
        for member in members:
            (root / "ecgen-radiology" / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    with pytest.raises(DataReadError, match=r"CXR1_1_IM-0001-3001\.png: no such file"):
        iu_xray_manifest(root)
    with caplog.at_level(logging.WARNING):
        frame = iu_xray_manifest(root, on_error="skip")
    reports = frame["report_id"].nunique()
    assert reports == (frame["image"] == "").sum() and 0 < reports < 500  # text-only rows: reports listing no image
    skipped = {s.row for s in frame.attrs["skipped"]}
    assert len(skipped) > 500 and all(row.startswith("image_id=CXR") for row in skipped)
    assert "skipped" in caplog.text
    first = parse_report(root / "ecgen-radiology" / "1.xml")
    assert first["mesh_major"] == ["normal"] and first["images"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert first["sections"]["IMPRESSION"] == "Normal chest x-XXXX."
    labels = pd.DataFrame([mesh_labels(parse_report(p)["mesh_major"], MESH_TERMS)
                           for p in sorted((root / "ecgen-radiology").glob("*.xml"))])
    assert labels["normal"].notna().sum() > 450 and 0.2 < labels["normal"].mean() < 0.6
    assert (labels["normal"] + labels["abnormal"]).dropna().eq(1).all()
    assert labels["mesh_cardiomegaly"].sum() > 10 and labels["mesh_opacity"].sum() > 10

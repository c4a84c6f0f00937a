"""IU X-ray (Indiana University chest X-ray collection, NLM Open-i) as a user holds it locally.

Demner-Fushman et al. 2016, "Preparing a collection of radiology examinations for
distribution and retrieval", JAMIA 23(2); https://openi.nlm.nih.gov/faq (collection CXR).

Layout under ``root``::

    ecgen-radiology/1.xml           one report per file: FINDINGS, IMPRESSION, MeSH terms, image ids
    NLMCXR_png/CXR1_1_IM-0001-3001.png   the images, named by the report's parentImage ids
    nlmcxr_dicom_metadata.csv(.gz)  optional: imageid, "View Position" (PA, AP, LL, ...), as
                                    read from the NLMCXR_dcm headers (torchxrayvision ships it)

A report is an ``<eCitation>``: ``<uId id="CXR1"/>``, ``<AbstractText Label="FINDINGS">``
(and IMPRESSION, INDICATION, COMPARISON), ``<MeSH><major>Cardiomegaly/mild</major>
<automatic>...</automatic></MeSH>`` and one ``<parentImage id="CXR1_1_IM-0001-3001">``
per image.

One manifest row per image (``one_per_report`` keeps the first image of each report;
a report listing no image gives one row whose image is marked absent). Open-i gives **no
patient id**: each report is one examination, and ``patient_id`` is the report id
("CXR1"). Two reports of one person can therefore land in different splits; the split
(:func:`~medfusion.data.datasets.splits.patient_splits` over report ids, stratified by
``abnormal``) keeps all images of one report together, which is as far as the data allow.

Labels from the MeSH major terms (``Descriptor/qualifier/...``, e.g. ``Opacity/lung/base/left``):
``normal`` is 1 when every term is "normal", ``abnormal`` its complement, and ``mesh_<term>``
is 1 when a term or one of its parts equals ``<term>`` (case-insensitive). Reports indexed
only "No Indexing" or "Technical Quality of Image Unsatisfactory" have NaN labels.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.data.datasets._layout import (
    AdapterDataset,
    check_listed_files,
    check_names,
    check_on_error,
    check_root,
    find_dir,
    find_file,
    id_text,
    join_sections,
    normalise_whitespace,
    read_csv,
    record_skipped,
)
from medfusion.data.datasets.manifest import SkippedFile
from medfusion.data.datasets.splits import DEFAULT_FRACTIONS, patient_splits
from medfusion.data.io.base import DataReadError, check_file

logger = logging.getLogger(__name__)

DATASET = "iu_xray"
REPORTS_DIR = "ecgen-radiology"
IMAGES_DIR = "NLMCXR_png"
VIEW_TABLE = "nlmcxr_dicom_metadata.csv"
#: MeSH major terms flagged by default: the common chest findings of the collection.
MESH_TERMS = (
    "Cardiomegaly", "Opacity", "Pulmonary Atelectasis", "Pleural Effusion", "Calcified Granuloma",
    "Granulomatous Disease", "Nodule", "Airspace Disease", "Pulmonary Emphysema", "Pulmonary Edema",
    "Pneumonia", "Pneumothorax", "Consolidation", "Scoliosis", "Fractures, Bone", "hypoinflation",
    "hyperdistention",
)
#: Major terms that say nothing about the findings.
UNINFORMATIVE_TERMS = frozenset({"no indexing", "technical quality of image unsatisfactory"})
DEFAULT_SECTIONS = ("findings", "impression")


def term_column(term: str) -> str:
    """The manifest column of a MeSH term: "Pleural Effusion" -> "mesh_pleural_effusion"."""
    return "mesh_" + re.sub(r"[^a-z0-9]+", "_", term.lower()).strip("_")


def parse_report(path: str | Path) -> dict:
    """The parts of one Open-i report XML file.

    Returns:
        {"report_id": "CXR1", "sections": {"FINDINGS": text, ...} (whitespace normalised,
        empty ones left out), "mesh_major": [terms], "mesh_automatic": [terms],
        "images": [parentImage ids, in file order]}.

    Raises:
        DataReadError: on a missing, empty or malformed file, or one that is not an
            Open-i report (no ``eCitation`` root or no ``uId``).
    """
    path = check_file(path)
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise DataReadError(path, f"malformed XML ({error})") from None
    top = tree.getroot()
    uid = top.find("uId")
    if top.tag != "eCitation" or uid is None or not uid.get("id", "").strip():
        raise DataReadError(path, f"not an Open-i report: expected <eCitation> with <uId id=...>, found <{top.tag}>")
    sections = {}
    for node in top.iter("AbstractText"):
        text = normalise_whitespace("".join(node.itertext()))
        label = (node.get("Label") or "").strip().upper()
        if label and text:
            sections[label] = text
    mesh = top.find("MeSH")
    major = [normalise_whitespace(n.text or "") for n in mesh.iter("major")] if mesh is not None else []
    automatic = [normalise_whitespace(n.text or "") for n in mesh.iter("automatic")] if mesh is not None else []
    images = [node.get("id", "").strip() for node in top.findall("parentImage")]
    return {"report_id": uid.get("id").strip(), "sections": sections, "mesh_major": [t for t in major if t],
            "mesh_automatic": [t for t in automatic if t], "images": [i for i in images if i]}


def mesh_labels(major: Sequence[str], terms: Sequence[str]) -> dict[str, float]:
    """``normal``, ``abnormal`` and one ``mesh_<term>`` flag per term from a report's major terms.

    NaN everywhere when no term is informative (see the module docstring).
    """
    informative = [t for t in major if t.strip().lower() not in UNINFORMATIVE_TERMS]
    if not informative:
        return {"normal": np.nan, "abnormal": np.nan, **{term_column(t): np.nan for t in terms}}
    parts = set()
    for term in informative:
        parts.add(term.strip().lower())
        parts.update(p.strip().lower() for p in term.split("/"))
    normal = float(all(t.strip().lower() == "normal" for t in informative))
    flags = {term_column(t): float(t.strip().lower() in parts) for t in terms}
    return {"normal": normal, "abnormal": 1.0 - normal, **flags}


def _views(root: Path, view_table: str | Path | None, required: bool) -> dict[str, str] | None:
    if view_table is None:
        path = find_file(root, [f"{VIEW_TABLE}.gz", VIEW_TABLE], DATASET, required=required,
                         why=" (needed to filter by views; or pass view_table)")
    else:
        path = Path(view_table)
        if not path.is_file():
            raise ValueError(f"{DATASET}: view_table {str(path)!r} not found")
    if path is None:
        return None
    table = read_csv(path, ["imageid", "View Position"], DATASET)
    return dict(zip(id_text(table["imageid"]), table["View Position"].fillna("").astype(str).str.strip()))


def iu_xray_manifest(
    root: str | Path,
    *,
    mesh_terms: Sequence[str] = MESH_TERMS,
    report_sections: Sequence[str] = DEFAULT_SECTIONS,
    views: Sequence[str] | None = None,
    view_table: str | Path | None = None,
    one_per_report: bool = False,
    split_fractions: Mapping[str, float] | None = None,
    split_seed: int = 0,
    on_error: str = "raise",
) -> pd.DataFrame:
    """A ManifestDataset-ready manifest of a local IU X-ray / Open-i copy: one row per image.

    Args:
        root: the folder holding ``ecgen-radiology/`` and ``NLMCXR_png/``.
        mesh_terms: terms flagged in ``mesh_<term>`` columns.
        report_sections: AbstractText sections put in ``report``, in order
            (``"FINDINGS: ... IMPRESSION: ..."``; "" when the report has none of them).
        views: keep images whose view is one of these (e.g. ``["PA", "AP"]``); needs the
            view table. None keeps every image.
        view_table: a table with columns ``imageid`` and ``View Position``; default
            ``root/nlmcxr_dicom_metadata.csv(.gz)`` when present.
        one_per_report: keep only each report's first image (after the view filter).
        split_fractions: fractions of reports per split (default 70/15/15).
        split_seed: seed of the split.
        on_error: for unreadable report files and listed images missing on disk: "raise"
            names the file, "skip" leaves them out, recorded in ``attrs["skipped"]`` with a
            logged count.

    Returns:
        Columns ``patient_id`` (= ``report_id``, see the module docstring), ``report_id``,
        ``image_id``, ``split``, ``view`` (with a view table), ``image`` (path relative to
        root, "" when the report lists none), ``report`` (inline text), ``mesh_major`` and
        ``mesh_automatic`` ("; "-joined), ``normal``, ``abnormal`` and the ``mesh_*`` flags
        (float: 1, 0, NaN).

    Raises:
        ValueError: when root lacks a folder (naming it and root), on a bad option, or
            mesh terms that give the same column.
        DataReadError: in raise mode, naming the first unreadable report or missing image.

    Examples::

        frame = iu_xray_manifest("/data/openi", views=["PA", "AP"], one_per_report=True)
    """
    root = check_root(root, DATASET)
    check_on_error(on_error, DATASET)
    terms = check_names(mesh_terms, "mesh_terms", DATASET) if len(mesh_terms) else []
    sections = check_names(report_sections, "report_sections", DATASET)
    views = check_names(views, "views", DATASET)
    columns = [term_column(t) for t in terms]
    if len(set(columns)) != len(columns) or {"mesh_major", "mesh_automatic"} & set(columns):
        raise ValueError(f"{DATASET}: mesh_terms {list(terms)} give repeated or reserved columns {columns}")
    reports_dir = find_dir(root, REPORTS_DIR, DATASET, "the report XML files")
    find_dir(root, IMAGES_DIR, DATASET, "the PNG images")
    files = sorted(reports_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise ValueError(f"{DATASET}: no *.xml report in {str(reports_dir)!r}")
    view_of = _views(root, view_table, required=views is not None)

    rows, bad = [], []
    for file in files:
        try:
            report = parse_report(file)
        except DataReadError as error:
            if on_error == "raise":
                raise DataReadError(error.path, f"{error.reason} (on_error='skip' leaves such reports out)") from None
            bad.append(SkippedFile(f"report={file.name}", "report", error.reason))
            continue
        text = join_sections([(s.upper(), report["sections"].get(s.upper(), "")) for s in sections])
        common = {"patient_id": report["report_id"], "report_id": report["report_id"], "report": text,
                  "mesh_major": "; ".join(report["mesh_major"]), "mesh_automatic": "; ".join(report["mesh_automatic"]),
                  **mesh_labels(report["mesh_major"], terms)}
        for image in report["images"] or [""]:
            rows.append({**common, "image_id": image, "image": f"{IMAGES_DIR}/{image}.png" if image else ""})
    if bad:
        logger.warning("%s: skipped %d of %d report files that could not be read", DATASET, len(bad), len(files))
    if not rows:
        raise ValueError(f"{DATASET}: no readable report in {str(reports_dir)!r}")
    frame = pd.DataFrame(rows)
    frame["split"] = patient_splits(frame["patient_id"], frame["abnormal"], split_fractions, split_seed)
    if view_of is not None:
        frame["view"] = frame["image_id"].map(lambda i: view_of.get(i, ""))
        if views is not None:
            wanted = {v.upper() for v in views}
            keep = frame["view"].str.upper().isin(wanted).to_numpy()
            logger.info("%s: kept %d of %d images with a view among %s", DATASET, int(keep.sum()), len(frame),
                        sorted(wanted))
            frame = frame[keep].reset_index(drop=True)
    record_skipped(frame, bad, [None] * len(bad))
    frame = check_listed_files(frame, {"image": f"{REPORTS_DIR}/<report>.xml"}, root, key_column="image_id",
                               on_error=on_error, dataset=DATASET)
    if one_per_report:
        attrs = frame.attrs
        frame = frame.drop_duplicates("report_id").reset_index(drop=True)
        frame.attrs = attrs
    order = ["patient_id", "report_id", "image_id", "split", *(["view"] if "view" in frame else []), "image",
             "report", "mesh_major", "mesh_automatic", "normal", "abnormal", *columns]
    out = frame[order].reset_index(drop=True)
    out.attrs = frame.attrs
    return out


class IuXrayDataset(AdapterDataset):
    """IU X-ray images and reports as a :class:`ManifestDataset`.

    Samples: ``inputs["image"]`` (1, H, W) float32 in [0, 1] (absent for a report with no
    image), ``inputs["text"]`` the report sections (absent when empty).

    Args:
        root: the folder holding ``ecgen-radiology/`` and ``NLMCXR_png/``.
        split: "train", "val", "test" (or the names of ``split_fractions``) or None.
        label: ``"abnormal"``, ``"normal"`` or a ``mesh_*`` column; reports without an
            informative MeSH term are left out and counted in :attr:`unlabelled`. None:
            unlabelled samples.
        mesh_terms, report_sections, views, view_table, one_per_report, split_fractions,
            split_seed, on_error: as :func:`iu_xray_manifest`.
        transforms: dictionary transforms applied to each sample.

    Raises:
        ValueError: as :func:`iu_xray_manifest`, or on an unknown label or split.
        DataReadError: in raise mode, naming a missing or unreadable file.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        label: str | None = "abnormal",
        mesh_terms: Sequence[str] = MESH_TERMS,
        report_sections: Sequence[str] = DEFAULT_SECTIONS,
        views: Sequence[str] | None = None,
        view_table: str | Path | None = None,
        one_per_report: bool = False,
        split_fractions: Mapping[str, float] | None = None,
        split_seed: int = 0,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
    ) -> None:
        frame = iu_xray_manifest(root, mesh_terms=mesh_terms, report_sections=report_sections, views=views,
                                 view_table=view_table, one_per_report=one_per_report,
                                 split_fractions=split_fractions, split_seed=split_seed, on_error=on_error)
        labels = ["normal", "abnormal", *(term_column(t) for t in mesh_terms)]
        super().__init__(frame, {"image": "image", "text": "report"}, label, labels, root=check_root(root, DATASET),
                         split=split, splits=list(split_fractions or DEFAULT_FRACTIONS), dataset=DATASET,
                         transforms=transforms, on_error=on_error)


__all__ = ["MESH_TERMS", "IuXrayDataset", "iu_xray_manifest", "mesh_labels", "parse_report", "term_column"]

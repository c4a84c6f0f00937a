"""MIMIC-CXR-JPG as a user holds it locally (PhysioNet credentialed access; nothing is downloaded).

Johnson et al. 2019, "MIMIC-CXR-JPG, a large publicly available database of labeled chest
radiographs", arXiv:1901.07042; https://physionet.org/content/mimic-cxr-jpg/2.0.0/

Layout under ``root`` (tables gzipped or not)::

    mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 CheXpert labels (1 / 0 / -1 / blank)
    mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, ..., ViewPosition (PA, AP, LATERAL, LL, ...)  [optional]
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    files/p10/p10000032/s50414267.txt  free-text report (from MIMIC-CXR, optional; may live under
                                       another root: ``reports_root``)

One manifest row per image. ``patient_id`` is the subject id; the split is the official
one (``validate`` -> ``"val"``), which is patient-level. Labels are per study, copied to
each of its images: 1 positive, 0 negative; a blank cell (finding not mentioned) is 0;
-1 (uncertain) follows the policy of Irvin et al. 2019 (CheXpert, AAAI): ``"ones"``,
``"zeros"``, or ``"ignore"`` (NaN: the dataset class leaves such samples out for that
label, a multi-label loss masks them). Studies absent from the label table have NaN labels.

Reports: with ``report_sections`` (default FINDINGS and IMPRESSION) the ``report`` column
holds those sections inline (``"FINDINGS: ... IMPRESSION: ..."``; the whole report when it
has none of them) and ``report_path`` the file; with ``report_sections=None`` ``report``
holds the path and the text is read at load time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
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
    read_csv,
    record_skipped,
    split_names,
    split_report,
)
from medfusion.data.datasets.manifest import SkippedFile
from medfusion.data.io.base import DataReadError
from medfusion.data.io.text import read_text

logger = logging.getLogger(__name__)

DATASET = "mimic_cxr"
#: The 14 CheXpert labels, in the label table's order.
CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)
#: What an uncertain (-1) label becomes under each policy.
UNCERTAIN_POLICIES = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
#: The tables of the layout (each may also be gzipped: ``<name>.gz``).
SPLIT_TABLE = "mimic-cxr-2.0.0-split.csv"
LABEL_TABLE = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_TABLE = "mimic-cxr-2.0.0-metadata.csv"
#: The official split names and the project's.
SPLITS = {"train": "train", "validate": "val", "test": "test"}
#: Report sections kept by default.
DEFAULT_SECTIONS = ("findings", "impression")


def _table(root: Path, name: str, *, required: bool = True, why: str = "") -> Path | None:
    return find_file(root, [f"{name}.gz", name], DATASET, required=required, why=why)


def _folder(subject: str) -> str:
    return f"files/p{subject[:2]}/p{subject}"


def report_text(text: str, sections: Sequence[str] | None = DEFAULT_SECTIONS) -> str:
    """The wanted sections of a MIMIC-CXR report, as ``"FINDINGS: ... IMPRESSION: ..."``.

    Args:
        text: the report file's text.
        sections: section names (case-insensitive) in output order; None for the whole
            report. A report with none of them gives its whole text.

    Returns:
        The text, whitespace normalised, without the "FINAL REPORT" banner.
    """
    parts = split_report(text)
    parts[""] = parts[""].removeprefix("FINAL REPORT").strip()
    if sections is not None:
        chosen = join_sections([(s.upper(), parts.get(s.upper(), "")) for s in sections])
        if chosen:
            return chosen
    return " ".join(v if not k else f"{k}: {v}" for k, v in parts.items() if v)


def read_report(path: str | Path, sections: Sequence[str] | None = DEFAULT_SECTIONS) -> str:
    """:func:`report_text` of a report file.

    Raises:
        DataReadError: on a missing, empty or non-UTF-8 file.
    """
    return report_text(read_text(path).text, sections)


def _labels(table: pd.DataFrame, uncertain: str, path: Path) -> pd.DataFrame:
    raw = table[list(CHEXPERT_LABELS)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    blank = raw.isna() | (raw.astype(str).apply(lambda c: c.str.strip()) == "")
    odd = (values.isna() & ~blank) | (values.notna() & ~values.isin([1.0, 0.0, -1.0]))
    if odd.to_numpy().any():
        column = values.columns[odd.any().to_numpy()][0]
        raise ValueError(f"{DATASET}: {path.name} column {column!r} holds values other than 1, 0, -1 or blank")
    labels = pd.DataFrame({"patient_id": id_text(table["subject_id"]), "study_id": id_text(table["study_id"])})
    twice = labels.duplicated()
    if twice.any():
        raise ValueError(f"{DATASET}: {path.name} lists {int(twice.sum())} study(ies) twice, e.g. study "
                         f"{labels['study_id'][twice].iloc[0]}; expected one row per study")
    values = values.fillna(0.0).replace(-1.0, UNCERTAIN_POLICIES[uncertain])
    return pd.concat([labels, values], axis=1)


def _attach_reports(frame: pd.DataFrame, root: Path, reports_root: Path | None, reports: bool | None,
                    sections: Sequence[str] | None, on_error: str) -> pd.DataFrame:
    base = reports_root or root
    relative = frame["patient_id"].map(_folder) + "/s" + frame["study_id"] + ".txt"
    studies = relative.drop_duplicates()
    exists = {p: (base / p).is_file() for p in studies}
    found = sum(exists.values())
    if reports is None and not found:
        logger.info("%s: no report file found: no report column", DATASET)
        return frame
    paths = relative if reports_root is None else relative.map(lambda p: str(base / p))
    if not reports and found < len(studies):
        logger.warning("%s: %d of %d studies have no report file: their text is marked absent", DATASET,
                       len(studies) - found, len(studies))
        paths = pd.Series([p if exists[r] else "" for p, r in zip(paths, relative)], index=frame.index)
    # reports=True: a missing report is a missing file; either way an empty one is a bad file
    frame = check_listed_files(frame.assign(report_path=paths), {"report_path": "the study's report"}, base,
                               key_column="study_id", on_error=on_error, dataset=DATASET)
    if sections is None:
        return frame.assign(report=frame["report_path"])
    texts, unreadable = {}, {}
    for path in frame["report_path"].drop_duplicates():
        if not path:
            continue
        try:
            texts[path] = read_report(path if Path(path).is_absolute() else base / path, sections)
        except DataReadError as error:
            if on_error == "raise":
                raise DataReadError(error.path, f"{error.reason} (a study's report; on_error='skip' leaves its "
                                                "images out)") from error
            unreadable[path] = error.reason
    if unreadable:
        bad = frame["report_path"].isin(list(unreadable)).to_numpy()
        logger.warning("%s: skipped %d image(s) of %d studies whose report is unreadable", DATASET, int(bad.sum()),
                       len(unreadable))
        attrs = frame.attrs
        rows = frame[bad]
        frame = frame[~bad].reset_index(drop=True)
        frame.attrs = attrs
        record_skipped(frame, [SkippedFile(f"dicom_id={d}", "report_path", unreadable[p])
                               for d, p in zip(rows["dicom_id"], rows["report_path"])], rows["split"].tolist())
    return frame.assign(report=frame["report_path"].map(lambda p: texts.get(p, "")))


def mimic_cxr_manifest(
    root: str | Path,
    *,
    uncertain: str = "zeros",
    views: Sequence[str] | None = None,
    reports: bool | None = None,
    reports_root: str | Path | None = None,
    report_sections: Sequence[str] | None = DEFAULT_SECTIONS,
    on_error: str = "raise",
) -> pd.DataFrame:
    """A ManifestDataset-ready manifest of a local MIMIC-CXR-JPG copy: one row per image.

    Args:
        root: the dataset's top folder (holding the tables and ``files/``).
        uncertain: what -1 (uncertain) becomes: "ones", "zeros" or "ignore" (NaN).
        views: keep images whose ViewPosition is one of these (e.g. ``["PA", "AP"]`` for
            frontal films); None keeps all and needs no metadata table.
        reports: True: every study needs its report (a missing one is a missing file,
            see ``on_error``); None: use the reports present, a study without one has
            its text marked absent (counted in a warning), no column when there is none;
            False: no report column.
        reports_root: the folder holding ``files/pXX/pSUBJECT/sSTUDY.txt`` when the reports
            are kept apart from the images (paths are then absolute); default ``root``.
        report_sections: sections put inline in ``report`` (see the module docstring);
            None keeps the path instead.
        on_error: for images the tables list but the disk lacks, required reports that
            are missing, and empty or non-UTF-8 reports: "raise" names the file, "skip"
            leaves the image out and records it in ``attrs["skipped"]`` with a logged count.

    Returns:
        Columns ``patient_id`` (subject id), ``study_id``, ``dicom_id``, ``split``
        ("train"/"val"/"test"), ``view`` (when the metadata table is there), ``image``
        (path relative to root), ``report_path`` and ``report`` (when reports are used),
        and the 14 :data:`CHEXPERT_LABELS` (float: 1, 0, NaN).

    Raises:
        ValueError: when root lacks a table or ``files/`` (naming it and root), a table
            lacks columns, holds unknown split or label values, or on a bad option.
        DataReadError: in raise mode, naming the first image (or report) not on disk.

    Examples::

        frame = mimic_cxr_manifest("/data/mimic-cxr-jpg/2.0.0", views=["PA", "AP"], uncertain="ones")
        frame.to_parquet("/data/mimic-cxr-jpg/2.0.0/manifest.parquet")
    """
    root = check_root(root, DATASET)
    check_on_error(on_error, DATASET)
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"{DATASET}: expected uncertain in {list(UNCERTAIN_POLICIES)}, received {uncertain!r}")
    views = check_names(views, "views", DATASET)
    sections = check_names(report_sections, "report_sections", DATASET)
    if reports not in (True, False, None):
        raise ValueError(f"{DATASET}: expected reports True, False or None, received {reports!r}")
    split_path = _table(root, SPLIT_TABLE)
    label_path = _table(root, LABEL_TABLE)
    meta_path = _table(root, METADATA_TABLE, required=views is not None, why=" (needed to filter by views)")
    find_dir(root, "files", DATASET, "the JPEG images, files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg")
    reports_base = None
    if reports_root is not None:
        reports_base = check_root(reports_root, DATASET)

    images = read_csv(split_path, ["dicom_id", "study_id", "subject_id", "split"], DATASET)
    frame = pd.DataFrame({
        "patient_id": id_text(images["subject_id"]),
        "study_id": id_text(images["study_id"]),
        "dicom_id": id_text(images["dicom_id"]),
        "split": split_names(images["split"], SPLITS, split_path.name, DATASET),
    })
    if meta_path is not None:
        meta = read_csv(meta_path, ["dicom_id", "ViewPosition"], DATASET)
        view_of = dict(zip(id_text(meta["dicom_id"]), meta["ViewPosition"].fillna("").astype(str).str.strip()))
        frame["view"] = frame["dicom_id"].map(lambda d: view_of.get(d, ""))
        if views is not None:
            wanted = {v.upper() for v in views}
            keep = frame["view"].str.upper().isin(wanted)
            logger.info("%s: kept %d of %d images with a view among %s", DATASET, int(keep.sum()), len(frame),
                        sorted(wanted))
            frame = frame[keep.to_numpy()].reset_index(drop=True)
    frame["image"] = (frame["patient_id"].map(_folder) + "/s" + frame["study_id"] + "/" + frame["dicom_id"]
                      + ".jpg")

    label_table = read_csv(label_path, ["subject_id", "study_id", *CHEXPERT_LABELS], DATASET)
    labels = _labels(label_table, uncertain, label_path)
    frame = frame.merge(labels, on=["patient_id", "study_id"], how="left", validate="many_to_one")
    frame = check_listed_files(frame, {"image": split_path.name}, root, key_column="dicom_id", on_error=on_error,
                               dataset=DATASET)
    if reports is not False:
        frame = _attach_reports(frame, root, reports_base, reports, sections, on_error)
    first = ["patient_id", "study_id", "dicom_id", "split", *(["view"] if "view" in frame else []), "image",
             *(["report_path", "report"] if "report" in frame else [])]
    out = frame[first + list(CHEXPERT_LABELS)].reset_index(drop=True)
    out.attrs = frame.attrs
    return out


class MimicCxrDataset(AdapterDataset):
    """MIMIC-CXR-JPG images (and report text) as a :class:`ManifestDataset`.

    Samples: ``inputs["image"]`` (1, H, W) float32 in [0, 1] at the JPEG's full size (add a
    resize transform), ``inputs["text"]`` the report sections when reports are used.

    Args:
        root: the dataset's top folder.
        split: "train", "val", "test" (official split) or None for every image.
        label: the CheXpert label of ``sample["label"]`` (see :data:`CHEXPERT_LABELS`);
            images without it (uncertain under "ignore", unlabelled study) are left out
            and counted in :attr:`unlabelled`. None: unlabelled samples.
        uncertain, views, reports, reports_root, report_sections, on_error: as
            :func:`mimic_cxr_manifest`.
        transforms: dictionary transforms applied to each sample.

    Raises:
        ValueError: as :func:`mimic_cxr_manifest`, or on an unknown label or split.
        DataReadError: in raise mode, naming a missing or unreadable file.

    Examples::

        train = MimicCxrDataset("/data/mimic-cxr-jpg/2.0.0", "train", label="Pneumonia", uncertain="ignore",
                                views=["PA", "AP"])
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        label: str | None = "No Finding",
        uncertain: str = "zeros",
        views: Sequence[str] | None = None,
        reports: bool | None = None,
        reports_root: str | Path | None = None,
        report_sections: Sequence[str] | None = DEFAULT_SECTIONS,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
    ) -> None:
        frame = mimic_cxr_manifest(root, uncertain=uncertain, views=views, reports=reports, reports_root=reports_root,
                                   report_sections=report_sections, on_error=on_error)
        modalities = {"image": "image", **({"text": "report"} if "report" in frame else {})}
        loaders = None
        if report_sections is None and "report" in frame:
            loaders = {"text": partial(read_report, sections=None)}  # whole reports, banner stripped
        super().__init__(frame, modalities, label, CHEXPERT_LABELS, root=check_root(root, DATASET), split=split,
                         splits=tuple(SPLITS.values()), dataset=DATASET, loaders=loaders, transforms=transforms,
                         on_error=on_error)


__all__ = ["CHEXPERT_LABELS", "UNCERTAIN_POLICIES", "MimicCxrDataset", "mimic_cxr_manifest", "read_report",
           "report_text"]

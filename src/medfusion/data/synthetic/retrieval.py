"""The ``retrieval`` scenario: chest X-ray image-report pairs for cross-modal search and zero-shot labels.

Each patient is one study: a report and a frontal chest X-ray rendered to match it.

**Reports.** With ``source="openi"`` (or ``"auto"`` when the archive is installed) the
reports are the real Indiana University reports shipped in the ``torchxrayvision`` package
(:mod:`.openi`; a seeded sample of the 3,927 with a FINDINGS or IMPRESSION section). With
``source="generated"`` (or ``"auto"`` without the archive; ``cohort.json`` then says so)
they are written from random findings by :func:`.openi.generate_reports`.

**Images.** The report's major MeSH terms are mapped to the X-ray renderer's findings,
sides and zones (:func:`.openi.mesh_to_spec`) and drawn by :func:`.xray.render_xrays`
(``Cardiomegaly/moderate`` -> cardiothoracic ratio 0.58-0.62; ``Opacity/lung/base/left``
-> left lower-zone consolidation; ``Pleural Effusion/right`` -> right effusion, ...), with
masks and boxes per finding.

What each side of a pair carries:

| property | where |
|---|---|
| **redundant** (what search aligns) | rendered findings: named in the report's words and drawn in the image |
| **cross-modal agreement, fine grain** | side and zone: "left base opacity" must find the left lower-zone opacity, not the right one (``components["sided"]`` marks reports with a side-specific rendered finding) |
| **text only** | findings the renderer does not draw (atelectasis, granulomatous disease, devices, ...), negations, comparisons |
| **image only** | anatomy; the side or zone of a finding whose MeSH terms give none (drawn at random, ``imputed``) |
| **dominant finding** (imbalance) | about 69% of Open-i reports map to no rendered finding; cardiomegaly and nodules are the commonest |

**Labels.** ``labels_true`` (N, F) = the rendered findings; ``labels`` flips each with
probability ``label_noise`` (default 0: the MeSH coding is the labeller); ``abnormal`` = any
observed label (the split is stratified by it).

**Metadata per study.** ``view`` "PA", or "AP" when the Open-i caption says AP or the text
says portable (generated: AP with probability 0.15); the image is drawn as a PA film either
way (no lateral views are rendered). ``body_part`` "CHEST"; ``study_date`` uniform in
2010-2014 (synthetic); ``sex`` from the report when it says male/female/man/woman, else
random; ``age`` synthetic (Open-i ages are redacted). A ``dicom_fraction`` of the images is
also written as DICOM.

**Missingness.** Image and report absent with the rates in ``missing`` (default none); a
study left with neither keeps its report. **Randomness**: one ``Generator(seed)`` spawns
independent streams.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from medfusion.data.synthetic import openi
from medfusion.data.synthetic._fields import image_size as image_size_pair
from medfusion.data.synthetic.triage import stratified_split
from medfusion.data.synthetic.xray import FINDINGS, LEFT, RIGHT, SIDE_NAMES, ZONE_NAMES, Anatomy, render_xrays

#: Modalities of the retrieval scenario.
RETRIEVAL_MODALITIES: tuple[str, ...] = ("image", "text")
#: Default per-modality missing rates (pairs complete).
DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"image": 0.0, "text": 0.0})
#: Where reports come from.
SOURCES: tuple[str, ...] = ("auto", "openi", "generated")
_FEMALE = re.compile(r"\b(female|woman|lady|girl)\b", re.IGNORECASE)
_MALE = re.compile(r"\b(male|man|gentleman|boy)\b", re.IGNORECASE)
_AP = re.compile(r"\bAP\b")
_PORTABLE = re.compile(r"\bportable\b", re.IGNORECASE)


@dataclass
class RetrievalCohort:
    """N image-report pairs.

    Attributes:
        patient_id: (N,) str "SYN-000001", ...; split: (N,) str.
        source: "openi" or "generated"; source_note: why, when "auto" fell back.
        source_id: (N,) str Open-i id of the report ("CXR1", ...) or "GEN-000001".
        reports: N report texts (FINDINGS / IMPRESSION); ``""`` where absent.
        mesh: N tuples of major MeSH terms; unrendered: N tuples of those not drawn.
        labels: (N, F) bool observed per-finding labels (:data:`~.xray.FINDINGS` order);
            labels_true: the rendered findings; label_flipped: (N, F) bool.
        abnormal: (N,) int64, any observed label.
        finding_side, finding_zone: (N, F) int8 codes of :mod:`.xray` (-1 none).
        imputed: (N, F) bool, side or zone drawn because the terms give none.
        images: (N, 1, H, W) float32 in [0, 1], zeros where absent; masks (N, F, H, W) bool;
            boxes (N, F, 4) int32; anatomy: per-study geometry.
        view: (N,) "PA" / "AP"; body_part: (N,) "CHEST"; study_date: (N,) "YYYY-MM-DD";
            age: (N,) int64; sex: (N,) "M" / "F".
        has_dicom: (N,) bool, image also written as DICOM.
        present: {"image" | "text": (N,) bool}.
        components: {name: (N,) array}: sided, imputed_any, sex_from_report, view_from_report,
            abnormal_true, n_rendered.
        ground_truth: the design in words with realised rates; settings: the arguments.
    """

    patient_id: np.ndarray
    split: np.ndarray
    source: str
    source_note: str
    source_id: np.ndarray
    reports: list[str]
    mesh: list[tuple[str, ...]]
    unrendered: list[tuple[str, ...]]
    labels: np.ndarray
    labels_true: np.ndarray
    label_flipped: np.ndarray
    abnormal: np.ndarray
    finding_side: np.ndarray
    finding_zone: np.ndarray
    imputed: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    anatomy: Anatomy
    view: np.ndarray
    body_part: np.ndarray
    study_date: np.ndarray
    age: np.ndarray
    sex: np.ndarray
    has_dicom: np.ndarray
    present: dict[str, np.ndarray]
    components: dict[str, np.ndarray]
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    finding_names: ClassVar[tuple[str, ...]] = FINDINGS

    def __len__(self) -> int:
        return len(self.patient_id)

    def to_frame(self) -> pd.DataFrame:
        """One row per study: patient_id, split, abnormal, source_id, view, body_part, study_date, age,
        sex, one bool label column per finding, ``<finding>_side`` / ``<finding>_zone`` ("" where
        absent or not applicable), mesh (";"-joined), has_image, has_text, report."""
        sides = np.array([*SIDE_NAMES, ""])  # code -1 indexes the last entry
        zones = np.array([*ZONE_NAMES, ""])
        data: dict[str, Any] = {
            "patient_id": self.patient_id, "split": self.split, "abnormal": self.abnormal,
            "source_id": self.source_id, "view": self.view, "body_part": self.body_part,
            "study_date": self.study_date, "age": self.age, "sex": self.sex,
        }
        data.update({name: self.labels[:, j] for j, name in enumerate(FINDINGS)})
        data.update({f"{name}_side": sides[self.finding_side[:, j]] for j, name in enumerate(FINDINGS)})
        data.update({f"{name}_zone": zones[self.finding_zone[:, j]] for j, name in enumerate(FINDINGS)})
        data["mesh"] = [";".join(terms) for terms in self.mesh]
        data.update({f"has_{m}": self.present[m] for m in RETRIEVAL_MODALITIES})
        data["report"] = self.reports
        return pd.DataFrame(data)


def _check_rate(name: str, value: Any, upper: float = 1.0, closed: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
    if not ok or not (0 <= value <= upper if closed else 0 <= value < upper):
        raise ValueError(f"retrieval: expected {name} in [0, {upper}{']' if closed else ')'}, received {value!r}")
    return float(value)


def _check_args(n_patients, seed, source, label_noise, missing, image_size, dicom_fraction,
                split_fractions) -> dict[str, float]:
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ValueError(f"retrieval: expected n_patients to be an int >= 1, received {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"retrieval: expected seed to be an int >= 0, received {seed!r}")
    if source not in SOURCES:
        raise ValueError(f"retrieval: expected source in {list(SOURCES)}, received {source!r}")
    _check_rate("label_noise", label_noise, 0.5)
    _check_rate("dicom_fraction", dicom_fraction, closed=True)
    image_size_pair(image_size)
    if not isinstance(missing, Mapping):
        raise ValueError(f"retrieval: expected missing as a mapping modality -> rate, "
                         f"received {type(missing).__name__}")
    unknown = sorted(set(missing) - set(RETRIEVAL_MODALITIES))
    if unknown:
        raise ValueError(f"retrieval: unknown modality(ies) {unknown} in missing; expected keys from "
                         f"{list(RETRIEVAL_MODALITIES)}")
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"retrieval: expected split_fractions as three non-negative numbers (train, val, test) "
                         f"summing to 1, received {split_fractions!r}")
    return {m: _check_rate(f"missing[{m!r}]", missing.get(m, 0.0)) for m in RETRIEVAL_MODALITIES}


def _reports(n: int, source: str, rng: np.random.Generator) -> tuple[str, str, tuple[openi.OpenIReport, ...]]:
    """(source used, note, N reports): a seeded sample of the Open-i reports, or generated ones."""
    if source == "generated":
        return "generated", "", openi.generate_reports(n, rng)
    archive = openi.find_openi_archive()
    if archive is None and source == "auto":
        return ("generated", "torchxrayvision data (NLMCXR_reports.tgz) not found: reports generated from "
                             "random findings", openi.generate_reports(n, rng))
    usable = [r for r in openi.read_openi_reports(archive) if r.text]
    if n > len(usable):
        raise ValueError(f"retrieval: expected n_patients <= {len(usable)} (Open-i reports with text), "
                         f"received {n}; use source='generated' (medfusion synth --source generated) for more")
    chosen = np.sort(rng.choice(len(usable), n, replace=False))
    return "openi", "", tuple(usable[i] for i in chosen)


def _metadata(reports, source: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """View, sex (from the report where stated), synthetic age and study date."""
    n = len(reports)
    words = [f"{r.indication} {r.findings} {r.impression}" for r in reports]
    female = np.array([bool(_FEMALE.search(w)) for w in words])
    male = np.array([bool(_MALE.search(w)) for w in words]) & ~female
    random_male = rng.random(n) < 0.5
    if source == "generated":
        stated_ap, random_ap = np.zeros(n, dtype=bool), rng.random(n) < 0.15
    else:
        stated_ap = np.array([bool(_AP.search(r.caption) or _PORTABLE.search(f"{r.caption} {w}"))
                              for r, w in zip(reports, words)])
        random_ap = np.zeros(n, dtype=bool)
    days = rng.integers(0, 5 * 365 + 1, n)
    return {
        "view": np.where(stated_ap | random_ap, "AP", "PA"),
        "view_from_report": stated_ap,
        "sex": np.where(male | (~female & random_male), "M", "F"),
        "sex_from_report": male | female,
        "age": np.clip(np.round(rng.normal(56, 17, n)), 18, 95).astype(np.int64),
        "study_date": (np.datetime64("2010-01-01") + days.astype("timedelta64[D]")).astype(str),
    }


def generate_retrieval(
    n_patients: int,
    seed: int = 0,
    *,
    source: str = "auto",
    label_noise: float = 0.0,
    missing: Mapping[str, float] = DEFAULT_MISSING,
    image_size: int = 128,
    dicom_fraction: float = 0.1,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> RetrievalCohort:
    """Generate image-report pairs (see the module docstring).

    Args:
        n_patients: N studies; with Open-i reports at most the 3,927 that have text.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        source: "auto" (Open-i when installed, else generated), "openi" or "generated".
        label_noise: probability of flipping each per-finding label, in [0, 0.5).
        missing: {"image" | "text": rate in [0, 1)} of the modality being absent.
        image_size: X-ray height = width in pixels (>= 32).
        dicom_fraction: share of the images also written as DICOM, in [0, 1].
        split_fractions: (train, val, test) shares of each ``abnormal`` class.

    Returns:
        A :class:`RetrievalCohort`.

    Raises:
        ValueError: on a bad argument, naming it and the received value.
        DataReadError: with ``source="openi"`` when the archive is missing or unreadable.

    Examples::

        cohort = generate_retrieval(1000, seed=0)
        cohort.source, cohort.source_id[0]  # ('openi', 'CXR3')
        cohort.reports[0]                   # 'FINDINGS: ...\\n\\nIMPRESSION: ...'
    """
    rates = _check_args(n_patients, seed, source, label_noise, missing, image_size, dicom_fraction, split_fractions)
    n = int(n_patients)
    (report_rng, map_rng, xray_rng, meta_rng, missing_rng, noise_rng,
     split_rng) = np.random.default_rng(seed).spawn(7)
    used, note, reports = _reports(n, source, report_rng)
    mapping = openi.mesh_to_spec([r.mesh for r in reports], map_rng)
    xray = render_xrays(mapping.spec, xray_rng, image_size)
    meta = _metadata(reports, used, meta_rng)

    truth = mapping.spec.present
    flipped = noise_rng.random(truth.shape) < label_noise
    labels = truth ^ flipped
    present = {m: missing_rng.random(n) >= rates[m] for m in RETRIEVAL_MODALITIES}
    present["text"] |= ~present["image"]
    has_dicom = present["image"] & (missing_rng.random(n) < dicom_fraction)
    images = xray.images
    images[~present["image"]] = 0.0
    abnormal = labels.any(axis=1).astype(np.int64)
    split = stratified_split(abnormal, split_rng, split_fractions)
    sided = (truth & np.isin(mapping.spec.side, (RIGHT, LEFT)) & ~mapping.imputed).any(axis=1)
    components = {
        "sided": sided, "imputed_any": mapping.imputed.any(axis=1), "sex_from_report": meta["sex_from_report"],
        "view_from_report": meta["view_from_report"], "abnormal_true": truth.any(axis=1).astype(np.int64),
        "n_rendered": truth.sum(axis=1).astype(np.int64),
    }
    settings = dict(n_patients=n, seed=int(seed), source=source, label_noise=float(label_noise), missing=rates,
                    image_size=image_size, dicom_fraction=float(dicom_fraction),
                    split_fractions=tuple(float(f) for f in split_fractions))
    return RetrievalCohort(
        patient_id=np.array([f"SYN-{i + 1:06d}" for i in range(n)]), split=split, source=used, source_note=note,
        source_id=np.array([r.uid for r in reports]),
        reports=[r.text if keep else "" for r, keep in zip(reports, present["text"].tolist())],
        mesh=[r.mesh for r in reports], unrendered=mapping.unrendered, labels=labels, labels_true=truth,
        label_flipped=flipped, abnormal=abnormal, finding_side=mapping.spec.side, finding_zone=mapping.spec.zone,
        imputed=mapping.imputed, images=images, masks=xray.masks, boxes=xray.boxes, anatomy=xray.anatomy,
        view=meta["view"], body_part=np.full(n, "CHEST"), study_date=meta["study_date"], age=meta["age"],
        sex=meta["sex"], has_dicom=has_dicom, present=present, components=components,
        ground_truth=_describe(used, truth, flipped, mapping, components, present), settings=settings,
    )


def _describe(source, truth, flipped, mapping, components, present) -> str:
    """The design in words, with the realised rates of a cohort."""
    counts = ", ".join(f"{name} {truth[:, j].mean():.3f}" for j, name in enumerate(FINDINGS))
    return "\n".join([
        f"retrieval ground truth: each {source} report is paired with an X-ray rendered from its major MeSH terms; "
        "labels_true = the rendered findings; labels = labels_true with per-finding label noise; "
        "abnormal = any observed label.",
        f"realised: {counts}; any finding {truth.any(axis=1).mean():.3f}; side-specific finding named "
        f"{components['sided'].mean():.3f}; side or zone imputed {mapping.imputed.any(axis=1).mean():.3f}; "
        f"label flips {flipped.mean():.3f}.",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in RETRIEVAL_MODALITIES) + ".",
    ])


def write_retrieval_cohort(
    cohort: RetrievalCohort,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` in the layout of :mod:`.files`.

    Layout: ``images/SYN-000001.png`` (8-bit grayscale, column "image"),
    ``dicom/SYN-000001.dcm`` for the DICOM subset (DX, view, body part, pixel spacing; column
    "image_dicom", "" elsewhere), ``reports/SYN-000001.txt`` (column "text"),
    ``ground_truth/masks.npz``, ``cohort.json`` (source, and why when "auto" fell back to
    generated reports) and ``manifest.parquet`` / ``manifest.csv`` (written last): the
    columns of :meth:`RetrievalCohort.to_frame` without the report and presence flags, plus
    image, image_dicom, text and ``gt_<component>``.

    Args:
        cohort: a generated retrieval cohort.
        out: destination folder (created).
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.
    """
    # the writers import pydicom, PyAV, ...: only when writing
    from medfusion import __version__
    from medfusion.data.io import write_dicom, write_png
    from medfusion.data.synthetic.files import (
        SYNTHETIC_PIXEL_SPACING_MM, save_masks, write_description, write_manifest, write_patient_files,
    )
    from medfusion.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = cohort.to_frame().drop(columns=["report", *(f"has_{m}" for m in RETRIEVAL_MODALITIES)])
    pixels = np.clip(np.rint(cohort.images[:, 0] * 255), 0, 255).astype(np.uint8)  # (N, H, W)
    spacing = SYNTHETIC_PIXEL_SPACING_MM / pixels.shape[-1]
    ids = cohort.patient_id
    def dicom(i: int, path: Path) -> None:
        meta = {"patient_id": str(ids[i]), "view": str(cohort.view[i]), "body_part": "CHEST",
                "spacing": (spacing, spacing)}
        write_dicom(path, pixels[i], modality="DX", meta=meta)

    columns, total = write_patient_files(out, ids, {
        "image": ("images/{}.png", cohort.present["image"], lambda i, p: write_png(p, pixels[i])),
        "image_dicom": ("dicom/{}.dcm", cohort.has_dicom, dicom),
        "text": ("reports/{}.txt", cohort.present["text"], lambda i, p: atomic_write_text(p, cohort.reports[i])),
    }, workers, progress)

    save_masks(out, ids, cohort.finding_names, cohort.masks, cohort.boxes)
    for name, values in columns.items():
        frame[name] = values
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, {
        "scenario": "retrieval", "medfusion_version": __version__, "patients": len(cohort),
        "modalities": {"image": "image", "text": "text"}, "label": "abnormal",
        "labels": list(cohort.finding_names), "source": cohort.source, "source_note": cohort.source_note,
        "report_licence": "Indiana University chest X-ray collection (NLM Open-i), CC BY-NC-ND 4.0"
                          if cohort.source == "openi" else "generated",
        "image_formats": ["png", "dicom"], "image_columns": {"png": "image", "dicom": "image_dicom"},
        "finding_names": list(cohort.finding_names), "settings": cohort.settings,
        "ground_truth": cohort.ground_truth, "views": "PA or AP as the report states; all drawn as PA films",
        "left_right": "radiological convention: the patient's right is on the image left",
    })
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest

"""The ``radiology`` scenario: lung-nodule follow-up, from a baseline CT report and a follow-up CT (text + volume).

Every patient had a baseline chest CT whose **report** (text, :mod:`._ct_reports`) describes
one nodule (lobe, size, composition, margins) and was asked back for a 3-month **follow-up
CT** (the volume, :mod:`.ct`). The question: is the follow-up suspicious for malignancy?
Both modalities are drawn from one set of latent variables, so the label can be traced to
exactly what each shows.

Latent variables (independent unless stated):

| latent | rate | shown by |
|---|---|---|
| ``nodule`` N: a nodule on the follow-up CT, lobe uniform over 5, diameter log-uniform 4-20 mm, spiculated 0.3, solid 0.75 (else ground-glass) | 0.75 | **volume only** |
| ``suspicious_morphology`` M = N and (diameter > 8 mm or spiculated) | about 0.52 | volume only |
| ``smoker`` R: heavy smoking history (30-60 pack-years; else never or 2-15 pack-years) | 0.40 | **report only** (clinical history) |
| ``emphysema`` E | 0.35 | volume (-960 HU patches) **and** report ("centrilobular emphysema" / "No emphysema.") |
| ``report_lobe``: the lobe of the baseline nodule; the follow-up nodule's lobe with probability 0.5, else one of the 4 others (uniform when N is false) | - | **report only** |
| baseline size / margins / composition in the report | - | report only, drawn independently (the nodule may have grown or changed) |
| distractors: pleural effusion 0.1, calcified granuloma 0.15 (volume); an effusion in the report 0.1; indication; light smoking | - | |

**Label.** ``high_risk = R or E``, ``lobes_agree = N and report_lobe == nodule_lobe``, and::

    suspicious_true = M and high_risk and lobes_agree

that is: a morphologically suspicious nodule (Lung-RADS-like: > 8 mm or spiculated), in a
high-risk patient, that **persists** at follow-up in the lobe where the baseline report
placed it. A suspicious-looking nodule in another lobe is new since the baseline (the
reported one resolved) and new nodules at 3 months are mostly inflammatory: another
short-term follow-up, not "suspicious". Prevalence about 0.16. ``suspicious`` is
``suspicious_true`` with each label flipped with probability ``label_noise``.

What this plants (ceilings are Bayes AUROC / accuracy from the exact latents, before
measurement and label noise):

| property | where | ceiling |
|---|---|---|
| **dominant easy modality** (imbalance) | volume alone: M is visible and necessary; E visible | AUROC 0.85 |
| **complementary** | M only in the volume, R only in the report | volume 0.85, report 0.73, both without the lobe comparison 0.90 |
| **redundant** | E in the volume and the report: without the volume the report still gives E | |
| **cross-modal agreement** | when M and high_risk (32% of patients) the label is exactly "report lobe == volume lobe": each modality alone is at chance there (P(match) = 0.5 whatever either lobe is) | all 1.0 / 1.0 |

``components["agreement_case"]`` marks that subgroup and ``components["lobes_agree"]`` its
answer. Ground-truth masks (N, 4, D, H, W) and 3-D boxes cover every finding
(:data:`~.ct.CT_FINDINGS`); ``anatomy.lobe_map(shape)`` gives the lobes.

**Missingness.** Each modality ("volume", "text") is absent independently with the rate in
``missing`` (an absent volume is all zeros, an absent report is ``""``). A patient left with
neither keeps the report. Masks describe the patient even where the volume is absent.

**Randomness and splits.** One ``numpy.random.Generator(seed)`` spawns independent streams
(latents, volumes, reports, missingness, label noise, split): the same seed gives an
identical cohort. Patient-level splits stratified by the observed label.

Memory: a 32 x 64 x 64 volume is 0.5 MB (float32) plus 0.5 MB of masks: about 1 GB per
1,000 patients held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from medfusion import __version__
from medfusion.data.io import write_dicom, write_nifti
from medfusion.data.synthetic._cohort_checks import check_cohort_args
from medfusion.data.synthetic._ct_reports import ReportFacts, generate_ct_reports
from medfusion.data.synthetic.ct import CT_FINDINGS, LOBES, CTAnatomy, CTSpec, check_volume_geometry, render_ct
from medfusion.data.synthetic.files import save_masks, write_description, write_manifest, write_patient_files
from medfusion.data.synthetic.triage import stratified_split
from medfusion.files import atomic_write_text

#: Modalities of the radiology scenario.
RADIOLOGY_MODALITIES: tuple[str, ...] = ("volume", "text")
#: Default per-modality missing rates.
RADIOLOGY_DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"volume": 0.1, "text": 0.05})
#: Rates of the latent variables (see the module docstring).
RADIOLOGY_RATES = MappingProxyType({
    "nodule": 0.75, "spiculated": 0.3, "solid": 0.75, "smoker": 0.4, "emphysema": 0.35, "lobe_match": 0.5,
    "effusion": 0.1, "granuloma": 0.15, "report_effusion": 0.1,
})
#: Nodule diameters are log-uniform in this range (mm); "suspicious" above :data:`SIZE_THRESHOLD_MM`.
DIAMETER_RANGE_MM = (4.0, 20.0)
SIZE_THRESHOLD_MM = 8.0


@dataclass
class RadiologyCohort:
    """A synthetic radiology cohort of N patients.

    Attributes:
        patient_id: (N,) str, "SYN-000001", ...
        split: (N,) str, "train" / "val" / "test".
        suspicious: (N,) int64 observed label (with label noise).
        suspicious_true: (N,) int64 label before noise.
        label_flipped: (N,) bool, where noise flipped the label.
        volumes: (N, 1, D, H, W) float32 HU (RAS voxel order, see :mod:`.ct`); zeros where absent.
        spacing: (slice, row, col) mm.
        masks: (N, F, D, H, W) bool finding masks, channels in :data:`~.ct.CT_FINDINGS` order.
        boxes: (N, F, 6) int32 end-exclusive (z0, y0, x0, z1, y1, x1), -1 where empty.
        findings: (N, F) bool findings on the volume.
        reports: N baseline CT reports; ``""`` where absent.
        present: {"volume" | "text": (N,) bool}.
        age: (N,) int64 years; sex: (N,) str "M" / "F".
        components: {name: (N,) array}: nodule, nodule_lobe (-1 none), nodule_diameter_mm (NaN
            none), nodule_spiculated, nodule_solid, suspicious_morphology, smoker, pack_years,
            emphysema, high_risk, report_lobe, report_size_mm, report_spiculated, report_solid,
            report_effusion_side, lobes_agree, agreement_case, effusion_side, granuloma_lobe,
            nodule_center_d / _h / _w (voxels), nodule_volume_mm3 (partial-volume sum).
        anatomy: per-patient geometry (``anatomy.lobe_map(shape)``).
        ground_truth: human-readable description of the label design with realised rates.
        settings: the arguments the cohort was generated with.
    """

    patient_id: np.ndarray
    split: np.ndarray
    suspicious: np.ndarray
    suspicious_true: np.ndarray
    label_flipped: np.ndarray
    volumes: np.ndarray
    spacing: tuple[float, float, float]
    masks: np.ndarray
    boxes: np.ndarray
    findings: np.ndarray
    reports: list[str]
    present: dict[str, np.ndarray]
    age: np.ndarray
    sex: np.ndarray
    components: dict[str, np.ndarray]
    anatomy: CTAnatomy
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    finding_names: ClassVar[tuple[str, ...]] = CT_FINDINGS
    lobe_names: ClassVar[tuple[str, ...]] = LOBES

    def __len__(self) -> int:
        return len(self.patient_id)

    def to_frame(self):
        """The tabular part as a pandas DataFrame: one row per patient.

        Columns: patient_id, split, suspicious, suspicious_true, age, sex, one bool column per
        finding, nodule_lobe (name, "" where none), nodule_diameter_mm, nodule_spiculated,
        nodule_solid, has_volume, has_text, report.
        """
        import pandas as pd

        c = self.components
        data: dict[str, Any] = {"patient_id": self.patient_id, "split": self.split, "suspicious": self.suspicious,
                                "suspicious_true": self.suspicious_true, "age": self.age, "sex": self.sex}
        data.update({name: self.findings[:, j] for j, name in enumerate(CT_FINDINGS)})
        data["nodule_lobe"] = np.where(c["nodule_lobe"] >= 0, np.asarray(LOBES)[np.maximum(c["nodule_lobe"], 0)], "")
        data.update({k: c[k] for k in ("nodule_diameter_mm", "nodule_spiculated", "nodule_solid")})
        data.update({f"has_{m}": self.present[m] for m in RADIOLOGY_MODALITIES})
        data["report"] = self.reports
        return pd.DataFrame(data)


def _log_uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    low, high = DIAMETER_RANGE_MM
    return np.exp(rng.uniform(np.log(low), np.log(high), n))


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The latent variables of the module docstring."""
    r = RADIOLOGY_RATES
    u = rng.random((n, 12))
    c: dict[str, np.ndarray] = {"nodule": u[:, 0] < r["nodule"]}
    nod = c["nodule"]
    c["nodule_lobe"] = np.where(nod, rng.integers(0, len(LOBES), n), -1).astype(np.int8)
    c["nodule_diameter_mm"] = np.where(nod, _log_uniform(rng, n), np.nan).astype(np.float32)
    c["nodule_spiculated"] = nod & (u[:, 1] < r["spiculated"])
    c["nodule_solid"] = nod & (u[:, 2] < r["solid"])
    c["suspicious_morphology"] = nod & ((np.nan_to_num(c["nodule_diameter_mm"]) > SIZE_THRESHOLD_MM)
                                        | c["nodule_spiculated"])
    c["smoker"] = u[:, 3] < r["smoker"]
    light = np.where(u[:, 4] < 0.6, 0, rng.integers(2, 16, n))  # never or light smokers
    c["pack_years"] = np.where(c["smoker"], rng.integers(30, 61, n), light).astype(np.int64)
    c["current_smoker"] = u[:, 5] < 0.4
    c["emphysema"] = u[:, 6] < r["emphysema"]
    c["high_risk"] = c["smoker"] | c["emphysema"]
    same = u[:, 7] < r["lobe_match"]
    other = (c["nodule_lobe"] + rng.integers(1, len(LOBES), n)) % len(LOBES)
    c["report_lobe"] = np.where(nod, np.where(same, c["nodule_lobe"], other), rng.integers(0, len(LOBES), n))
    c["report_lobe"] = c["report_lobe"].astype(np.int8)
    c["report_size_mm"] = np.round(_log_uniform(rng, n)).astype(np.int64)
    c["report_spiculated"] = u[:, 8] < r["spiculated"]
    c["report_solid"] = rng.random(n) < r["solid"]
    c["report_effusion_side"] = np.where(u[:, 9] < r["report_effusion"], rng.integers(0, 2, n), -1).astype(np.int8)
    c["lobes_agree"] = nod & (c["report_lobe"] == c["nodule_lobe"])
    c["agreement_case"] = c["suspicious_morphology"] & c["high_risk"]
    c["effusion_side"] = np.where(u[:, 10] < r["effusion"], rng.integers(0, 2, n), -1).astype(np.int8)
    c["granuloma"] = u[:, 11] < r["granuloma"]
    c["male"] = rng.random(n) < 0.5
    c["age"] = np.clip(np.round(rng.normal(64, 9, n)), 40, 90).astype(np.int64)
    return c


def generate_radiology(
    n_patients: int,
    seed: int = 0,
    *,
    label_noise: float = 0.05,
    missing: Mapping[str, float] = RADIOLOGY_DEFAULT_MISSING,
    shape: tuple[int, int, int] = (32, 64, 64),
    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0),
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    workers: int | None = None,
) -> RadiologyCohort:
    """Generate the radiology cohort (see the module docstring for the ground-truth design).

    Args:
        n_patients: N.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        label_noise: probability of flipping each observed label, in [0, 0.5).
        missing: {"volume" | "text": rate in [0, 1)} of a whole modality being absent;
            modalities not named are never absent.
        shape: (D, H, W) voxels of each volume (each >= 16).
        spacing: (slice, row, col) mm.
        split_fractions: (train, val, test) shares of each label class.
        workers: CT rendering threads (the cohort does not depend on it).

    Returns:
        A :class:`RadiologyCohort`; ``volumes`` is (N, 1, D, H, W) float32 HU.

    Raises:
        ValueError: on a bad argument, naming it and the received value.

    Examples::

        cohort = generate_radiology(200, seed=0)
        cohort.volumes.shape      # (200, 1, 32, 64, 64)
        cohort.suspicious.mean()  # about 0.2 (0.16 before label noise)
    """
    rates = check_cohort_args("radiology", RADIOLOGY_MODALITIES, n_patients, seed, label_noise, missing,
                              split_fractions)
    shape, spacing = check_volume_geometry(shape, spacing)
    n = int(n_patients)
    latent_rng, ct_rng, report_rng, missing_rng, noise_rng, split_rng = np.random.default_rng(seed).spawn(6)

    c = _latents(latent_rng, n)
    truth = c["suspicious_morphology"] & c["high_risk"] & c["lobes_agree"]
    flipped = noise_rng.random(n) < label_noise
    label = (truth ^ flipped).astype(np.int64)

    batch = render_ct(CTSpec(
        nodule=c["nodule"], nodule_lobe=c["nodule_lobe"], nodule_diameter_mm=c["nodule_diameter_mm"],
        nodule_spiculated=c["nodule_spiculated"], nodule_solid=c["nodule_solid"], emphysema=c["emphysema"],
        effusion_side=c["effusion_side"], granuloma=c["granuloma"]), ct_rng, shape=shape, spacing=spacing,
        workers=workers)
    reports = generate_ct_reports(ReportFacts(
        age=c["age"], male=c["male"], pack_years=c["pack_years"], current_smoker=c["current_smoker"],
        emphysema=c["emphysema"], lobe=c["report_lobe"], size_mm=c["report_size_mm"],
        spiculated=c["report_spiculated"], solid=c["report_solid"], effusion_side=c["report_effusion_side"]),
        report_rng)

    present = {m: missing_rng.random(n) >= rates[m] for m in RADIOLOGY_MODALITIES}
    present["text"] |= ~present["volume"]
    volumes = batch.volumes
    volumes[~present["volume"]] = 0.0
    texts = [t if keep else "" for t, keep in zip(reports, present["text"].tolist())]
    split = stratified_split(label, split_rng, split_fractions)

    components = {k: c[k] for k in (
        "nodule", "nodule_lobe", "nodule_diameter_mm", "nodule_spiculated", "nodule_solid", "suspicious_morphology",
        "smoker", "pack_years", "emphysema", "high_risk", "report_lobe", "report_size_mm", "report_spiculated",
        "report_solid", "report_effusion_side", "lobes_agree", "agreement_case", "effusion_side",
    )}
    components["granuloma_lobe"] = batch.granuloma_lobe
    for axis, name in enumerate("dhw"):
        components[f"nodule_center_{name}"] = batch.nodule_center[:, axis]
    components["nodule_volume_mm3"] = batch.nodule_volume_fraction * float(np.prod(spacing))
    findings = batch.masks.any(axis=(2, 3, 4))
    settings = dict(n_patients=n, seed=int(seed), label_noise=float(label_noise), missing=rates, shape=shape,
                    spacing=spacing, split_fractions=tuple(float(f) for f in split_fractions))
    return RadiologyCohort(
        patient_id=np.array([f"SYN-{i + 1:06d}" for i in range(n)]), split=split, suspicious=label,
        suspicious_true=truth.astype(np.int64), label_flipped=flipped, volumes=volumes, spacing=spacing,
        masks=batch.masks, boxes=batch.boxes, findings=findings, reports=texts, present=present, age=c["age"],
        sex=np.where(c["male"], "M", "F"), components=components, anatomy=batch.anatomy,
        ground_truth=_describe(label, truth, flipped, components, present), settings=settings,
    )


def _describe(label, truth, flipped, components, present) -> str:
    """The label design in words, with the realised rates of a cohort."""
    c = components
    agree = c["agreement_case"]
    return "\n".join([
        "radiology ground truth: suspicious_true = nodule with suspicious morphology (> 8 mm or spiculated) AND "
        "(heavy smoker OR emphysema) AND the baseline report's lobe == the follow-up nodule's lobe; suspicious = "
        "suspicious_true with label noise.",
        "volume only: the follow-up nodule (lobe, size, spiculation, composition), effusion, granuloma; volume and "
        "report: emphysema (redundant); report only: smoking history and the baseline lobe (compare with the "
        "volume's lobe).",
        f"realised: prevalence {truth.mean():.3f} (observed {label.mean():.3f}), label flips {flipped.mean():.3f}, "
        f"nodule {c['nodule'].mean():.3f}, suspicious morphology {c['suspicious_morphology'].mean():.3f}, "
        f"smoker {c['smoker'].mean():.3f}, emphysema {c['emphysema'].mean():.3f}, agreement cases {agree.mean():.3f} "
        f"(of which lobes agree {c['lobes_agree'][agree].mean() if agree.any() else 0:.3f}).",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in RADIOLOGY_MODALITIES) + ".",
    ])


def dicom_slices(volume_hu: np.ndarray, spacing) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """(uint16 pixels, write_dicom meta) per axial slice of a (D, H, W) HU volume, inferior first.

    Slices are stored in the usual DICOM display orientation: rows anterior -> posterior,
    columns patient's right -> left (Image Orientation (Patient) 1\\0\\0\\0\\1\\0, LPS), with
    stored value = HU + 1024 (Rescale Intercept -1024) and a lung window.
    """
    depth, height, width = volume_hu.shape
    stored = np.clip(np.rint(volume_hu) + 1024, 0, 4095).astype(np.uint16)[:, ::-1, ::-1]
    sz, sy, sx = spacing
    return [(np.ascontiguousarray(stored[d]), {
        "spacing": (sy, sx), "slice_thickness": sz, "instance_number": d + 1,
        "image_position": (-(width - 1) * sx, -(height - 1) * sy, d * sz), "image_orientation": (1, 0, 0, 0, 1, 0),
        "rescale_intercept": -1024.0, "rescale_slope": 1.0, "window_center": -600.0, "window_width": 1500.0,
        "body_part": "CHEST",
    }) for d in range(depth)]


def write_radiology_cohort(
    cohort: RadiologyCohort,
    out: str | Path,
    *,
    dicom_fraction: float = 0.0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` in the layout a user's real data would have.

    Layout (paths in the manifest are relative to ``out``)::

        manifest.parquet, manifest.csv   one row per patient: patient_id, split, suspicious,
                                         suspicious_true, age, sex, findings, nodule columns,
                                         volume, volume_dicom, text, gt_* components
        volumes/SYN-000001.nii.gz        follow-up CT, int16 HU, RAS, spacing in the header (column "volume")
        dicom/SYN-000001/IM0001.dcm ...  the same CT as a DICOM series (CT modality, one
                                         file per slice) for a subset (column "volume_dicom",
                                         a folder: read it with read_dicom_series)
        reports/SYN-000001.txt           baseline CT report, UTF-8            (column "text")
        ground_truth/masks.npz           finding masks (N, 4, D, H, W) bit-packed + 3-D boxes
        cohort.json                      scenario, settings, spacing, names, ground truth text

    Volumes are rounded to whole HU. The manifest is written last (see :func:`~.files.write_manifest`).

    Args:
        cohort: a generated radiology cohort.
        out: destination folder (created).
        dicom_fraction: share of the patients with a volume also written as a DICOM series,
            in [0, 1]; the rows are spread evenly (every 1 / fraction-th patient).
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.

    Raises:
        ValueError: if ``cohort`` is not a :class:`RadiologyCohort` or ``dicom_fraction`` is
            outside [0, 1].
    """
    if not isinstance(cohort, RadiologyCohort):
        raise ValueError(f"radiology: expected cohort to be a RadiologyCohort, received {type(cohort).__name__}")
    if isinstance(dicom_fraction, bool) or not isinstance(dicom_fraction, (int, float, np.floating)) \
            or not 0 <= dicom_fraction <= 1:
        raise ValueError(f"radiology: expected dicom_fraction in [0, 1], received {dicom_fraction!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = cohort.to_frame().drop(columns=["report", *(f"has_{m}" for m in RADIOLOGY_MODALITIES)])
    index = np.arange(len(cohort))
    as_dicom = (np.floor((index + 1) * float(dicom_fraction)) > np.floor(index * float(dicom_fraction))) \
        & cohort.present["volume"]
    ids = cohort.patient_id
    columns, total = write_patient_files(out, ids, {
        "volume": ("volumes/{}.nii.gz", cohort.present["volume"],
                   lambda i, p: write_nifti(p, np.rint(cohort.volumes[i]).astype(np.int16), cohort.spacing)),
        "volume_dicom": ("dicom/{}", as_dicom,
                         lambda i, p: _write_series(p, cohort.volumes[i, 0], cohort.spacing, str(ids[i]))),
        "text": ("reports/{}.txt", cohort.present["text"], lambda i, p: atomic_write_text(p, cohort.reports[i])),
    }, workers, progress)

    save_masks(out, cohort.patient_id, CT_FINDINGS, cohort.masks, cohort.boxes)
    for name, values in columns.items():
        frame[name] = values
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, {
        "scenario": "radiology", "medfusion_version": __version__, "patients": len(cohort),
        "modalities": {"volume": "volume", "text": "text"}, "label": "suspicious",
        "volume_columns": {"nifti": "volume", "dicom_series": "volume_dicom"}, "spacing": list(cohort.spacing),
        "finding_names": list(CT_FINDINGS), "lobes": list(LOBES), "settings": cohort.settings,
        "ground_truth": cohort.ground_truth,
        "orientation": "NIfTI RAS: D inferior->superior, H posterior->anterior, W patient's left->right",
    })
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest


def _write_series(folder: Path, volume_hu: np.ndarray, spacing, patient_id: str) -> None:
    """One DICOM file per slice in ``folder`` (study and series UIDs derived from the patient id)."""
    from pydicom.uid import generate_uid

    study, series = (generate_uid(entropy_srcs=[patient_id, kind]) for kind in ("study", "series"))
    for d, (pixels, meta) in enumerate(dicom_slices(volume_hu, spacing)):
        meta.update(patient_id=patient_id, study_uid=study, series_uid=series)
        write_dicom(folder / f"IM{d + 1:04d}.dcm", pixels, modality="CT", meta=meta)


__all__ = [
    "DIAMETER_RANGE_MM", "RADIOLOGY_DEFAULT_MISSING", "RADIOLOGY_MODALITIES", "RADIOLOGY_RATES", "SIZE_THRESHOLD_MM",
    "RadiologyCohort", "dicom_slices", "generate_radiology", "write_radiology_cohort",
]

"""Writing a synthetic cohort to disk in the layout a user's real data would have.

Layout of ``out/`` (paths in the manifest are relative to it)::

    manifest.parquet, manifest.csv   one row per patient: patient_id, split, labels, findings,
                                     vital-sign columns, one path column per modality
                                     ("" = modality missing), ground-truth components
    images/SYN-000001.png            chest X-ray, 8-bit grayscale PNG     (column "image")
    dicom/SYN-000001.dcm             the same X-ray as a DICOM DX file    (column "image_dicom")
    notes/SYN-000001.txt             triage note, UTF-8                  (column "text")
    ground_truth/masks.npz           finding masks, bit-packed (N, F, H, ceil(W / 8)), + boxes
    cohort.json                      scenario, seed, settings, names and units, ground truth text

Vital signs are manifest columns (empty = not measured). The manifest files are written
last and atomically: a folder without ``manifest.parquet`` is an unfinished run, and a
rerun into the same folder writes every file again. No real patient data is involved;
ids are ``SYN-`` numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medfusion import __version__
from medfusion.data.io import write_dicom, write_png
from medfusion.data.synthetic.triage import TRIAGE_MODALITIES, TriageCohort
from medfusion.files import atomic_path, atomic_write_text

#: Image file formats the writer can produce.
IMAGE_FORMATS = ("png", "dicom")
#: Pixel spacing written to the synthetic DICOM files (mm): a 128-px image of a 35 cm film.
SYNTHETIC_PIXEL_SPACING_MM = 350.0


def _check_formats(image_formats) -> tuple[str, ...]:
    formats = tuple(image_formats)
    unknown = sorted(set(formats) - set(IMAGE_FORMATS))
    if unknown or not formats:
        raise ValueError(f"synth: expected image formats among {list(IMAGE_FORMATS)}, received {list(formats)}")
    return formats


def run_parallel(jobs: list[Callable[[], None]], workers: int | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
    """Run file-writing jobs on threads (zlib, codecs and file I/O release the GIL).

    Args:
        jobs: callables without arguments.
        workers: threads (default: CPU count, at most 8).
        progress: called with the number of jobs done after each one.

    Raises:
        The first exception a job raised.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(lambda job: job(), jobs), start=1):  # re-raises a job's error
            if progress is not None:
                progress(done)


#: One kind of per-patient file: (relative path pattern, "{}" standing for the patient id; (N,) bool,
#: whether each patient has the file; ``write(i, path)`` writing patient i's file at the absolute path).
FileKind = tuple[str, np.ndarray, Callable[[int, Path], None]]


def write_patient_files(out: Path, patient_ids: np.ndarray, kinds: dict[str, FileKind], workers: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, list[str]], int]:
    """Write every patient's files of every kind on threads (:func:`run_parallel`).

    Args:
        out: the cohort folder; paths are relative to it.
        patient_ids: (N,) patient ids.
        kinds: {manifest column: :data:`FileKind`}.
        workers: writer threads.
        progress: called as ``progress(files_done, total)``.

    Returns:
        The manifest columns ({column: N relative paths, "" where the patient has no such
        file}) and ``total`` = files + 1: the manifest, which the caller writes last and then
        reports as ``progress(total, total)``.
    """
    columns: dict[str, list[str]] = {name: [] for name in kinds}
    jobs: list[Callable[[], None]] = []
    for i, pid in enumerate(np.asarray(patient_ids).tolist()):
        for name, (pattern, present, write) in kinds.items():
            path = pattern.format(pid) if present[i] else ""
            columns[name].append(path)
            if path:
                jobs.append(lambda i=i, target=out / path, write=write: write(i, target))
    total = len(jobs) + 1
    run_parallel(jobs, workers, None if progress is None else lambda done: progress(done, total))
    return columns, total


def write_triage_cohort(
    cohort: TriageCohort,
    out: str | Path,
    *,
    image_formats=("png", "dicom"),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` (see the module docstring for the layout).

    Args:
        cohort: a generated triage cohort.
        out: destination folder (created).
        image_formats: any of "png", "dicom".
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.

    Raises:
        ValueError: on an unknown image format.
    """
    formats = _check_formats(image_formats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = cohort.to_frame().drop(columns=["note", *(f"has_{m}" for m in TRIAGE_MODALITIES)])
    ids = cohort.patient_id
    has_image, has_text = cohort.present["image"], cohort.present["text"]
    pixels = np.clip(np.rint(cohort.images[:, 0] * 255), 0, 255).astype(np.uint8)  # (N, H, W)
    spacing = SYNTHETIC_PIXEL_SPACING_MM / pixels.shape[-1]

    def dicom(i: int, path: Path) -> None:
        meta = {"patient_id": str(ids[i]), "view": "PA", "body_part": "CHEST", "spacing": (spacing, spacing)}
        write_dicom(path, pixels[i], modality="DX", meta=meta)

    no_file = np.zeros(len(ids), dtype=bool)
    columns, total = write_patient_files(out, ids, {
        "image": ("images/{}.png", has_image if "png" in formats else no_file, lambda i, p: write_png(p, pixels[i])),
        "image_dicom": ("dicom/{}.dcm", has_image if "dicom" in formats else no_file, dicom),
        "text": ("notes/{}.txt", has_text, lambda i, p: atomic_write_text(p, cohort.notes[i])),
    }, workers, progress)

    save_masks(out, ids, cohort.finding_names, cohort.masks, cohort.boxes)
    for name in ("image", "image_dicom", "text"):
        frame[name] = columns[name]
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, _triage_description(cohort, formats))
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest


def write_manifest(frame, out: str | Path) -> Path:
    """Write ``manifest.csv`` then ``manifest.parquet`` (the completion marker) atomically; return the latter."""
    out = Path(out)
    with atomic_path(out / "manifest.csv", suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    manifest = out / "manifest.parquet"
    with atomic_path(manifest, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    return manifest


def write_description(out: str | Path, description: dict[str, Any]) -> None:
    """Write ``cohort.json`` (numpy values converted) atomically."""
    atomic_write_text(Path(out) / "cohort.json", json.dumps(description, indent=2, default=_json_default))


def save_masks(out: str | Path, patient_id: np.ndarray, names, masks: np.ndarray, boxes: np.ndarray) -> None:
    """Write ground-truth masks (N, F, *spatial) bool, bit-packed, with boxes to ``ground_truth/masks.npz``."""
    with atomic_path(Path(out) / "ground_truth" / "masks.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, patient_id=np.asarray(patient_id).astype(str), finding_names=np.array(list(names)),
                            masks=np.packbits(masks, axis=-1), width=masks.shape[-1], boxes=boxes)


def _triage_description(cohort: TriageCohort, formats: tuple[str, ...]) -> dict[str, Any]:
    return {
        "scenario": "triage",
        "medfusion_version": __version__,
        "patients": len(cohort),
        "modalities": {"image": "image", "text": "text", "vitals": list(cohort.vital_names)},
        "label": "pneumonia",
        "image_formats": list(formats),
        "image_columns": {"png": "image", "dicom": "image_dicom"},
        "vital_units": dict(zip(cohort.vital_names, cohort.vital_units, strict=True)),
        "finding_names": list(cohort.finding_names),
        "settings": cohort.settings,
        "ground_truth": cohort.ground_truth,
        "left_right": "radiological convention: the patient's right is on the image left",
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def load_masks(out: str | Path) -> dict[str, np.ndarray]:
    """The ground-truth masks written by :func:`save_masks`.

    Returns:
        {"patient_id": (N,), "finding_names": (F,), "masks": (N, F, *spatial) bool, "boxes": (N, F, ...)}.
    """
    with np.load(Path(out) / "ground_truth" / "masks.npz") as data:
        width = int(data["width"])
        return {"patient_id": data["patient_id"], "finding_names": data["finding_names"],
                "masks": np.unpackbits(data["masks"], axis=-1, count=width).astype(bool), "boxes": data["boxes"]}

"""Writing grayscale images as uncompressed DICOM files (re-exported by :mod:`medfusion.data.io.dicom`).

The object written is a Secondary Capture Image (DICOM PS3.3 A.8), the IOD for images
without acquisition details, in Explicit VR Little Endian. No patient identifier is
written except a placeholder Patient ID the caller supplies.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medfusion.files import atomic_write_bytes

_WRITE_KEYS = {
    "patient_id": "placeholder, anonymised Patient ID (letters, digits, '-', '_'; at most 64)",
    "spacing": "(row, col) pixel spacing in mm",
    "view": "View Position, e.g. 'PA'",
    "body_part": "Body Part Examined, e.g. 'CHEST'",
    "window_center": "Window Center",
    "window_width": "Window Width",
    "rescale_slope": "Rescale Slope",
    "rescale_intercept": "Rescale Intercept",
    "image_position": "Image Position (Patient), 3 floats mm",
    "image_orientation": "Image Orientation (Patient), 6 floats",
    "slice_thickness": "Slice Thickness mm",
    "instance_number": "Instance Number",
    "study_uid": "Study Instance UID to reuse (new one otherwise)",
    "series_uid": "Series Instance UID to reuse (new one otherwise)",
}


def write_dicom(
    path: str | Path, array: np.ndarray, *, modality: str = "DX", meta: Mapping[str, Any] | None = None
) -> None:
    """Write a grayscale image as an uncompressed DICOM file (Explicit VR Little Endian).

    The object is a Secondary Capture Image (the IOD for images without acquisition
    details) with ``Modality`` set as given and new SOP Instance / Study / Series UIDs
    unless reused through ``meta``. Patient Name, birth date and every other identifier
    are left empty; Patient ID holds only the placeholder given as ``meta["patient_id"]``.
    The file is written atomically.

    Args:
        path: destination file.
        array: (H, W) or (1, H, W) uint8 or uint16 stored values.
        modality: DICOM Modality code (2 to 16 upper-case letters/digits), e.g. "DX", "CT".
        meta: optional attributes; keys as in ``_WRITE_KEYS`` (patient_id, spacing, view,
            body_part, window_center, window_width, rescale_slope, rescale_intercept,
            image_position, image_orientation, slice_thickness, instance_number,
            study_uid, series_uid).

    Raises:
        ValueError: on a wrong array shape or dtype, a bad modality, an unknown meta key
            or a bad patient_id.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"write_dicom: expected an (H, W) or (1, H, W) image, received shape {array.shape}")
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_dicom: expected dtype uint8 or uint16 stored values, received {array.dtype}")
    if not isinstance(modality, str) or not re.fullmatch(r"[A-Z0-9]{2,16}", modality):
        raise ValueError(f"write_dicom: expected a DICOM modality code such as 'DX' or 'CT', received {modality!r}")
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(_WRITE_KEYS))
    if unknown:
        raise ValueError(f"write_dicom: unknown meta key(s) {unknown}; known: {sorted(_WRITE_KEYS)}")
    patient_id = str(meta.get("patient_id", ""))
    if not re.fullmatch(r"[A-Za-z0-9_\-]{0,64}", patient_id):
        raise ValueError(
            f"write_dicom: expected meta['patient_id'] to be a placeholder of letters, digits, '-' or '_' "
            f"(at most 64), received a value of length {len(patient_id)}"
        )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID = meta.get("study_uid") or generate_uid()
    ds.SeriesInstanceUID = meta.get("series_uid") or generate_uid()
    ds.Modality = modality
    ds.ConversionType = "WSD"
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PatientOrientation"):
        setattr(ds, keyword, "")
    ds.PatientID = patient_id
    ds.PatientIdentityRemoved = "YES"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(meta.get("instance_number", 1))
    ds.ImageType = ["DERIVED", "SECONDARY"]
    optional = {
        "view": ("ViewPosition", str),
        "body_part": ("BodyPartExamined", str),
        "window_center": ("WindowCenter", _ds_value),
        "window_width": ("WindowWidth", _ds_value),
        "slice_thickness": ("SliceThickness", _ds_value),
    }
    for key, (keyword, convert) in optional.items():
        if meta.get(key) is not None:
            setattr(ds, keyword, convert(meta[key]))
    if meta.get("spacing") is not None:
        ds.PixelSpacing = [_ds_value(v) for v in _vector(meta["spacing"], 2, "spacing")]
    if meta.get("image_position") is not None:
        ds.ImagePositionPatient = [_ds_value(v) for v in _vector(meta["image_position"], 3, "image_position")]
    if meta.get("image_orientation") is not None:
        ds.ImageOrientationPatient = [_ds_value(v) for v in _vector(meta["image_orientation"], 6, "image_orientation")]
    if meta.get("rescale_slope") is not None or meta.get("rescale_intercept") is not None:
        ds.RescaleSlope = _ds_value(meta.get("rescale_slope", 1.0))
        ds.RescaleIntercept = _ds_value(meta.get("rescale_intercept", 0.0))
    bits = 8 if array.dtype == np.uint8 else 16
    ds.set_pixel_data(np.ascontiguousarray(array), "MONOCHROME2", bits, generate_instance_uid=True)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    atomic_write_bytes(path, buffer.getvalue())


def _ds_value(value: Any) -> str:
    """A number as a DICOM Decimal String (at most 16 characters)."""
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"write_dicom: expected a finite number, received {value!r}")
    return pydicom.valuerep.format_number_as_ds(number)


def _vector(value: Any, size: int, name: str) -> list[float]:
    values = [float(v) for v in value]
    if len(values) != size:
        raise ValueError(f"write_dicom: expected meta['{name}'] to hold {size} numbers, received {len(values)}")
    return values


__all__ = ["write_dicom"]

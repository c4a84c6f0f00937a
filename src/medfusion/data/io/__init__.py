"""Readers (and writers) for the medical file formats: one module per format.

Every reader returns a :class:`Record` in its modality's layout (see
:mod:`medfusion.data.io.base`) and raises :class:`DataReadError` naming the path and the
reason on a missing, empty, truncated, corrupt or wrong-type file. :func:`read_any`
picks the reader from the file's content (magic bytes), not from its name alone.
"""

from __future__ import annotations

import codecs
import gzip
import struct
from pathlib import Path

from medfusion.data.io._util import full_suffix
from medfusion.data.io.base import DataReadError, Record, check_file
from medfusion.data.io.dicom import (
    apply_window,
    read_dicom,
    read_dicom_any,
    read_dicom_series,
    read_dicom_waveform,
    write_dicom,
)
from medfusion.data.io.edf import read_edf, write_edf
from medfusion.data.io.image import read_image, write_png
from medfusion.data.io.nifti import read_nifti, write_nifti
from medfusion.data.io.text import read_table, read_text
from medfusion.data.io.video import read_video, write_video
from medfusion.data.io.wfdb import read_wfdb, write_wfdb

#: Formats :func:`detect_format` names, with the reader :func:`read_any` uses.
READERS = {
    "dicom": read_dicom_any,
    "image": read_image,
    "edf": read_edf,
    "nifti": read_nifti,
    "wfdb": read_wfdb,
    "video": read_video,
    "text": read_text,
}

_HEAD = 512


def _nifti_header_size(path: Path, head: bytes) -> int | None:
    """sizeof_hdr of a NIfTI-1 (348) / NIfTI-2 (540) header, in either byte order; None if absent."""
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as file:
                head = file.read(_HEAD)
        except (OSError, EOFError):
            return None
    if len(head) < 348:
        return None
    for order in "<>":
        size = struct.unpack(f"{order}i", head[:4])[0]
        if size == 348 and head[344:347] in (b"n+1", b"ni1"):
            return size
        if size == 540 and head[4:7] in (b"n+2", b"ni2"):
            return size
    return None


def _is_wfdb_header(path: Path, head: bytes) -> bool:
    """A WFDB header's record line starts with the record name (the file's stem)."""
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=False)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0].split("/")[0] == path.stem
    return False


def _is_utf8_text(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def detect_format(path: str | Path) -> str:
    """The format of a file from its content: a key of :data:`READERS`.

    Signatures: DICOM "DICM" at byte 128; PNG, JPEG (FF D8 FF), TIFF (II*/MM*); EDF
    ("0" + 7 spaces) / BDF (FF "BIOSEMI"); NIfTI: a ``.nii``/``.nii.gz`` name and a
    348-byte (NIfTI-1) or 540-byte (NIfTI-2) header with its magic; WFDB: a ``.hea`` name
    whose record line starts with the record name; video: ISO-BMFF "ftyp" (MP4/MOV),
    RIFF "AVI ", Matroska/WebM; text: UTF-8 without NUL bytes.

    Raises:
        DataReadError: on a missing or empty file, a table (use :func:`read_table`), or
            an unrecognised format.
    """
    path = check_file(path)
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD)
    except OSError as error:
        raise DataReadError(path, f"cannot read file: {error.strerror}") from error
    suffix = full_suffix(path)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image"
    if head.startswith((b"0       ", b"\xffBIOSEMI")):
        return "edf"
    if suffix in (".nii", ".nii.gz") and _nifti_header_size(path, head):
        return "nifti"
    if head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video"
    if suffix == ".hea" and _is_wfdb_header(path, head):
        return "wfdb"
    if head.startswith(b"PAR1") or suffix in (".csv", ".tsv"):
        raise DataReadError(path, "a table (CSV/TSV/Parquet): read it with read_table")
    if suffix in (".nii", ".nii.gz", ".hea", ".dcm"):
        raise DataReadError(
            path, f"named {suffix} but its content is not a valid {suffix} file (truncated or corrupt?)"
        )
    if _is_utf8_text(head):
        return "text"
    raise DataReadError(
        path,
        f"unrecognised format (first bytes {head[:8]!r}); expected DICOM, NIfTI, PNG/JPEG/TIFF, WFDB, EDF, "
        "MP4/AVI or UTF-8 text",
    )


def read_any(path: str | Path) -> Record:
    """Read a file with the reader its content calls for (see :func:`detect_format`).

    DICOM files holding a waveform and no pixels are read as signals; other DICOM files,
    videos and images with their readers' defaults.

    Raises:
        DataReadError: as :func:`detect_format` and the chosen reader.
    """
    return READERS[detect_format(path)](path)


__all__ = [
    "READERS",
    "DataReadError",
    "Record",
    "apply_window",
    "detect_format",
    "read_any",
    "read_dicom",
    "read_dicom_any",
    "read_dicom_series",
    "read_dicom_waveform",
    "read_edf",
    "read_image",
    "read_nifti",
    "read_table",
    "read_text",
    "read_video",
    "read_wfdb",
    "write_dicom",
    "write_edf",
    "write_nifti",
    "write_png",
    "write_video",
    "write_wfdb",
]

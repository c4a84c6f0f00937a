"""Checks of what clients send: image content, vital signs and notes.

Nothing a client sends names a file on the server. An uploaded image is identified by its
content (magic bytes), never by its file name or declared content type, and written to a
temporary file whose name the server chooses (:func:`saved_image`), deleted after use.
Error messages say what was expected and what was received, and never echo the content.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from PIL import Image

from medfusion.data.io.base import DataReadError

#: Image kinds accepted, with the suffix of their temporary file.
IMAGE_SUFFIXES: dict[str, str] = {"DICOM": ".dcm", "PNG": ".png", "JPEG": ".jpg"}
#: Largest decoded PNG/JPEG (width x height); larger ones are refused before decoding.
MAX_PIXELS = 40_000_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Signatures of common files that are not accepted, to say what was received.
_OTHER_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", "a BMP image"),
    (b"\x1f\x8b", "gzip-compressed data"), (b"RIFF", "a RIFF file (WebP, AVI or WAV)"),
)


def _unsupported(received: str) -> HTTPException:
    return HTTPException(415, f"image: expected DICOM, PNG or JPEG content, received {received}")


def _describe(head: bytes) -> str:
    """What the first bytes of an unaccepted file look like (never the bytes themselves)."""
    for signature, kind in _OTHER_KINDS:
        if head.startswith(signature):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "content of an unknown kind"
    return "text" if b"\x00" not in head else "content of an unknown kind"


def image_kind(data: bytes) -> str:
    """The kind of an uploaded image from its content: "DICOM", "PNG" or "JPEG".

    DICOM: "DICM" at byte 128 (Part 10 files); PNG: its 8-byte signature; JPEG: FF D8 FF.
    PNG and JPEG headers are also read for the image size (no pixel is decoded).

    Raises:
        HTTPException: 422 for an empty upload or a PNG/JPEG over :data:`MAX_PIXELS`
            or with an unreadable header; 415 for any other content.
    """
    if not data:
        raise HTTPException(422, "image: expected a file, received 0 bytes")
    if data[128:132] == b"DICM":
        return "DICOM"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
    elif data.startswith(b"\xff\xd8\xff"):
        kind = "JPEG"
    else:
        raise _unsupported(_describe(data[:64]))
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            width, height = image.size
    except Exception as error:  # UnidentifiedImageError, truncated header, DecompressionBombError, ...
        raise HTTPException(422, f"image: expected a readable {kind} header, received a corrupt or truncated "
                                 f"{kind} file ({type(error).__name__})") from error
    if width * height > MAX_PIXELS:
        raise HTTPException(422, f"image: expected at most {MAX_PIXELS:,} pixels, received {width} x {height}")
    return kind


@contextmanager
def saved_image(data: bytes, folder: Path) -> Iterator[Path]:
    """Write an uploaded image (checked by :func:`image_kind`) to a new temporary file in ``folder``.

    The file name is chosen by the server (the suffix by the content's kind); the file is
    deleted when the block ends.

    Raises:
        HTTPException: as :func:`image_kind`.
    """
    handle, name = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=IMAGE_SUFFIXES[image_kind(data)])
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        yield path
    finally:
        path.unlink(missing_ok=True)


def rejected(error: ValueError, what: str, path: Path | None = None) -> HTTPException:
    """The 422 error of an input the readers or a model refused, prefixed by ``what``.

    A reader's error gives its reason only, and the server's temporary ``path`` never
    appears in the message.
    """
    message = error.reason if isinstance(error, DataReadError) else str(error)
    if path is not None:
        message = message.replace(str(path), "the image")
    return HTTPException(422, message if message.startswith(f"{what}:") else f"{what}: {message}")


def _vital(column: str, value: object) -> float:
    """One vital sign of the JSON object: a finite number, or NaN for null."""
    if value is None:
        return math.nan
    received = type(value).__name__
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        if math.isfinite(number) and abs(number) <= _FLOAT32_MAX:
            return number
        received = "a non-finite or out-of-range number"
    raise HTTPException(422, f"vitals: expected {column!r} to be a finite number or null, received {received}")


def parse_vitals(text: str | None, columns: Sequence[str]) -> np.ndarray | None:
    """The (F,) float32 vitals vector (``columns`` order, NaN = not measured) of a JSON object {column: number}.

    A missing field, blank text, ``{}`` or an object of nulls means no vital sign was given.

    Raises:
        HTTPException: 422 on invalid JSON, a non-object, an unknown column, or a value
            that is not a finite number or null.
    """
    if text is None or not text.strip():
        return None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise HTTPException(422, f"vitals: expected a JSON object {{column: number}}, received invalid JSON "
                                 f"({error.msg} at character {error.pos})") from error
    if not isinstance(values, dict):
        raise HTTPException(422, f"vitals: expected a JSON object {{column: number}}, received a JSON "
                                 f"{type(values).__name__}")
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise HTTPException(422, f"vitals: unknown column(s) {unknown}; expected some of {list(columns)}")
    vector = np.asarray([_vital(column, values.get(column)) for column in columns], dtype=np.float32)
    return None if np.isnan(vector).all() else vector


def parse_note(text: str | None) -> str | None:
    """The clinical note, or None when it is missing or blank."""
    return text if text is not None and text.strip() else None

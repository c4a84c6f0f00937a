"""PNG, JPEG and TIFF images with Pillow, as (C, H, W) float32 in [0, 1].

Intensities are divided by the largest value of the stored bit depth: 255 for 8-bit,
65535 for 16-bit (PNG "I;16", TIFF), 1 for bilevel. Palette images become RGB; an alpha
channel is dropped (``meta["alpha_dropped"]``); CMYK JPEGs become RGB. Only the first
page of a multi-page TIFF is read (``meta["n_frames"]`` says how many there are).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from medfusion.data.io._util import describe
from medfusion.data.io.base import DataReadError, Record, check_file
from medfusion.files import atomic_write_bytes

_FORMATS = ("PNG", "JPEG", "TIFF")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def read_image(path: str | Path) -> Record:
    """Read a PNG, JPEG or TIFF image.

    Args:
        path: the image file.

    Returns:
        Record("image", (C, H, W) float32 in [0, 1], meta) with C = 1 (grayscale) or 3
        (RGB), and meta format ("PNG", "JPEG", "TIFF"), mode (Pillow mode as stored),
        bit_depth (8 or 16; 1 for bilevel; 32 for float TIFF, whose values are returned
        as stored), height, width, n_frames, alpha_dropped.

    Raises:
        DataReadError: on a missing, empty, truncated or corrupt file, or a file that is
            not PNG/JPEG/TIFF.
    """
    path = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_FORMATS) as image:
                image.load()
                return _to_record(path, image)
    except DataReadError:
        raise
    except Exception as error:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        reason = "not a PNG, JPEG or TIFF image" if isinstance(error, Image.UnidentifiedImageError) else (
            "cannot decode image (truncated or corrupt?)"
        )
        raise DataReadError(path, f"{reason}: {describe(error)}") from error


def _to_record(path: Path, image: Image.Image) -> Record:
    mode = image.mode
    meta = {
        "format": image.format,
        "mode": mode,
        "height": image.height,
        "width": image.width,
        "n_frames": int(getattr(image, "n_frames", 1)),
        "alpha_dropped": mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info),
    }
    if mode == "1":
        array, bits = np.asarray(image, dtype=np.float32), 1
    elif mode in ("L", "LA", "La"):
        array, bits = np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 8
    elif mode in _SIXTEEN_BIT:
        array, bits = np.asarray(image).astype(np.float32) / 65535.0, 16
    elif mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataReadError(path, f"unsupported 32-bit integer image (values {values.min()}..{values.max()})")
        array, bits = values.astype(np.float32) / 65535.0, 16
    elif mode == "F":
        array, bits = np.asarray(image, dtype=np.float32), 32
    elif mode in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        array, bits = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, 8
    else:
        raise DataReadError(path, f"unsupported image mode {mode!r}")
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    meta["bit_depth"] = bits
    return Record("image", np.ascontiguousarray(array, dtype=np.float32), meta)


def write_png(path: str | Path, array: np.ndarray, *, bit_depth: int | None = None) -> None:
    """Write a grayscale or RGB image as PNG, atomically.

    Args:
        path: destination file.
        array: (C, H, W) with C in {1, 3}, or (H, W). uint8 is written as 8-bit, uint16
            as 16-bit (grayscale only: Pillow cannot write 16-bit RGB); floats must lie
            in [0, 1] and are scaled to ``bit_depth`` and rounded.
        bit_depth: 8 or 16 for float input (default 8); must match an integer dtype.

    Raises:
        ValueError: on a bad shape, dtype, range, bit depth, or 16-bit RGB.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3) or min(array.shape) < 1:
        raise ValueError(f"write_png: expected (C, H, W) with C in (1, 3) or (H, W), received shape {array.shape}")
    if bit_depth not in (None, 8, 16):
        raise ValueError(f"write_png: expected bit_depth 8 or 16, received {bit_depth!r}")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        native = 8 if array.dtype == np.uint8 else 16
        if bit_depth not in (None, native):
            raise ValueError(
                f"write_png: bit_depth={bit_depth} does not match dtype {array.dtype}; "
                "pass floats in [0, 1] to rescale"
            )
        stored = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError("write_png: expected float values in [0, 1], received NaN or Inf")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(
                f"write_png: expected float values in [0, 1], received range [{array.min()}, {array.max()}]"
            )
        depth = bit_depth or 8
        scale, dtype = (255.0, np.uint8) if depth == 8 else (65535.0, np.uint16)
        stored = np.rint(array.astype(np.float64) * scale).astype(dtype)
    else:
        raise ValueError(f"write_png: expected uint8, uint16 or float in [0, 1], received {array.dtype}")
    if stored.dtype == np.uint16 and stored.shape[0] == 3:
        raise ValueError("write_png: 16-bit RGB is not supported (Pillow); write 8-bit RGB or 16-bit grayscale")
    pixels = stored[0] if stored.shape[0] == 1 else stored.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


__all__ = ["read_image", "write_png"]

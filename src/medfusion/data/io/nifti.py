"""NIfTI-1/2 volumes (.nii, .nii.gz) with nibabel, reoriented to RAS.

Axis convention: the image is first reoriented to the closest canonical (RAS+) voxel
order with ``nibabel.as_closest_canonical``, so voxel axes (i, j, k) increase toward
Right, Anterior, Superior. The returned array is (C, D, H, W) = (C, k, j, i): D runs
inferior → superior (slices), H posterior → anterior (rows), W left → right (columns),
and ``spacing`` is (slice, row, col) = (zoom_k, zoom_j, zoom_i) mm. A 4-D image's fourth
axis (time, or vector components) becomes the channel axis C.

Header fields that may hold free text (descrip, db_name, aux_file, intent_name) are not
copied into metadata.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import numpy as np

from medfusion.data.io._util import describe, full_suffix
from medfusion.data.io.base import DataReadError, Record, check_file
from medfusion.files import atomic_write_bytes

_SUFFIXES = (".nii", ".nii.gz")


def read_nifti(path: str | Path) -> Record:
    """Read a NIfTI volume, reoriented to RAS.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        Record("volume", (C, D, H, W) float32 with scaling (scl_slope/inter) applied,
        meta) with spacing (slice, row, col) mm, orientation "RAS", axis_codes
        ("S", "A", "R") (the directions in which D, H, W increase), source_orientation
        (axis codes of the file as stored, e.g. "LAS"), affine (4×4 list mapping voxel
        (i, j, k) = (w, h, d) indices to RAS mm), time_step (4-D images), units,
        ras_shape ((X, Y, Z[, T]) after reorientation).

    Raises:
        DataReadError: on a missing, empty, non-NIfTI, truncated or corrupt file, or an
            image with more than 4 non-singleton dimensions.
    """
    path = check_file(path)
    try:
        image = nibabel.load(str(path))
        if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
            raise DataReadError(path, f"not a NIfTI image (nibabel read it as {type(image).__name__})")
        source = "".join(nibabel.aff2axcodes(image.affine))
        canonical = nibabel.as_closest_canonical(image)
        data = canonical.get_fdata(dtype=np.float32)
    except DataReadError:
        raise
    except Exception as error:  # ImageFileError, EOFError, zlib.error, ValueError on short data...
        raise DataReadError(path, f"cannot read NIfTI (not NIfTI, truncated or corrupt): {describe(error)}") from error
    shape = data.shape
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): vector image
        data = data[:, :, :, 0, :]
    if data.ndim > 4:
        raise DataReadError(path, f"expected a 2-D, 3-D or 4-D image, received shape {shape}")
    while data.ndim < 3:
        data = data[..., None]
    if data.ndim == 3:
        data = data[..., None]
    volume = np.ascontiguousarray(data.transpose(3, 2, 1, 0))  # (X, Y, Z, C) -> (C, Z, Y, X)
    zooms = [float(z) for z in canonical.header.get_zooms()]
    zooms += [1.0] * (3 - len(zooms))
    space_unit, time_unit = canonical.header.get_xyzt_units()
    meta = {
        "spacing": (zooms[2], zooms[1], zooms[0]),
        "orientation": "RAS",
        "axis_codes": ("S", "A", "R"),
        "source_orientation": source,
        "affine": np.asarray(canonical.affine, dtype=float).round(6).tolist(),
        "time_step": zooms[3] if len(shape) >= 4 and len(zooms) > 3 else None,
        "units": {"space": space_unit, "time": time_unit},
        "ras_shape": tuple(int(s) for s in shape),  # (X, Y, Z[, T]) after reorientation
    }
    return Record("volume", volume, meta)


def write_nifti(path: str | Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Write a volume as NIfTI-1 with an RAS affine (atomic; gzip for ``.nii.gz``).

    The inverse of :func:`read_nifti`: ``read_nifti(p).array`` equals ``array`` (cast to
    float32) and ``spacing`` round-trips.

    Args:
        path: destination ending in ``.nii`` or ``.nii.gz``.
        array: (C, D, H, W) or (D, H, W), D = inferior → superior, H = posterior →
            anterior, W = left → right. Numeric dtype (kept as stored dtype when it is
            a NIfTI type, e.g. float32, int16, uint8).
        spacing: (slice, row, col) mm, all > 0.

    Raises:
        ValueError: on a bad suffix, shape, dtype, non-finite values or spacing.
    """
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in _SUFFIXES:
        raise ValueError(f"write_nifti: expected a path ending in {_SUFFIXES}, received {path.name!r}")
    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or min(array.shape) < 1:
        raise ValueError(f"write_nifti: expected a (C, D, H, W) or (D, H, W) array, received shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"write_nifti: expected a real numeric dtype, received {array.dtype}")
    if array.dtype == np.float64 or array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype in (np.int64, np.uint64, np.uint32):
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise ValueError(f"write_nifti: {array.dtype} values exceed the int32 range NIfTI tools support")
        array = array.astype(np.int32)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError("write_nifti: expected finite values, received NaN or Inf")
    spacing_values = tuple(float(s) for s in spacing)
    if len(spacing_values) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_values):
        raise ValueError(f"write_nifti: expected spacing (slice, row, col) of 3 positive mm, received {spacing!r}")
    data = array.transpose(3, 2, 1, 0)  # (C, D, H, W) -> (X, Y, Z, C)
    if data.shape[3] == 1:
        data = data[..., 0]
    affine = np.diag([spacing_values[2], spacing_values[1], spacing_values[0], 1.0])
    image = nibabel.Nifti1Image(np.ascontiguousarray(data), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    payload = image.to_bytes()
    if suffix == ".nii.gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)


__all__ = ["read_nifti", "write_nifti"]

"""DICOM (PS3.10 files) with pydicom: images, cine/ultrasound video, volumes, series, waveforms.

Pixel pipeline of :func:`read_dicom` (DICOM PS3.3 C.7.6.3 and C.11):

1. decode the stored values (pydicom decoders; JPEG baseline and JPEG 2000 through
   Pillow; JPEG-Lossless / JPEG-LS need gdcm or pylibjpeg, which are not dependencies);
2. grayscale: the Modality LUT, i.e. Rescale Slope / Intercept (CT values become
   Hounsfield units), then MONOCHROME1 is inverted so that larger always means brighter;
3. colour: YBR_FULL / YBR_FULL_422 converted to RGB, PALETTE COLOR expanded through its
   lookup table; colour values are scaled to [0, 1].

The VOI window (Window Center / Width) is not applied; its values go in the metadata and
:func:`apply_window` applies one on request.

Metadata come from an allow-list of acquisition attributes: patient identifiers
(PatientName, PatientID, birth date, UIDs, ...) are never copied, and pydicom's warnings
during reading (which may quote element values) are silenced.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, as_pixel_options, convert_color_space, get_decoder

from medfusion.data.io._util import describe
from medfusion.data.io.base import DataReadError, Record, check_file
from medfusion.data.io.dicom_write import write_dicom

#: Modalities whose multi-frame objects are read as video by ``as_="auto"``.
CINE_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "GM", "XC", "OP", "ECHO"})

_LAYOUTS = ("auto", "image", "video", "volume")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ----------------------------------------------------------------------------- reading helpers


def _load(path: str | Path) -> tuple[Path, Dataset]:
    """Read a DICOM file, wrapping every pydicom error in :class:`DataReadError`."""
    path = check_file(path)
    try:
        # Warnings are recorded, never shown: pydicom's may quote element values.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
            # Parse every element now so that a truncated or corrupt body fails here.
            for _ in ds.iterall():
                pass
    except InvalidDicomError as error:
        size = path.stat().st_size
        if size < 132:
            raise DataReadError(
                path, f"not a DICOM file or truncated: {size} bytes, shorter than the 132-byte header"
            ) from error
        raise DataReadError(
            path, f"not a DICOM file (no 'DICM' marker at byte 128 and no DICOM header): {describe(error)}"
        ) from error
    except Exception as error:  # truncated, corrupt: pydicom raises many types
        raise DataReadError(path, f"corrupt or truncated DICOM file: {describe(error)}") from error
    if any("end of file" in str(warning.message).lower() for warning in caught):
        raise DataReadError(path, "truncated DICOM file: end of file reached inside an element")
    return path, ds


def _nested(ds: Dataset, keyword: str) -> Any:
    """An attribute from the dataset or, for enhanced multi-frame objects, its functional groups."""
    if keyword in ds:
        return ds.get(keyword)
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(group)
        if not items:
            continue
        for macro in items[0]:
            if macro.VR == "SQ" and macro.value and keyword in macro.value[0]:
                return macro.value[0].get(keyword)
    return None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) else None


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decode(path: Path, ds: Dataset) -> tuple[np.ndarray, str]:
    """Stored values as (frames?, rows, cols, samples?) and the photometric of the decoded array."""
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        hint = " (it holds a waveform: use read_dicom_waveform)" if "WaveformSequence" in ds else ""
        raise DataReadError(path, f"DICOM file has no pixel data{hint}")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None:
        raise DataReadError(path, "DICOM file has no Transfer Syntax UID in its file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise DataReadError(
            path, f"cannot decode pixel data: transfer syntax '{syntax.name}' is not supported"
        ) from error
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise DataReadError(
            path,
            f"cannot decode pixel data: no decoder installed here for transfer syntax '{syntax.name}' "
            f"(would need: {missing})",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array, changes = decoder.as_array(ds, raw=True, validate=True, **as_pixel_options(ds))
    except Exception as error:
        raise DataReadError(
            path, f"cannot decode pixel data ({syntax.name}; truncated or corrupt?): {describe(error)}"
        ) from error
    photometric = str(changes.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).strip()
    return array, photometric


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _rescale(ds: Dataset, array: np.ndarray, n_frames: int) -> np.ndarray:
    """The Modality LUT: LUT sequence, or Rescale Slope/Intercept (top level or per frame)."""
    if ds.get("ModalityLUTSequence") or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return apply_modality_lut(array, ds).astype(np.float32)
    array = array.astype(np.float32)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == n_frames and n_frames > 1:
        for i, item in enumerate(per_frame):
            transform = item.get("PixelValueTransformationSequence")
            if transform:
                slope = _float(transform[0].get("RescaleSlope")) or 1.0
                intercept = _float(transform[0].get("RescaleIntercept")) or 0.0
                array[i] = array[i] * slope + intercept
        return array
    slope = _float(_nested(ds, "RescaleSlope"))
    intercept = _float(_nested(ds, "RescaleIntercept"))
    if slope is not None or intercept is not None:
        array = array * np.float32(slope if slope is not None else 1.0) + np.float32(intercept or 0.0)
    return array


def _to_values(path: Path, ds: Dataset) -> tuple[np.ndarray, dict[str, Any]]:
    """(frames, rows, cols, samples) float32 values and the pixel metadata."""
    stored, photometric = _decode(path, ds)
    n_frames = int(_float(ds.get("NumberOfFrames")) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    rows, cols = int(ds.Rows), int(ds.Columns)
    expected = (n_frames, rows, cols) if n_frames > 1 else (rows, cols)
    if stored.shape[: len(expected)] != expected:
        raise DataReadError(path, f"decoded pixel array has shape {stored.shape}, expected {expected} (+ samples)")
    if n_frames == 1:
        stored = stored[None]
    source = _text(ds.get("PhotometricInterpretation")) or photometric
    meta: dict[str, Any] = {"photometric": photometric, "source_photometric": source}
    window_center = _nested(ds, "WindowCenter")
    window_width = _nested(ds, "WindowWidth")

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(stored, ds)
        values = rgb.astype(np.float32) / np.float32(np.iinfo(rgb.dtype).max)
        meta.update(photometric="RGB", intensity="unit")
    elif samples == 3 or photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        if photometric in ("YBR_FULL", "YBR_FULL_422"):
            stored = convert_color_space(stored, photometric, "RGB")
        _, high = _stored_range(ds)
        values = stored.astype(np.float32) / np.float32(max(high, 1))
        meta.update(photometric="RGB", intensity="unit")
    elif samples == 1:
        values = _rescale(ds, stored, n_frames)
        meta["intensity"] = "modality"  # modality units, e.g. Hounsfield units for CT
        rescale_type = _text(_nested(ds, "RescaleType"))
        if rescale_type or (ds.get("Modality") == "CT" and _nested(ds, "RescaleSlope") is not None):
            meta["units"] = rescale_type or "HU"
        if photometric == "MONOCHROME1":
            # Invert over the range the stored values can take after the Modality LUT.
            low, high = _stored_range(ds)
            bounds = _rescale(ds, np.array([[low, high]] * n_frames).reshape(n_frames, 1, 2), n_frames)
            total = bounds.min(axis=(1, 2), keepdims=True) + bounds.max(axis=(1, 2), keepdims=True)
            values = total - values
            meta["photometric"] = "MONOCHROME2"
            if window_center is not None:
                window_center = [float(total.ravel()[0]) - c for c in _floats(window_center) or []]
            meta["inverted"] = True
    else:
        raise DataReadError(path, f"unsupported pixel layout: {samples} samples per pixel, photometric {photometric!r}")
    if values.ndim == 3:
        values = values[..., None]
    center, width = _floats(window_center), _floats(window_width)
    if center and width:
        meta["window_center"], meta["window_width"] = center[0], width[0]
        if len(center) > 1 and len(center) == len(width):
            meta["windows"] = list(zip(center, width, strict=True))
    return values.astype(np.float32, copy=False), meta


def _acquisition_meta(ds: Dataset) -> dict[str, Any]:
    """Allow-listed, non-identifying attributes."""
    meta: dict[str, Any] = {
        "modality": _text(ds.get("Modality")),
        "view": _text(ds.get("ViewPosition")),
        "body_part": _text(ds.get("BodyPartExamined")),
        "laterality": _text(ds.get("ImageLaterality") or ds.get("Laterality")),
        "rows": int(ds.get("Rows", 0)) or None,
        "cols": int(ds.get("Columns", 0)) or None,
        "frames": int(_float(ds.get("NumberOfFrames")) or 1),
        "bits_stored": ds.get("BitsStored"),
        "transfer_syntax": syntax.name if (syntax := getattr(ds, "file_meta", {}).get("TransferSyntaxUID")) else None,
    }
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(_nested(ds, keyword))
        if values and len(values) == 2 and all(v > 0 for v in values):
            spacing, meta["spacing_source"] = (values[0], values[1]), keyword
            break
    meta["spacing"] = spacing  # (row, col) mm; None when absent or zero
    meta["slice_thickness"] = _float(_nested(ds, "SliceThickness"))
    meta["spacing_between_slices"] = _float(_nested(ds, "SpacingBetweenSlices"))
    frame_time = _float(ds.get("FrameTime"))
    vector = _floats(ds.get("FrameTimeVector"))
    if frame_time is None and vector and len(vector) > 1:
        frame_time = float(np.mean(vector[1:]))
    fps = 1000.0 / frame_time if frame_time else None
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        fps = fps or _float(ds.get(keyword))
    meta["frame_time_ms"] = frame_time
    meta["fps"] = fps
    return meta


def _layout(path: Path, values: np.ndarray, meta: dict[str, Any], as_: str) -> Record:
    """Arrange (F, H, W, S) values into the Record layout the caller asked for."""
    n_frames = values.shape[0]
    if as_ == "auto":
        if n_frames == 1:
            as_ = "image"
        elif meta.get("modality") in CINE_MODALITIES or meta.get("fps"):
            as_ = "video"
        else:
            as_ = "volume"
    if as_ == "image":
        if n_frames != 1:
            raise DataReadError(path, f"has {n_frames} frames; as_='image' needs one frame (use 'video' or 'volume')")
        return Record("image", np.ascontiguousarray(values[0].transpose(2, 0, 1)), meta)
    if as_ == "video":
        meta["source_frame_indices"] = list(range(n_frames))
        return Record("video", np.ascontiguousarray(values.transpose(0, 3, 1, 2)), meta)
    slice_step = meta.get("spacing_between_slices") or meta.get("slice_thickness")
    if meta.get("spacing"):
        meta["spacing"] = (slice_step, *meta["spacing"])
    return Record("volume", np.ascontiguousarray(values.transpose(3, 0, 1, 2)), meta)


# ----------------------------------------------------------------------------- public readers


def read_dicom(path: str | Path, *, as_: Literal["auto", "image", "video", "volume"] = "auto") -> Record:
    """Read a DICOM image, cine clip or multi-frame volume.

    Args:
        path: a DICOM file.
        as_: "image" (one frame), "video", "volume", or "auto": one frame → image;
            several frames → video for ultrasound/angiography/endoscopy modalities or when
            a frame time/rate is given, else volume.

    Returns:
        A :class:`Record` with modality "image" and array (C, H, W), "video" (T, C, H, W)
        or "volume" (C, D, H, W), float32. C is 1 for grayscale (values in modality
        units: Rescale Slope/Intercept applied, MONOCHROME1 inverted) or 3 for colour
        (RGB in [0, 1]). Metadata: modality, view, body_part, laterality, spacing
        ((row, col) mm for images and videos, (slice, row, col) for volumes), slice_thickness,
        frame_time_ms, fps, photometric (of the returned array), source_photometric,
        rows, cols, frames, window_center/window_width (matching the returned values,
        not applied), intensity ("modality" or "unit"), transfer_syntax.

    Raises:
        ValueError: on an unknown ``as_``.
        DataReadError: on a missing, empty, non-DICOM, truncated or corrupt file, a file
            without pixel data, or pixel data no installed decoder can decode.

    Examples::

        ct = read_dicom(get_testdata_file("CT_small.dcm", download=False))
        ct.array.shape  # (1, 128, 128), Hounsfield units
    """
    if as_ not in _LAYOUTS:
        raise ValueError(f"read_dicom: expected as_ in {_LAYOUTS}, received {as_!r}")
    path, ds = _load(path)
    return _image_record(path, ds, as_)


def _image_record(path: Path, ds: Dataset, as_: str) -> Record:
    meta = _acquisition_meta(ds)
    try:
        values, pixel_meta = _to_values(path, ds)
    except DataReadError:
        raise
    except Exception as error:
        raise DataReadError(path, f"cannot convert pixel data: {describe(error)}") from error
    meta.update(pixel_meta)
    return _layout(path, values, meta, as_)


def read_dicom_any(path: str | Path) -> Record:
    """Read a DICOM file as a waveform if it holds one and no pixels, else as pixels (``as_="auto"``)."""
    path, ds = _load(path)
    if "WaveformSequence" in ds and not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        return _waveform_record(path, ds, 0)
    return _image_record(path, ds, "auto")


def apply_window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Apply a linear VOI window (DICOM PS3.3 C.11.2.1.2.1) and map it to [0, 1].

    Args:
        array: values in modality units, any shape (e.g. (C, H, W) Hounsfield units).
        center: Window Center.
        width: Window Width, >= 1.

    Returns:
        float32 array of the same shape: 0 below the window, 1 above, linear inside.

    Raises:
        ValueError: if ``width`` < 1 or ``center``/``width`` are not finite numbers.
    """
    center, width = float(center), float(width)
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise ValueError(
            f"apply_window: expected a finite center and width >= 1, received center={center}, width={width}"
        )
    array = np.asarray(array, dtype=np.float32)
    if width == 1:
        return (array >= center - 0.5).astype(np.float32)
    out = (array - np.float32(center - 0.5)) / np.float32(width - 1) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def read_dicom_series(folder: str | Path) -> Record:
    """Read a folder of single-frame DICOM slices as one volume.

    Slices are ordered by Image Position (Patient) projected on the slice normal (the
    cross product of the Image Orientation row and column cosines), falling back to
    Instance Number when positions are missing; the slice spacing is the median gap
    between positions (else Spacing Between Slices or Slice Thickness). Files without
    the 'DICM' marker are skipped.

    Returns:
        Record("volume", (C, D, H, W) float32, meta) with spacing (slice, row, col) mm,
        slice_order ("position" or "instance_number"), uniform_spacing, axis_codes (the
        patient direction, LPS letters, in which D, H and W increase), and the per-slice
        metadata of :func:`read_dicom` for the first slice.

    Raises:
        DataReadError: if the folder is missing or holds no DICOM file, a slice cannot be
            read, slices differ in size or photometric, two slices share a position, or
            the folder mixes several series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataReadError(folder, "expected a folder of DICOM slices, found no folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    dicom_files = [p for p in files if _has_dicm_marker(p)]
    if not dicom_files:
        raise DataReadError(folder, f"no DICOM file in the folder ({len(files)} files checked for the 'DICM' marker)")
    slices = []
    series: set[str] = set()
    for file in dicom_files:
        _, ds = _load(file)
        series.add(str(ds.get("SeriesInstanceUID", "")))
        record = _image_record(file, ds, "image")
        slices.append((file, ds, record))
    if len(series) > 1:
        raise DataReadError(folder, f"folder mixes {len(series)} series; expected the slices of one series")
    first_file, first_ds, first = slices[0]
    for file, _, record in slices[1:]:
        if record.array.shape != first.array.shape:
            raise DataReadError(
                folder,
                f"slices differ in size: {first_file.name} is (C, H, W) {first.array.shape}, "
                f"{file.name} is {record.array.shape}",
            )
        if record.meta["photometric"] != first.meta["photometric"]:
            raise DataReadError(folder, f"slices differ in photometric: {first_file.name} vs {file.name}")
    meta = dict(first.meta)
    order, step, uniform, axis_codes = _order_slices(folder, [(f, ds) for f, ds, _ in slices])
    meta["slice_order"] = "position" if step is not None else "instance_number"
    slice_step = step or meta.get("spacing_between_slices") or meta.get("slice_thickness")
    meta["spacing"] = (slice_step, *meta["spacing"]) if meta.get("spacing") else (slice_step, None, None)
    meta["uniform_spacing"] = uniform
    meta["axis_codes"] = axis_codes
    meta["frames"] = len(slices)
    meta["files"] = [slices[i][0].name for i in order]
    volume = np.stack([slices[i][2].array for i in order], axis=1)
    return Record("volume", volume, meta)


def _has_dicm_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            head = file.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return ("LR", "PA", "SI")[axis][0 if vector[axis] > 0 else 1]


def _order_slices(
    folder: Path, items: list[tuple[Path, Dataset]]
) -> tuple[list[int], float | None, bool, tuple[str, str, str] | None]:
    """Slice order, spacing from positions (None when ordered by instance number), uniformity, axis codes."""
    positions = [_floats(ds.get("ImagePositionPatient")) for _, ds in items]
    orientations = [_floats(ds.get("ImageOrientationPatient")) for _, ds in items]
    if all(p and len(p) == 3 for p in positions) and orientations[0] and len(orientations[0]) == 6:
        row_cos = np.asarray(orientations[0][:3])
        col_cos = np.asarray(orientations[0][3:])
        normal = np.cross(row_cos, col_cos)
        distance = np.asarray([np.dot(normal, p) for p in positions])
        order = [int(i) for i in np.argsort(distance, kind="stable")]
        gaps = np.diff(distance[order])
        if len(items) > 1 and np.any(np.abs(gaps) < 1e-4):
            i = int(np.argmin(np.abs(gaps)))
            raise DataReadError(
                folder,
                f"slices {items[order[i]][0].name} and {items[order[i + 1]][0].name} share a position; "
                "expected one slice per position",
            )
        step = float(np.median(gaps)) if len(items) > 1 else None
        uniform = bool(len(items) < 3 or np.allclose(gaps, step, rtol=0.01, atol=1e-3))
        codes = (_letter(normal), _letter(col_cos), _letter(row_cos))
        return order, step, uniform, codes
    numbers = [_float(ds.get("InstanceNumber")) for _, ds in items]
    if any(n is None for n in numbers):
        raise DataReadError(
            folder, "cannot order slices: neither Image Position (Patient) nor Instance Number on every slice"
        )
    order = [int(i) for i in np.argsort(numbers, kind="stable")]
    return order, None, True, None


def read_dicom_waveform(path: str | Path, *, group: int = 0) -> Record:
    """Read one multiplex group of a DICOM waveform (ECG, EEG, ...) in physical units.

    Channel Sensitivity, Sensitivity Correction Factor and Baseline are applied by
    pydicom's ``Dataset.waveform_array``.

    Args:
        path: a DICOM waveform file.
        group: index of the multiplex group in the Waveform Sequence.

    Returns:
        Record("signal", (C, T) float32, meta) with sampling_rate (Hz), channel_names
        (Channel Source code meanings, else labels), units (per channel, UCUM code),
        duration_s, multiplex_group_label, n_groups, modality, filter_low_hz,
        filter_high_hz (per channel, None when absent).

    Raises:
        DataReadError: on a bad file, a file without waveform, or an out-of-range group.
    """
    path, ds = _load(path)
    return _waveform_record(path, ds, group)


def _waveform_record(path: Path, ds: Dataset, group: int) -> Record:
    sequence = ds.get("WaveformSequence")
    if not sequence:
        raise DataReadError(path, "DICOM file has no Waveform Sequence (not a waveform object)")
    if not 0 <= group < len(sequence):
        raise DataReadError(path, f"waveform group {group} out of range; the file has {len(sequence)} group(s)")
    item = sequence[group]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.asarray(ds.waveform_array(group), dtype=np.float32)  # (T, C)
    except Exception as error:
        raise DataReadError(path, f"cannot decode waveform data (truncated or corrupt?): {describe(error)}") from error
    rate = _float(item.get("SamplingFrequency"))
    if not rate or rate <= 0:
        raise DataReadError(path, "waveform has no valid Sampling Frequency")
    definitions = list(item.get("ChannelDefinitionSequence") or [])
    names, units, low, high = [], [], [], []
    for i in range(data.shape[1]):
        channel = definitions[i] if i < len(definitions) else Dataset()
        source = channel.get("ChannelSourceSequence")
        name = _text(source[0].get("CodeMeaning")) if source else None
        names.append(name or _text(channel.get("ChannelLabel")) or f"channel{i}")
        unit_seq = channel.get("ChannelSensitivityUnitsSequence")
        units.append(_text(unit_seq[0].get("CodeValue")) if unit_seq else None)
        low.append(_float(channel.get("FilterLowFrequency")))
        high.append(_float(channel.get("FilterHighFrequency")))
    meta = {
        "modality": _text(ds.get("Modality")),
        "sampling_rate": rate,
        "channel_names": names,
        "units": units,
        "duration_s": data.shape[0] / rate,
        "multiplex_group_label": _text(item.get("MultiplexGroupLabel")),
        "n_groups": len(sequence),
        "filter_low_hz": low,
        "filter_high_hz": high,
    }
    return Record("signal", np.ascontiguousarray(data.T), meta)


__all__ = [
    "apply_window",
    "read_dicom",
    "read_dicom_any",
    "read_dicom_series",
    "read_dicom_waveform",
    "write_dicom",
]

"""EDF / EDF+ / BDF signals with pyedflib.

The header's patient and recording fields (name, code, birth date, sex, start date,
technician, admin code) are never copied into metadata; the writer leaves them empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyedflib

from medfusion.data.io._util import atomic_path, describe, select_channels
from medfusion.data.io.base import DataReadError, Record, check_file

_DIGITAL_MIN, _DIGITAL_MAX = -32768, 32767


def read_edf(path: str | Path, *, channels: Sequence[str | int] | str | int | None = None) -> Record:
    """Read an EDF(+)/BDF(+) file in physical units.

    Args:
        path: the file.
        channels: ``None`` for every signal, or labels (surrounding spaces ignored) and/or
            0-based indices; the selected channels must share one sampling rate.

    Returns:
        Record("signal", (C, T) float32, meta) with sampling_rate (Hz), channel_names,
        units, duration_s, physical_min / physical_max (per channel), prefilter,
        transducer, annotations (list of (onset_s, duration_s, text) event markers).

    Raises:
        ValueError: on an empty ``channels`` list.
        DataReadError: on a missing, empty, non-EDF, truncated or corrupt file; unknown
            channels (listing the available ones); selected channels with different
            sampling rates (naming each channel's rate).
    """
    path = check_file(path)
    try:
        reader = pyedflib.EdfReader(str(path))
    except Exception as error:  # OSError with the EDF library's reason
        raise DataReadError(path, f"cannot read EDF (not EDF/BDF, truncated or corrupt): {describe(error)}") from error
    try:
        labels = [label.strip() for label in reader.getSignalLabels()]
        if not labels:
            raise DataReadError(path, "EDF file holds no signal")
        indices = select_channels(path, labels, channels)
        rates = {labels[i]: float(reader.getSampleFrequency(i)) for i in indices}
        if len(set(rates.values())) > 1:
            raise DataReadError(
                path,
                f"selected channels have different sampling rates {rates}; select channels sharing one rate",
            )
        counts = [int(reader.getNSamples()[i]) for i in indices]
        if len(set(counts)) > 1:
            raise DataReadError(path, f"selected channels have different lengths {dict(zip(rates, counts))}")
        signal = np.stack([reader.readSignal(i) for i in indices]).astype(np.float32)
        headers = [reader.getSignalHeader(i) for i in indices]
        onsets, durations, texts = reader.readAnnotations()
    except DataReadError:
        raise
    except Exception as error:
        raise DataReadError(path, f"cannot read EDF signals (truncated or corrupt?): {describe(error)}") from error
    finally:
        reader.close()
    rate = next(iter(rates.values()))
    meta = {
        "sampling_rate": rate,
        "channel_names": [labels[i] for i in indices],
        "units": [h["dimension"].strip() for h in headers],
        "duration_s": signal.shape[1] / rate,
        "physical_min": [float(h["physical_min"]) for h in headers],
        "physical_max": [float(h["physical_max"]) for h in headers],
        "prefilter": [h["prefilter"].strip() for h in headers],
        "transducer": [h["transducer"].strip() for h in headers],
        "annotations": [(float(o), float(d), str(t)) for o, d, t in zip(onsets, durations, texts, strict=False)],
    }
    return Record("signal", signal, meta)


def _edf_number(value: float, up: bool) -> float:
    """``value`` rounded outward to a number whose decimal form fits EDF's 8 characters."""
    for decimals in range(6, -1, -1):
        scale = 10**decimals
        rounded = (math.ceil if up else math.floor)(value * scale) / scale
        if len(f"{rounded:.{decimals}f}".rstrip("0").rstrip(".")) <= 8:
            return rounded
    raise ValueError(f"write_edf: physical value {value} does not fit the EDF header's 8 characters")


def write_edf(
    path: str | Path,
    signal: np.ndarray,
    sampling_rate: float,
    channel_names: Sequence[str],
    units: Sequence[str] | str = "uV",
) -> None:
    """Write a (C, T) physical signal as EDF+ (16-bit), atomically.

    Each channel's physical range is taken from its data (widened by 1 unit when the
    channel is constant, and rounded outward to fit the header), so a value read back
    lies within one quantisation step (physical range / 65535) of the original. Data
    records last 1 s; a signal whose length is not a whole number of seconds is padded
    with its last value up to the next second by the EDF format. Patient and recording
    fields are left empty.

    Args:
        path: destination file (``.edf``).
        signal: (C, T) finite float.
        sampling_rate: Hz, a positive integer value (EDF stores samples per 1-s record).
        channel_names: C labels (at most 16 characters).
        units: C physical dimensions (at most 8 characters), or one for all.

    Raises:
        ValueError: on a bad shape, non-finite values, rate, label or unit.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 2 or min(signal.shape) < 1:
        raise ValueError(f"write_edf: expected a (C, T) signal, received shape {signal.shape}")
    if not np.all(np.isfinite(signal)):
        raise ValueError("write_edf: expected finite values, received NaN or Inf")
    rate = float(sampling_rate)
    if not rate > 0 or rate != round(rate):
        raise ValueError(f"write_edf: expected a positive whole sampling_rate in Hz, received {sampling_rate!r}")
    n_channels, n_samples = signal.shape
    names = [str(n) for n in channel_names]
    unit_list = [units] * n_channels if isinstance(units, str) else [str(u) for u in units]
    if len(names) != n_channels or len(unit_list) != n_channels:
        raise ValueError(
            f"write_edf: expected {n_channels} channel names and units (one per row of the (C, T) signal), "
            f"received {len(names)} names and {len(unit_list)} units"
        )
    too_long = [n for n in names if len(n) > 16] + [u for u in unit_list if len(u) > 8]
    if too_long:
        raise ValueError(f"write_edf: labels must have at most 16 and units at most 8 characters, received {too_long}")
    per_record = int(rate)
    padded_length = math.ceil(n_samples / per_record) * per_record
    if padded_length != n_samples:
        signal = np.concatenate([signal, np.repeat(signal[:, -1:], padded_length - n_samples, axis=1)], axis=1)
    headers = []
    for name, unit, row in zip(names, unit_list, signal, strict=True):
        low, high = float(row.min()), float(row.max())
        if high - low < 1e-9:
            low, high = low - 1.0, high + 1.0
        headers.append({
            "label": name,
            "dimension": unit,
            "sample_frequency": rate,
            "physical_min": _edf_number(low, up=False),
            "physical_max": _edf_number(high, up=True),
            "digital_min": _DIGITAL_MIN,
            "digital_max": _DIGITAL_MAX,
            "transducer": "",
            "prefilter": "",
        })
    with atomic_path(path) as tmp:
        writer = pyedflib.EdfWriter(str(tmp), n_channels, file_type=pyedflib.FILETYPE_EDFPLUS)
        try:
            writer.setSignalHeaders(headers)
            writer.writeSamples([np.ascontiguousarray(row) for row in signal])
        finally:
            writer.close()


__all__ = ["read_edf", "write_edf"]

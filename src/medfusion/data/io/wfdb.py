"""PhysioNet WFDB records (a ``.hea`` header plus signal files) with the ``wfdb`` package.

Header comments (which often hold age, sex or diagnoses) and the base date/time are not
copied into metadata.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb

from medfusion.data.io._util import describe, select_channels
from medfusion.data.io.base import DataReadError, Record, check_file

_RECORD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def _record_base(record_path: str | Path) -> Path:
    """The record path without a ``.hea`` / ``.dat`` suffix."""
    path = Path(record_path)
    return path.with_suffix("") if path.suffix.lower() in (".hea", ".dat") else path


def read_wfdb(record_path: str | Path, *, channels: Sequence[str | int] | None = None) -> Record:
    """Read a WFDB record in physical units.

    Args:
        record_path: the record, with or without the ``.hea`` suffix (``data/100`` or
            ``data/100.hea``).
        channels: ``None`` for all, or channel names and/or 0-based indices.

    Returns:
        Record("signal", (C, T) float32, meta) with sampling_rate (Hz), channel_names,
        units, duration_s, n_samples, adc_gain (per channel; a quantisation step is
        1 / adc_gain), fmt (per channel storage format).

    Raises:
        ValueError: on an empty ``channels`` list.
        DataReadError: on a missing/empty/corrupt header, missing or truncated signal
            files, unknown channels (listing the available ones).
    """
    base = _record_base(record_path)
    header = check_file(base.with_suffix(".hea"))
    try:
        head = wfdb.rdheader(str(base))
    except Exception as error:
        raise DataReadError(header, f"cannot read WFDB header: {describe(error)}") from error
    names = list(head.sig_name or [])
    if not names:
        raise DataReadError(header, "WFDB header lists no signal")
    indices = select_channels(header, names, channels)
    try:
        record = wfdb.rdrecord(str(base), channels=indices, physical=True)
    except Exception as error:
        raise DataReadError(
            header, f"cannot read WFDB signals (missing, truncated or corrupt?): {describe(error)}"
        ) from error
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[1] != len(indices):
        raise DataReadError(header, "WFDB record returned no signal array")
    expected = head.sig_len
    if expected and signal.shape[0] != expected:
        raise DataReadError(header, f"truncated WFDB signal: {signal.shape[0]} samples read, header says {expected}")
    fs = float(record.fs)
    meta = {
        "sampling_rate": fs,
        "channel_names": list(record.sig_name),
        "units": list(record.units),
        "n_samples": int(signal.shape[0]),
        "duration_s": signal.shape[0] / fs,
        "adc_gain": [float(g) for g in record.adc_gain],
        "fmt": list(record.fmt),
    }
    return Record("signal", np.ascontiguousarray(signal.T, dtype=np.float32), meta)


def write_wfdb(
    record_path: str | Path,
    signal: np.ndarray,
    sampling_rate: float,
    channel_names: Sequence[str],
    units: Sequence[str] | str,
    *,
    fmt: str = "16",
) -> None:
    """Write a (C, T) physical signal as a WFDB record (``.hea`` + ``.dat``).

    ``wfdb.wrsamp`` chooses each channel's ADC gain and baseline from its range, so a
    value read back lies within one quantisation step (1 / adc_gain) of the original.
    Both files are written in a temporary folder and moved into place, signal file first.

    Args:
        record_path: destination without suffix (``out/rec1``); the record name (the
            last part) may hold letters, digits, '_' and '-'.
        signal: (C, T) float, finite (NaN is written as WFDB's missing-sample value).
        sampling_rate: Hz, > 0.
        channel_names: C names.
        units: C unit strings, or one for every channel (e.g. "mV").
        fmt: WFDB storage format per sample ("16", "32", "80", "212").

    Raises:
        ValueError: on a bad shape, rate, name count or record name.
    """
    base = _record_base(record_path)
    if not _RECORD_NAME.fullmatch(base.name):
        raise ValueError(f"write_wfdb: expected a record name of letters, digits, '_' or '-', received {base.name!r}")
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 2 or min(signal.shape) < 1:
        raise ValueError(f"write_wfdb: expected a (C, T) signal, received shape {signal.shape}")
    if np.isinf(signal).any():
        raise ValueError("write_wfdb: expected finite values, received Inf")
    if not np.isfinite(float(sampling_rate)) or float(sampling_rate) <= 0:
        raise ValueError(f"write_wfdb: expected sampling_rate > 0 Hz, received {sampling_rate!r}")
    n_channels = signal.shape[0]
    names = [str(n) for n in channel_names]
    unit_list = [units] * n_channels if isinstance(units, str) else [str(u) for u in units]
    if len(names) != n_channels or len(unit_list) != n_channels:
        raise ValueError(
            f"write_wfdb: expected {n_channels} channel names and units (one per row of the (C, T) signal), "
            f"received {len(names)} names and {len(unit_list)} units"
        )
    if any(not n or any(c.isspace() for c in n) for n in names + unit_list):
        raise ValueError(
            f"write_wfdb: channel names and units must be non-empty without spaces, received {names} / {unit_list}"
        )
    base.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=base.parent, prefix=f".{base.name}."))
    try:
        wfdb.wrsamp(
            base.name,
            fs=float(sampling_rate),
            units=unit_list,
            sig_name=names,
            p_signal=np.ascontiguousarray(signal.T),
            fmt=[fmt] * n_channels,
            write_dir=str(staging),
        )
        written = sorted(staging.iterdir(), key=lambda p: p.suffix == ".hea")  # header last
        for file in written:
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(file, base.parent / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["read_wfdb", "write_wfdb"]

"""A dataset described by a manifest: one row per sample, one path column per modality.

The manifest is a CSV or Parquet file (or a DataFrame) with

| column | content |
|---|---|
| ``patient_id`` | the patient of the row (several rows may share one) |
| ``split`` (optional) | "train" / "val" / "test"; without it splits come from :func:`patient_splits` |
| label column(s) | integer class labels |
| one column per modality | a file path, relative to ``root`` (default: the manifest's folder) |
| vital-sign columns (optional) | numbers in the manifest itself, empty = not measured |

An empty path means the modality is missing for that sample: it is marked absent, not
an error. Text may be a path to a ``.txt`` file or the text itself (a value ending in
``.txt`` without a line break is a path). Files are read with the loader of their
modality: ``.npy`` with numpy, ``.txt`` as UTF-8, anything else with
:func:`medfusion.data.io.read_any` (DICOM, NIfTI, PNG/JPEG, WFDB, EDF, MP4/AVI).

Bad files are found twice: when the dataset is built (each path exists and is a
non-empty file) and when a sample is loaded (the reader fails, or the array has the
wrong rank or non-finite values). ``on_error="raise"`` raises
:class:`~medfusion.data.io.base.DataReadError` naming the file; ``on_error="skip"``
drops the whole sample, records (row, column, reason) in :attr:`ManifestDataset.skipped`
and logs a warning with counts only (never paths, patient ids or text).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from medfusion.data.datasets.splits import DEFAULT_FRACTIONS, check_no_leakage, patient_splits
from medfusion.data.io.base import DataReadError, check_file
from medfusion.types import check_modality

logger = logging.getLogger(__name__)

#: Rank of each modality's array (no batch axis); one less means "add the channel axis".
LAYOUTS: dict[str, tuple[int, str]] = {
    "image": (3, "(C, H, W)"),
    "volume": (4, "(C, D, H, W)"),
    "signal": (2, "(C, T)"),
    "video": (4, "(T, C, H, W)"),
    "vitals": (1, "(F,)"),
}
#: Where the channel axis goes when an array comes without one: (H, W) -> (1, H, W), ...
_CHANNEL_AXIS = {"image": 0, "volume": 0, "signal": 0, "video": 1}
_NA_TEXT = {"", "nan", "NaN", "NA", "N/A", "null", "None"}
_MANIFEST_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}

Loader = Callable[[Path], Any]


class SkippedFile(NamedTuple):
    """A file that made its sample skipped.

    Attributes:
        row: the manifest row (0-based data row of the file, or the DataFrame's index label).
        column: the manifest column naming the file.
        reason: why it could not be used.
    """

    row: Any
    column: str
    reason: str


def read_manifest(manifest: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, Path | None]:
    """The manifest as a DataFrame and the folder relative paths are read from.

    CSV cells are read as text (ids keep leading zeros; an empty cell is ``""``).

    Raises:
        ValueError: on a missing file or an unknown suffix (listing the known ones).
    """
    if isinstance(manifest, pd.DataFrame):
        return manifest.copy(), None
    path = Path(manifest)
    kind = _MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"manifest: expected a file ending in one of {sorted(_MANIFEST_SUFFIXES)}, received {path}")
    if not path.is_file():
        raise ValueError(f"manifest: file {path} not found")
    if kind == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False)
    return frame, path.resolve().parent


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as float, empty / "NaN"-like text as NaN.

    Raises:
        ValueError: naming the column and the rows holding non-numbers.
    """
    values = frame[column]
    if values.dtype == object:
        values = values.map(lambda v: np.nan if _is_missing(v) or (isinstance(v, str) and v.strip() in _NA_TEXT) else v)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise ValueError(f"manifest: column {column!r} must hold numbers; {int(bad.sum())} row(s) do not, "
                         f"e.g. rows {list(frame.index[bad.to_numpy()][:5])}")
    return numbers.astype(float)


def is_text_path(value: str) -> bool:
    """Whether a text cell names a ``.txt`` file rather than holding the text itself."""
    return value.strip().lower().endswith(".txt") and "\n" not in value


def default_loader(path: Path, modality: str) -> Any:
    """Read one file: ``.npy`` with numpy (array), ``.txt`` as UTF-8 (str), others with
    ``read_any`` (a :class:`~medfusion.data.io.base.Record`).

    Raises:
        DataReadError: naming the path and the reason.
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise DataReadError(path, f"not a readable .npy array ({type(error).__name__})") from error
    if suffix == ".txt":
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DataReadError(path, "text file is not UTF-8") from error
    from medfusion.data.io import read_any  # lazy: the readers import pydicom, nibabel, av, ...

    return read_any(path)  # a Record: to_layout takes its array (or text) and checks it


def to_layout(data: Any, modality: str) -> np.ndarray | str:
    """A loaded value in its modality's layout: str for text, float32 array otherwise.

    An array one axis short gets a channel axis ((H, W) -> (1, H, W), (T,) -> (1, T),
    (T, H, W) -> (T, 1, H, W)).

    Raises:
        ValueError: on a wrong type, rank, an empty array, or NaN/Inf (vitals may hold NaN).
    """
    if hasattr(data, "array") and hasattr(data, "text"):  # a Record from medfusion.data.io
        record, data = data, (data.text if modality == "text" else data.array)
        if data is None:
            raise ValueError(f"the file was read as {getattr(record, 'modality', '?')} data, expected {modality}")
    if modality == "text":
        if not isinstance(data, str):
            raise ValueError(f"expected text (str), received {type(data).__name__}")
        if not data.strip():
            raise ValueError("text is empty")
        return data
    if not isinstance(data, np.ndarray) or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        kind = f"{type(data).__name__} of {data.dtype}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"expected a numeric array, received {kind}")
    ndim, layout = LAYOUTS[modality]
    if data.ndim == ndim - 1 and modality in _CHANNEL_AXIS:
        data = np.expand_dims(data, _CHANNEL_AXIS[modality])
    if data.ndim != ndim:
        raise ValueError(f"expected {modality} of layout {layout}, received shape {data.shape}")
    if data.size == 0:
        raise ValueError(f"expected a non-empty {modality}, received shape {data.shape}")
    data = data.astype(np.float32, copy=False)
    if modality != "vitals" and not np.isfinite(data).all():
        raise ValueError(f"{modality} array holds NaN or Inf")
    return data


class ManifestDataset(Dataset):
    """Samples of a manifest, each ``{"patient_id", "label", "inputs", "present", "row"}``.

    ``inputs`` maps each modality to its array (layouts of :mod:`medfusion.data.io.base`,
    float32; vitals (F,) with NaN for missing values), the text (str), or ``None`` when
    the modality is missing; ``present`` maps each modality to a bool.

    Args:
        manifest: CSV / Parquet path or a DataFrame.
        modalities: {modality: column holding its path (text: path or inline text)}.
        label_column: column of integer labels, or None for unlabelled data.
        root: folder of relative paths; default the manifest's folder (the working
            directory for a DataFrame).
        split: keep only this split ("train", "val", ...); None keeps every row.
        loaders: {modality: loader(path) -> array, str or Record}; default
            :func:`default_loader`.
        transforms: callable applied to each loaded sample dict (dictionary transforms
            of :mod:`medfusion.data.transforms`).
        on_error: "raise" or "skip" (see the module docstring).
        vitals_columns: manifest columns holding vital signs, in feature order; they
            form the "vitals" modality ((F,) float32, NaN = not measured, absent when
            none is measured).
        validate_files: check at build time that each path names a non-empty file.
        patient_column: column of patient ids.
        split_column: column of split names, used when present.
        split_fractions: fractions for :func:`patient_splits` when there is no split column.
        split_seed: seed of those splits.
        check_leakage: refuse a split column that puts a patient in two splits.

    Raises:
        ValueError: on a missing column (naming it and listing the available ones), an
            unknown modality, bad labels, an unknown split, a leaking split column, or
            bad options.
        DataReadError: with ``on_error="raise"``, on the first missing or empty file.

    Examples::

        ds = ManifestDataset("data/triage/manifest.parquet", {"image": "image_path", "text": "note"},
                             "pneumonia", split="train", vitals_columns=["temp", "hr", "spo2"])
        sample = ds[0]
        sample["inputs"]["image"].shape  # (1, 256, 256)
    """

    def __init__(
        self,
        manifest: str | Path | pd.DataFrame,
        modalities: Mapping[str, str],
        label_column: str | None,
        *,
        root: str | Path | None = None,
        split: str | None = None,
        loaders: Mapping[str, Loader] | None = None,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
        vitals_columns: Sequence[str] | None = None,
        validate_files: bool = True,
        patient_column: str = "patient_id",
        split_column: str = "split",
        split_fractions: Mapping[str, float] | None = None,
        split_seed: int = 0,
        check_leakage: bool = True,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"manifest: expected on_error 'raise' or 'skip', received {on_error!r}")
        if transforms is not None and not callable(transforms):
            raise ValueError(f"manifest: expected transforms to be callable, received {type(transforms).__name__}")
        self.on_error = on_error
        self.transforms = transforms
        self.skipped: list[SkippedFile] = []
        self._columns = self._check_modalities(modalities, vitals_columns)
        self.vitals_columns = list(vitals_columns) if vitals_columns else []
        self.loaders = self._check_loaders(loaders)

        frame, base = read_manifest(manifest)
        needed = [patient_column, *self._columns.values(), *self.vitals_columns]
        needed += [label_column] if label_column is not None else []
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise ValueError(f"manifest: column(s) {missing} not found; available columns: {list(frame.columns)}")
        self.root = Path(root) if root is not None else (base if base is not None else Path.cwd())

        frame = self._select_split(frame, split, patient_column, split_column, label_column,
                                   split_fractions, split_seed, check_leakage)
        self.split = split
        self._patients = frame[patient_column].astype(str).to_numpy(dtype=object)
        self._labels = self._read_labels(frame, label_column)
        self._row_labels = frame.index.to_numpy()
        self._values = {m: self._cells(frame, m, c) for m, c in self._columns.items()}
        self._vitals = (np.stack([_numeric(frame, c).to_numpy(np.float32) for c in self.vitals_columns], axis=1)
                        if self.vitals_columns else None)
        self._rows = np.arange(len(frame))
        if validate_files:
            self._validate_files()

    # -- building ---------------------------------------------------------------------------

    @staticmethod
    def _check_modalities(modalities: Mapping[str, str], vitals_columns: Sequence[str] | None) -> dict[str, str]:
        if not isinstance(modalities, Mapping):
            raise ValueError("manifest: expected modalities as {modality: column}, "
                             f"received {type(modalities).__name__}")
        columns = {}
        for modality, column in modalities.items():
            modality = check_modality(modality)
            if not isinstance(column, str) or not column:
                raise ValueError(f"manifest: expected a column name for {modality!r}, received {column!r}")
            columns[modality] = column
        if vitals_columns is not None:
            if isinstance(vitals_columns, str) or not all(isinstance(c, str) for c in vitals_columns):
                raise ValueError("manifest: expected vitals_columns as a list of column names, "
                                 f"received {vitals_columns!r}")
            if vitals_columns and "vitals" in columns:
                raise ValueError("manifest: vitals come either from a path column (modalities['vitals']) "
                                 "or from vitals_columns, received both")
        if not columns and not vitals_columns:
            raise ValueError("manifest: expected at least one modality column or vitals_columns")
        return columns

    def _check_loaders(self, loaders: Mapping[str, Loader] | None) -> dict[str, Loader]:
        loaders = dict(loaders or {})
        for modality, loader in loaders.items():
            if modality not in self._columns:
                raise ValueError(f"manifest: loader given for {modality!r}, which is not among the modalities "
                                 f"{sorted(self._columns)}")
            if not callable(loader):
                raise ValueError(f"manifest: the loader of {modality!r} is not callable")
        return loaders

    @staticmethod
    def _select_split(frame, split, patient_column, split_column, label_column, fractions, seed, check_leakage):
        ids = frame[patient_column]
        no_id = ids.map(_is_missing)
        if no_id.any():
            raise ValueError(f"manifest: {int(no_id.sum())} row(s) have no {patient_column!r}, "
                             f"e.g. rows {list(frame.index[no_id.to_numpy()][:5])}")
        if split_column in frame.columns:
            names = frame[split_column].map(lambda v: None if _is_missing(v) else str(v).strip())
            if check_leakage:
                labelled = names.notna().to_numpy()
                check_no_leakage(ids[labelled].astype(str), names[labelled])
        else:
            if split is None:
                return frame
            labels = _numeric(frame, label_column) if label_column is not None else None
            names = pd.Series(patient_splits(ids.astype(str), labels, fractions, seed), index=frame.index)
        if split is None:
            return frame
        if split_column in frame.columns:
            available = sorted(set(names.dropna()))
        else:
            available = list(fractions or DEFAULT_FRACTIONS)
        if split not in available:
            raise ValueError(f"manifest: split {split!r} not found; available splits: {available}")
        return frame[(names == split).to_numpy()]

    @staticmethod
    def _read_labels(frame: pd.DataFrame, label_column: str | None) -> np.ndarray | None:
        if label_column is None:
            return None
        values = _numeric(frame, label_column)
        if values.isna().any():
            rows = list(frame.index[values.isna().to_numpy()][:5])
            raise ValueError(f"manifest: label column {label_column!r} is empty in {int(values.isna().sum())} row(s), "
                             f"e.g. rows {rows}; expected a label on every row (or label_column=None)")
        if not np.all(np.mod(values.to_numpy(), 1) == 0):
            raise ValueError(f"manifest: label column {label_column!r} must hold integer class labels; "
                             f"map other values to 0..K-1 first")
        return values.to_numpy().astype(np.int64)

    def _cells(self, frame: pd.DataFrame, modality: str, column: str) -> list[Path | str | None]:
        """Per row: the resolved path, the inline text, or None for a missing modality."""
        cells: list[Path | str | None] = []
        for value in frame[column].tolist():
            if _is_missing(value):
                cells.append(None)
            elif modality == "text" and not is_text_path(str(value)):
                cells.append(str(value))
            else:
                path = Path(str(value).strip())
                cells.append(path if path.is_absolute() else self.root / path)
        return cells

    def _validate_files(self) -> None:
        bad: dict[int, list[SkippedFile]] = {}
        for modality, column in self._columns.items():
            for position, cell in enumerate(self._values[modality]):
                if isinstance(cell, Path):
                    try:
                        check_file(cell)
                    except DataReadError as error:
                        if self.on_error == "raise":
                            raise DataReadError(cell, f"{error.reason} (manifest row {self._row_labels[position]}, "
                                                      f"column {column!r})") from error
                        bad.setdefault(position, []).append(
                            SkippedFile(self._row_labels[position], column, error.reason))
        if bad:
            for position in sorted(bad):
                self._add_skipped(bad[position])
            self._rows = np.array([r for r in self._rows if r not in bad], dtype=int)
            reasons = Counter(s.reason for files in bad.values() for s in files)
            logger.warning("manifest: skipped %d of %d samples with missing or empty files (%s)",
                           len(bad), len(self._rows) + len(bad), _format_counts(reasons))

    # -- loading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def modalities(self) -> list[str]:
        """Sorted modalities of the samples (``"vitals"`` included when from columns)."""
        return sorted([*self._columns, *(["vitals"] if self.vitals_columns else [])])

    @property
    def patient_ids(self) -> np.ndarray:
        """(N,) patient id of each sample."""
        return self._patients[self._rows]

    @property
    def labels(self) -> np.ndarray | None:
        """(N,) int64 label of each sample, or None when unlabelled."""
        return None if self._labels is None else self._labels[self._rows]

    @property
    def rows(self) -> np.ndarray:
        """(N,) manifest row of each sample."""
        return self._row_labels[self._rows]

    def presence(self) -> dict[str, np.ndarray]:
        """{modality: (N,) bool} whether each sample has the modality, from the manifest alone
        (no file is read: a listed file that turns out unreadable is still counted present)."""
        present = {m: np.array([self._values[m][i] is not None for i in self._rows], dtype=bool)
                   for m in self._columns}
        if self._vitals is not None:
            present["vitals"] = np.isfinite(self._vitals[self._rows]).any(axis=1)
        return present

    def vitals_matrix(self) -> np.ndarray:
        """(N, F) float32 vital signs of the samples from the manifest columns (NaN = missing).

        Fit :class:`~medfusion.data.transforms.VitalsStandardizer` on this matrix of the
        training split only.

        Raises:
            ValueError: when the dataset has no ``vitals_columns``.
        """
        if self._vitals is None:
            raise ValueError("manifest: this dataset has no vitals_columns")
        return self._vitals[self._rows].copy()

    def set_random_state(self, seed: int) -> ManifestDataset:
        """Seed the random transforms (called per worker by :func:`~medfusion.data.collate.make_loader`)."""
        if hasattr(self.transforms, "set_random_state"):
            self.transforms.set_random_state(seed)
        return self

    def _load(self, modality: str, cell: Path | str) -> np.ndarray | str:
        if isinstance(cell, str):
            return to_layout(cell, modality)
        check_file(cell)  # deleted or emptied since the dataset was built
        loader = self.loaders.get(modality)
        data = loader(cell) if loader is not None else default_loader(cell, modality)
        return to_layout(data, modality)

    def load(self, position: int) -> tuple[dict | None, list[SkippedFile]]:
        """The untransformed sample at manifest ``position`` and the files that failed.

        The sample is None when a file failed. Any exception of a loader (except
        ImportError) counts as an unreadable file.
        """
        inputs: dict[str, Any] = {}
        present: dict[str, bool] = {}
        failures = []
        for modality, column in self._columns.items():
            cell = self._values[modality][position]
            if cell is None:
                inputs[modality], present[modality] = None, False
                continue
            try:
                inputs[modality], present[modality] = self._load(modality, cell), True
            except ImportError:
                raise
            except Exception as error:  # readers of third-party formats raise many types
                reason = error.reason if isinstance(error, DataReadError) else f"{type(error).__name__}: {error}"
                failures.append(SkippedFile(self._row_labels[position], column, reason))
                if self.on_error == "raise":
                    where = f"manifest row {self._row_labels[position]}, column {column!r}"
                    path = cell if isinstance(cell, Path) else "<inline text>"
                    raise DataReadError(path, f"{reason} ({where})") from error
        if self._vitals is not None:
            values = self._vitals[position].copy()
            inputs["vitals"], present["vitals"] = values, bool(np.isfinite(values).any())
        if failures:
            return None, failures
        label = None if self._labels is None else int(self._labels[position])
        sample = {"patient_id": self._patients[position], "label": label, "inputs": inputs, "present": present,
                  "row": self._row_labels[position]}
        return sample, []

    def __getitem__(self, index: int) -> dict | None:
        """The sample at ``index``, transformed; None when skipped (on_error="skip").

        Raises:
            IndexError: out of range.
            DataReadError: with on_error="raise", naming the unreadable file.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"manifest: index {index} out of range for {len(self)} samples")
        sample, failures = self.load(int(self._rows[index]))
        if sample is None:
            self._record_skip(failures)
            return None
        return self.transforms(sample) if self.transforms is not None else sample

    def _add_skipped(self, failures: list[SkippedFile]) -> None:
        """Record failures once each (a bad sample may be met again in a later epoch)."""
        known = set(self.skipped)
        self.skipped.extend(f for f in failures if f not in known)

    @property
    def skipped_samples(self) -> int:
        """Number of distinct samples skipped so far."""
        return len({s.row for s in self.skipped})

    def _record_skip(self, failures: list[SkippedFile]) -> None:
        self._add_skipped(failures)
        kinds = Counter(f"{s.column}: {s.reason.split(':')[0]}" for s in failures)
        logger.warning("manifest: skipped a sample with unreadable file(s) (%s); %d sample(s) skipped so far",
                       _format_counts(kinds), self.skipped_samples)

    def verify(self) -> dict:
        """Load every sample once (no transforms); with on_error="skip", drop the bad ones.

        Worker processes of a DataLoader keep their own skip records, so call this in the
        main process for a complete report before training on data of unknown quality.

        Returns:
            :meth:`skip_report`.

        Raises:
            DataReadError: with on_error="raise", on the first unreadable file.
        """
        keep = []
        for position in self._rows:
            sample, failures = self.load(int(position))
            if sample is None:
                self._add_skipped(failures)
            else:
                keep.append(position)
        dropped = len(self._rows) - len(keep)
        self._rows = np.array(keep, dtype=int)
        if dropped:
            logger.warning("manifest: verify skipped %d sample(s) with unreadable files (%s)", dropped,
                           _format_counts(Counter(s.reason.split(":")[0] for s in self.skipped)))
        return self.skip_report()

    def skip_report(self) -> dict:
        """Counts of what was skipped.

        Returns:
            {"samples": skipped samples, "files": bad files, "by_reason": {reason: files},
            "by_column": {column: files}}.
        """
        return {
            "samples": self.skipped_samples,
            "files": len(self.skipped),
            "by_reason": dict(Counter(s.reason for s in self.skipped)),
            "by_column": dict(Counter(s.column for s in self.skipped)),
        }


def _format_counts(counts: Counter) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.most_common())

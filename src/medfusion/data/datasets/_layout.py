"""What the public-dataset adapters share: finding a layout's tables, checking the files
they list, report sections, and the dataset class built on an adapter's manifest.

An adapter's manifest records what it left out in ``frame.attrs``:
``attrs["skipped"]`` (a list of :class:`~medfusion.data.datasets.manifest.SkippedFile`
whose ``row`` names the source table's key, e.g. ``"dicom_id=abc"``) and
``attrs["skipped_split"]`` (the split of each, None when unknown).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.data.datasets.manifest import Loader, ManifestDataset, SkippedFile
from medfusion.data.datasets.splits import check_no_leakage
from medfusion.data.io.base import DataReadError, check_file
from medfusion.data.io.text import read_table

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


def check_root(root: str | Path, dataset: str) -> Path:
    """``root`` as a Path naming an existing folder.

    Raises:
        ValueError: when it is not a folder.
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"{dataset}: root {str(path)!r} is not a folder; expected the folder holding the "
                         f"{dataset} files")
    return path


def check_on_error(on_error: str, dataset: str) -> None:
    """Raises ValueError unless ``on_error`` is "raise" or "skip"."""
    if on_error not in ON_ERROR:
        raise ValueError(f"{dataset}: expected on_error 'raise' or 'skip', received {on_error!r}")


def check_names(values: Sequence[str] | None, name: str, dataset: str) -> list[str] | None:
    """A list of non-empty strings (or None); one bare string is refused, not split into letters.

    Raises:
        ValueError: naming the argument and the value received.
    """
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Sequence) or not values \
            or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"{dataset}: expected {name} as a non-empty list of strings (or None), received {values!r}")
    return [v.strip() for v in values]


def find_file(root: Path, names: Sequence[str], dataset: str, *, required: bool = True,
              why: str = "") -> Path | None:
    """The first of ``names`` (relative to ``root``) that is a file.

    Raises:
        ValueError: when none exists and ``required``, naming every candidate and ``root``.
    """
    for name in names:
        if (root / name).is_file():
            return root / name
    if required:
        wanted = " or ".join(repr(n) for n in names)
        raise ValueError(f"{dataset}: {wanted} not found in {str(root)!r}{why}; is root the dataset's top folder?")
    return None


def find_dir(root: Path, name: str, dataset: str, what: str) -> Path:
    """``root / name`` if it is a folder.

    Raises:
        ValueError: naming the folder, what it should hold and ``root``.
    """
    path = root / name
    if not path.is_dir():
        raise ValueError(f"{dataset}: folder {name!r} ({what}) not found in {str(root)!r}; "
                         "is root the dataset's top folder?")
    return path


def read_csv(path: Path, columns: Sequence[str], dataset: str) -> pd.DataFrame:
    """A table of the layout (CSV, gzipped or not), checked for ``columns``.

    Raises:
        DataReadError: on an unreadable table, naming it.
        ValueError: naming the missing columns, the table and the columns it has.
    """
    frame = read_table(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{dataset}: {path.name} lacks column(s) {missing}; found {list(frame.columns)} in {path}")
    return frame


def id_text(values: pd.Series) -> pd.Series:
    """Identifiers as text: 15709.0 -> "15709", NaN -> "", strings stripped."""

    def one(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    return values.map(one).astype(object)


def split_names(values: pd.Series, mapping: Mapping[str, str], table: str, dataset: str) -> pd.Series:
    """The layout's split names as the project's ("validate" -> "val", ...).

    Raises:
        ValueError: on a value outside ``mapping``, listing the values found and the known ones.
    """
    text = values.map(lambda v: "" if pd.isna(v) else str(v).strip().lower())
    unknown = sorted(set(text) - set(mapping))
    if unknown:
        raise ValueError(f"{dataset}: {table} holds unknown split value(s) {unknown}; expected {sorted(mapping)}")
    return text.map(mapping).astype(object)


def check_listed_files(
    frame: pd.DataFrame,
    columns: Mapping[str, str],
    root: Path,
    *,
    key_column: str,
    on_error: str,
    dataset: str,
    companions: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Check that every file the manifest names exists and is not empty.

    Args:
        frame: the manifest, with a ``split`` column.
        columns: {path column: the table that listed its files}; empty cells are skipped.
        root: folder of relative paths.
        key_column: column identifying a row in the source table (named in messages).
        on_error: "raise": DataReadError for the first bad file, naming it, its row and
            how many more are bad; "skip": drop those rows, record them in
            ``attrs["skipped"]`` and log a warning with counts.
        dataset: the dataset's name for messages.
        companions: {path column: other suffixes to check beside each file}, e.g.
            ``{"ecg": [".dat"]}`` for a WFDB header's signal file.

    Returns:
        The manifest without the skipped rows (index reset), its ``attrs`` extended.

    Raises:
        DataReadError: in raise mode, naming the first missing or empty file.
    """
    companions = companions or {}
    bad: dict[int, list[tuple[SkippedFile, Path]]] = {}
    for column, table in columns.items():
        for position, cell in enumerate(frame[column].tolist()):
            if not isinstance(cell, str) or not cell:
                continue
            path = Path(cell) if Path(cell).is_absolute() else root / cell
            for candidate in [path, *(path.with_suffix(s) for s in companions.get(column, ()))]:
                try:
                    check_file(candidate)
                except DataReadError as error:
                    key = f"{key_column}={frame[key_column].iat[position]}"
                    reason = f"{error.reason} (listed in {table})"
                    bad.setdefault(position, []).append((SkippedFile(key, column, reason), candidate))
                    break  # one failure per cell: a missing header hides its signal file
    if not bad:
        return frame
    failures = [f for files in bad.values() for f in files]
    if on_error == "raise":
        first, path = failures[0]
        more = f"; {len(bad) - 1} more sample(s) with missing or empty files" if len(bad) > 1 else ""
        raise DataReadError(path, f"{first.reason}, row {first.row}, column {first.column!r}{more} "
                                  "(on_error='skip' leaves these samples out and counts them)")
    splits = frame["split"].tolist()
    skipped = list(frame.attrs.get("skipped", []))
    skipped_split = list(frame.attrs.get("skipped_split", []))
    for position in sorted(bad):
        for record, _ in bad[position]:
            skipped.append(record)
            skipped_split.append(splits[position] or None)
    reasons = Counter(f.reason for f, _ in failures)
    logger.warning("%s: skipped %d of %d samples whose files are missing or empty (%s)", dataset, len(bad),
                   len(frame), ", ".join(f"{r}: {n}" for r, n in reasons.most_common()))
    kept = frame.drop(index=frame.index[sorted(bad)]).reset_index(drop=True)
    kept.attrs["skipped"], kept.attrs["skipped_split"] = skipped, skipped_split
    return kept


def record_skipped(frame: pd.DataFrame, records: Sequence[SkippedFile], splits: Sequence[str | None]) -> None:
    """Add records to ``frame.attrs`` (see the module docstring)."""
    frame.attrs["skipped"] = [*frame.attrs.get("skipped", []), *records]
    frame.attrs["skipped_split"] = [*frame.attrs.get("skipped_split", []), *splits]


# -- report text ------------------------------------------------------------------------------

_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]*[A-Z)])[ \t]*:", re.MULTILINE)


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace (line breaks included) as one space, ends stripped."""
    return " ".join(text.split())


def join_sections(sections: Sequence[tuple[str, str]]) -> str:
    """``"FINDINGS: ... IMPRESSION: ..."`` from (name, text) pairs; empty texts left out."""
    return " ".join(f"{name.upper()}: {body}" for name, body in sections if body)


def split_report(text: str) -> dict[str, str]:
    """The sections of a free-text radiology report: {HEADER: text}, whitespace normalised.

    A header is an upper-case phrase at the start of a line followed by a colon
    ("FINDINGS:", "WET READ:"); text before the first header is under ``""``. A header
    met twice keeps both texts, joined.
    """
    parts: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    bounds = [(m.group(1).strip(), m.end()) for m in matches]
    starts = [m.start() for m in matches] + [len(text)]
    parts[""] = normalise_whitespace(text[: starts[0]])
    for (name, begin), end in zip(bounds, starts[1:]):
        body = normalise_whitespace(text[begin:end])
        parts[name] = f"{parts[name]} {body}".strip() if name in parts else body
    return parts


# -- datasets ---------------------------------------------------------------------------------


class AdapterDataset(ManifestDataset):
    """A :class:`ManifestDataset` over an adapter's manifest.

    Samples without a value for the chosen label (e.g. uncertain findings under the
    "ignore" policy) are left out, counted in :attr:`unlabelled` and logged; files the
    adapter skipped are in :attr:`skipped` and :meth:`skip_report` from the start.

    Attributes:
        manifest: the adapter's whole manifest (every split); :attr:`rows` index it.
        unlabelled: samples of the split left out for lack of a label.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        modalities: Mapping[str, str],
        label: str | None,
        label_columns: Sequence[str],
        *,
        root: Path,
        split: str | None,
        splits: Sequence[str],
        dataset: str,
        loaders: Mapping[str, Loader] | None = None,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
        vitals_columns: Sequence[str] | None = None,
    ) -> None:
        skipped = list(zip(frame.attrs.get("skipped", []), frame.attrs.get("skipped_split", [])))
        if label is not None and label not in label_columns:
            raise ValueError(f"{dataset}: unknown label {label!r}; expected one of {list(label_columns)}")
        if split is not None and split not in splits:
            raise ValueError(f"{dataset}: split {split!r} not found; available splits: {list(splits)}")
        named = (frame["split"] != "").to_numpy()
        check_no_leakage(frame["patient_id"][named], frame["split"][named])
        self.manifest = frame
        self.unlabelled = 0
        usable = frame if split is None else frame[(frame["split"] == split).to_numpy()]
        if label is not None:
            has_label = pd.to_numeric(usable[label], errors="coerce").notna().to_numpy()
            self.unlabelled = int((~has_label).sum())
            if self.unlabelled:
                logger.warning("%s: left out %d sample(s) with no %r label (uncertain or not given)",
                               dataset, self.unlabelled, label)
            usable = usable[has_label]
        # the split is chosen here, so that a split whose every sample was skipped is empty, not unknown
        super().__init__(usable, modalities, label, root=root, split=None, loaders=loaders, transforms=transforms,
                         on_error=on_error, vitals_columns=vitals_columns, validate_files=False,
                         check_leakage=False)
        self.split = split
        self._add_skipped([record for record, name in skipped if split is None or name in (split, None)])

    def column(self, name: str) -> np.ndarray:
        """(N,) values of a manifest column for the samples, in sample order (e.g. a regression target).

        Raises:
            ValueError: naming an unknown column and listing the known ones.
        """
        if name not in self.manifest.columns:
            raise ValueError(f"unknown manifest column {name!r}; available columns: {list(self.manifest.columns)}")
        return self.manifest[name].loc[self.rows].to_numpy()

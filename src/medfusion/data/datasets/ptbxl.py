"""PTB-XL 12-lead ECGs as a user holds them locally (PhysioNet open access; nothing is downloaded).

Wagner et al. 2020, "PTB-XL, a large publicly available electrocardiography dataset",
Scientific Data 7:154; https://physionet.org/content/ptb-xl/1.0.3/ . Superclass labels
and folds as in Strodthoff et al. 2021, "Deep learning for ECG analysis: benchmarks and
insights from PTB-XL", IEEE JBHI 25(5).

Layout under ``root``::

    ptbxl_database.csv     ecg_id, patient_id, age, sex, height, weight, report, scp_codes
                           ("{'NORM': 100.0, 'SR': 0.0}": statement -> likelihood %), strat_fold (1-10),
                           filename_lr (records100/00000/00001_lr), filename_hr (records500/...), ...
    scp_statements.csv     SCP code (first column), diagnostic (1 / blank), diagnostic_class
                           (NORM, MI, STTC, CD, HYP), diagnostic_subclass, ...
    records100/00000/00001_lr.hea + .dat     10 s at 100 Hz, 12 leads (mV)
    records500/00000/00001_hr.hea + .dat     10 s at 500 Hz

One manifest row per record. Superclass labels: a record has class C when one of its
diagnostic statements (with likelihood >= ``min_likelihood``; PTB-XL uses 0 for "unknown
likelihood", so the default 0 keeps all) belongs to C; a record without diagnostic
statement has every superclass 0 (``superclasses`` is then empty). Splits follow the
dataset's recommendation: folds 1-8 train, 9 val, 10 test (folds 9 and 10 hold only
human-validated labels; every patient's records lie in one fold, so the split is
patient-level). The ``report`` column holds the free-text report inline (mostly German,
some English). Ages above 89 are stored as 300 for anonymity; ``age`` gives them 90.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.data.datasets._layout import (
    AdapterDataset,
    check_listed_files,
    check_on_error,
    check_root,
    find_file,
    id_text,
    read_csv,
)
from medfusion.data.io.wfdb import read_wfdb

logger = logging.getLogger(__name__)

DATASET = "ptbxl"
DATABASE_TABLE = "ptbxl_database.csv"
STATEMENTS_TABLE = "scp_statements.csv"
#: The five diagnostic superclasses.
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
#: The dataset's recommended split by stratified fold.
FOLDS: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}
#: Database column of the record path for each sampling rate (Hz).
RECORD_COLUMNS = {100: "filename_lr", 500: "filename_hr"}
#: The stored age meaning "over 89".
ANONYMISED_AGE = 300
#: The 12 leads in record order.
LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")


def parse_scp_codes(text: str) -> dict[str, float]:
    """``"{'NORM': 100.0, 'SR': 0.0}"`` as ``{"NORM": 100.0, "SR": 0.0}`` (a literal, never evaluated code).

    Raises:
        ValueError: when the text is not a dict literal of code -> number.
    """
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                              and not isinstance(v, bool) for k, v in value.items()):
        raise ValueError(f"expected scp_codes as a dict literal of code -> likelihood, received {str(text)[:60]!r}")
    return {k: float(v) for k, v in value.items()}


def _check_folds(folds: Mapping[str, Sequence[int]] | None) -> dict[int, str]:
    folds = FOLDS if folds is None else folds
    if not isinstance(folds, Mapping) or not folds:
        raise ValueError(f"{DATASET}: expected folds as {{split: [fold numbers]}}, received {folds!r}")
    owner: dict[int, str] = {}
    for name, numbers in folds.items():
        if not isinstance(name, str) or not name or isinstance(numbers, (str, int)):
            raise ValueError(f"{DATASET}: expected folds as {{split: [fold numbers]}}, received {dict(folds)!r}")
        for fold in numbers:
            if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 1 <= fold <= 10:
                raise ValueError(f"{DATASET}: expected fold numbers 1..10, received {fold!r} for split {name!r}")
            if int(fold) in owner:
                raise ValueError(f"{DATASET}: fold {fold} is in splits {owner[int(fold)]!r} and {name!r}")
            owner[int(fold)] = name
    return owner


def _statements(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """{code: diagnostic class} and {code: diagnostic subclass} of the diagnostic statements."""
    table = read_csv(path, ["diagnostic", "diagnostic_class"], DATASET)
    codes = table.iloc[:, 0].astype(str).str.strip()  # the first, unnamed column holds the code
    diagnostic = (pd.to_numeric(table["diagnostic"], errors="coerce") == 1).to_numpy()

    def of(column: str) -> dict[str, str]:
        if column not in table:
            return {}
        values = table[column].fillna("").astype(str).str.strip()
        return {c: v for c, v, d in zip(codes, values, diagnostic) if d and v}

    return of("diagnostic_class"), of("diagnostic_subclass")


def ptbxl_manifest(
    root: str | Path,
    *,
    sampling_rate: int = 100,
    min_likelihood: float = 0.0,
    folds: Mapping[str, Sequence[int]] | None = None,
    on_error: str = "raise",
) -> pd.DataFrame:
    """A ManifestDataset-ready manifest of a local PTB-XL copy: one row per ECG record.

    Args:
        root: the folder holding ``ptbxl_database.csv``, ``scp_statements.csv`` and
            ``records100/`` or ``records500/``.
        sampling_rate: 100 (records100, ``filename_lr``) or 500 (records500, ``filename_hr``).
        min_likelihood: statements with a lower likelihood (%) do not count for the
            superclasses.
        folds: {split: fold numbers}; default :data:`FOLDS`. Folds in no split get split "".
        on_error: for records the database lists but the disk lacks (header or signal
            file): "raise" names the file, "skip" leaves the record out, recorded in
            ``attrs["skipped"]`` with a logged count.

    Returns:
        Columns ``patient_id``, ``ecg_id``, ``split``, ``strat_fold``, ``ecg`` (the
        record's ``.hea`` path relative to root), ``report``, ``scp_codes`` (as stored),
        ``superclasses`` and ``subclasses`` (";"-joined), the :data:`SUPERCLASSES` (int 0/1),
        and ``age``, ``sex`` (0 male, 1 female), ``height``, ``weight`` (float, NaN when
        not recorded).

    Raises:
        ValueError: when root lacks a table (naming it and root), a table lacks columns,
            a row has an unreadable ``scp_codes`` or fold, or on a bad option.
        DataReadError: in raise mode, naming the first missing record file.

    Examples::

        frame = ptbxl_manifest("/data/ptb-xl/1.0.3", sampling_rate=500)
    """
    root = check_root(root, DATASET)
    check_on_error(on_error, DATASET)
    if sampling_rate not in RECORD_COLUMNS:
        raise ValueError(f"{DATASET}: expected sampling_rate in {list(RECORD_COLUMNS)} Hz, received {sampling_rate!r}")
    if isinstance(min_likelihood, bool) or not isinstance(min_likelihood, (int, float)) \
            or not 0 <= min_likelihood <= 100:
        raise ValueError(f"{DATASET}: expected min_likelihood in [0, 100] (%), received {min_likelihood!r}")
    fold_split = _check_folds(folds)
    database_path = find_file(root, [DATABASE_TABLE], DATASET)
    statements_path = find_file(root, [STATEMENTS_TABLE], DATASET)
    record_column = RECORD_COLUMNS[sampling_rate]
    base = ["ecg_id", "patient_id", "scp_codes", "strat_fold", record_column]
    database = read_csv(database_path, base, DATASET)
    classes, subclasses = _statements(statements_path)

    rows = []
    for ecg_id, codes_text in zip(id_text(database["ecg_id"]), database["scp_codes"]):
        try:
            codes = parse_scp_codes(codes_text)
        except ValueError as error:
            raise ValueError(f"{DATASET}: {DATABASE_TABLE} row ecg_id={ecg_id}: {error}") from None
        kept = [c for c, likelihood in codes.items() if likelihood >= min_likelihood and c in classes]
        supers = sorted({classes[c] for c in kept}, key=lambda k: SUPERCLASSES.index(k) if k in SUPERCLASSES else 99)
        subs = sorted({subclasses[c] for c in kept if subclasses.get(c)})
        rows.append({"superclasses": ";".join(supers), "subclasses": ";".join(subs),
                     **{k: int(k in supers) for k in SUPERCLASSES}})
    labels = pd.DataFrame(rows, columns=["superclasses", "subclasses", *SUPERCLASSES])
    folds_found = pd.to_numeric(database["strat_fold"], errors="coerce")
    if folds_found.isna().any() or not folds_found.isin(range(1, 11)).all():
        raise ValueError(f"{DATASET}: {DATABASE_TABLE} column 'strat_fold' must hold fold numbers 1..10")
    paths = database[record_column].fillna("").astype(str).str.strip()
    if (paths == "").any():
        raise ValueError(f"{DATASET}: {DATABASE_TABLE} column {record_column!r} is empty in {int((paths == '').sum())} "
                         "row(s)")
    frame = pd.DataFrame({
        "patient_id": id_text(database["patient_id"]),
        "ecg_id": id_text(database["ecg_id"]),
        "split": folds_found.astype(int).map(lambda f: fold_split.get(f, "")).astype(object),
        "strat_fold": folds_found.astype(int),
        "ecg": paths.map(lambda p: p.removesuffix(".hea") + ".hea"),
        "report": database["report"].fillna("").astype(str).str.strip() if "report" in database else "",
        "scp_codes": database["scp_codes"].astype(str),
    })
    frame = pd.concat([frame, labels], axis=1)
    for column in ("age", "sex", "height", "weight"):
        frame[column] = pd.to_numeric(database[column], errors="coerce") if column in database else np.nan
    frame.loc[frame["age"] == ANONYMISED_AGE, "age"] = 90.0
    frame = check_listed_files(frame, {"ecg": DATABASE_TABLE}, root, key_column="ecg_id", on_error=on_error,
                               dataset=DATASET, companions={"ecg": [".dat"]})
    return frame


class PtbXlDataset(AdapterDataset):
    """PTB-XL ECGs (and their reports) as a :class:`ManifestDataset`.

    Samples: ``inputs["signal"]`` (12, 10 * sampling_rate) float32 in mV, lead order
    :data:`LEADS`; ``inputs["text"]`` the report (absent when empty, or with
    ``with_report=False``); ``inputs["vitals"]`` the ``vitals_columns`` when given.

    Args:
        root: the dataset's top folder.
        split: "train", "val", "test" (or the names of ``folds``) or None.
        label: one of :data:`SUPERCLASSES`; None: unlabelled samples.
        sampling_rate, min_likelihood, folds, on_error: as :func:`ptbxl_manifest`.
        with_report: add the report text as the "text" modality.
        vitals_columns: manifest columns for the "vitals" modality, e.g. ``["age", "sex"]``.
        leads: lead names or indices to keep (default all 12).
        transforms: dictionary transforms applied to each sample.

    Raises:
        ValueError: as :func:`ptbxl_manifest`, or on an unknown label or split.
        DataReadError: in raise mode, naming a missing or unreadable record.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        label: str | None = "NORM",
        sampling_rate: int = 100,
        min_likelihood: float = 0.0,
        folds: Mapping[str, Sequence[int]] | None = None,
        with_report: bool = True,
        vitals_columns: Sequence[str] | None = None,
        leads: Sequence[str | int] | None = None,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
    ) -> None:
        frame = ptbxl_manifest(root, sampling_rate=sampling_rate, min_likelihood=min_likelihood, folds=folds,
                               on_error=on_error)
        modalities = {"signal": "ecg", **({"text": "report"} if with_report else {})}
        loaders = {"signal": partial(read_wfdb, channels=list(leads))} if leads is not None else None
        super().__init__(frame, modalities, label, SUPERCLASSES, root=check_root(root, DATASET), split=split,
                         splits=list(FOLDS if folds is None else folds), dataset=DATASET, loaders=loaders,
                         transforms=transforms, on_error=on_error, vitals_columns=vitals_columns)


__all__ = ["FOLDS", "LEADS", "SUPERCLASSES", "PtbXlDataset", "parse_scp_codes", "ptbxl_manifest"]

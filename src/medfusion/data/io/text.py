"""Clinical text (UTF-8 files) and tables (CSV, TSV, Parquet).

Error messages give byte positions, never the text itself: notes hold patient details.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medfusion.data.io._util import describe
from medfusion.data.io.base import DataReadError, Record, check_file

_PARQUET_MAGIC = b"PAR1"


def read_text(path: str | Path) -> Record:
    """Read a UTF-8 text file (a leading byte-order mark is dropped).

    Returns:
        Record("text", None, meta, text) with meta encoding ("utf-8") and n_chars.

    Raises:
        DataReadError: on a missing or empty file, or bytes that are not UTF-8 (with the
            byte offset and value, not the surrounding text).
    """
    path = check_file(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataReadError(path, f"cannot read file: {describe(error)}") from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        offset = error.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise DataReadError(
            path, f"not valid UTF-8: byte 0x{data[offset]:02x} at offset {offset} cannot be decoded ({error.reason})"
        ) from None
    if "\x00" in text:
        raise DataReadError(path, f"not a text file: NUL byte at character {text.index(chr(0))}")
    return Record("text", None, {"encoding": "utf-8", "n_chars": len(text)}, text=text)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table: Parquet (recognised by its 'PAR1' magic bytes), else CSV (TSV for ``.tsv``).

    Returns:
        A pandas DataFrame.

    Raises:
        DataReadError: on a missing, empty, truncated or unparsable file, naming the path.
    """
    path = check_file(path)
    head = b""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
        if head == _PARQUET_MAGIC:
            return pd.read_parquet(path)
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, sep=sep, encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataReadError(path, f"table is not valid UTF-8 (byte offset {error.start})") from None
    except Exception as error:  # ArrowInvalid, ParserError, EmptyDataError, OSError
        kind = "Parquet" if head == _PARQUET_MAGIC else "CSV"
        raise DataReadError(path, f"cannot read {kind} table (truncated or corrupt?): {describe(error)}") from error


__all__ = ["read_table", "read_text"]

"""Text and table readers."""

from __future__ import annotations

import pandas as pd
import pytest
from io_assets import empty_file, truncated_copy

from medfusion.data.io import DataReadError, read_table, read_text

NOTE = "Findings: mild cardiomegaly. Impression: no acute process. Température 37,5 °C.\n"


def test_read_text_utf8(tmp_path):
    path = tmp_path / "note.txt"
    path.write_text(NOTE, encoding="utf-8")
    record = read_text(path)
    assert record.modality == "text" and record.array is None
    assert record.text == NOTE and record.meta == {"encoding": "utf-8", "n_chars": len(NOTE)}
    path.write_bytes(b"\xef\xbb\xbf" + NOTE.encode())
    assert read_text(path).text == NOTE  # byte-order mark dropped


def test_undecodable_bytes_error_names_offset_not_text(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Patient Dupont, fièvre".encode("latin-1"))
    with pytest.raises(DataReadError, match=r"not valid UTF-8: byte 0xe8 at offset 18") as error:
        read_text(path)
    assert str(path) in str(error.value) and "Dupont" not in str(error.value)
    with pytest.raises(DataReadError, match="empty"):
        read_text(empty_file(tmp_path, "empty.txt"))
    with pytest.raises(DataReadError, match="no such file"):
        read_text(tmp_path / "missing.txt")


def test_read_table_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"patient": ["p1", "p2", "p3"], "hr": [72, 88, 101], "spo2": [0.98, 0.95, 0.91]})
    frame.to_csv(tmp_path / "vitals.csv", index=False)
    frame.to_csv(tmp_path / "vitals.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "vitals.parquet")
    for name in ("vitals.csv", "vitals.tsv", "vitals.parquet"):
        pd.testing.assert_frame_equal(read_table(tmp_path / name), frame)


def test_read_table_bad_files(tmp_path):
    frame = pd.DataFrame({"a": range(200), "b": [f"x{i}" for i in range(200)]})
    frame.to_parquet(tmp_path / "t.parquet")
    cut = truncated_copy(tmp_path / "t.parquet", tmp_path)
    with pytest.raises(DataReadError, match="Parquet") as error:
        read_table(cut)
    assert str(cut) in str(error.value)
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(DataReadError, match="CSV"):
        read_table(tmp_path / "ragged.csv")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(DataReadError, match="UTF-8"):
        read_table(tmp_path / "bin.csv")
    with pytest.raises(DataReadError, match="empty"):
        read_table(empty_file(tmp_path, "e.csv"))

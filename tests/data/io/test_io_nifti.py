"""NIfTI reader/writer on nibabel's real brain MRI files."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest
from io_assets import empty_file, nibabel_asset, truncated_copy

from medfusion.data.io import DataReadError, read_nifti, write_nifti, write_png


def test_anatomical_reoriented_to_ras():
    path = nibabel_asset("anatomical.nii")
    record = read_nifti(path)
    image = nibabel.load(str(path))
    assert image.shape == (33, 41, 25) and "".join(nibabel.aff2axcodes(image.affine)) == "LAS"
    assert record.modality == "volume"
    assert record.array.shape == (1, 25, 41, 33) and record.array.dtype == np.float32
    meta = record.meta
    assert meta["spacing"] == (2.0, 2.0, 2.0)
    assert meta["orientation"] == "RAS" and meta["source_orientation"] == "LAS"
    assert meta["axis_codes"] == ("S", "A", "R")
    # LAS -> RAS flips the first voxel axis; the array is (k, j, i).
    stored = np.asarray(image.dataobj, dtype=np.float32)
    np.testing.assert_array_equal(record.array[0], stored[::-1].transpose(2, 1, 0))
    assert "".join(nibabel.aff2axcodes(np.array(meta["affine"]))) == "RAS"


def test_example4d_time_becomes_channels():
    record = read_nifti(nibabel_asset("example4d.nii.gz"))
    assert record.array.shape == (2, 24, 96, 128)
    assert record.meta["spacing"] == pytest.approx((2.2, 2.0, 2.0), abs=1e-5)
    assert record.meta["time_step"] == pytest.approx(2000.0)
    assert record.meta["source_orientation"] == "LAS"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_exact(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    volume = (rng.normal(size=(2, 5, 6, 7)) * 50).astype(dtype)
    path = tmp_path / f"vol{suffix}"
    write_nifti(path, volume, (3.0, 1.5, 0.75))
    record = read_nifti(path)
    np.testing.assert_array_equal(record.array, volume.astype(np.float32))
    assert record.meta["spacing"] == (3.0, 1.5, 0.75)
    assert record.meta["source_orientation"] == "RAS"
    write_nifti(path, volume[0], (1, 1, 1))  # (D, H, W) overwrites atomically
    assert read_nifti(path).array.shape == (1, 5, 6, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_nifti_bad_input(tmp_path):
    volume = np.zeros((4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\.nii"):
        write_nifti(tmp_path / "v.img", volume, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        write_nifti(tmp_path / "v.nii", volume, (1, 0, 1))
    with pytest.raises(ValueError, match="shape"):
        write_nifti(tmp_path / "v.nii", np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        write_nifti(tmp_path / "v.nii", np.full((2, 2, 2), np.nan), (1, 1, 1))


def test_bad_files(tmp_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_nifti(tmp_path / "missing.nii")
    with pytest.raises(DataReadError, match="empty"):
        read_nifti(empty_file(tmp_path, "empty.nii.gz"))
    for name in ("anatomical.nii", "example4d.nii.gz"):
        cut = truncated_copy(nibabel_asset(name), tmp_path, name=f"cut_{name}")
        with pytest.raises(DataReadError, match="truncated") as error:
            read_nifti(cut)
        assert str(cut) in str(error.value)
    png = tmp_path / "image.nii"
    write_png(png, np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataReadError, match="cannot read NIfTI"):
        read_nifti(png)

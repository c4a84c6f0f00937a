"""DICOM reader/writer on pydicom's and pydicom-data's real test files."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from io_assets import dicom_asset, empty_file, truncated_copy
from PIL import features
from pydicom.pixels import apply_color_lut, get_decoder

from medfusion.data.io import (
    DataReadError,
    apply_window,
    read_dicom,
    read_dicom_series,
    read_dicom_waveform,
    write_dicom,
    write_png,
)


def flat_strings(value) -> list[str]:
    """Every key and value of a (nested) metadata structure, as strings."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *flat_strings(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in flat_strings(v)]
    return [str(value)]


# ----------------------------------------------------------------------------- real images


def test_ct_small_rescale_to_hounsfield_units():
    path = dicom_asset("CT_small.dcm")
    record = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert record.modality == "image"
    assert record.array.shape == (1, 128, 128) and record.array.dtype == np.float32
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(record.array[0], expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024
    assert -1100 <= record.array.min() < -800  # air / outside the body
    assert record.array.max() < 3100  # bone, below metal
    meta = record.meta
    assert meta["modality"] == "CT" and meta["units"] == "HU" and meta["intensity"] == "modality"
    assert meta["spacing"] == pytest.approx((0.661468, 0.661468))
    assert meta["slice_thickness"] == pytest.approx(5.0)
    assert (meta["rows"], meta["cols"], meta["frames"]) == (128, 128, 1)
    assert meta["photometric"] == "MONOCHROME2"


def test_mr_small_metadata_and_window():
    record = read_dicom(dicom_asset("MR_small.dcm"))
    assert record.array.shape == (1, 64, 64)
    assert record.meta["modality"] == "MR"
    assert record.meta["spacing"] == pytest.approx((0.3125, 0.3125))
    assert (record.meta["window_center"], record.meta["window_width"]) == (600.0, 1600.0)
    windowed = apply_window(record.array, record.meta["window_center"], record.meta["window_width"])
    assert windowed.shape == record.array.shape and 0.0 <= windowed.min() and windowed.max() <= 1.0
    assert record.array.max() > 1.0  # the window is not applied by default


def test_chest_xray_cr_jpeg2000_monochrome1():
    path = dicom_asset("RG1_J2KI.dcm")
    if not features.check("jpg_2000"):
        with pytest.raises(DataReadError, match="cannot decode"):
            read_dicom(path)
        return
    record = read_dicom(path)
    assert record.modality == "image" and record.array.shape == (1, 1955, 1841)
    meta = record.meta
    assert (meta["modality"], meta["view"], meta["body_part"]) == ("CR", "PA", "CHEST")
    assert meta["transfer_syntax"] == "JPEG 2000 Image Compression"
    assert meta["source_photometric"] == "MONOCHROME1" and meta["photometric"] == "MONOCHROME2"
    assert meta["spacing"] is None  # the file's Pixel Spacing is 0\0
    stored = pydicom.dcmread(path).pixel_array.astype(np.float32)
    np.testing.assert_array_equal(record.array[0], (2**15 - 1) - stored)  # Bits Stored 15, inverted
    assert meta["window_center"] == (2**15 - 1) - 15000 and meta["window_width"] == 30000


def test_ultrasound_ybr_cine_is_rgb_video():
    path = dicom_asset("examples_ybr_color.dcm")
    record = read_dicom(path)
    assert record.modality == "video"
    assert record.array.shape == (30, 3, 240, 320) and record.array.dtype == np.float32
    assert 0.0 <= record.array.min() and record.array.max() <= 1.0
    assert record.meta["source_photometric"] == "YBR_FULL_422" and record.meta["photometric"] == "RGB"
    assert record.meta["fps"] == pytest.approx(30.0, rel=1e-3)
    assert record.meta["source_frame_indices"] == list(range(30))
    reference = pydicom.dcmread(path).pixel_array  # pydicom's own YBR -> RGB
    np.testing.assert_array_equal(record.array, reference.transpose(0, 3, 1, 2).astype(np.float32) / 255)


def test_multiframe_layouts():
    path = dicom_asset("examples_ybr_color.dcm")
    volume = read_dicom(path, as_="volume")
    assert volume.modality == "volume" and volume.array.shape == (3, 30, 240, 320)
    with pytest.raises(DataReadError, match="30 frames"):
        read_dicom(path, as_="image")
    with pytest.raises(ValueError, match="as_"):
        read_dicom(path, as_="movie")
    mr = read_dicom(dicom_asset("emri_small.dcm"))  # multi-frame MR, no frame time -> volume
    assert mr.modality == "volume" and mr.array.shape == (1, 10, 64, 64)
    single = read_dicom(dicom_asset("CT_small.dcm"), as_="video")
    assert single.array.shape == (1, 1, 128, 128)


def test_palette_color_is_expanded_to_rgb():
    path = dicom_asset("OBXXXX1A.dcm")
    record = read_dicom(path)
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds)
    assert record.meta["source_photometric"] == "PALETTE COLOR"
    assert record.array.shape == (3, 600, 800)
    np.testing.assert_allclose(record.array, rgb.transpose(2, 0, 1) / np.iinfo(rgb.dtype).max, atol=1e-6)


def test_undecodable_codec_says_so():
    path = dicom_asset("JPEG-LL.dcm")  # JPEG Lossless: needs gdcm or pylibjpeg
    if get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-Lossless decoder is installed here")
    with pytest.raises(DataReadError, match="no decoder installed here.*JPEG Lossless") as error:
        read_dicom(path)
    assert str(path) in str(error.value)


def test_apply_window_hand_computed():
    values = np.array([-1000.0, -160.0, 40.0, 239.0, 240.0, 3000.0], dtype=np.float32)
    out = apply_window(values, center=40, width=400)
    expected = np.clip((values - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0] == 0.0 and out[1] == pytest.approx(0.0) and out[-1] == 1.0
    with pytest.raises(ValueError, match="width >= 1"):
        apply_window(values, 40, 0)


# ----------------------------------------------------------------------------- waveform


def test_waveform_ecg_twelve_leads():
    path = dicom_asset("waveform_ecg.dcm")
    record = read_dicom_waveform(path)
    assert record.modality == "signal"
    assert record.array.shape == (12, 10000) and record.array.dtype == np.float32
    meta = record.meta
    assert meta["sampling_rate"] == 1000.0 and meta["duration_s"] == pytest.approx(10.0)
    assert meta["channel_names"][:3] == ["Lead I (Einthoven)", "Lead II", "Lead III"]
    assert meta["channel_names"][-1] == "Lead V6"
    assert meta["units"] == ["uV"] * 12
    ds = pydicom.dcmread(path)
    raw = ds.WaveformSequence[0]
    np.testing.assert_allclose(record.array, ds.waveform_array(0).T, rtol=1e-6)
    sensitivity = float(raw.ChannelDefinitionSequence[0].ChannelSensitivity)
    assert sensitivity == 1.25 and np.abs(record.array).max() < 5000  # an ECG stays within +-5 mV
    assert meta["n_groups"] == 2
    assert read_dicom_waveform(path, group=1).modality == "signal"
    with pytest.raises(DataReadError, match="out of range"):
        read_dicom_waveform(path, group=2)


def test_waveform_and_pixel_readers_refuse_the_other_kind():
    with pytest.raises(DataReadError, match="no pixel data.*read_dicom_waveform"):
        read_dicom(dicom_asset("waveform_ecg.dcm"))
    with pytest.raises(DataReadError, match="no Waveform Sequence"):
        read_dicom_waveform(dicom_asset("CT_small.dcm"))


# ----------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "RG1_J2KI.dcm", "examples_ybr_color.dcm", "waveform_ecg.dcm"]
)
def test_no_patient_identifier_in_metadata(name):
    path = dicom_asset(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    record = read_dicom_waveform(path) if name.startswith("waveform") else read_dicom(path)
    strings = flat_strings(record.meta)
    patient_name = str(ds.PatientName)
    assert patient_name and not any(patient_name in s for s in strings)
    assert str(ds.PatientID) not in strings
    birth = str(ds.get("PatientBirthDate", ""))
    assert not birth or not any(birth in s for s in strings)
    assert not any(word in key.lower() for key in record.meta for word in ("patient", "birth", "uid", "accession"))


# ----------------------------------------------------------------------------- bad input


def test_bad_files(tmp_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_dicom(tmp_path / "missing.dcm")
    with pytest.raises(DataReadError, match="empty"):
        read_dicom(empty_file(tmp_path, "empty.dcm"))
    for name in ("CT_small.dcm", "examples_ybr_color.dcm"):
        cut = truncated_copy(dicom_asset(name), tmp_path)
        with pytest.raises(DataReadError, match="truncated") as error:
            read_dicom(cut)
        assert str(cut) in str(error.value)
    cut = truncated_copy(dicom_asset("waveform_ecg.dcm"), tmp_path)
    with pytest.raises(DataReadError, match="truncated"):
        read_dicom_waveform(cut)
    png = tmp_path / "image.dcm"
    write_png(png, np.zeros((1, 4, 4), dtype=np.uint8))
    with pytest.raises(DataReadError, match="not a DICOM file") as error:
        read_dicom(png)
    assert error.value.path == str(png)


# ----------------------------------------------------------------------------- writer


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_dicom_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    image = rng.integers(0, np.iinfo(dtype).max, size=(24, 30), dtype=dtype)
    path = tmp_path / "out.dcm"
    write_dicom(path, image[None], modality="DX", meta={
        "patient_id": "ANON-0001", "spacing": (0.14, 0.15), "view": "AP", "body_part": "CHEST",
        "window_center": 100, "window_width": 200,
    })
    record = read_dicom(path)
    np.testing.assert_array_equal(record.array, image[None].astype(np.float32))
    meta = record.meta
    assert (meta["modality"], meta["view"], meta["body_part"]) == ("DX", "AP", "CHEST")
    assert meta["spacing"] == pytest.approx((0.14, 0.15))
    assert (meta["window_center"], meta["window_width"]) == (100.0, 200.0)
    ds = pydicom.dcmread(path)
    assert ds.preamble is not None and path.read_bytes()[128:132] == b"DICM"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.BitsAllocated == np.dtype(dtype).itemsize * 8
    assert str(ds.PatientName) == "" and ds.PatientID == "ANON-0001" and ds.PatientBirthDate == ""
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    write_dicom(tmp_path / "second.dcm", image)
    other = pydicom.dcmread(tmp_path / "second.dcm")
    assert {other.SOPInstanceUID, other.StudyInstanceUID, other.SeriesInstanceUID}.isdisjoint(
        {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}
    )
    assert other.PatientID == ""


def test_write_dicom_rescale_and_bad_input(tmp_path):
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8) * 40
    path = tmp_path / "ct.dcm"
    write_dicom(path, stored, modality="CT", meta={"rescale_slope": 1, "rescale_intercept": -1024})
    record = read_dicom(path)
    np.testing.assert_array_equal(record.array[0], stored.astype(np.float32) - 1024)
    assert record.meta["units"] == "HU"
    before = path.read_bytes()
    with pytest.raises(ValueError, match="uint8 or uint16"):
        write_dicom(path, stored.astype(np.float32))
    with pytest.raises(ValueError, match="unknown meta key"):
        write_dicom(path, stored, meta={"PatientName": "Doe^John"})
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_dicom(path, np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="patient_id"):
        write_dicom(path, stored, meta={"patient_id": "Doe^John 1970"})
    assert path.read_bytes() == before  # a refused write leaves the file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.dcm"]  # no temporary file left


# ----------------------------------------------------------------------------- series


def make_series(folder, positions, instance_numbers, *, offsets=None, drop_positions=False):
    """Copies of CT_small.dcm as slices at the given z, pixel values shifted by 10 * slice index."""
    source = pydicom.dcmread(dicom_asset("CT_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, (z, number) in enumerate(zip(positions, instance_numbers, strict=True)):
        ds = copy.deepcopy(source)
        ds.ImagePositionPatient = [-158.135803, -179.035797, z]
        ds.InstanceNumber = number
        if drop_positions:
            del ds.ImagePositionPatient
        pixels = ds.pixel_array + (offsets[k] if offsets else 10 * k)
        ds.PixelData = pixels.astype(np.int16).tobytes()
        name = f"slice_{(k * 7) % len(positions)}_{k}.dcm"  # file order differs from slice order
        ds.save_as(folder / name)
        names.append(name)
    (folder / "README.txt").write_text("not a slice\n")
    return source, names


def test_series_sorted_by_position_not_instance_number(tmp_path):
    positions = [10.0, -5.0, 5.0, 0.0]  # slice k sits at positions[k]
    source, _ = make_series(tmp_path / "s", positions, instance_numbers=[1, 2, 3, 4])
    record = read_dicom_series(tmp_path / "s")
    assert record.modality == "volume" and record.array.shape == (1, 4, 128, 128)
    base = source.pixel_array.astype(np.float32) - 1024
    order = np.argsort(positions)  # inferior to superior along the normal (0, 0, 1)
    for depth, k in enumerate(order):
        np.testing.assert_array_equal(record.array[0, depth], base + 10 * k)
    assert record.meta["spacing"] == pytest.approx((5.0, 0.661468, 0.661468))
    assert record.meta["slice_order"] == "position" and record.meta["uniform_spacing"]
    assert record.meta["axis_codes"] == ("S", "P", "L")  # D toward superior, rows posterior, cols left
    assert "CompressedSamples^CT1" not in " ".join(flat_strings(record.meta))


def test_series_falls_back_to_instance_number(tmp_path):
    make_series(tmp_path / "s", [0.0, 0.0, 0.0], instance_numbers=[3, 1, 2], drop_positions=True)
    record = read_dicom_series(tmp_path / "s")
    assert record.meta["slice_order"] == "instance_number"
    base = pydicom.dcmread(dicom_asset("CT_small.dcm")).pixel_array.astype(np.float32) - 1024
    shifts = [float(np.mean(record.array[0, depth] - base)) for depth in range(3)]
    assert shifts == [10.0, 20.0, 0.0]  # instance numbers 1, 2, 3 are slices k = 1, 2, 0
    assert record.meta["spacing"][0] == pytest.approx(5.0)  # from Slice Thickness


def test_series_errors(tmp_path):
    with pytest.raises(DataReadError, match="no DICOM file"):
        (tmp_path / "txt").mkdir()
        (tmp_path / "txt" / "a.txt").write_text("x")
        read_dicom_series(tmp_path / "txt")
    with pytest.raises(DataReadError, match="expected a folder"):
        read_dicom_series(tmp_path / "nowhere")
    make_series(tmp_path / "dup", [0.0, 0.0], instance_numbers=[1, 2])
    with pytest.raises(DataReadError, match="share a position"):
        read_dicom_series(tmp_path / "dup")
    make_series(tmp_path / "mixed", [0.0, 5.0], instance_numbers=[1, 2])
    small = np.zeros((16, 16), dtype=np.uint16)
    source = pydicom.dcmread(dicom_asset("CT_small.dcm"))
    write_dicom(tmp_path / "mixed" / "small.dcm", small, meta={
        "series_uid": source.SeriesInstanceUID, "image_position": (0, 0, 10), "image_orientation": (1, 0, 0, 0, 1, 0),
    })
    with pytest.raises(DataReadError, match="differ in size"):
        read_dicom_series(tmp_path / "mixed")


def test_series_of_written_slices(tmp_path):
    series = pydicom.uid.generate_uid()
    for k in range(3):
        write_dicom(tmp_path / f"{k}.dcm", np.full((6, 5), k, dtype=np.uint16), modality="CT", meta={
            "series_uid": series, "image_position": (0, 0, 2.5 * (2 - k)), "image_orientation": (1, 0, 0, 0, 1, 0),
            "spacing": (0.5, 0.5), "instance_number": k + 1,
        })
    record = read_dicom_series(tmp_path)
    assert record.array.shape == (1, 3, 6, 5)
    assert record.array[0, :, 0, 0].tolist() == [2.0, 1.0, 0.0]
    assert record.meta["spacing"] == pytest.approx((2.5, 0.5, 0.5))


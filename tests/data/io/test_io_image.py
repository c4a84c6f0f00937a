"""PNG/JPEG/TIFF reader and PNG writer."""

from __future__ import annotations

import numpy as np
import pytest
from io_assets import empty_file, truncated_copy
from PIL import Image

from medfusion.data.io import DataReadError, read_image, write_png


def gradient(channels: int, height: int = 20, width: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [xx / (width - 1), yy / (height - 1), (xx + yy) / (width + height - 2)]
    return np.stack(planes[:channels]).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_8bit_round_trip(tmp_path, channels):
    image = gradient(channels)
    path = tmp_path / "x.png"
    write_png(path, image)
    record = read_image(path)
    assert record.modality == "image" and record.array.shape == image.shape and record.array.dtype == np.float32
    assert np.abs(record.array - image).max() <= 0.5 / 255 + 1e-7
    assert record.meta["bit_depth"] == 8 and record.meta["format"] == "PNG"
    assert record.meta["mode"] == ("L" if channels == 1 else "RGB")


def test_png_16bit_round_trip(tmp_path):
    image = gradient(1)
    path = tmp_path / "x16.png"
    write_png(path, image, bit_depth=16)
    record = read_image(path)
    assert record.meta["bit_depth"] == 16 and record.meta["mode"].startswith("I;16")
    assert np.abs(record.array - image).max() <= 0.5 / 65535 + 1e-7
    stored = np.arange(0, 65536, 4097, dtype=np.uint16).reshape(4, 4)
    write_png(path, stored)
    np.testing.assert_array_equal(read_image(path).array[0] * 65535, stored.astype(np.float32))
    assert np.asarray(Image.open(path)).dtype == np.uint16


def test_uint8_is_exact_and_jpeg_tiff_read(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    write_png(tmp_path / "u8.png", stored)
    np.testing.assert_array_equal(read_image(tmp_path / "u8.png").array * 255, stored.astype(np.float32))
    Image.fromarray(stored.transpose(1, 2, 0)).save(tmp_path / "x.jpg", quality=95)
    jpeg = read_image(tmp_path / "x.jpg")
    assert jpeg.meta["format"] == "JPEG" and jpeg.array.shape == (3, 16, 16)
    Image.fromarray((np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)).save(tmp_path / "x.tif")
    tiff = read_image(tmp_path / "x.tif")
    assert tiff.meta["format"] == "TIFF" and tiff.meta["bit_depth"] == 16
    assert tiff.array.max() == pytest.approx(63000 / 65535)
    Image.new("RGBA", (5, 4), (255, 0, 0, 10)).save(tmp_path / "rgba.png")
    rgba = read_image(tmp_path / "rgba.png")
    assert rgba.array.shape == (3, 4, 5) and rgba.meta["alpha_dropped"]
    Image.new("P", (5, 4)).save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").array.shape == (3, 4, 5)


def test_write_png_bad_input(tmp_path):
    path = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_png(path, np.full((1, 4, 4), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        write_png(path, np.full((1, 4, 4), np.nan))
    with pytest.raises(ValueError, match="C in"):
        write_png(path, np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="16-bit RGB"):
        write_png(path, np.zeros((3, 4, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match="bit_depth"):
        write_png(path, np.zeros((1, 4, 4)), bit_depth=12)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_bad_files(tmp_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(DataReadError, match="empty"):
        read_image(empty_file(tmp_path, "empty.png"))
    path = tmp_path / "big.png"
    write_png(path, np.random.default_rng(0).random((3, 64, 64)))
    cut = truncated_copy(path, tmp_path)
    with pytest.raises(DataReadError, match="truncated") as error:
        read_image(cut)
    assert str(cut) in str(error.value)
    (tmp_path / "note.png").write_text("not an image")
    with pytest.raises(DataReadError, match="not a PNG, JPEG or TIFF"):
        read_image(tmp_path / "note.png")
    Image.new("L", (4, 4)).save(tmp_path / "x.bmp")
    with pytest.raises(DataReadError, match="not a PNG, JPEG or TIFF"):
        read_image(tmp_path / "x.bmp")

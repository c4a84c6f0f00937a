"""Video reader/writer (PyAV): MP4 and AVI round trips, sampling, bad files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from io_assets import dicom_asset, empty_file, truncated_copy

from medfusion.data.io import DataReadError, read_dicom, read_video, write_video
from medfusion.data.io.video import CODECS


def smooth_clip(frames: int = 12, height: int = 32, width: int = 48) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1]: slowly moving smooth colour gradients."""
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    clip = []
    for t in range(frames):
        phase = t / frames
        clip.append(np.stack([
            0.5 + 0.4 * np.sin(2 * np.pi * (xx + phase)),
            0.5 + 0.4 * np.cos(2 * np.pi * (yy - phase)),
            0.2 + 0.6 * (xx + yy) / 2,
        ]))
    return np.stack(clip).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize(("name", "codec", "min_psnr"), [
    ("clip.mp4", "h264", 35.0),
    ("clip.mp4", "mpeg4", 33.0),
    ("clip.avi", "mjpeg", 35.0),
])
def test_lossy_round_trip_bounded(tmp_path, name, codec, min_psnr):
    clip = smooth_clip(12, 64, 64)
    path = tmp_path / name
    used = write_video(path, clip, fps=25, codec=codec)
    record = read_video(path)
    assert used == codec and record.meta["codec"] == codec
    assert record.modality == "video" and record.array.shape == clip.shape and record.array.dtype == np.float32
    assert 0.0 <= record.array.min() and record.array.max() <= 1.0
    assert record.meta["fps"] == pytest.approx(25.0)
    assert record.meta["source_frame_indices"] == list(range(12)) and record.meta["source_frame_count"] == 12
    assert psnr(record.array, clip) >= min_psnr
    assert np.abs(record.array - clip).mean() < 0.02


def test_default_codecs():
    assert CODECS[".mp4"][0] == "h264" and CODECS[".avi"][0] == "mjpeg"


def test_default_mp4_codec_is_h264_when_available(tmp_path):
    used = write_video(tmp_path / "x.mp4", smooth_clip(4), fps=10)
    try:
        av.codec.Codec("h264", "w")
        assert used == "h264"
    except Exception:
        assert used == "mpeg4"


def test_rawvideo_avi_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, size=(5, 3, 17, 23), dtype=np.uint8)  # odd sizes are fine uncompressed
    path = tmp_path / "raw.avi"
    write_video(path, clip, fps=30, codec="rawvideo")
    record = read_video(path)
    np.testing.assert_array_equal(np.rint(record.array * 255).astype(np.uint8), clip)
    gray = read_video(path, grayscale=True)
    assert gray.array.shape == (5, 1, 17, 23)


def test_sampling_and_resizing(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, smooth_clip(12), fps=12, codec="rawvideo")
    record = read_video(path, num_frames=5, size=16, grayscale=True)
    assert record.array.shape == (5, 1, 16, 16)
    assert record.meta["source_frame_indices"] == [0, 3, 6, 8, 11]  # uniform over 12 frames
    strided = read_video(path, stride=2, num_frames=4, size=(8, 12))
    assert strided.array.shape == (4, 3, 8, 12) and strided.meta["source_frame_indices"] == [0, 4, 6, 10]
    longer = read_video(path, num_frames=20)
    assert longer.array.shape[0] == 20 and max(longer.meta["source_frame_indices"]) == 11
    with pytest.raises(ValueError, match="num_frames"):
        read_video(path, num_frames=0)
    with pytest.raises(ValueError, match="size"):
        read_video(path, size=(8, 0))


def test_write_video_bad_input(tmp_path):
    clip = smooth_clip(2)
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_video(tmp_path / "x.mov", clip, 10)
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "x.mp4", clip, 10, codec="mjpeg")
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "x.mp4", clip[:, :, :31], 10)
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        write_video(tmp_path / "x.mp4", clip[0], 10)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_video(tmp_path / "x.mp4", clip * 2, 10)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", clip, 0)
    assert list(tmp_path.iterdir()) == []


def test_echo_cine_from_dicom_written_as_mp4(tmp_path):
    """A real ultrasound cine (pydicom examples_ybr_color.dcm) survives MP4 encoding."""
    cine = read_dicom(dicom_asset("examples_ybr_color.dcm")).array[:10]
    path = tmp_path / "echo.mp4"
    write_video(path, cine, fps=30)
    record = read_video(path)
    assert record.array.shape == (10, 3, 240, 320)
    assert psnr(record.array, cine) > 30.0


def test_bad_files(tmp_path):
    with pytest.raises(DataReadError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(DataReadError, match="empty"):
        read_video(empty_file(tmp_path, "empty.mp4"))
    for name, codec in (("clip.mp4", "h264"), ("clip.avi", "mjpeg")):
        path = tmp_path / name
        write_video(path, smooth_clip(24, 64, 64), fps=24, codec=codec)
        cut = truncated_copy(path, tmp_path)
        with pytest.raises(DataReadError, match="truncated") as error:
            read_video(cut)
        assert str(cut) in str(error.value)
    (tmp_path / "note.mp4").write_text("not a video at all")
    with pytest.raises(DataReadError, match="not a video"):
        read_video(tmp_path / "note.mp4")

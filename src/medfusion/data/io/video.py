"""Video clips (MP4, AVI, ...) with PyAV, as (T, C, H, W) float32 in [0, 1].

Frames are decoded in order and converted with FFmpeg's scaler (``frame.reformat``) to
RGB or grayscale at the requested size; ``num_frames`` then samples the clip uniformly.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from medfusion.data.io._util import atomic_path, describe, full_suffix
from medfusion.data.io.base import DataReadError, Record, check_file

#: Codecs :func:`write_video` tries, in order, per container suffix.
CODECS = {".mp4": ("h264", "mpeg4"), ".avi": ("mjpeg", "rawvideo")}
_YUV420_CODECS = {"h264", "mpeg4"}


def _check_positive_int(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ValueError(f"read_video: expected {name} to be None or an int >= 1, received {value!r}")


def read_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    stride: int | None = None,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> Record:
    """Read a video clip.

    Args:
        path: a video file (MP4, AVI, MOV, MKV, ... whatever FFmpeg demuxes).
        num_frames: if given, this many frames sampled uniformly over the (strided)
            clip: indices ``round(linspace(0, n - 1, num_frames))``, so a clip shorter
            than ``num_frames`` repeats frames.
        stride: keep every ``stride``-th source frame before sampling (default 1).
        size: output (H, W), or one int for a square; default the source size.
        grayscale: one luma channel instead of RGB.

    Returns:
        Record("video", (T, C, H, W) float32 in [0, 1], meta) with fps, source_frame_indices
        (the decoded frame index of every output frame), source_frame_count, duration_s,
        source_size (H, W), codec.

    Raises:
        ValueError: on a bad ``num_frames``, ``stride`` or ``size``.
        DataReadError: on a missing, empty, non-video, truncated or corrupt file, or a
            clip that decodes to no frame.
    """
    _check_positive_int("num_frames", num_frames)
    _check_positive_int("stride", stride)
    if size is not None:
        pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else tuple(size)
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in pair):
            raise ValueError(f"read_video: expected size to be None, an int or (H, W) of ints >= 1, received {size!r}")
        size = (int(pair[0]), int(pair[1]))
    path = check_file(path)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise DataReadError(path, "file holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            codec = stream.codec_context.name
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else None
            source_size = (stream.codec_context.height, stream.codec_context.width)
            height, width = size or source_size
            fmt = "gray" if grayscale else "rgb24"
            for frame in container.decode(stream):
                frames.append(frame.reformat(width=width, height=height, format=fmt).to_ndarray())
    except DataReadError:
        raise
    except Exception as error:  # av.FFmpegError subclasses (InvalidDataError, ...), OSError
        raise DataReadError(
            path, f"cannot decode video (not a video, truncated or corrupt?): {describe(error)}"
        ) from error
    if not frames:
        raise DataReadError(path, "video decodes to no frame (truncated or empty stream)")
    candidates = np.arange(0, len(frames), stride or 1)
    if num_frames is not None:
        picks = np.rint(np.linspace(0, len(candidates) - 1, num_frames)).astype(int)
        candidates = candidates[picks]
    clip = np.stack([frames[i] for i in candidates])
    clip = clip[:, None] if clip.ndim == 3 else clip.transpose(0, 3, 1, 2)
    meta = {
        "fps": fps,
        "source_frame_indices": [int(i) for i in candidates],
        "source_frame_count": len(frames),
        "duration_s": len(frames) / fps if fps else None,
        "source_size": tuple(int(v) for v in source_size),
        "codec": codec,
    }
    return Record("video", clip.astype(np.float32) / np.float32(255.0), meta)


def _encoder_available(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def write_video(path: str | Path, frames: np.ndarray, fps: float, *, codec: str | None = None) -> str:
    """Write a clip as MP4 or AVI, atomically.

    Args:
        path: destination ending in ``.mp4`` or ``.avi``.
        frames: (T, C, H, W) with C in {1, 3}: float in [0, 1] or uint8. Grayscale is
            written as RGB with equal channels.
        fps: frames per second, > 0.
        codec: ``None`` for the first available of :data:`CODECS` for the suffix (MP4:
            h264, else mpeg4 — both lossy, 4:2:0, so H and W must be even; AVI: mjpeg,
            lossy), or one of them by name; AVI "rawvideo" is lossless.

    Returns:
        The codec used.

    Raises:
        ValueError: on a bad suffix, codec, shape, dtype, range, fps, or odd H/W for a
            4:2:0 codec.
    """
    path = Path(path)
    suffix = full_suffix(path)
    if suffix not in CODECS:
        raise ValueError(f"write_video: expected a path ending in {tuple(CODECS)}, received {path.name!r}")
    if codec is None:
        codec = next((c for c in CODECS[suffix] if _encoder_available(c)), None)
        if codec is None:
            raise ValueError(f"write_video: no encoder among {CODECS[suffix]} in this PyAV build")
    elif codec not in CODECS[suffix]:
        raise ValueError(f"write_video: expected codec in {CODECS[suffix]} for {suffix}, received {codec!r}")
    elif not _encoder_available(codec):
        raise ValueError(f"write_video: encoder {codec!r} is not available in this PyAV build")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3) or min(frames.shape) < 1:
        raise ValueError(f"write_video: expected (T, C, H, W) frames with C in (1, 3), received shape {frames.shape}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"write_video: expected uint8 or float frames in [0, 1], received {frames.dtype}")
        if not np.all(np.isfinite(frames)) or frames.min() < 0 or frames.max() > 1:
            raise ValueError("write_video: expected float frames in [0, 1] (finite)")
        frames = np.rint(frames * 255.0).astype(np.uint8)
    fps_value = float(fps)
    if not np.isfinite(fps_value) or fps_value <= 0:
        raise ValueError(f"write_video: expected fps > 0, received {fps!r}")
    height, width = frames.shape[2:]
    if codec in _YUV420_CODECS and (height % 2 or width % 2):
        raise ValueError(f"write_video: codec {codec!r} needs even H and W, received H={height}, W={width}")
    if frames.shape[1] == 1:
        frames = np.repeat(frames, 3, axis=1)
    rgb = np.ascontiguousarray(frames.transpose(0, 2, 3, 1))
    rate = Fraction(fps_value).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=suffix.lstrip(".")) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = width, height
            if codec == "h264":
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "12", "preset": "veryfast"}
            elif codec == "mpeg4":
                stream.pix_fmt = "yuv420p"
                stream.bit_rate = max(2_000_000, width * height * 24)
            elif codec == "mjpeg":
                stream.pix_fmt = "yuvj444p"
                stream.bit_rate = max(2_000_000, width * height * 24)
            else:
                stream.pix_fmt = "bgr24"
            for image in rgb:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return codec


__all__ = ["CODECS", "read_video", "write_video"]

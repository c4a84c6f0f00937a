"""EchoNet-Dynamic echocardiogram videos as a user holds them locally (Stanford AIMI; nothing
is downloaded).

Ouyang et al. 2020, "Video-based AI for beat-to-beat assessment of cardiac function",
Nature 580:252-256; https://echonet.github.io/dynamic/

Layout under ``root``::

    FileList.csv         FileName (0X100009310A3BD7FC, with or without .avi), EF, ESV, EDV,
                         FrameHeight, FrameWidth, FPS, NumberOfFrames, Split (TRAIN / VAL / TEST)
    VolumeTracings.csv   FileName, X1, Y1, X2, Y2, Frame: expert left-ventricle tracings at end
                         diastole and end systole (optional)
    Videos/0X100009310A3BD7FC.avi    112x112 apical-4-chamber clips

One manifest row per video. The dataset gives **no patient id**: it describes each video
as a distinct patient, so ``patient_id`` is the file name and the official split is
patient-level by construction. Labels: ``EF`` (ejection fraction, %, a regression target:
:meth:`EchoNetDataset.column`) and ``reduced_ef`` = 1 when EF < 40 % (heart failure with
reduced ejection fraction). ``ed_frame`` / ``es_frame`` are the traced frames with the
largest / smallest left-ventricle area (NaN without tracings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.data.datasets._layout import (
    AdapterDataset,
    check_listed_files,
    check_on_error,
    check_root,
    find_dir,
    find_file,
    id_text,
    read_csv,
    split_names,
)
from medfusion.data.io.video import read_video

logger = logging.getLogger(__name__)

DATASET = "echonet"
FILE_LIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEOS_DIR = "Videos"
#: EF (%) below which the ejection fraction counts as reduced.
REDUCED_EF_THRESHOLD = 40.0
SPLITS = {"train": "train", "val": "val", "test": "test"}
#: FileList columns copied to the manifest.
MEASURES = ("EF", "ESV", "EDV", "FPS", "NumberOfFrames", "FrameHeight", "FrameWidth")


def _stem(name: str) -> str:
    return name[:-4] if name.lower().endswith(".avi") else name


def traced_area(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> float:
    """Area (pixels²) of one frame's tracing: the polygon through the chords' ends.

    The first row of a frame's tracing is the long axis; the others are chords across the
    ventricle, whose ends (one side, then the other reversed) outline it — as the
    EchoNet-Dynamic code draws its masks.
    """
    xs = np.concatenate([x1[1:], x2[1:][::-1]])
    ys = np.concatenate([y1[1:], y2[1:][::-1]])
    if len(xs) < 3:
        return 0.0
    return float(0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def tracing_frames(tracings: pd.DataFrame) -> pd.DataFrame:
    """End-diastolic and end-systolic frame per video from ``VolumeTracings.csv``.

    Returns:
        Index: file name without ``.avi``; columns ``ed_frame`` (largest traced area) and
        ``es_frame`` (smallest).
    """
    rows = {}
    tracings = tracings.assign(_name=tracings["FileName"].astype(str).str.strip().map(_stem))
    for name, video in tracings.groupby("_name", sort=False):
        areas = {int(frame): traced_area(*(part[c].to_numpy(float) for c in ("X1", "Y1", "X2", "Y2")))
                 for frame, part in video.groupby("Frame", sort=False)}
        rows[name] = {"ed_frame": max(areas, key=areas.get), "es_frame": min(areas, key=areas.get)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["ed_frame", "es_frame"])


def echonet_manifest(root: str | Path, *, on_error: str = "raise") -> pd.DataFrame:
    """A ManifestDataset-ready manifest of a local EchoNet-Dynamic copy: one row per video.

    Args:
        root: the folder holding ``FileList.csv`` and ``Videos/``.
        on_error: for videos FileList.csv lists but the disk lacks: "raise" names the file,
            "skip" leaves the video out, recorded in ``attrs["skipped"]`` with a logged count.

    Returns:
        Columns ``patient_id`` (the file name without ``.avi``), ``split``, ``video``
        (path relative to root), ``EF``, ``reduced_ef`` (0/1; NaN without EF), ``ESV``,
        ``EDV``, ``FPS``, ``NumberOfFrames``, ``FrameHeight``, ``FrameWidth`` (as in
        FileList.csv, when present), ``ed_frame``, ``es_frame`` (float frame numbers,
        NaN without tracings).

    Raises:
        ValueError: when root lacks FileList.csv or Videos/ (naming it and root), the
            list lacks columns, names a video twice or holds an unknown split.
        DataReadError: in raise mode, naming the first missing video.

    Examples::

        frame = echonet_manifest("/data/EchoNet-Dynamic")
    """
    root = check_root(root, DATASET)
    check_on_error(on_error, DATASET)
    list_path = find_file(root, [FILE_LIST], DATASET)
    find_dir(root, VIDEOS_DIR, DATASET, "the .avi clips")
    table = read_csv(list_path, ["FileName", "EF", "Split"], DATASET)
    names = id_text(table["FileName"]).map(_stem)
    twice = names.duplicated()
    if twice.any() or (names == "").any():
        raise ValueError(f"{DATASET}: {FILE_LIST} has {int(twice.sum())} repeated and {int((names == '').sum())} "
                         "empty FileName value(s); expected one row per video")
    ef = pd.to_numeric(table["EF"], errors="coerce")
    frame = pd.DataFrame({
        "patient_id": names,
        "split": split_names(table["Split"], SPLITS, FILE_LIST, DATASET),
        "video": VIDEOS_DIR + "/" + names + ".avi",
        "EF": ef,
        "reduced_ef": np.where(ef.isna(), np.nan, (ef < REDUCED_EF_THRESHOLD).astype(float)),
    })
    for column in MEASURES[1:]:
        if column in table:
            frame[column] = pd.to_numeric(table[column], errors="coerce")
    tracings_path = find_file(root, [TRACINGS], DATASET, required=False)
    if tracings_path is None:
        logger.info("%s: no %s: ed_frame and es_frame are NaN", DATASET, TRACINGS)
        frame["ed_frame"] = frame["es_frame"] = np.nan
    else:
        frames = tracing_frames(read_csv(tracings_path, ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], DATASET))
        frame["ed_frame"] = frame["patient_id"].map(frames["ed_frame"]).astype(float)
        frame["es_frame"] = frame["patient_id"].map(frames["es_frame"]).astype(float)
    return check_listed_files(frame, {"video": FILE_LIST}, root, key_column="patient_id", on_error=on_error,
                              dataset=DATASET)


def _positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_video_options(num_frames, size, grayscale) -> None:
    """Raises ValueError on bad frame-sampling options (before any clip is read)."""
    if num_frames is not None and not _positive_int(num_frames):
        raise ValueError(f"{DATASET}: expected num_frames None or an int >= 1, received {num_frames!r}")
    pair = (size, size) if _positive_int(size) else size
    if size is not None and not (isinstance(pair, (tuple, list)) and len(pair) == 2
                                 and all(_positive_int(v) for v in pair)):
        raise ValueError(f"{DATASET}: expected size None, an int >= 1 or (H, W), received {size!r}")
    if not isinstance(grayscale, bool):
        raise ValueError(f"{DATASET}: expected grayscale True or False, received {grayscale!r}")


class EchoNetDataset(AdapterDataset):
    """EchoNet-Dynamic clips as a :class:`ManifestDataset`.

    Samples: ``inputs["video"]`` (T, C, H, W) float32 in [0, 1] (C = 3, or 1 with
    ``grayscale``); ``label`` is ``reduced_ef``; :meth:`column` ("EF") gives the
    regression target in sample order.

    Args:
        root: the dataset's top folder.
        split: "train", "val", "test" or None.
        label: "reduced_ef" or None (unlabelled); EF itself is not a class label.
        num_frames: frames sampled uniformly from each clip (default all).
        size: output (H, W) or one int (default the source size, 112).
        grayscale: one channel instead of RGB (the clips are grey-scale stored as RGB).
        transforms: dictionary transforms applied to each sample.
        on_error: as :func:`echonet_manifest`.

    Raises:
        ValueError: as :func:`echonet_manifest`, or on an unknown label or split.
        DataReadError: in raise mode, naming a missing or unreadable video.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        *,
        label: str | None = "reduced_ef",
        num_frames: int | None = None,
        size: int | tuple[int, int] | None = None,
        grayscale: bool = False,
        transforms: Callable[[dict], dict] | None = None,
        on_error: str = "raise",
    ) -> None:
        _check_video_options(num_frames, size, grayscale)
        frame = echonet_manifest(root, on_error=on_error)
        loaders = {"video": partial(read_video, num_frames=num_frames, size=size, grayscale=grayscale)}
        super().__init__(frame, {"video": "video"}, label, ("reduced_ef",), root=check_root(root, DATASET),
                         split=split, splits=tuple(SPLITS.values()), dataset=DATASET, loaders=loaders,
                         transforms=transforms, on_error=on_error)


__all__ = ["REDUCED_EF_THRESHOLD", "EchoNetDataset", "echonet_manifest", "traced_area", "tracing_frames"]

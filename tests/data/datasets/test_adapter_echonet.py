"""EchoNet-Dynamic adapter on a miniature copy: FileList.csv, VolumeTracings.csv, AVI clips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfusion.data.datasets import ManifestDataset
from medfusion.data.datasets.echonet import EchoNetDataset, echonet_manifest, traced_area, tracing_frames
from medfusion.data.io import write_video
from medfusion.data.io.base import DataReadError

# FileName, EF, ESV, EDV, Split
VIDEOS = [
    ("0X100009310A3BD7FC", 78.50, 14.88, 69.21, "TRAIN"),
    ("0X1002E8FBACD08477", 35.23, 95.01, 146.70, "TRAIN"),
    ("0X1005D03EED19C65B", 59.10, 36.22, 88.49, "VAL"),
    ("0X10075961BC11C88E", 22.04, 118.17, 151.60, "TEST"),
]
FRAMES, SIDE, FPS = 8, 16, 50


def chords(name: str, frame: int, width: float) -> list[dict]:
    """A tracing as EchoNet stores it: the long axis, then chords across the ventricle (here a rectangle)."""
    rows = [{"FileName": f"{name}.avi", "X1": 8.0, "Y1": 1.0, "X2": 8.0, "Y2": 15.0, "Frame": frame}]
    rows += [{"FileName": f"{name}.avi", "X1": 8.0 - width / 2, "Y1": float(y), "X2": 8.0 + width / 2,
              "Y2": float(y), "Frame": frame} for y in range(2, 14)]
    return rows


def write_layout(root: Path, *, with_extension: bool = False) -> Path:
    (root / "Videos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, *_ in VIDEOS:
        clip = rng.integers(0, 256, size=(FRAMES, 1, SIDE, SIDE), dtype=np.uint8).repeat(3, axis=1)
        write_video(root / "Videos" / f"{name}.avi", clip, FPS)
    pd.DataFrame([{"FileName": name + (".avi" if with_extension else ""), "EF": ef, "ESV": esv, "EDV": edv,
                   "FrameHeight": SIDE, "FrameWidth": SIDE, "FPS": FPS, "NumberOfFrames": FRAMES, "Split": split}
                  for name, ef, esv, edv, split in VIDEOS]).to_csv(root / "FileList.csv", index=False)
    # end systole (small) listed before end diastole (large) for the first video, the other way for the second
    rows = chords(VIDEOS[0][0], 6, 4.0) + chords(VIDEOS[0][0], 2, 10.0) + chords(VIDEOS[1][0], 1, 9.0) \
        + chords(VIDEOS[1][0], 5, 7.0)
    pd.DataFrame(rows).to_csv(root / "VolumeTracings.csv", index=False)
    return root


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "EchoNet-Dynamic")


def test_manifest_labels_splits_paths_and_traced_frames(root: Path) -> None:
    frame = echonet_manifest(root)
    names = [v[0] for v in VIDEOS]
    assert frame["patient_id"].tolist() == names  # one video per patient: the file name is the id
    assert frame["video"].tolist() == [f"Videos/{n}.avi" for n in names]
    assert frame["split"].tolist() == ["train", "train", "val", "test"]
    np.testing.assert_allclose(frame["EF"], [v[1] for v in VIDEOS])
    assert frame["reduced_ef"].tolist() == [0, 1, 0, 1]  # EF < 40 %
    assert frame[["ESV", "EDV", "FPS", "NumberOfFrames"]].iloc[0].tolist() == [14.88, 69.21, FPS, FRAMES]
    assert frame["ed_frame"].tolist()[:2] == [2, 1] and frame["es_frame"].tolist()[:2] == [6, 5]
    assert frame[["ed_frame", "es_frame"]].iloc[2:].isna().all().all()  # not traced
    assert echonet_manifest(write_layout(root.parent / "with-ext", with_extension=True))["video"].tolist() == \
        frame["video"].tolist()


def test_traced_area_is_the_polygon_of_the_chord_ends() -> None:
    x1, x2 = np.array([5.0, 0.0, 0.0, 0.0, 0.0]), np.array([5.0, 4.0, 4.0, 4.0, 4.0])
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert traced_area(x1, y, x2, y) == pytest.approx(12.0)  # 4 wide x 3 high; the long axis (row 0) left out
    frames = tracing_frames(pd.DataFrame(chords("A", 3, 2.0) + chords("A", 9, 6.0)))
    assert frames.loc["A"].tolist() == [9, 3]


def test_dataset_loads_clips_with_frame_sampling(root: Path) -> None:
    train = EchoNetDataset(root, "train")
    assert len(train) == 2 and train.labels.tolist() == [0, 1]
    np.testing.assert_allclose(train.column("EF"), [78.50, 35.23])  # the regression target, in sample order
    clip = train[0]["inputs"]["video"]
    assert clip.shape == (FRAMES, 3, SIDE, SIDE) and clip.dtype == np.float32 and 0 <= clip.min() <= clip.max() <= 1
    small = EchoNetDataset(root, "test", num_frames=4, size=8, grayscale=True)
    sample = small[0]
    assert sample["inputs"]["video"].shape == (4, 1, 8, 8)
    assert sample["patient_id"] == VIDEOS[3][0] and sample["label"] == 1
    owners = [set(EchoNetDataset(root, s).patient_ids) for s in ("train", "val", "test")]
    assert sum(len(o) for o in owners) == len(set().union(*owners)) == 4
    for bad, match in (({"num_frames": 0}, "num_frames"), ({"size": (8,)}, "size"), ({"grayscale": 1}, "grayscale")):
        with pytest.raises(ValueError, match=match):
            EchoNetDataset(root, **bad)
    with pytest.raises(ValueError, match=r"unknown label 'EF'; expected one of \['reduced_ef'\]"):
        EchoNetDataset(root, label="EF")


def test_manifest_written_as_parquet_feeds_manifest_dataset(root: Path) -> None:
    echonet_manifest(root).to_parquet(root / "manifest.parquet", index=False)
    ds = ManifestDataset(root / "manifest.parquet", {"video": "video"}, "reduced_ef", split="test")
    assert ds.labels.tolist() == [1] and ds[0]["inputs"]["video"].shape == (FRAMES, 3, SIDE, SIDE)


def test_missing_and_corrupt_videos(root: Path, caplog) -> None:
    (root / "Videos" / f"{VIDEOS[2][0]}.avi").unlink()
    with pytest.raises(DataReadError, match=rf"Videos/{VIDEOS[2][0]}\.avi: no such file \(listed in FileList\.csv\), "
                                            rf"row patient_id={VIDEOS[2][0]}"):
        echonet_manifest(root)
    with caplog.at_level(logging.WARNING):
        frame = echonet_manifest(root, on_error="skip")
    assert len(frame) == 3 and frame.attrs["skipped"][0].row == f"patient_id={VIDEOS[2][0]}"
    assert "echonet: skipped 1 of 4 samples" in caplog.text and VIDEOS[2][0] not in caplog.text
    val = EchoNetDataset(root, "val", on_error="skip")
    assert len(val) == 0 and val.skip_report()["samples"] == 1
    (root / "Videos" / f"{VIDEOS[3][0]}.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(64))
    test = EchoNetDataset(root, "test", on_error="skip")
    assert test[0] is None and "cannot decode video" in test.skipped[-1].reason  # corrupt: found at load time
    with pytest.raises(DataReadError, match=r"0X1005D03EED19C65B\.avi: no such file"):
        EchoNetDataset(root, "test")  # raise mode: the manifest covers every split
    write_video(root / "Videos" / f"{VIDEOS[2][0]}.avi", np.zeros((2, 3, SIDE, SIDE), np.uint8), FPS)
    with pytest.raises(DataReadError, match=r"cannot decode video .*column 'video'"):
        EchoNetDataset(root, "test")[0]


def test_root_without_the_layout_is_a_clear_error(tmp_path: Path, root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"'FileList.csv' not found in '.*empty'"):
        echonet_manifest(tmp_path / "empty")
    (tmp_path / "empty" / "FileList.csv").write_text("FileName,EF,Split\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"folder 'Videos' \(the .avi clips\) not found in '.*empty'"):
        echonet_manifest(tmp_path / "empty")
    (root / "VolumeTracings.csv").unlink()
    frame = echonet_manifest(root)  # tracings are optional
    assert frame["ed_frame"].isna().all() and len(frame) == 4
    table = pd.read_csv(root / "FileList.csv")
    table.loc[3, "Split"] = "EXTERNAL"
    table.to_csv(root / "FileList.csv", index=False)
    with pytest.raises(ValueError, match=r"FileList.csv holds unknown split value\(s\) \['external'\]"):
        echonet_manifest(root)
    table.loc[3, "FileName"] = table.loc[2, "FileName"] + ".avi"
    table.to_csv(root / "FileList.csv", index=False)
    with pytest.raises(ValueError, match=r"FileList.csv has 1 repeated and 0 empty FileName"):
        echonet_manifest(root)
    table.drop(columns=["EF"]).to_csv(root / "FileList.csv", index=False)
    with pytest.raises(ValueError, match=r"FileList.csv lacks column\(s\) \['EF'\]"):
        echonet_manifest(root)

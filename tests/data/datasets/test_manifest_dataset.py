"""ManifestDataset: path resolution, missing modalities, CSV = Parquet, skip/raise modes, checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfusion.data.datasets import ManifestDataset, SkippedFile
from medfusion.data.io.base import DataReadError, Record
from medfusion.data.transforms import Compose, NormalizeIntensityd, RandGaussianNoised

NOTE = "Pt c/o SOB, fever 38.9"


def write_files(folder: Path) -> pd.DataFrame:
    """Four samples of three patients; paths relative to ``folder``; some modalities missing."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    (folder / "ecg").mkdir()
    (folder / "notes").mkdir()
    for i in range(4):
        np.save(folder / "img" / f"{i}.npy", rng.normal(size=(1, 8, 8)).astype(np.float32))
        np.save(folder / "ecg" / f"{i}.npy", rng.normal(size=(3, 20 + i)).astype(np.float32))
    (folder / "notes" / "0.txt").write_text("note of zero\nsecond line", encoding="utf-8")
    return pd.DataFrame({
        "patient_id": ["007", "007", "012", "013"],
        "pneumonia": [1, 0, 0, 1],
        "image": ["img/0.npy", "", "img/2.npy", "img/3.npy"],
        "ecg": ["ecg/0.npy", "ecg/1.npy", None, "ecg/3.npy"],
        "note": ["notes/0.txt", NOTE, "", "lungs clear"],
        "hr": [88.0, np.nan, 120.0, np.nan],
        "temp": [37.0, np.nan, np.nan, np.nan],
    })


MODALITIES = {"image": "image", "signal": "ecg", "text": "note"}


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    frame = write_files(folder)
    frame.to_csv(folder / "manifest.csv", index=False)
    frame.to_parquet(folder / "manifest.parquet", index=False)
    return folder / "manifest.csv"


def test_samples_missing_paths_and_relative_resolution(manifest: Path) -> None:
    ds = ManifestDataset(manifest, MODALITIES, "pneumonia", vitals_columns=["hr", "temp"])
    assert len(ds) == 4
    assert ds.modalities == ["image", "signal", "text", "vitals"]
    first = ds[0]
    assert first["patient_id"] == "007"  # leading zeros kept
    assert first["label"] == 1 and isinstance(first["label"], int)
    assert first["inputs"]["image"].shape == (1, 8, 8) and first["inputs"]["image"].dtype == np.float32
    assert first["inputs"]["signal"].shape == (3, 20)
    assert first["inputs"]["text"] == "note of zero\nsecond line"  # a .txt path is read
    np.testing.assert_array_equal(first["inputs"]["vitals"], np.array([88.0, 37.0], dtype=np.float32))
    assert all(first["present"].values())
    second = ds[1]  # empty image path, inline text, no vitals measured
    assert second["present"]["image"] is False and second["inputs"]["image"] is None
    assert second["inputs"]["text"] == NOTE
    assert second["present"]["vitals"] is False and np.isnan(second["inputs"]["vitals"]).all()
    third = ds[2]  # None / NaN path and empty text are missing, not errors
    assert third["present"]["signal"] is False and third["present"]["text"] is False
    np.testing.assert_array_equal(third["inputs"]["vitals"][0], 120.0)
    assert np.isnan(third["inputs"]["vitals"][1]) and third["present"]["vitals"] is True
    np.testing.assert_array_equal(ds[3]["inputs"]["image"], np.load(manifest.parent / "img" / "3.npy"))
    np.testing.assert_array_equal(ds.labels, [1, 0, 0, 1])
    assert ds.vitals_matrix().shape == (4, 2)


def test_root_override_dataframe_and_absolute_paths(manifest: Path, tmp_path: Path, monkeypatch) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    ds = ManifestDataset(frame, {"image": "image"}, "pneumonia", root=manifest.parent)
    assert ds[0]["inputs"]["image"].shape == (1, 8, 8)
    monkeypatch.chdir(manifest.parent)  # a DataFrame without root: relative to the working directory
    assert ManifestDataset(frame, {"image": "image"}, "pneumonia")[2]["present"]["image"]
    frame["image"] = [str(manifest.parent / p) if p else "" for p in frame["image"]]
    monkeypatch.chdir(tmp_path)
    assert ManifestDataset(frame, {"image": "image"}, "pneumonia")[3]["inputs"]["image"].shape == (1, 8, 8)
    moved = tmp_path / "elsewhere.csv"  # manifest moved away from its files: root points at them
    pd.read_csv(manifest, dtype=str, keep_default_na=False).to_csv(moved, index=False)
    with pytest.raises(DataReadError, match="no such file"):
        ManifestDataset(moved, {"image": "image"}, "pneumonia")
    assert len(ManifestDataset(moved, {"image": "image"}, "pneumonia", root=manifest.parent)) == 4


def test_csv_and_parquet_give_the_same_samples(manifest: Path) -> None:
    kwargs = {"modalities": MODALITIES, "label_column": "pneumonia", "vitals_columns": ["hr", "temp"]}
    from_csv = ManifestDataset(manifest, **kwargs)
    from_parquet = ManifestDataset(manifest.with_suffix(".parquet"), **kwargs)
    assert len(from_csv) == len(from_parquet)
    for a, b in zip(from_csv, from_parquet):
        assert a["patient_id"] == b["patient_id"] and a["label"] == b["label"] and a["present"] == b["present"]
        for m in a["inputs"]:
            if isinstance(a["inputs"][m], np.ndarray):
                np.testing.assert_array_equal(a["inputs"][m], b["inputs"][m])
            else:
                assert a["inputs"][m] == b["inputs"][m]


def break_files(folder: Path) -> None:
    (folder / "img" / "0.npy").unlink()  # missing: found when building
    (folder / "ecg" / "1.npy").write_bytes(b"")  # empty: found when building
    (folder / "img" / "3.npy").write_bytes(b"not an npy file at all")  # corrupt: found when loading


def test_skip_mode_counts_each_bad_file_and_reason(manifest: Path, caplog) -> None:
    break_files(manifest.parent)
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(manifest, MODALITIES, "pneumonia", on_error="skip")
    assert len(ds) == 2
    assert ds.skipped == [SkippedFile(0, "image", "no such file"), SkippedFile(1, "ecg", "file is empty (0 bytes)")]
    assert "skipped 2 of 4 samples" in caplog.text
    with caplog.at_level(logging.WARNING):
        assert ds[1] is None  # row 3: corrupt .npy, found when loading
    assert ds.skipped[-1].row == 3 and ds.skipped[-1].column == "image"
    assert "not a readable .npy" in ds.skipped[-1].reason
    report = ds.verify()  # drops it for good
    assert len(ds) == 1 and ds[0]["patient_id"] == "012"
    assert report["samples"] == 3 and report["files"] == 3  # met twice (load + verify), counted once
    assert report["by_reason"]["no such file"] == 1 and report["by_reason"]["file is empty (0 bytes)"] == 1
    assert report["by_column"] == {"image": 2, "ecg": 1}
    assert sum(report["by_reason"].values()) == 3
    for secret in ("007", "013", NOTE, "lungs clear", "img/"):  # log lines carry counts, never ids, text, paths
        assert secret not in caplog.text


def test_raise_mode_names_the_file(manifest: Path) -> None:
    (manifest.parent / "ecg" / "1.npy").write_bytes(b"")
    with pytest.raises(DataReadError, match=r"ecg/1\.npy: file is empty \(0 bytes\) \(manifest row 1, column 'ecg'\)"):
        ManifestDataset(manifest, MODALITIES, "pneumonia")
    (manifest.parent / "ecg" / "1.npy").unlink()
    with pytest.raises(DataReadError, match=r"ecg/1\.npy: no such file"):
        ManifestDataset(manifest, MODALITIES, "pneumonia")
    np.save(manifest.parent / "ecg" / "1.npy", np.zeros((3, 4)))
    np.save(manifest.parent / "img" / "2.npy", np.full((1, 4, 4), np.nan))  # unreadable contents: at load time
    ds = ManifestDataset(manifest, MODALITIES, "pneumonia")
    with pytest.raises(DataReadError, match=r"img/2\.npy: .*NaN or Inf \(manifest row 2, column 'image'\)"):
        ds[2]
    lazy = ManifestDataset(manifest, MODALITIES, "pneumonia", validate_files=False)
    (manifest.parent / "img" / "3.npy").unlink()  # checked again at load time
    with pytest.raises(DataReadError, match=r"img/3\.npy: no such file \(manifest row 3, column 'image'\)"):
        lazy[3]
    np.save(manifest.parent / "img" / "2.npy", np.zeros((2, 2, 4, 4)))
    with pytest.raises(DataReadError, match=r"expected image of layout \(C, H, W\), received shape \(2, 2, 4, 4\)"):
        ds[2]


def test_missing_column_is_named_with_the_available_ones(manifest: Path) -> None:
    with pytest.raises(ValueError, match=r"column\(s\) \['xray'\] not found; available columns: \['patient_id'"):
        ManifestDataset(manifest, {"image": "xray"}, "pneumonia")
    with pytest.raises(ValueError, match=r"\['effusion'\] not found"):
        ManifestDataset(manifest, {"image": "image"}, "effusion")
    with pytest.raises(ValueError, match=r"\['spo2'\] not found"):
        ManifestDataset(manifest, {"image": "image"}, "pneumonia", vitals_columns=["hr", "spo2"])
    with pytest.raises(ValueError, match="unknown modality 'xray'"):
        ManifestDataset(manifest, {"xray": "image"}, "pneumonia")
    with pytest.raises(ValueError, match="on_error"):
        ManifestDataset(manifest, {"image": "image"}, "pneumonia", on_error="ignore")


def test_splits_from_a_column_or_from_patient_splits(manifest: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame["split"] = ["train", "train", "val", "test"]
    path = manifest.parent / "with_split.csv"
    frame.to_csv(path, index=False)
    train = ManifestDataset(path, {"image": "image"}, "pneumonia", split="train")
    assert list(train.patient_ids) == ["007", "007"] and list(train.rows) == [0, 1]
    with pytest.raises(ValueError, match=r"split 'validation' not found; available splits: \['test', 'train', 'val'\]"):
        ManifestDataset(path, {"image": "image"}, "pneumonia", split="validation")
    frame["split"] = ["train", "test", "val", "test"]  # patient 007 in two splits
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"1 patient\(s\) have rows in more than one split: 007"):
        ManifestDataset(path, {"image": "image"}, "pneumonia", split="train")
    # no split column: patient-level splits by seed, each patient in exactly one of them
    parts = {name: ManifestDataset(manifest, {"image": "image"}, "pneumonia", split=name,
                                   split_fractions={"train": 0.5, "val": 0.25, "test": 0.25})
             for name in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == 4
    owners = [set(p.patient_ids) for p in parts.values()]
    assert sum(len(o) for o in owners) == 3 and len(set().union(*owners)) == 3


def test_labels_loaders_transforms_and_channel_axis(manifest: Path) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[1, "pneumonia"] = ""
    with pytest.raises(ValueError, match=r"label column 'pneumonia' is empty in 1 row\(s\)"):
        ManifestDataset(frame, {"image": "image"}, "pneumonia", root=manifest.parent)
    frame.loc[1, "pneumonia"] = "0.5"
    with pytest.raises(ValueError, match="integer class labels"):
        ManifestDataset(frame, {"image": "image"}, "pneumonia", root=manifest.parent)
    unlabelled = ManifestDataset(frame, {"image": "image"}, None, root=manifest.parent)
    assert unlabelled[0]["label"] is None and unlabelled.labels is None

    calls = []

    def flat_loader(path: Path) -> np.ndarray:  # (H, W) without channel axis -> (1, H, W)
        calls.append(path.name)
        return np.load(path)[0]

    ds = ManifestDataset(manifest, {"image": "image"}, "pneumonia", loaders={"image": flat_loader},
                         transforms=Compose([NormalizeIntensityd("image"), RandGaussianNoised("image", std=0.1)]))
    ds.set_random_state(5)
    first = ds[0]["inputs"]["image"]
    assert calls == ["0.npy"] and first.shape == (1, 8, 8)
    ds.set_random_state(5)
    np.testing.assert_array_equal(ds[0]["inputs"]["image"], first)
    assert ds[1]["present"]["image"] is False  # transforms leave a missing modality alone
    with pytest.raises(ValueError, match="not among the modalities"):
        ManifestDataset(manifest, {"image": "image"}, "pneumonia", loaders={"signal": flat_loader})


def test_loaders_may_return_records(manifest: Path) -> None:
    def as_record(path: Path) -> Record:
        return Record("image", np.load(path), {"spacing": (1.0, 1.0)})

    ds = ManifestDataset(manifest, {"image": "image"}, "pneumonia", loaders={"image": as_record})
    assert ds[0]["inputs"]["image"].shape == (1, 8, 8)
    wrong = ManifestDataset(manifest, {"image": "image"}, "pneumonia",
                            loaders={"image": lambda path: Record("text", None, text="a report")})
    with pytest.raises(DataReadError, match="read as text data, expected image"):
        wrong[0]

"""Real files shipped inside installed packages (see ASSETS.md) and helpers; imported as ``io_assets``."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import nibabel
import pytest
from pydicom.data import get_testdata_file


def dicom_asset(name: str) -> Path:
    """A pydicom / pydicom-data test file, never downloaded."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return Path(path)


def nibabel_asset(name: str) -> Path:
    return Path(os.path.dirname(nibabel.__file__)) / "tests" / "data" / name


def biosignals_asset(name: str) -> Path:
    """A file of the biosignalsnotebooks distribution, located without importing it (its import fails)."""
    try:
        files = importlib.metadata.files("biosignalsnotebooks") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("biosignalsnotebooks is not installed")
    for file in files:
        if file.name == name:
            return Path(file.locate())
    pytest.skip(f"{name} not found in biosignalsnotebooks")


def truncated_copy(source: Path, folder: Path, fraction: float = 0.5, name: str | None = None) -> Path:
    """The first ``fraction`` of ``source``'s bytes, written to ``folder``."""
    data = source.read_bytes()
    target = folder / (name or f"truncated_{source.name}")
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def empty_file(folder: Path, name: str) -> Path:
    target = folder / name
    target.write_bytes(b"")
    return target

"""Datasets: a generic manifest dataset and patient-level splits."""

from medfusion.data.datasets.manifest import ManifestDataset, SkippedFile, default_loader, read_manifest
from medfusion.data.datasets.splits import DEFAULT_FRACTIONS, check_fractions, check_no_leakage, patient_splits

__all__ = [
    "DEFAULT_FRACTIONS",
    "ManifestDataset",
    "SkippedFile",
    "check_fractions",
    "check_no_leakage",
    "default_loader",
    "patient_splits",
    "read_manifest",
]

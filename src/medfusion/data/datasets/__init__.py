"""Datasets: a generic manifest dataset, patient-level splits and adapters for public dataset layouts.

Adapters (each a ``<name>_manifest(root)`` function and a dataset class) read the folder
layouts users hold locally: MIMIC-CXR-JPG, IU X-ray / Open-i, PTB-XL and EchoNet-Dynamic.
"""

from medfusion.data.datasets.echonet import EchoNetDataset, echonet_manifest
from medfusion.data.datasets.iu_xray import IuXrayDataset, iu_xray_manifest
from medfusion.data.datasets.manifest import ManifestDataset, SkippedFile, default_loader, read_manifest
from medfusion.data.datasets.mimic_cxr import MimicCxrDataset, mimic_cxr_manifest
from medfusion.data.datasets.ptbxl import PtbXlDataset, ptbxl_manifest
from medfusion.data.datasets.splits import DEFAULT_FRACTIONS, check_fractions, check_no_leakage, patient_splits

__all__ = [
    "DEFAULT_FRACTIONS",
    "EchoNetDataset",
    "IuXrayDataset",
    "ManifestDataset",
    "MimicCxrDataset",
    "PtbXlDataset",
    "SkippedFile",
    "check_fractions",
    "check_no_leakage",
    "default_loader",
    "echonet_manifest",
    "iu_xray_manifest",
    "mimic_cxr_manifest",
    "patient_splits",
    "ptbxl_manifest",
    "read_manifest",
]

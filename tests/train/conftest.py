"""Shared fixtures of the training tests: a tiny real triage cohort on disk and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import write_triage_cohort
from tiny_runs import config_dict

@pytest.fixture(scope="session")
def triage_manifest(tmp_path_factory) -> Path:
    """manifest.parquet of a 120-patient triage cohort (32-px PNG X-rays, notes, vitals) written to disk."""
    cohort = generate_triage(120, seed=0, image_size=32)
    return write_triage_cohort(cohort, tmp_path_factory.mktemp("triage"), image_formats=["png"], workers=2)


@pytest.fixture
def tiny_config():
    """:func:`config_dict` (no cohort needed: for config validation tests)."""
    return config_dict


@pytest.fixture
def make_config(triage_manifest):
    """``make_config(out, fusion="late", **sections)``: a tiny config dict over the on-disk cohort."""
    def make(out: str | Path, fusion: str = "late", **sections) -> dict:
        return config_dict(triage_manifest, out, fusion, **sections)
    return make

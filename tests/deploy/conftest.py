"""Shared fixtures of the deployment tests: tiny trained triage runs of every fusion strategy.

The tiny model settings are those of ``tiny_runs.config_dict`` (widths of 8, one epoch).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import write_triage_cohort
from medfusion.train.config import TrainConfig
from medfusion.train.run import train
from tiny_runs import config_dict


def tiny_config(manifest: str | Path, out: str | Path, fusion: str) -> TrainConfig:
    """A one-epoch config of a tiny model (image + text + vitals) over the triage cohort."""
    return TrainConfig.model_validate(config_dict(manifest, out, fusion))


@pytest.fixture(scope="session")
def deploy_manifest(tmp_path_factory) -> Path:
    """manifest.parquet of a 120-patient triage cohort (32-px PNG X-rays, notes, vitals)."""
    cohort = generate_triage(120, seed=0, image_size=32)
    return write_triage_cohort(cohort, tmp_path_factory.mktemp("deploy-triage"), image_formats=["png"], workers=2)


@pytest.fixture(scope="session")
def trained_run(deploy_manifest, tmp_path_factory):
    """``trained_run(strategy) -> Path``: a finished tiny run of a fusion strategy (trained once per session)."""
    runs: dict[str, Path] = {}

    def get(strategy: str) -> Path:
        if strategy not in runs:
            out = tmp_path_factory.mktemp(f"run-{strategy}")
            train(tiny_config(deploy_manifest, out, strategy))
            runs[strategy] = out
        return runs[strategy]

    return get

"""Shared fixtures of the deployment tests: tiny trained triage runs of every fusion strategy.

The tiny model settings follow ``tests/train/conftest.py`` (widths of 8, one epoch).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import write_triage_cohort
from medfusion.train.config import TrainConfig
from medfusion.train.run import train

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]

MODALITIES = {
    "image": {"encoder": {"name": "cnn", "params": {"in_channels": 1, "widths": [4, 8], "out_dim": 8,
                                                    "norm_groups": 2}},
              "featurizer": {"channels": 1, "size": 4}},
    "text": {"encoder": {"name": "transformer", "params": {"dim": 8, "depth": 1, "heads": 2}},
             "featurizer": {"buckets": 32}},
    "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 8, "out_dim": 8}},
               "featurizer": {"num_features": 6}},
}

FUSIONS = {
    "early": {"name": "early", "params": {"hidden": 8, "depth": 1}},
    "intermediate": {"name": "intermediate", "params": {"hidden": 8, "dropout": 0.3}},
    "late": {"name": "late", "params": {"rule": "learned", "hidden": 8}},
    "cross_attention": {"name": "cross_attention", "params": {"query": "text", "dim": 8, "heads": 2}},
    "joint_embedding": {"name": "joint_embedding", "params": {"embed_dim": 8}},
}

STRATEGIES = tuple(FUSIONS)


def tiny_config(manifest: str | Path, out: str | Path, fusion: str) -> TrainConfig:
    """A one-epoch config of a tiny model (image + text + vitals) over the triage cohort."""
    return TrainConfig.model_validate({
        "seed": 0,
        "data": {"manifest": str(manifest), "label": "pneumonia", "modalities": {"image": "image", "text": "text"},
                 "vitals_columns": list(VITALS), "vocab_size": 100, "max_length": 32},
        "model": {"num_classes": 2, "modalities": copy.deepcopy(MODALITIES), "fusion": copy.deepcopy(FUSIONS[fusion]),
                  "modality_dropout": 0.2},
        "optim": {"lr": 0.003, "batch_size": 16, "max_epochs": 1, "patience": 3},
        "balance": {"class_weights": "auto", "modality": "none"},
        "run": {"out": str(out), "progress": False, "threads": 1},
    })


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

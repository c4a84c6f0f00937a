"""Tiny trained runs for the service tests: triage classifier, CLIP run + index, report generator.

Patterns copied from tests/train/conftest.py, tests/retrieval/conftest.py and
tests/train/test_report_run.py, made smaller (one epoch, few patients).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import write_triage_cohort
from medfusion.data.synthetic.scenarios import synthesize
from medfusion.train import load_train_config, train
from medfusion.train.config import TrainConfig
from medfusion.train.report_config import ReportTrainConfig
from medfusion.train.report_run import train_report
from tiny_runs import CLIP_CONFIG

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]

TRIAGE = {
    "seed": 0,
    "data": {"label": "pneumonia", "modalities": {"image": "image", "text": "text"}, "vitals_columns": VITALS,
             "vocab_size": 100, "max_length": 32},
    "model": {"num_classes": 2, "fusion": {"name": "late", "params": {"rule": "learned", "hidden": 8}},
              "modalities": {
                  "image": {"encoder": {"name": "cnn", "params": {"in_channels": 1, "widths": [4, 8], "out_dim": 8,
                                                                  "norm_groups": 2}}},
                  "text": {"encoder": {"name": "transformer", "params": {"dim": 8, "depth": 1, "heads": 2}}},
                  "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 8, "out_dim": 8}}}}},
    "optim": {"lr": 0.003, "batch_size": 16, "max_epochs": 1, "patience": 3},
    "run": {"progress": False, "threads": 1},
}


REPORT = {
    "data": {"image_size": 32, "vocab_size": 150, "max_length": 48},
    "model": {"encoder": {"name": "cnn", "params": {"in_channels": 3, "widths": [8, 16], "out_dim": 16,
                                                    "norm_groups": 4}},
              "decoder": {"dim": 16, "layers": 1, "heads": 2, "ff_mult": 2, "max_length": 48}},
    "optim": {"batch_size": 8, "max_epochs": 1, "lr": 0.003},
    "decode": {"methods": ["greedy"], "max_length": 12},
    "run": {"progress": False, "threads": 1},
}


@pytest.fixture(scope="session", autouse=True)
def serve_one_thread():
    """One torch thread: the test machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def triage_cohort(tmp_path_factory) -> Path:
    """manifest.parquet of an 80-patient triage cohort (32-px PNG X-rays, notes, vitals)."""
    cohort = generate_triage(80, seed=0, image_size=32)
    return write_triage_cohort(cohort, tmp_path_factory.mktemp("serve_triage"), image_formats=["png"], workers=1)


@pytest.fixture(scope="session")
def triage_run(triage_cohort, tmp_path_factory) -> Path:
    """A late-fusion classifier (image, note, vitals) trained one epoch."""
    out = tmp_path_factory.mktemp("serve_triage_run")
    config = copy.deepcopy(TRIAGE)
    config["data"]["manifest"], config["run"]["out"] = str(triage_cohort), str(out)
    train(TrainConfig.model_validate(config))
    return out


@pytest.fixture(scope="session")
def search_setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data folder, CLIP run, index folder): a 96-study retrieval cohort, its dual encoder and image index."""
    from medfusion.retrieval.embed import JointEmbedder
    from medfusion.retrieval.indexing import build_index

    root = tmp_path_factory.mktemp("serve_search")
    data = root / "data"
    synthesize("retrieval", 96, 0, data, source="generated", image_size=32)
    (root / "clip.yaml").write_text(CLIP_CONFIG.format(manifest=data / "manifest.parquet", out=root / "run", epochs=1))
    train(load_train_config(root / "clip.yaml"))
    build_index(JointEmbedder(root / "run"), data, root / "index", num_workers=0)
    return data, root / "run", root / "index"


@pytest.fixture(scope="session")
def report_setup(tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, run): a 32-patient pathology cohort (64-px patches) and a generator trained one epoch."""
    manifest = synthesize("pathology", 32, 0, tmp_path_factory.mktemp("serve_pathology"), image_size=64)[1]
    out = tmp_path_factory.mktemp("serve_report_run")
    config = copy.deepcopy(REPORT)
    config["data"]["manifest"], config["run"]["out"] = str(manifest), str(out)
    train_report(ReportTrainConfig.model_validate(config))
    return manifest, out

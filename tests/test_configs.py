"""Every shipped config validates; the contrastive ones (ECG-note, echo-note) train on a tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.train import load_train_config, train
from medfusion.train.report_config import is_report_config, load_report_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def cardiac_manifest(tmp_path_factory) -> Path:
    _, manifest = synthesize("cardiac", 48, 0, tmp_path_factory.mktemp("cardiac"))
    return manifest


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates(path: Path) -> None:
    """Report configs (``task: report``, what ``medfusion train`` dispatches on) and training configs."""
    if path.name == "report.yaml":
        assert is_report_config(path)
        config = load_report_config(path)
    else:
        assert not is_report_config(path)
        config = load_train_config(path)
    assert config.data.manifest.is_absolute()


@pytest.mark.parametrize("name", ["clip_ecg", "clip_echo"])
def test_cardiac_contrastive_configs_train(name: str, cardiac_manifest: Path, tmp_path: Path) -> None:
    overrides = {"data": {"manifest": str(cardiac_manifest), "vocab_size": 100},
                 "optim": {"max_epochs": 1, "batch_size": 16}, "run": {"out": str(tmp_path / "run"),
                                                                       "progress": False, "threads": 1}}
    config = load_train_config(CONFIGS / "cardiac" / f"{name}.yaml", overrides)
    assert config.task == "contrastive"
    summary = train(config)
    assert summary["best_val_recall_mean"] is not None and 0.0 <= summary["best_val_recall_mean"] <= 1.0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["task"] == "contrastive"


def test_contrastive_task_needs_a_joint_embedding() -> None:
    path = CONFIGS / "triage" / "late.yaml"
    with pytest.raises(ValueError, match="task: 'contrastive' trains a joint embedding"):
        load_train_config(path, {"task": "contrastive"})
    with pytest.raises(ValueError, match="task"):
        load_train_config(path, {"task": "ranking"})

"""Every shipped scenario x strategy config trains one epoch on a tiny cohort of its scenario."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.train import load_train_config, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SCENARIOS = ("cardiac", "neuro", "pathology", "radiology", "retrieval")
STRATEGIES = ("early", "intermediate", "late", "cross_attention", "joint_embedding")
OPTIONS = {"pathology": {"image_size": 64}, "retrieval": {"image_size": 48, "source": "generated"}}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scenarios")
    return {s: synthesize(s, 40, 0, root / s, **OPTIONS.get(s, {}))[1] for s in SCENARIOS}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_config_trains(scenario: str, strategy: str, manifests, tmp_path: Path) -> None:
    overrides = {"data": {"manifest": str(manifests[scenario]), "vocab_size": 100},
                 "optim": {"max_epochs": 1, "batch_size": 8},
                 "run": {"out": str(tmp_path / "run"), "progress": False, "threads": 1}}
    config = load_train_config(CONFIGS / scenario / f"{strategy}.yaml", overrides)
    assert config.model.fusion.name == strategy
    summary = train(config)
    assert summary["epochs"] == 1 and math.isfinite(summary["test"]["test/loss"])

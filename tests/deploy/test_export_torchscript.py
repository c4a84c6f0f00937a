"""TorchScript export of trained runs: parity with PyTorch under missing modalities, int8."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfusion.evaluate.compare import STRATEGIES
from medfusion.deploy import TorchScriptClassifier, export_model, load_exported
from medfusion.train.run import load_trained
from medfusion.types import MultimodalBatch


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_exports_to_torchscript_within_tolerance(trained_run, tmp_path, strategy) -> None:
    run = trained_run(strategy)
    report = export_model(run, tmp_path / "model.pt", format="torchscript")
    check = report.verification
    assert check.passed and check.max_abs_diff <= 1e-4, (strategy, check)
    assert 0 < check.rows_missing < check.rows
    runtime = load_exported(report.path)
    assert isinstance(runtime, TorchScriptClassifier) and runtime.class_names == ("pneumonia=0", "pneumonia=1")
    model, data, _ = load_trained(run)
    batch = next(iter(data.loader("test", usable_only=True)))
    vitals_only = MultimodalBatch(inputs={"vitals": batch.inputs["vitals"]}, masks={"vitals": batch.masks["vitals"]})
    with torch.no_grad():
        expected = model(vitals_only).logits.softmax(dim=-1).numpy()
    assert np.abs(runtime.predict_proba(vitals_only) - expected).max() <= 1e-4


def test_quantised_torchscript_runs_and_reports_the_auroc_change(trained_run, tmp_path) -> None:
    report = export_model(trained_run("late"), tmp_path / "model.int8.pt", format="torchscript", quantize=True)
    q = report.quantization
    assert report.quantized and report.verification.passed and q is not None
    assert q.auroc_change == pytest.approx(q.auroc_quantized - q.auroc_float)
    assert 0 < q.max_abs_diff < 0.1
    assert "quantized" in str(TorchScriptClassifier(report.path).module.inlined_graph)
    assert json.loads(report.sidecar.read_text())["exporter"] == "torch.jit.trace"

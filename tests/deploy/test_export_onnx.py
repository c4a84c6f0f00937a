"""ONNX export of trained runs: parity with PyTorch under missing modalities, sidecar, int8, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
import typer
from typer.testing import CliRunner

from medfusion.evaluate.compare import STRATEGIES
from medfusion.cli_export import export
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.deploy import OnnxClassifier, export_model
from medfusion.deploy.graph import input_names
from medfusion.deploy.runtime import flatten_batch
from medfusion.train.run import run_fingerprint
from medfusion.train.run import load_trained
from medfusion.types import MultimodalBatch


@pytest.fixture(scope="module")
def onnx_exports(trained_run, tmp_path_factory) -> dict:
    """{strategy: (run folder, report)} of float ONNX exports of tiny trained runs."""
    exports = {}
    for strategy in STRATEGIES:
        run = trained_run(strategy)
        exports[strategy] = run, export_model(run, tmp_path_factory.mktemp(f"onnx-{strategy}") / "model.onnx")
    return exports


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_exports_to_onnx_within_tolerance(onnx_exports, strategy) -> None:
    _, report = onnx_exports[strategy]
    check = report.verification
    assert check.passed and check.max_abs_diff <= 1e-4, (strategy, check)
    assert check.rows > 0 and 0 < check.rows_missing < check.rows
    folder = report.path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.json", "model.onnx.tokenizer.json"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_onnx_matches_pytorch_with_a_modality_absent_from_the_whole_batch(onnx_exports, strategy) -> None:
    run, report = onnx_exports[strategy]
    model, data, _ = load_trained(run)
    runtime = OnnxClassifier(report.path)
    batch = next(iter(data.loader("test", usable_only=True)))
    present = {m: batch.presence(m) for m in model.modalities}
    hidden = MultimodalBatch(inputs=batch.inputs, masks=batch.masks,
                             present={**present, "image": torch.zeros_like(present["image"])})
    keep = torch.stack([hidden.presence(m) for m in model.modalities], dim=1).any(dim=1)
    hidden = hidden.select(keep)
    without_text = MultimodalBatch(inputs={m: x for m, x in batch.inputs.items() if m != "text"},
                                   present={m: p for m, p in present.items() if m != "text"},
                                   masks={m: x for m, x in batch.masks.items() if m != "text"})
    keep = torch.stack([without_text.presence(m) for m in without_text.inputs], dim=1).any(dim=1)
    without_text = without_text.select(keep)
    with torch.no_grad():
        for case in (hidden, without_text):
            expected = model(case).logits.softmax(dim=-1).numpy()
            assert np.abs(runtime.predict_proba(case) - expected).max() <= 1e-4, strategy
    flat = flatten_batch(without_text)  # the same inputs as numpy arrays
    assert "text" not in flat and np.array_equal(runtime.predict_proba(flat), runtime.predict_proba(without_text))


def test_sidecar_describes_inputs_classes_tokenizer_and_fingerprint(onnx_exports) -> None:
    run, report = onnx_exports["late"]
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["format"] == "onnx" and sidecar["file"] == "model.onnx" and sidecar["quantized"] is False
    assert sidecar["modalities"] == ["image", "text", "vitals"] and sidecar["fusion"] == "late"
    assert sidecar["class_names"] == ["pneumonia=0", "pneumonia=1"]
    assert [item["name"] for item in sidecar["inputs"]] == input_names(["image", "text", "vitals"])
    shapes = {item["name"]: (item["shape"], item["dtype"]) for item in sidecar["inputs"]}
    assert shapes["image"] == (["batch", 1, 32, 32], "float32")
    assert shapes["text"] == (["batch", 32], "int64") and shapes["text_mask"] == (["batch", 32], "bool")
    assert shapes["vitals_mask"] == (["batch", 6], "bool") and shapes["image_present"] == (["batch"], "bool")
    assert [o["name"] for o in sidecar["outputs"]] == ["probability", "logits"]
    assert sidecar["fingerprint"] == run_fingerprint(run) and sidecar["checkpoint"] == "best"
    assert sidecar["verification"]["passed"] is True and sidecar["quantization"] is None
    tokenizer = report.path.parent / sidecar["text"]["tokenizer"]
    assert WordPieceTokenizer.from_file(tokenizer).vocab_size == WordPieceTokenizer.from_file(
        run / "tokenizer.json").vocab_size
    assert OnnxClassifier(report.path).tokenizer_path == tokenizer
    graph = onnx.load(str(report.path))
    assert [i.name for i in graph.graph.input] == [item["name"] for item in sidecar["inputs"]]
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_quantised_onnx_runs_and_reports_the_auroc_change(trained_run, tmp_path) -> None:
    run = trained_run("early")
    report = export_model(run, tmp_path / "model.int8.onnx", quantize=True)
    q = report.quantization
    assert report.quantized and q is not None and report.verification.passed
    assert q.auroc_float is not None and q.auroc_quantized is not None
    assert q.auroc_change == pytest.approx(q.auroc_quantized - q.auroc_float)
    assert 0 < q.max_abs_diff < 0.1
    types = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert types & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}, types
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["quantized"] is True and sidecar["quantization"]["auroc_change"] == pytest.approx(q.auroc_change)
    _, data, _ = load_trained(run)
    probabilities = OnnxClassifier(report.path).predict_proba(next(iter(data.loader("test", usable_only=True))))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_export_with_a_bad_format_is_a_value_error(trained_run, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"format: expected one of \['onnx', 'torchscript'\], received 'tflite'"):
        export_model(trained_run("late"), tmp_path / "model.tflite", format="tflite")
    assert not any(tmp_path.iterdir())


def test_export_of_an_unfinished_run_folder_is_a_clear_error(trained_run, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a finished run, config.yaml is missing"):
        export_model(tmp_path, tmp_path / "model.onnx")
    shutil.copy(trained_run("late") / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(ValueError, match=r"not a finished run, checkpoints/best.ckpt is missing"):
        export_model(tmp_path, tmp_path / "model.onnx")


def test_export_command_prints_the_report_and_rejects_a_bad_format(trained_run, tmp_path, monkeypatch) -> None:
    import medfusion.cli_export

    monkeypatch.setattr(medfusion.cli_export.console, "width", 200)  # the console was sized at import
    app = typer.Typer()
    app.command()(export)  # a single command: invoked without its name
    runner = CliRunner()
    run = trained_run("late")
    result = runner.invoke(app, [str(run), "--out", str(tmp_path / "m.onnx"), "--batches", "1"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and "m.onnx.json" in result.output
    result = runner.invoke(app, [str(run), "--format", "tflite"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "received 'tflite'" in result.output

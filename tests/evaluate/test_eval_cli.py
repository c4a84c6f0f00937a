"""`medfusion evaluate RUN` on a run of the tiny comparison (trained once per session, see test_eval_compare)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medfusion.cli import app
from test_eval_compare import comparison

runner = CliRunner()


def a_run(tmp_path_factory) -> Path:
    results = comparison(tmp_path_factory.getbasetemp())[0]
    return Path(results["runs"]["late"]["seeds"]["0"]["dir"])


def test_evaluate_prints_metrics_and_writes_them(tmp_path_factory) -> None:
    run = a_run(tmp_path_factory)
    result = runner.invoke(app, ["evaluate", str(run), "--n-boot", "50"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = json.loads((run / "test_metrics.json").read_text())
    compared = json.loads((run / "evaluation.json").read_text())
    assert written["metrics"]["auroc"][0] == compared["metrics"]["auroc"][0]  # same predictions, same seed
    # F1 and accuracy at the validation-chosen operating point, the same one compare used
    assert written["threshold"] == compared["threshold"] and 0 < written["threshold"] < 1
    assert written["metrics"]["f1"][0] == compared["metrics"]["f1"][0]
    assert "auroc" in result.output and "ece" in result.output and "threshold" in result.output


def test_evaluate_without_a_modality_and_with_missingness(tmp_path_factory) -> None:
    run = a_run(tmp_path_factory)
    result = runner.invoke(app, ["evaluate", str(run), "--drop", "image", "--missing", "--n-boot", "50"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = json.loads((run / "test_metrics_without_image.json").read_text())
    compared = json.loads((run / "evaluation.json").read_text())
    assert abs(written["metrics"]["auroc"][0] - compared["missing"]["drop"]["image"]) < 1e-12
    assert set(written["missing"]["curve"]) == {"image", "text", "vitals"}


def test_evaluate_errors_exit_2(tmp_path_factory, tmp_path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "not a finished run, config.yaml is missing" in " ".join(result.output.split())
    run = a_run(tmp_path_factory)
    result = runner.invoke(app, ["evaluate", str(run), "--drop", "ecg"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "unknown modality 'ecg'" in " ".join(result.output.split())

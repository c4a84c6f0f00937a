"""The command line, through Typer's test runner."""

from __future__ import annotations


from typer.testing import CliRunner

from factories import model_config
from medfusion import __version__
from medfusion.cli import app
from medfusion.models import ModelConfig, save_config

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_registry_lists_encoders_and_fusions() -> None:
    result = runner.invoke(app, ["registry"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("cross_attention", "joint_embedding", "frames_transformer", "efficientnet_lite0", "resnet1d"):
        assert name in result.output


def test_summary_counts_parameters(tmp_path) -> None:
    path = tmp_path / "model.yaml"
    save_config(ModelConfig.model_validate(model_config("late-learned", ("text", "image"))), path)
    result = runner.invoke(app, ["summary", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "encoder/image" in result.output and "total" in result.output


def test_summary_of_a_bad_config_exits_2_with_the_reason(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("modalities: {text: {}}\nfusion: {name: nope}\n")
    result = runner.invoke(app, ["summary", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown fusion 'nope'" in result.output

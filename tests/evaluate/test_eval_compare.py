"""The measured comparison (compare.run_comparison) on a tiny cohort with tiny copies of the
triage configs: results.json structure, reuse of finished work, errors; and the CLI entry points.

The comparison runs once per session (``compared``); ``test_eval_report`` reuses its output
folder, which ``run_comparison`` picks up without training again.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.evaluate import compare, cost
from medfusion.evaluate.compare import CompareSettings, run_comparison

TRIAGE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "triage"
STRATEGIES = ["early", "late"]
METRICS = {"auroc", "auprc", "f1", "accuracy", "ece", "brier"}
MODALITIES = ["image", "text", "vitals"]
SHARED = "evaluate_compare"  # folder under the session's base temp, shared with test_eval_report

#: Sizes of the tiny copies (everything else as in configs/triage).
TINY_ENCODERS = {"image": {"widths": [4, 8], "out_dim": 8, "norm_groups": 2},
                 "text": {"dim": 8, "heads": 2},
                 "vitals": {"hidden": 8, "out_dim": 8}}
TINY_FUSION = {"hidden": 8, "dim": 8, "heads": 2, "embed_dim": 8}
COST_OPTIONS = {"repeats": 3, "warmup": 1, "seconds": 0.05, "steps": 2}


def write_tiny_configs(folder: Path) -> Path:
    """Copies of configs/triage/*.yaml with widths of 8, 32-token notes and batches of 16."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(TRIAGE_CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        for m, spec in raw["model"]["modalities"].items():
            spec["encoder"]["params"].update(TINY_ENCODERS[m])
        params = raw["model"]["fusion"].get("params", {})
        raw["model"]["fusion"]["params"] = {k: TINY_FUSION.get(k, v) for k, v in params.items()}
        raw["data"].update(vocab_size=100, max_length=32)
        raw["optim"]["batch_size"] = 16
        raw["run"]["threads"] = 2
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def tiny_settings(out: Path, **changes) -> CompareSettings:
    settings = dict(patients=120, image_size=32, seeds=[0], strategies=STRATEGIES, unimodal=False,
                    learning_fractions=[0.5], max_epochs=1, n_boot=50, configs=write_tiny_configs(out / "configs"),
                    out=out)
    settings.update(changes)
    return CompareSettings(**settings)


_RESULTS: dict[Path, tuple[dict, list[str]]] = {}


def comparison(base: Path) -> tuple[dict, list[str]]:
    """run_comparison of the tiny settings in ``base`` / SHARED (shortened cost timings); results and the
    progress messages of the first (training) call, whichever test module makes it."""
    if base not in _RESULTS:
        messages: list[str] = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cost, "cost_report", functools.partial(cost.cost_report, **COST_OPTIONS))
            results = run_comparison(tiny_settings(base / SHARED), progress=messages.append)
        _RESULTS[base] = (results, messages)
    return _RESULTS[base]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[dict, list[str], Path]:
    base = tmp_path_factory.getbasetemp()
    results, messages = comparison(base)
    return results, messages, base / SHARED


def intervals(metrics: dict) -> None:
    assert set(metrics) == METRICS
    for name, interval in metrics.items():
        assert len(interval) == 3, name
        value, low, high = interval
        if name == "auroc" or not math.isnan(value):
            assert low <= high, (name, interval)


def test_results_json_is_what_run_comparison_returned(compared) -> None:
    results, _, out = compared
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) == {"settings", "runs", "significance", "seconds"}
    assert on_disk["settings"]["strategies"] == STRATEGIES and on_disk["settings"]["patients"] == 120
    assert list(on_disk["runs"]) == STRATEGIES, "no unimodal baselines when unimodal=False"
    assert (out / "data" / "manifest.parquet").is_file()


def test_each_run_has_seeds_evaluation_and_run_summary(compared) -> None:
    results, _, out = compared
    for name in STRATEGIES:
        entry = results["runs"][name]
        assert set(entry) == {"seeds", "cost", "summary", "learning_curve", "modularity"}
        assert list(entry["seeds"]) == ["0"]
        seed = entry["seeds"]["0"]
        assert Path(seed["dir"]) == (out / "runs" / name / "seed0").resolve()
        assert seed["run"]["seed"] == 0 and seed["run"]["epochs"] >= 1
        assert json.loads((Path(seed["dir"]) / "run.json").read_text()) == seed["run"]
        evaluation = seed["evaluation"]
        assert json.loads((Path(seed["dir"]) / "evaluation.json").read_text()) == evaluation
        assert set(evaluation) == {"metrics", "threshold", "missing", "retrieval", "explanation"}
        assert 0 < evaluation["threshold"] < 1
        assert (Path(seed["dir"]) / "test_predictions.npz").is_file()


def test_evaluation_metrics_are_value_low_high(compared) -> None:
    results, _, _ = compared
    for name in STRATEGIES:
        metrics = results["runs"][name]["seeds"]["0"]["evaluation"]["metrics"]
        intervals(metrics)
        value, low, high = metrics["auroc"]
        assert 0.0 <= low <= value <= high <= 1.0, metrics["auroc"]
        assert 0.0 <= metrics["accuracy"][0] <= 1.0 and 0.0 <= metrics["brier"][0] <= 1.0


def test_missing_modality_studies_cover_every_modality(compared) -> None:
    results, _, _ = compared
    for name in STRATEGIES:
        missing = results["runs"][name]["seeds"]["0"]["evaluation"]["missing"]
        assert set(missing) == {"drop", "curve", "ablation"}
        assert sorted(missing["drop"]) == MODALITIES
        assert sorted(missing["curve"]) == MODALITIES
        for curve in missing["curve"].values():
            assert list(curve) == ["0.0", "0.25", "0.5", "0.75", "0.9"]
            assert all(0.0 <= auroc <= 1.0 for auroc in curve.values())
        assert set(missing["ablation"]) == {"image", "text", "vitals", "image+text", "image+vitals", "text+vitals",
                                            "image+text+vitals"}
        full = results["runs"][name]["seeds"]["0"]["evaluation"]["metrics"]["auroc"][0]
        assert missing["ablation"]["image+text+vitals"] == pytest.approx(full), "keeping everything is the full run"
        assert missing["curve"]["image"]["0.0"] == pytest.approx(full), "a rate of 0 hides nothing"


def test_retrieval_and_explanation_per_strategy(compared) -> None:
    results, _, _ = compared
    for name in STRATEGIES:
        evaluation = results["runs"][name]["seeds"]["0"]["evaluation"]
        assert evaluation["retrieval"] is None, "neither early nor late fusion has a joint space"
        explanation = evaluation["explanation"]
        assert explanation["method"] == {"early": "integrated_gradients", "late": "modality_weights"}[name]
        assert sorted(explanation["mean_attribution"]) == MODALITIES


def test_cost_and_summary(compared) -> None:
    results, _, _ = compared
    for name in STRATEGIES:
        entry = results["runs"][name]
        assert {"parameters", "macs_per_sample", "latency_b1_p50_ms", "latency_b1_p99_ms", "throughput_b32",
                "peak_memory_mb", "train_samples_per_s"} <= set(entry["cost"])
        assert entry["cost"]["parameters"]["trainable"] == entry["seeds"]["0"]["run"]["parameters"] > 0
        summary = entry["summary"]
        assert set(summary) == {"metrics", "drop", "curve", "ablation", "train_seconds"}
        intervals(summary["metrics"])
        auroc = entry["seeds"]["0"]["evaluation"]["metrics"]["auroc"][0]
        assert summary["metrics"]["auroc"] == pytest.approx([auroc] * 3), "one seed: low = high = mean"
        assert sorted(summary["drop"]) == MODALITIES and sorted(summary["curve"]) == MODALITIES
        assert summary["train_seconds"] == entry["seeds"]["0"]["run"]["train_seconds"]


def test_learning_curve_has_each_fraction_and_the_full_run(compared) -> None:
    results, _, out = compared
    for name in STRATEGIES:
        curve = results["runs"][name]["learning_curve"]
        assert list(curve) == ["0.5", "1"]
        assert curve["1"] == results["runs"][name]["seeds"]["0"]["evaluation"]["metrics"]["auroc"][0]
        half = out / "runs" / name / "seed0_frac0.5"
        run = json.loads((half / "run.json").read_text())
        full = results["runs"][name]["seeds"]["0"]["run"]
        assert run["train_patients"] < full["train_patients"]
        assert set(json.loads((half / "evaluation.json").read_text())) == {"metrics", "threshold"}, \
            "curve runs: metrics only"


def test_significance_compares_each_strategy_with_the_simpler_ones(compared) -> None:
    results, _, _ = compared
    tests = results["significance"]
    assert [(t["simpler"], t["complex"], t["seed"]) for t in tests] == [("early", "late", 0)]
    for test in tests:
        assert 0.0 <= test["p_value"] <= 1.0
        assert {"auroc_a", "auroc_b", "difference", "se", "z"} <= set(test)
        assert test["difference"] == pytest.approx(test["auroc_b"] - test["auroc_a"])
        assert test["auroc_a"] == pytest.approx(results["runs"]["early"]["seeds"]["0"]["evaluation"]["metrics"]
                                                ["auroc"][0])


def test_modularity_swaps_the_text_encoder_where_there_is_one(compared) -> None:
    results, messages, _ = compared
    assert results["runs"]["early"]["modularity"]["swappable"] is False
    swap = results["runs"]["late"]["modularity"]
    assert swap["swappable"] and swap["modality"] == "text" and 0 < swap["retrained_share"] < 1
    assert swap["auroc_change"] == pytest.approx(swap["auroc_after"] - swap["auroc_before"])
    assert swap["auroc_before"] == results["runs"]["late"]["summary"]["metrics"]["auroc"][0]  # one seed
    assert "swapping the text encoder of late" in messages


def test_progress_names_every_run(compared) -> None:
    _, messages, _ = compared
    assert messages[0] == "generating 120 synthetic triage patients"
    for name in STRATEGIES:
        assert f"training {name} (seed 0)" in messages
        assert f"evaluating {name} (seed 0)" in messages
        assert f"training {name} on 50% of training patients" in messages


def test_rerun_reuses_finished_work(compared, tmp_path_factory) -> None:
    results, _, out = compared
    files = [out / "runs" / name / run / file for name in STRATEGIES for run in ("seed0", "seed0_frac0.5")
             for file in ("run.json", "evaluation.json", "checkpoints/best.ckpt")]
    files += [out / "data" / "manifest.parquet"]
    assert all(p.is_file() for p in files)
    stamps = {p: p.stat().st_mtime_ns for p in files}
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost, "cost_report", functools.partial(cost.cost_report, **COST_OPTIONS))
        again = run_comparison(tiny_settings(out), progress=messages.append)
    assert not [m for m in messages if m.startswith(("generating", "training", "evaluating"))], messages
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    for name in STRATEGIES:
        assert again["runs"][name]["seeds"] == results["runs"][name]["seeds"]
        assert again["runs"][name]["summary"] == results["runs"][name]["summary"]
        assert again["runs"][name]["learning_curve"] == results["runs"][name]["learning_curve"]
    assert again["significance"] == results["significance"]


def test_unknown_scenario_raises_naming_it(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"compare: unknown scenario 'dermatology'; available: \['cardiac'"):
        run_comparison(tiny_settings(tmp_path, scenario="dermatology"), progress=lambda message: None)


def test_comparison_of_another_scenario_uses_its_configs_and_modalities(tmp_path) -> None:
    """Neuro (EEG + note): configs/neuro, unimodal baselines of its own modalities, no masks (no pointing)."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("early", "late", "intermediate"):
        raw = yaml.safe_load((TRIAGE_CONFIGS.parent / "neuro" / f"{name}.yaml").read_text())
        raw["model"]["modalities"]["signal"]["encoder"]["params"].update(widths=[4, 8], out_dim=8, norm_groups=2)
        raw["model"]["modalities"]["text"]["encoder"]["params"].update(dim=8, heads=2)
        raw["data"].update(vocab_size=100, max_length=32)
        raw["optim"]["batch_size"] = 16
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = CompareSettings(scenario="neuro", patients=60, seeds=[0], strategies=["early", "late"],
                               learning_fractions=[0.5], max_epochs=1, n_boot=50, configs=folder, out=tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost, "cost_report", functools.partial(cost.cost_report, **COST_OPTIONS))
        results = run_comparison(settings, progress=lambda message: None)
    assert set(results["runs"]) == {"early", "late", "only_signal", "only_text"}
    late = results["runs"]["late"]["seeds"]["0"]["evaluation"]
    assert set(late["missing"]["drop"]) == {"signal", "text"} and "pointing" not in late["explanation"]
    assert 0.0 <= late["metrics"]["auroc"][0] <= 1.0


def test_missing_config_file_raises_naming_it(tmp_path) -> None:
    settings = tiny_settings(tmp_path, patients=50, strategies=["late"])
    (settings.configs / "late.yaml").unlink()
    with pytest.raises(ValueError, match=r"compare: no config for strategy 'late': expected .*late\.yaml"):
        run_comparison(settings, progress=lambda message: None)
    assert not (tmp_path / "runs").exists(), "nothing was trained"
    assert compare.run_config(settings, tmp_path / "manifest.parquet", "early", seed=0).model.fusion.name == "early"
    with pytest.raises(ValueError, match="no config for strategy 'intermediate'"):
        compare.run_config(settings.model_copy(update={"configs": tmp_path / "nowhere"}), tmp_path / "m.parquet",
                           "only_text", seed=0)


def test_run_config_of_a_unimodal_baseline(tmp_path) -> None:
    settings = tiny_settings(tmp_path, max_epochs=2)
    config = compare.run_config(settings, tmp_path / "manifest.parquet", "only_image", seed=3, fraction=0.25)
    assert list(config.model.modalities) == ["image"] and list(config.data.modalities) == ["image"]
    assert config.data.vitals_columns == [] and config.model.modality_dropout == 0.0
    assert config.model.fusion.name == "intermediate"
    assert config.seed == 3 and config.optim.max_epochs == 2 and config.data.train_fraction == 0.25
    assert config.run.out == (tmp_path / "runs" / "only_image" / "seed3_frac0.25").resolve()
    assert config.data.manifest == (tmp_path / "manifest.parquet").resolve()


@pytest.mark.parametrize("name", [*compare.STRATEGIES, "only_vitals"])
def test_the_shipped_triage_configs_give_a_run_config(name, tmp_path) -> None:
    settings = CompareSettings(configs=TRIAGE_CONFIGS, out=tmp_path, max_epochs=1)
    config = compare.run_config(settings, tmp_path / "manifest.parquet", name, seed=1)
    assert config.model.fusion.name == ("intermediate" if name.startswith("only_") else name)
    assert config.run.out == (tmp_path / "runs" / name / "seed1").resolve() and config.run.progress is False


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="patients"):
        CompareSettings(patients=10)
    with pytest.raises(ValueError, match="seeds"):
        CompareSettings(seeds=[])
    with pytest.raises(ValueError, match="unknown_field"):
        CompareSettings(unknown_field=1)


# --------------------------------------------------------------------------- command line

runner = CliRunner()


@pytest.mark.parametrize(("command", "options"), [("compare", ["--patients", "--seeds", "--max-epochs", "--configs",
                                                               "--out"]),
                                                  ("demo", ["--out", "--full"])])
def test_help_exits_0(command, options) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output


def test_compare_with_an_unknown_scenario_exits_2_with_the_reason(tmp_path) -> None:
    result = runner.invoke(app, ["compare", "--scenario", "dermatology", "--patients", "60", "--out", str(tmp_path)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown scenario 'dermatology'" in result.output

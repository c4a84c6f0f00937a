"""Report-generation runs: config, data module, training, checkpoints, resume, loading (tiny pathology cohort)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.train.report_config import ReportTrainConfig, load_report_config
from medfusion.train.report_data import ReportDataModule, prepare_image, special_ids
from medfusion.train.report_run import load_report_run, train_report

TINY = {
    "data": {"image_size": 32, "vocab_size": 150, "max_length": 48},
    "model": {"encoder": {"name": "cnn", "params": {"in_channels": 3, "widths": [8, 16], "out_dim": 16,
                                                    "norm_groups": 4}},
              "decoder": {"dim": 16, "layers": 1, "heads": 2, "ff_mult": 2, "max_length": 48}},
    "optim": {"batch_size": 8, "max_epochs": 2, "lr": 0.003},
    "decode": {"methods": ["greedy"], "max_length": 10},
    "run": {"progress": False, "threads": 1},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A 48-patient pathology cohort (64-px patches, reports, masks) on disk."""
    return synthesize("pathology", 48, 0, tmp_path_factory.mktemp("pathology"), image_size=64)[1]


def tiny_config(manifest: Path, out: Path, **sections) -> dict:
    config = copy.deepcopy(TINY)
    config["data"]["manifest"] = str(manifest)
    config["run"]["out"] = str(out)
    for key, value in sections.items():
        config[key].update(value)
    return config


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory) -> tuple[Path, dict]:
    """A finished 2-epoch run and its summary."""
    out = tmp_path_factory.mktemp("run")
    return out, train_report(ReportTrainConfig.model_validate(tiny_config(manifest, out)))


# -- config ---------------------------------------------------------------------------------------


def test_load_resolves_paths_against_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    raw = tiny_config(Path("../data/manifest.parquet"), Path("../runs/x"))
    (folder / "report.yaml").write_text(yaml.safe_dump(raw))
    config = load_report_config(folder / "report.yaml")
    assert config.data.manifest == (tmp_path / "data" / "manifest.parquet").resolve()
    assert config.run.out == (tmp_path / "runs" / "x").resolve()
    overridden = load_report_config(folder / "report.yaml", {"run": {"out": "here"}, "optim": {"max_epochs": 5}})
    assert overridden.run.out == Path("here") and overridden.optim.max_epochs == 5


@pytest.mark.parametrize(("change", "field"), [
    ({"data": {"vocab": 10}}, "vocab"),
    ({"data": {"max_length": 64}}, "data.max_length"),
    ({"decode": {"max_length": 48}}, "decode.max_length"),
    ({"decode": {"methods": ["beam", "beam"]}}, "methods"),
    ({"decode": {"methods": ["sample"]}}, "methods"),
    ({"data": {"splits": {"train": "train", "val": "val"}}}, "splits"),
    ({"data": {"domain": "cardiac"}}, "domain"),
])
def test_bad_config_names_the_field(tmp_path: Path, change: dict, field: str) -> None:
    raw = tiny_config(Path("m.parquet"), Path("out"))
    for section, values in change.items():
        raw[section].update(values)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=field.split(".")[-1]) as error:
        load_report_config(tmp_path / "c.yaml")
    assert "c.yaml" in str(error.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such config file"):
        load_report_config(tmp_path / "absent.yaml")


# -- data -------------------------------------------------------------------------------------------


def test_prepare_image_converts_channels_and_size() -> None:
    gray = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    rgb = prepare_image(gray, 3, 32)
    assert rgb.shape == (3, 32, 32) and rgb.dtype == np.float32
    assert np.array_equal(rgb[0], rgb[2])
    back = prepare_image(rgb, 1)
    assert back.shape == (1, 32, 32) and np.allclose(back[0], rgb[0])
    with pytest.raises(ValueError, match="channel"):
        prepare_image(np.zeros((2, 8, 8)), 3)
    with pytest.raises(ValueError, match="shape"):
        prepare_image(np.zeros((1, 2, 8, 8)), 1)


def test_data_module_uses_complete_pairs_and_trains_the_tokenizer_on_training_reports(manifest) -> None:
    config = ReportTrainConfig.model_validate(tiny_config(manifest, Path("unused")))
    data = ReportDataModule(config.data, 3, batch_size=4)
    data.setup("fit")
    train = data.dataset("train")
    present = train.presence()
    assert np.array_equal(data.usable("train"), np.flatnonzero(present["image"] & present["text"]))
    reports = [pair.report for pair in data.pairs("train")]
    assert len(reports) == len(data.usable("train"))
    expected = WordPieceTokenizer.train(reports, vocab_size=150)
    assert data.tokenizer.encode(reports[:3]).ids.tolist() == expected.encode(reports[:3]).ids.tolist()
    assert special_ids(data.tokenizer) == (0, 2, 3)
    batch = next(iter(data.loader("val")))
    assert batch.inputs["image"].shape[1:] == (3, 32, 32)
    assert (batch.inputs["text"][:, 0] == 2).all() and batch.masks["text"].shape == batch.inputs["text"].shape
    with pytest.raises(ValueError, match="unknown split role"):
        data.dataset("holdout")


# -- training -----------------------------------------------------------------------------------------


def test_run_folder(trained) -> None:
    out, summary = trained
    for name in ("config.yaml", "tokenizer.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "logs/metrics.csv", "run.json"):
        assert (out / name).is_file(), name
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary files left
    assert json.loads((out / "run.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["epochs"] == 2 and summary["best_checkpoint"] == "checkpoints/best.ckpt"
    assert set(summary["test"]) == {"test/loss", "test/accuracy"}
    assert 0.0 <= summary["test"]["test/accuracy"] <= 1.0
    with open(out / "logs" / "metrics.csv", newline="") as handle:
        losses = [float(row["val/loss"]) for row in csv.DictReader(handle) if row.get("val/loss")]
    assert len(losses) == 2 and summary["best_val_loss"] == pytest.approx(min(losses))


def test_load_report_run_gives_the_best_weights(trained) -> None:
    out, summary = trained
    model, tokenizer, config = load_report_run(out)
    assert not model.training and tokenizer.vocab_size == summary["vocab_size"] == model.vocab_size
    state = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[f"model.{name}"]), name
    generated = model.generate(torch.rand(2, 3, 32, 32), max_length=config.decode.max_length)
    assert len(generated) == 2 and generated[0].grid == (8, 8)  # 32 px, two stride-2 stages


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(manifest, trained, tmp_path: Path) -> None:
    out, _ = trained
    first = ReportTrainConfig.model_validate(tiny_config(manifest, tmp_path, optim={"max_epochs": 1}))
    train_report(first)
    summary = train_report(first.model_copy(update={"optim": first.optim.model_copy(update={"max_epochs": 2})}),
                           resume=True)
    assert summary["epochs"] == 2
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    straight = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in straight.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), name
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        assert sorted({int(row["epoch"]) for row in csv.DictReader(handle)}) == [0, 1]


def test_resume_without_a_checkpoint_fails(manifest, tmp_path: Path) -> None:
    config = ReportTrainConfig.model_validate(tiny_config(manifest, tmp_path))
    with pytest.raises(ValueError, match="last.ckpt"):
        train_report(config, resume=True)


def test_load_report_run_names_the_missing_file(trained, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config.yaml is missing"):
        load_report_run(tmp_path)
    out, _ = trained
    with pytest.raises(ValueError, match="checkpoints/other.ckpt is missing"):
        load_report_run(out, checkpoint="other")

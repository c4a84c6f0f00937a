"""``train(config)`` end to end on a tiny real cohort: run folder, strategies, exact resume, the CLI."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medfusion.cli import app
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.train import TrainConfig, load_train_config, train

MODALITIES = ("image", "text", "vitals")
runner = CliRunner()


def metrics_columns(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "logs" / "metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture
def same_tokenizer(monkeypatch):
    """Every WordPiece training on the same notes returns the same tokenizer.

    Hugging Face's WordPiece trainer numbers (and, at a tie at the vocabulary cut, picks) tokens
    differently from one training to the next, so two runs of one config see different token ids.
    Comparing two runs weight for weight needs one vocabulary.
    """
    original = WordPieceTokenizer.train.__func__
    cache: dict = {}

    def train_once(cls, corpus, vocab_size=8000, min_frequency=2):
        corpus = list(corpus)
        key = (tuple(corpus), vocab_size, min_frequency)
        if key not in cache:
            cache[key] = original(cls, corpus, vocab_size, min_frequency)
        return cache[key]

    monkeypatch.setattr(WordPieceTokenizer, "train", classmethod(train_once))


def test_train_writes_the_run_folder(make_config, tmp_path) -> None:
    out = tmp_path / "run"
    config = TrainConfig.model_validate(make_config(out, optim={"max_epochs": 2}))
    summary = train(config)

    for name in ("config.yaml", "tokenizer.json", "run.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "logs/metrics.csv"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    assert load_train_config(out / "config.yaml") == config
    assert WordPieceTokenizer.from_file(out / "tokenizer.json").vocab_size <= 100

    columns, rows = metrics_columns(out)
    for name in ("val/auroc", "val/accuracy", "val/loss", "train/total", "train/probes",
                 *(f"val/probe_auroc/{m}" for m in MODALITIES)):
        assert name in columns, name
    aurocs = [float(r["val/auroc"]) for r in rows if r["val/auroc"]]
    assert len(aurocs) == 2 and all(0.0 <= a <= 1.0 for a in aurocs)

    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["seed"] == 0 and on_disk["epochs"] == 2 and on_disk["best_checkpoint"] == "checkpoints/best.ckpt"
    assert on_disk["best_val_auroc"] == pytest.approx(max(aurocs))
    assert 0.0 <= on_disk["test"]["test/auroc"] <= 1.0
    for m in MODALITIES:
        assert f"test/probe_auroc/{m}" in on_disk["test"]
    assert on_disk["parameters"] > 0 and on_disk["train_patients"] > 0 and on_disk["train_seconds"] > 0

    best, last = load_checkpoint(out / "checkpoints" / "best.ckpt"), load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and "random_states" in last and "optimizer_states" in last
    assert set(best["state_dict"]) == set(last["state_dict"])
    assert any(k.startswith("probes.heads.") for k in last["state_dict"]) and "class_weights" in last["state_dict"]


def test_last_checkpoint_is_the_latest_epoch_even_without_improvement(make_config, tmp_path) -> None:
    # lr so small that the weights do not change: validation AUROC never improves after epoch 0
    out = tmp_path / "run"
    summary = train(TrainConfig.model_validate(make_config(out, optim={"max_epochs": 2, "lr": 1e-12})))
    assert summary["epochs"] == 2
    assert load_checkpoint(out / "checkpoints" / "best.ckpt")["epoch"] == 0
    last = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1 and last["global_step"] == 2 * load_checkpoint(out / "checkpoints" / "best.ckpt")[
        "global_step"]


STRATEGIES = {
    "early": ("early", "none"),
    "intermediate": ("intermediate", "none"),
    "late-learned": ("late", "none"),
    "cross_attention": ("cross_attention", "none"),
    "joint_embedding": ("joint_embedding", "none"),
    "intermediate-ogm_ge": ("intermediate", "ogm_ge"),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_trains_one_epoch(make_config, tmp_path, name) -> None:
    fusion, modality = STRATEGIES[name]
    out = tmp_path / name
    summary = train(TrainConfig.model_validate(make_config(out, fusion, balance={"modality": modality})))
    assert summary["epochs"] == 1
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert "test/auroc" in summary["test"] and "test/loss" in summary["test"]
    columns, _ = metrics_columns(out)
    assert "val/auroc" in columns
    assert all(f"val/probe_auroc/{m}" in columns for m in MODALITIES)
    ogm = [c for c in columns if c.startswith("train/ogm_coefficient/")]
    assert sorted(ogm) == ([f"train/ogm_coefficient/{m}" for m in MODALITIES] if modality == "ogm_ge" else [])


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(make_config, tmp_path, same_tokenizer,
                                                               monkeypatch) -> None:
    # modality dropout and fusion dropout draw random numbers every step; OGM-GE adds gradient noise
    base = make_config(tmp_path / "A", "intermediate", optim={"max_epochs": 2},
                       balance={"modality": "ogm_ge"}, model={"modality_dropout": 0.3})
    train(TrainConfig.model_validate(base))

    interrupted = copy.deepcopy(base)
    interrupted["run"]["out"] = str(tmp_path / "B")
    interrupted["optim"]["max_epochs"] = 1
    train(TrainConfig.model_validate(interrupted))
    assert load_checkpoint(tmp_path / "B" / "checkpoints" / "last.ckpt")["epoch"] == 0
    tokenizer = (tmp_path / "B" / "tokenizer.json").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must reuse the run folder's tokenizer, not train another")

    monkeypatch.setattr(WordPieceTokenizer, "train", no_training)
    interrupted["optim"]["max_epochs"] = 2
    summary = train(TrainConfig.model_validate(interrupted), resume=True)
    assert summary["epochs"] == 2
    assert (tmp_path / "B" / "tokenizer.json").read_text() == tokenizer

    a = load_checkpoint(tmp_path / "A" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "B" / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (1, b["global_step"])
    assert set(a["state_dict"]) == set(b["state_dict"])
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert different == []
    # the resumed run keeps the interrupted run's logged epochs, and logs what the uninterrupted one did
    validation = {run: [(r["epoch"], r["val/auroc"]) for r in metrics_columns(tmp_path / run)[1] if r["val/loss"]]
                  for run in ("A", "B")}
    assert [epoch for epoch, _ in validation["B"]] == ["0", "1"]
    assert validation["A"] == validation["B"]


def test_resume_without_a_checkpoint_names_the_path(make_config, tmp_path) -> None:
    out = tmp_path / "fresh"
    with pytest.raises(ValueError, match="resume") as error:
        train(TrainConfig.model_validate(make_config(out)), resume=True)
    assert str(out / "checkpoints" / "last.ckpt") in str(error.value)
    assert not (out / "run.json").exists()


def test_cli_train_writes_the_run(make_config, tmp_path, monkeypatch) -> None:
    path = tmp_path / "configs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(make_config("unused", optim={"max_epochs": 3})))
    monkeypatch.chdir(tmp_path)  # --out is relative to the working directory
    result = runner.invoke(app, ["train", str(path), "--out", "cli_run", "--max-epochs", "1", "--seed", "2"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cli_run" / "run.json").read_text())
    assert summary["epochs"] == 1 and summary["seed"] == 2 and "test/auroc" in summary["test"]
    assert (tmp_path / "cli_run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "configs" / "unused").exists()


def test_cli_train_with_a_bad_config_exits_2_naming_the_field(make_config, tmp_path) -> None:
    config = make_config(tmp_path / "run")
    config["balance"]["modality"] = "foo"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["train", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "balance.modality" in output and "'ogm_ge'" in output
    assert not (tmp_path / "run").exists()


def test_cli_resume_without_a_checkpoint_exits_2(make_config, tmp_path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path / "run")))
    result = runner.invoke(app, ["train", str(path), "--resume"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "last.ckpt" in " ".join(result.output.split())


def test_a_quiet_run_leaves_out_lightning_chatter_and_restores_its_loggers(make_config, tmp_path, caplog,
                                                                          recwarn) -> None:
    import logging

    lightning_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    before = list(lightning_logger.filters)
    caplog.set_level(logging.INFO)
    config = TrainConfig.model_validate(make_config(tmp_path / "run", run={"out": str(tmp_path / "run"),
                                                                            "progress": False}))
    train(config)
    said = " ".join(record.getMessage() for record in caplog.records if record.name.startswith("lightning"))
    assert "GPU available" not in said and "TPU available" not in said
    assert not [w for w in recwarn if "LeafSpec" in str(w.message) or "ckpt_path" in str(w.message)
                or "transfer_batch_to_device" in str(w.message)]
    assert lightning_logger.filters == before

"""``medfusion train``: one run from a config to checkpoints, logs and a run summary.

Run folder (``run.out``)::

    config.yaml                  the resolved training config
    tokenizer.json               WordPiece vocabulary fitted on the training notes (if text)
    checkpoints/best.ckpt        best validation AUROC, or Recall@K mean for task contrastive (atomic)
    checkpoints/last.ckpt        end of the latest epoch (``--resume`` continues from it)
    logs/metrics.csv             per-epoch metrics (CSV logger)
    tb/                          TensorBoard events
    run.json                     seed, epochs, best validation score, test metrics, timings

Resuming: the shuffle order is a function of (seed, epoch) and the random-number states
are stored in every checkpoint, so a killed run resumed from ``last.ckpt`` ends with the
same weights as an uninterrupted run (tested). Multi-GPU / multi-node: set
``run.accelerator: gpu``, ``run.devices``, ``run.num_nodes`` and ``run.strategy: ddp``;
Lightning's DDP then shards the shuffle with a distributed sampler.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.encoders.vitals import FeatureStandardizer
from medfusion.files import atomic_path, atomic_write_text
from medfusion.models import MultimodalClassifier, build_model
from medfusion.models.config import ModelConfig
from medfusion.train.config import MONITORS, TrainConfig, save_train_config
from medfusion.train.data import TOKENIZER_FILE, ManifestDataModule
from medfusion.train.system import FusionSystem


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed: a crash never leaves a half-written one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path, suffix=".ckpt") as tmp:
            torch.save(checkpoint, tmp)


class RandomStateCallback(L.Callback):
    """Stores the Python, NumPy and torch random states in checkpoints and restores them on resume."""

    def on_save_checkpoint(self, trainer, module, checkpoint: dict[str, Any]) -> None:
        name, keys, position, has_gauss, cached = np.random.get_state()
        # plain types only: checkpoints load with torch.load(weights_only=True)
        checkpoint["random_states"] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                                       "numpy": [name, keys.tolist(), position, has_gauss, cached]}

    def on_load_checkpoint(self, trainer, module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("random_states")
        if states:
            random.setstate(states["python"])
            name, keys, position, has_gauss, cached = states["numpy"]
            np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
            torch.set_rng_state(states["torch"])


@rank_zero_only
def keep_logged_rows(logger: CSVLogger) -> None:
    """Carry the rows of an interrupted run's ``metrics.csv`` into the resumed run.

    Lightning's CSV writer deletes the file it finds; the old rows are handed to the new
    writer, which writes them back (before the new rows) at its first save.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        logger.experiment.metrics[:0] = rows


def model_config_for_data(config: ModelConfig, data: ManifestDataModule) -> ModelConfig:
    """The model config with the text encoder sized to the fitted tokenizer and max_length."""
    if "text" not in config.modalities or data.tokenizer is None:
        return config
    config = config.model_copy(deep=True)
    encoder = config.encoder_for("text")
    if encoder.name == "transformer":
        encoder.params = {**encoder.params, "vocab_size": data.tokenizer.vocab_size,
                          "max_length": max(encoder.params.get("max_length", 0), data.config.max_length)}
        config.modalities["text"].encoder = encoder
    return config


def fit_vitals_statistics(model: MultimodalClassifier, data: ManifestDataModule) -> None:
    """Fit every vitals standardiser of the model (encoder or early featurizer) on the training split."""
    vitals = data.training_vitals()
    if vitals is None:
        return
    for module in model.modules():
        if isinstance(module, FeatureStandardizer):
            module.fit(*vitals)


def class_weights(counts: np.ndarray) -> torch.Tensor:
    """(K,) weights n / (K * n_k), the inverse class frequency normalised to mean 1 over samples."""
    counts = np.maximum(counts, 1).astype(np.float64)
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def build_run(config: TrainConfig, tokenizer: WordPieceTokenizer | None = None,
              initial: MultimodalClassifier | None = None) -> tuple[FusionSystem, ManifestDataModule]:
    """The data module (tokenizer and statistics fitted on the training split) and the Lightning module.

    Args:
        config: the run's config.
        tokenizer: an already fitted tokenizer to use instead of training one (resuming a run,
            or continuing a trained model).
        initial: a model to continue training (its frozen parameters stay as they are)
            instead of a new one built from ``config.model``; it must match ``config.model``.
    """
    data = ManifestDataModule(config.data, config.optim.batch_size, seed=config.seed, tokenizer=tokenizer)
    data.setup("fit")
    model = initial if initial is not None else build_model(model_config_for_data(config.model, data))
    if initial is None:
        fit_vitals_statistics(model, data)
    weights = class_weights(data.class_counts()) if config.balance.class_weights == "auto" else None
    return FusionSystem(model, config.optim, config.balance, weights, task=config.task), data


#: Lightning warnings that say nothing about the run: a torch deprecation inside Lightning, the
#: data module's own transfer hook, and the test pass reloading a checkpoint without the fit callbacks.
HARMLESS_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)", r"You have overridden `transfer_batch_to_device`",
                     r"Be aware that when using `ckpt_path`")


#: Lightning's info lines that a quiet run (``run.progress: false``, e.g. inside ``medfusion compare``)
#: leaves out; the distributed set-up lines stay.
CHATTER = ("GPU available", "TPU available", "HPU available", "💡 Tip", "Restoring states from the checkpoint",
           "Loaded model weights from the checkpoint", "`Trainer.fit` stopped")


class _ChatterFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CHATTER)


@contextlib.contextmanager
def lightning_chatter(quiet: bool):
    """Drop :data:`HARMLESS_WARNINGS`; with ``quiet`` also the :data:`CHATTER` info lines."""
    loggers = [logging.getLogger(f"lightning.{part}.utilities.rank_zero") for part in ("pytorch", "fabric")]
    chatter = _ChatterFilter()
    with warnings.catch_warnings():
        for message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        if quiet:
            for lg in loggers:
                lg.addFilter(chatter)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(chatter)


def _test_best(config: TrainConfig, system, data, is_global_zero: bool, best: str) -> dict[str, float]:
    """Test metrics of the best checkpoint, on rank 0 alone; {} on the other ranks.

    One device: with "ddp" the other ranks have left (a distributed test would wait for them),
    with "ddp_spawn" a respawned test would rewrite metrics.csv, and every test sample counts once.
    """
    if not is_global_zero:
        return {}
    tester = L.Trainer(accelerator=config.run.accelerator, devices=1, num_nodes=1, logger=False,
                       enable_checkpointing=False, enable_progress_bar=config.run.progress,
                       enable_model_summary=False, deterministic=True)
    return tester.test(system, datamodule=data, ckpt_path=best, verbose=False)[0]


def train(config: TrainConfig, resume: bool = False, *, initial: MultimodalClassifier | None = None,
          tokenizer: WordPieceTokenizer | None = None) -> dict[str, Any]:
    """Train, keep the best and last checkpoints, test the best one, and write ``run.json``.

    ``initial`` and ``tokenizer`` continue an existing model (see :func:`build_run`).

    Raises:
        ValueError: on ``resume`` without a last checkpoint in the run folder.
    """
    out = Path(config.run.out).resolve()  # absolute, as Lightning's checkpoint paths are
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise ValueError(f"resume: no checkpoint at {last}; start the run without --resume")
    out.mkdir(parents=True, exist_ok=True)
    save_train_config(config, out / "config.yaml")
    torch.set_num_threads(config.run.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    # resuming: the vocabulary the checkpoint was trained with (retraining may number the tokens differently)
    if resume and (out / TOKENIZER_FILE).is_file():
        tokenizer = WordPieceTokenizer.from_file(out / TOKENIZER_FILE)
    system, data = build_run(config, tokenizer, initial)
    data.save_fitted(out)
    monitor = MONITORS[config.task]
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor, mode="max",
                                 enable_version_counter=False)
    # a second callback, not save_last=True: Lightning's save_last rewrites last.ckpt only when best.ckpt is
    # rewritten; without a monitor this one saves at the end of every epoch
    latest = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False)
    callbacks: list[L.Callback] = [checkpoint, latest, RandomStateCallback(),
                                   EarlyStopping(monitor=monitor, mode="max", patience=config.optim.patience)]
    if config.run.progress:
        callbacks.append(RichProgressBar())
    csv_logger = CSVLogger(out, name="logs", version="")
    if resume:
        keep_logged_rows(csv_logger)
    with lightning_chatter(quiet=not config.run.progress):
        trainer = L.Trainer(
            max_epochs=config.optim.max_epochs, accelerator=config.run.accelerator, devices=config.run.devices,
            strategy=config.run.strategy, num_nodes=config.run.num_nodes, deterministic=True,
            gradient_clip_val=config.optim.gradient_clip or None, callbacks=callbacks,
            logger=[csv_logger, TensorBoardLogger(out, name="tb", version="")],
            plugins=[AtomicCheckpointIO()], enable_progress_bar=config.run.progress, enable_model_summary=False,
            log_every_n_steps=1, num_sanity_val_steps=0)
        start = time.perf_counter()
        trainer.fit(system, datamodule=data, ckpt_path=str(last) if resume else None)
        seconds = time.perf_counter() - start
        best = checkpoint.best_model_path or str(last)
        tested = _test_best(config, system, data, trainer.is_global_zero, best)
    summary = {
        "seed": config.seed, "epochs": trainer.current_epoch, "train_seconds": seconds,
        "best_checkpoint": str(Path(best).relative_to(out)) if best else None,
        "task": config.task,
        f"best_{monitor.replace('/', '_')}": None if checkpoint.best_model_score is None
        else float(checkpoint.best_model_score),
        "test": {k: float(v) for k, v in tested.items()},
        "parameters": sum(p.numel() for p in system.model.parameters() if p.requires_grad),
        "train_patients": int(len(np.unique(data.dataset("train").patient_ids[data.train_indices]))),
    }
    if trainer.is_global_zero:
        atomic_write_text(out / "run.json", json.dumps(summary, indent=2))
    return summary


def load_trained(run_dir: str | Path, checkpoint: str = "best") -> tuple[MultimodalClassifier, ManifestDataModule,
                                                                          TrainConfig]:
    """The trained model of a run folder (eval mode), its data module (fitted tokenizer) and config.

    Raises:
        ValueError: naming the missing file when the folder is not a finished run.
    """
    from medfusion.data.tokenizer import WordPieceTokenizer
    from medfusion.train.config import load_train_config
    from medfusion.train.data import TOKENIZER_FILE

    run_dir = Path(run_dir)
    for name in ("config.yaml", f"checkpoints/{checkpoint}.ckpt"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir}: not a finished run, {name} is missing")
    config = load_train_config(run_dir / "config.yaml")
    tokenizer_path = run_dir / TOKENIZER_FILE
    tokenizer = WordPieceTokenizer.from_file(tokenizer_path) if tokenizer_path.is_file() else None
    data = ManifestDataModule(config.data, config.optim.batch_size, seed=config.seed, tokenizer=tokenizer)
    data.setup("test")
    model = build_model(model_config_for_data(config.model, data))
    state = torch.load(run_dir / "checkpoints" / f"{checkpoint}.ckpt", map_location="cpu", weights_only=True)
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(weights)
    return model.eval(), data, config


def run_fingerprint(run_dir: str | Path, checkpoint: str = "best") -> str:
    """``sha256:<16 hex>`` of a run's checkpoint file and tokenizer: equal only for the same model.

    Raises:
        ValueError: when the checkpoint is missing.
    """
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a finished run, checkpoints/{checkpoint}.ckpt is missing")
    digest = hashlib.sha256()
    for file in (path, run_dir / TOKENIZER_FILE):
        if file.is_file():
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"

"""Training a report generator: one run from a config to checkpoints, logs and a run summary.

Run folder (``run.out``)::

    config.yaml                  the resolved report config
    tokenizer.json               WordPiece vocabulary fitted on the training reports
    checkpoints/best.ckpt        lowest validation loss (atomic)
    checkpoints/last.ckpt        end of the latest epoch (``resume=True`` continues from it)
    logs/metrics.csv             per-epoch losses and token accuracies (CSV logger)
    run.json                     seed, epochs, best validation loss, test loss and accuracy, timings

**Which checkpoint is best.** The one with the lowest validation cross-entropy per report
token (teacher forcing, padding excluded; ``val/loss``), and early stopping follows the
same. Token accuracy under teacher forcing was the alternative: it moves in steps on a
small validation split and ties across epochs (templated reports make most next tokens
easy), while the loss keeps ranking epochs by how sure the model is of the rarer, image-
dependent words (the regions and findings). Text metrics of generated reports (BLEU, ...)
would need decoding every epoch, too slow on a CPU.

**Resuming.** The shuffle order is a function of (seed, epoch) and the random-number
states are stored in every checkpoint (:class:`~medfusion.train.run.RandomStateCallback`),
so a run resumed from ``last.ckpt`` ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.files import atomic_write_text
from medfusion.models.report_config import build_report_generator
from medfusion.models.report_generator import ReportGenerator
from medfusion.train.report_config import (
    ReportOptimConfig, ReportTrainConfig, load_report_config, save_report_config,
)
from medfusion.train.report_data import TOKENIZER_FILE, ReportDataModule, special_ids
from medfusion.train.run import AtomicCheckpointIO, RandomStateCallback, keep_logged_rows, lightning_chatter
from medfusion.types import MultimodalBatch

#: What the best checkpoint and early stopping follow (lower is better).
MONITOR = "val/loss"


class ReportSystem(L.LightningModule):
    """Teacher-forced training, validation and test steps around a built report generator.

    Logged per epoch: ``<stage>/loss`` (cross-entropy per target token, no label smoothing),
    ``<stage>/accuracy`` (share of target tokens predicted by the argmax), both averaged
    over the epoch's tokens; in training also ``train/objective`` (the loss minimised, with
    label smoothing).

    Args:
        model: the generator to train (this module never builds one).
        optim: learning rate and weight decay.
    """

    def __init__(self, model: ReportGenerator, optim: ReportOptimConfig) -> None:
        super().__init__()
        self.model, self.optim = model, optim

    def _losses(self, batch: MultimodalBatch, stage: str) -> dict[str, torch.Tensor]:
        tokens, mask = batch.inputs["text"], batch.masks["text"]
        losses = self.model.loss(batch.inputs["image"], tokens, mask)
        targets = int(mask[:, 1:].sum())  # Lightning weights each batch by this: per-token epoch means
        self.log(f"{stage}/loss", losses["cross_entropy"].detach(), on_step=False, on_epoch=True,
                 prog_bar=stage != "test", batch_size=targets)
        self.log(f"{stage}/accuracy", losses["accuracy"], on_step=False, on_epoch=True, batch_size=targets)
        return losses

    def training_step(self, batch: MultimodalBatch, batch_index: int) -> torch.Tensor:
        losses = self._losses(batch, "train")
        self.log("train/objective", losses["total"].detach(), on_step=False, on_epoch=True,
                 batch_size=int(batch.masks["text"][:, 1:].sum()))
        return losses["total"]

    def validation_step(self, batch: MultimodalBatch, batch_index: int) -> None:
        self._losses(batch, "val")

    def test_step(self, batch: MultimodalBatch, batch_index: int) -> None:
        self._losses(batch, "test")

    def transfer_batch_to_device(self, batch: MultimodalBatch, device: torch.device, dataloader_idx: int):
        return batch.to(device)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)


def build_report_model(config: ReportTrainConfig, tokenizer: WordPieceTokenizer) -> ReportGenerator:
    """The generator of ``config.model`` sized to ``tokenizer``'s vocabulary and special ids."""
    ids = special_ids(tokenizer)
    return build_report_generator(config.model.generator_config(tokenizer.vocab_size, ids.pad, ids.bos, ids.eos))


def encoder_channels(config: ReportTrainConfig) -> int:
    """Image channels the configured encoder takes (its ``in_channels``, default 1)."""
    return int(config.model.encoder.params.get("in_channels", 1))


def train_report(config: ReportTrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train a report generator, keep the best and last checkpoints, test the best one, write ``run.json``.

    Args:
        config: the run's config.
        resume: continue from ``checkpoints/last.ckpt`` of ``config.run.out`` (with its tokenizer).

    Returns:
        The run summary also written to ``run.json``: seed, epochs, train_seconds (of this
        call: a resumed run counts from the resume), best_checkpoint, best_val_loss, test
        (loss, accuracy of the best checkpoint), parameters, train_pairs, vocab_size.

    Raises:
        ValueError: on ``resume`` without a last checkpoint, or bad data (naming the file or column).
    """
    out = Path(config.run.out).resolve()
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise ValueError(f"resume: no checkpoint at {last}; start the run without resume")
    out.mkdir(parents=True, exist_ok=True)
    save_report_config(config, out / "config.yaml")
    torch.set_num_threads(config.run.threads)
    L.seed_everything(config.seed, workers=True, verbose=False)
    tokenizer = WordPieceTokenizer.from_file(out / TOKENIZER_FILE) if resume else None
    data = ReportDataModule(config.data, encoder_channels(config), config.optim.batch_size, config.seed, tokenizer)
    data.setup("fit")
    data.save_fitted(out)
    system = ReportSystem(build_report_model(config, data.tokenizer), config.optim)

    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=MONITOR, mode="min",
                           enable_version_counter=False)
    latest = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False)
    callbacks: list[L.Callback] = [best, latest, RandomStateCallback(),
                                   EarlyStopping(monitor=MONITOR, mode="min", patience=config.optim.patience)]
    if config.run.progress:
        callbacks.append(RichProgressBar())
    logger = CSVLogger(out, name="logs", version="")
    if resume:
        keep_logged_rows(logger)
    with lightning_chatter(quiet=not config.run.progress):
        trainer = L.Trainer(
            max_epochs=config.optim.max_epochs, accelerator="cpu", devices=1, deterministic=True,
            gradient_clip_val=config.optim.gradient_clip or None, callbacks=callbacks, logger=logger,
            plugins=[AtomicCheckpointIO()], enable_progress_bar=config.run.progress, enable_model_summary=False,
            log_every_n_steps=1, num_sanity_val_steps=0)
        start = time.perf_counter()
        trainer.fit(system, datamodule=data, ckpt_path=str(last) if resume else None)
        seconds = time.perf_counter() - start
        best_path = best.best_model_path or str(last)
        tester = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False, deterministic=True)
        tested = tester.test(system, datamodule=data, ckpt_path=best_path, verbose=False)[0]
    summary = {
        "seed": config.seed, "epochs": trainer.current_epoch, "train_seconds": seconds,
        "best_checkpoint": str(Path(best_path).relative_to(out)),
        "best_val_loss": None if best.best_model_score is None else float(best.best_model_score),
        "test": {key: float(value) for key, value in tested.items()},
        "parameters": sum(p.numel() for p in system.model.parameters() if p.requires_grad),
        "train_pairs": len(data.usable("train")), "vocab_size": data.tokenizer.vocab_size,
    }
    atomic_write_text(out / "run.json", json.dumps(summary, indent=2))
    return summary


def load_report_run(run_dir: str | Path, checkpoint: str = "best") -> tuple[ReportGenerator, WordPieceTokenizer,
                                                                            ReportTrainConfig]:
    """The trained generator of a run folder (eval mode), its tokenizer and its config.

    Args:
        run_dir: a folder written by :func:`train_report`.
        checkpoint: "best" or "last".

    Raises:
        ValueError: naming the missing file when the folder is not a finished run.
    """
    run_dir = Path(run_dir)
    for name in ("config.yaml", TOKENIZER_FILE, f"checkpoints/{checkpoint}.ckpt"):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir}: not a finished report run, {name} is missing")
    config = load_report_config(run_dir / "config.yaml")
    tokenizer = WordPieceTokenizer.from_file(run_dir / TOKENIZER_FILE)
    model = build_report_model(config, tokenizer)
    state = torch.load(run_dir / "checkpoints" / f"{checkpoint}.ckpt", map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()
                           if k.startswith("model.")})
    return model.eval(), tokenizer, config

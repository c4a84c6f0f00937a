"""Typed training configuration (YAML): data, model, optimisation, imbalance handling, run.

Example (``configs/triage/late.yaml``)::

    seed: 0
    data:
      manifest: data/triage/manifest.parquet
      label: pneumonia
      modalities: {image: image, text: text}
      vitals_columns: [temperature, heart_rate, spo2, respiratory_rate, systolic_bp, diastolic_bp]
    model:
      fusion: {name: late, params: {rule: learned}}
      modalities: {image: {encoder: {name: cnn}}, text: {encoder: {name: transformer}}, vitals: {}}
    optim: {lr: 0.001, batch_size: 64, max_epochs: 10}
    balance: {class_weights: auto, modality: ogm_ge}

Every field is checked when the file is loaded: a bad value fails before any training
with the field, the bad value and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medfusion.files import atomic_write_text
from medfusion.models.config import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class DataConfig(_Strict):
    """Where the samples come from: a manifest (see :class:`~medfusion.data.datasets.ManifestDataset`)."""

    manifest: Path = Field(description="manifest CSV or Parquet; relative paths resolve against the config file")
    label: str = Field(description="label column (integer classes)")
    modalities: dict[str, str] = Field(description="modality -> path (or inline text) column of the manifest")
    vitals_columns: list[str] = Field(default_factory=list, description="manifest columns forming the vitals vector")
    splits: dict[str, str] = Field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"},
                                   description="role -> split name in the manifest")
    vocab_size: int = Field(2000, ge=16, description="WordPiece vocabulary trained on the training notes")
    max_length: int = Field(96, ge=8, description="longest token sequence")
    train_fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of training patients used (learning curves)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    on_error: Literal["raise", "skip"] = Field("raise", description="unreadable files: stop, or skip and report")


class OptimConfig(_Strict):
    """Optimisation and stopping."""

    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(64, ge=2)
    max_epochs: int = Field(10, ge=1)
    patience: int = Field(3, ge=1, description="early stopping: epochs without val AUROC improvement")
    gradient_clip: float = Field(1.0, ge=0.0, description="gradient norm clip; 0 disables")


class BalanceConfig(_Strict):
    """Class and modality imbalance."""

    class_weights: Literal["auto", "none"] = Field(
        "auto", description="auto: cross-entropy weights inverse to training class frequencies")
    modality: Literal["none", "ogm_ge", "gradient_blending"] = Field(
        "none", description="ogm_ge: on-the-fly gradient modulation with generalisation enhancement (Peng et al. "
                            "2022); gradient_blending: fused + unimodal losses weighted by their generalisation/"
                            "overfitting ratio, re-estimated each epoch (Wang et al. 2020)")
    ogm_alpha: float = Field(0.5, gt=0.0, description="OGM-GE modulation strength alpha")
    probe_weight: float = Field(1.0, ge=0.0, description="weight of the per-modality probe losses (detached features)")


class RunConfig(_Strict):
    """Where and how the run executes."""

    out: Path = Field(Path("runs/run"), description="run folder (checkpoints, logs, metrics)")
    accelerator: str = Field("cpu", description="Lightning accelerator: cpu, gpu, auto")
    devices: int | str = Field(1, description="number of devices or 'auto'")
    strategy: str = Field("auto", description="Lightning strategy: auto, ddp, ddp_spawn, ...")
    num_nodes: int = Field(1, ge=1)
    threads: int = Field(2, ge=1, description="torch CPU threads per process")
    progress: bool = Field(True, description="Rich progress bar")


#: What each task's checkpoints and early stopping follow on the validation split.
MONITORS: dict[str, str] = {"classification": "val/auroc", "contrastive": "val/recall_mean"}


class TrainConfig(_Strict):
    """A training run.

    ``task``: ``classification`` trains the head on the label (plus the fusion's auxiliary
    losses); ``contrastive`` trains a dual encoder (joint-embedding fusion) on the paired
    modalities alone, with the symmetric contrastive loss, and keeps the checkpoint with the
    best mean validation Recall@1/5/10 in both directions.
    """

    seed: int = 0
    task: Literal["classification", "contrastive"] = "classification"
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        data_modalities = set(self.data.modalities) | ({"vitals"} if self.data.vitals_columns else set())
        model_modalities = set(self.model.modalities)
        if data_modalities != model_modalities:
            raise ValueError(f"data provides modalities {sorted(data_modalities)} but model.modalities names "
                             f"{sorted(model_modalities)}; expected the same set")
        if self.balance.modality == "ogm_ge" and self.model.fusion.name == "early":
            raise ValueError("balance.modality: 'ogm_ge' modulates encoder gradients; early fusion has no encoders "
                             "(allowed with early: 'none')")
        if self.task == "contrastive" and self.model.fusion.name != "joint_embedding":
            raise ValueError(f"task: 'contrastive' trains a joint embedding; expected model.fusion.name "
                             f"'joint_embedding', received {self.model.fusion.name!r}")
        if self.task == "contrastive" and self.balance.modality != "none":
            raise ValueError(f"balance.modality: {self.balance.modality!r} balances classification losses; "
                             "a contrastive task allows 'none'")
        if self.task == "contrastive" and len(model_modalities) < 2:
            raise ValueError(f"task: 'contrastive' needs pairs; expected at least 2 modalities, "
                             f"received {sorted(model_modalities)}")
        if self.model.num_classes != 2:
            raise ValueError(f"model.num_classes: expected 2 (binary labels are trained here), "
                             f"received {self.model.num_classes}")
        return self


def load_config_file(path: str | Path, schema: type[ConfigT], overrides: dict[str, Any] | None = None) -> ConfigT:
    """Read a YAML config, merge ``overrides``, validate it with ``schema``, and resolve its
    relative ``data.manifest`` and ``run.out`` against the file's folder (a ``run.out`` given
    in ``overrides`` stays relative to the working directory).

    Raises:
        ValueError: naming the file, the bad field, value and allowed values.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of fields, received {type(raw).__name__}")
    raw = merge_overrides(raw, overrides or {})
    try:
        config = schema.model_validate(raw)
    except ValidationError as error:
        raise ValueError(f"{path} is invalid:\n{error}") from None
    if not config.data.manifest.is_absolute():
        config.data.manifest = (path.parent / config.data.manifest).resolve()
    if not config.run.out.is_absolute() and "out" not in (overrides or {}).get("run", {}):
        config.run.out = (path.parent / config.run.out).resolve()
    return config


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load and validate a training config; relative data/run paths resolve against the file's folder.

    Args:
        path: YAML or JSON file.
        overrides: nested values replacing the file's (e.g. ``{"run": {"out": "runs/x"}}``).

    Raises:
        ValueError: naming the file, the bad field, value and allowed values.
    """
    return load_config_file(path, TrainConfig, overrides)


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def merge_overrides(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, nested mappings key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge_overrides(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged

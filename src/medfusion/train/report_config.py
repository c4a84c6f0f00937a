"""Typed configuration of a report-generation run (YAML): data, model, optimisation, decoding, run.

Example (``configs/pathology/report.yaml``)::

    seed: 0
    data: {manifest: ../../data/pathology/manifest.parquet, domain: pathology, image_size: 64,
           vocab_size: 600, max_length: 96}
    model:
      encoder: {name: cnn, params: {in_channels: 3, widths: [32, 64, 128], out_dim: 128}}
      decoder: {dim: 128, layers: 2, heads: 4, max_length: 96}
    optim: {lr: 0.0005, batch_size: 32, max_epochs: 20, patience: 3}
    decode: {methods: [beam, greedy], beam_size: 3}
    run: {out: ../../runs/pathology/report}

The model section is a :class:`~medfusion.models.report_config.ReportGeneratorConfig`
without ``vocab_size`` and the special ids: those come from the tokenizer fitted on the
training reports (:meth:`ReportModelConfig.generator_config`). Every field is checked when
the file is loaded: a bad value fails before any training with the field, the bad value
and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medfusion.files import atomic_write_text
from medfusion.models.config import EncoderConfig
from medfusion.models.report_config import DecoderConfig, ReportGeneratorConfig
from medfusion.train.config import load_config_file

#: Split roles a report run reads.
ROLES: tuple[str, ...] = ("train", "val", "test")
#: Decoding methods of :meth:`~medfusion.models.report_generator.ReportGenerator.generate`.
METHODS: tuple[str, ...] = ("greedy", "beam")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportDataConfig(_Strict):
    """Image-report pairs of a manifest (see :class:`~medfusion.data.datasets.ManifestDataset`)."""

    manifest: Path = Field(description="manifest CSV or Parquet; relative paths resolve against the config file")
    image_column: str = Field("image", description="column of the image paths (PNG, JPEG, TIFF, DICOM)")
    report_column: str = Field("text", description="column of the report (.txt path or inline text)")
    domain: Literal["pathology", "chest"] = Field(
        "pathology", description="finding lexicon of the clinical scores and the grounding (FindingLabeler)")
    image_size: int | None = Field(None, ge=16, description="resize images to this square side; None keeps them")
    vocab_size: int = Field(1000, ge=16, description="WordPiece vocabulary trained on the training reports")
    max_length: int = Field(96, ge=8, description="longest report in tokens, bos and eos included (longer: cut)")
    splits: dict[str, str] = Field(default_factory=lambda: {role: role for role in ROLES},
                                   description="role (train, val, test) -> split name in the manifest")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    on_error: Literal["raise", "skip"] = Field("raise", description="unreadable files: stop, or skip and report")

    @field_validator("splits")
    @classmethod
    def _every_role(cls, splits: dict[str, str]) -> dict[str, str]:
        if set(splits) != set(ROLES):
            raise ValueError(f"expected exactly the roles {list(ROLES)}, received {sorted(splits)}")
        return splits


class ReportModelConfig(_Strict):
    """The image encoder (by registry name) and the text decoder; sizes of the vocabulary come later."""

    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(name="cnn"),
                                   description="registered image encoder and its parameters")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)

    def generator_config(self, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> ReportGeneratorConfig:
        """The full generator config for a fitted tokenizer's vocabulary and special ids.

        Raises:
            ValueError: on special ids that are not distinct ids of the vocabulary.
        """
        try:
            return ReportGeneratorConfig(vocab_size=vocab_size, modality="image", encoder=self.encoder,
                                         decoder=self.decoder, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)
        except ValidationError as error:
            raise ValueError(f"report model: {error}") from None


class ReportOptimConfig(_Strict):
    """Optimisation and stopping."""

    lr: float = Field(5e-4, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0.0, description="AdamW weight decay")
    batch_size: int = Field(32, ge=2)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=1, description="early stopping: epochs without a lower validation loss")
    gradient_clip: float = Field(1.0, ge=0.0, description="gradient norm clip; 0 disables")


class DecodeConfig(_Strict):
    """How reports are written at evaluation and by ``medfusion report``."""

    methods: list[Literal["greedy", "beam"]] = Field(
        default_factory=lambda: ["beam", "greedy"],
        description="methods evaluated, each a row of the table; the first is the default of `medfusion report`")
    beam_size: int = Field(4, ge=1, description="beams per image (method beam)")
    length_penalty: float = Field(1.0, description="GNMT alpha; 0 ranks by log-probability, > 0 favours longer")
    no_repeat_ngram: int = Field(0, ge=0, description="never repeat an n-gram of this size; 0 disables")
    min_length: int = Field(0, ge=0, description="fewest report tokens before eos")
    max_length: int | None = Field(None, ge=1, description="most generated tokens; None: the decoder's limit")

    @field_validator("methods")
    @classmethod
    def _distinct(cls, methods: list[str]) -> list[str]:
        if not methods or len(set(methods)) != len(methods):
            raise ValueError(f"expected distinct methods from {list(METHODS)}, at least one, received {methods}")
        return methods


class ReportRunConfig(_Strict):
    """Where and how the run executes (CPU)."""

    out: Path = Field(Path("runs/report"), description="run folder (checkpoints, logs, metrics)")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    progress: bool = Field(True, description="Rich progress bar")


class ReportTrainConfig(_Strict):
    """A report-generation training run (``task: report``; ``medfusion train`` dispatches on it)."""

    task: Literal["report"] = Field("report", description="marks a report-generation config")
    seed: int = 0
    data: ReportDataConfig
    model: ReportModelConfig = Field(default_factory=ReportModelConfig)
    optim: ReportOptimConfig = Field(default_factory=ReportOptimConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    run: ReportRunConfig = Field(default_factory=ReportRunConfig)

    @model_validator(mode="after")
    def _lengths(self) -> ReportTrainConfig:
        limit = self.model.decoder.max_length
        if self.data.max_length > limit:
            raise ValueError(f"data.max_length: expected at most model.decoder.max_length={limit}, "
                             f"received {self.data.max_length}")
        if self.decode.max_length is not None and self.decode.max_length > limit - 1:
            raise ValueError(f"decode.max_length: expected at most model.decoder.max_length - 1 = {limit - 1} "
                             f"(bos takes a position), received {self.decode.max_length}")
        return self


def is_report_config(path: str | Path) -> bool:
    """Whether a YAML file is a report-generation config (top-level ``task: report``); False when unreadable."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and raw.get("task") == "report"


def load_report_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ReportTrainConfig:
    """Load and validate a report config; relative manifest and run paths resolve against the file's folder.

    Args:
        path: YAML or JSON file.
        overrides: nested values replacing the file's (e.g. ``{"run": {"out": "runs/x"}}``); a
            relative ``run.out`` given here stays relative to the working directory.

    Raises:
        ValueError: naming the file, the bad field, value and allowed values.
    """
    return load_config_file(path, ReportTrainConfig, overrides)


def save_report_config(config: ReportTrainConfig, path: str | Path) -> None:
    """Write ``config`` as YAML atomically."""
    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

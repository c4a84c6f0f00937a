"""Typed configuration of a report generator and ``build_report_generator(config)``.

Example (YAML)::

    vocab_size: 8000
    encoder: {name: cnn, params: {in_channels: 1, out_dim: 128}}
    decoder: {dim: 128, layers: 2, heads: 4, max_length: 128}

Unknown fields and unknown encoder names or parameters fail, naming the bad value and
the allowed ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import medfusion.encoders  # noqa: F401  (registers the encoders)
from medfusion.encoders.base import ENCODERS
from medfusion.models.config import EncoderConfig
from medfusion.models.report_generator import ReportGenerator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecoderConfig(_Strict):
    """Sizes and training settings of the text decoder."""

    dim: int = Field(128, ge=1, description="decoder width")
    layers: int = Field(2, ge=1, description="decoder layers")
    heads: int = Field(4, ge=1, description="attention heads; must divide dim")
    ff_mult: int = Field(4, ge=1, description="feed-forward hidden size as a multiple of dim")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in training")
    max_length: int = Field(128, ge=2, description="longest token sequence, bos and eos included")
    tie_embeddings: bool = Field(True, description="share the output projection with the token embedding")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the training loss")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> DecoderConfig:
        if self.dim % self.heads:
            raise ValueError(f"expected heads to divide dim={self.dim}, received heads={self.heads}")
        return self


class ReportGeneratorConfig(_Strict):
    """An image encoder (by registry name) and a text decoder."""

    vocab_size: int = Field(ge=1, description="the tokenizer's vocabulary size")
    modality: Literal["image", "volume"] = Field("image", description="registry the encoder is taken from")
    encoder: EncoderConfig = Field(default_factory=lambda: EncoderConfig(name="cnn"),
                                   description="registered image/volume encoder and its parameters")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    pad_id: int = Field(0, ge=0, description="padding id ([PAD] of the WordPiece tokenizer)")
    bos_id: int = Field(2, ge=0, description="first token of every report ([CLS])")
    eos_id: int = Field(3, ge=0, description="last token of every report ([SEP])")

    @model_validator(mode="after")
    def _special_ids(self) -> ReportGeneratorConfig:
        ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        if len(set(ids.values())) != 3:
            raise ValueError(f"expected distinct special ids, received {ids}")
        outside = {name: value for name, value in ids.items() if value >= self.vocab_size}
        if outside:
            raise ValueError(f"expected special ids below vocab_size={self.vocab_size}, received {outside}")
        return self


def build_report_generator(config: ReportGeneratorConfig | dict) -> ReportGenerator:
    """Build the encoder named by ``config`` and the decoder around it.

    Args:
        config: a :class:`ReportGeneratorConfig` or a plain dict of its fields.

    Raises:
        ValueError: on an invalid config, an unknown encoder name (listing the known ones)
            or a parameter the encoder does not accept (listing the accepted ones).

    Example::

        model = build_report_generator({"vocab_size": 8000, "encoder": {"name": "cnn"}})
    """
    if isinstance(config, dict):
        config = ReportGeneratorConfig.model_validate(config)
    elif not isinstance(config, ReportGeneratorConfig):
        raise ValueError(f"report generator: expected a ReportGeneratorConfig or dict, received "
                         f"{type(config).__name__}")
    encoder = ENCODERS[config.modality].build(config.encoder.name, **config.encoder.params)
    decoder = config.decoder
    return ReportGenerator(
        encoder, config.vocab_size, dim=decoder.dim, layers=decoder.layers, heads=decoder.heads,
        ff_mult=decoder.ff_mult, dropout=decoder.dropout, max_length=decoder.max_length, pad_id=config.pad_id,
        bos_id=config.bos_id, eos_id=config.eos_id, tie_embeddings=decoder.tie_embeddings,
        label_smoothing=decoder.label_smoothing,
    )

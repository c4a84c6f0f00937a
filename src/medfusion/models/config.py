"""Typed model configuration, loadable from and savable to YAML or JSON.

Example (YAML)::

    num_classes: 2
    modalities:
      text: {encoder: {name: transformer, params: {vocab_size: 8000, dim: 64}}}
      image: {encoder: {name: cnn, params: {in_channels: 1}}, featurizer: {size: 16}}
    fusion: {name: cross_attention, params: {query: text, layers: 1}}
    head: {hidden: 0, dropout: 0.1}
    modality_dropout: 0.1

Unknown fields, unknown registry names and parameters a builder does not accept fail
when the config is loaded or built, naming the field, the bad value and the allowed ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfusion.files import atomic_write_text
from medfusion.types import check_modality

#: Encoder used for a modality when its config names none.
DEFAULT_ENCODERS: dict[str, str] = {
    "text": "transformer",
    "image": "cnn",
    "volume": "cnn",
    "signal": "resnet1d",
    "vitals": "mlp",
    "video": "frames_transformer",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderConfig(_Strict):
    """One modality's encoder."""

    name: str = Field(description="registry name, e.g. 'cnn', 'transformer', 'pretrained'")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the encoder")


class ModalityConfig(_Strict):
    """What the model does with one modality."""

    encoder: EncoderConfig | None = Field(None, description="learned encoder; None: the modality's default")
    featurizer: dict[str, Any] = Field(
        default_factory=dict, description="parameters of the fixed featurizer used by early fusion"
    )


class FusionConfig(_Strict):
    """The fusion strategy."""

    name: str = Field(description="early, intermediate, late, cross_attention or joint_embedding")
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the strategy")


class HeadConfig(_Strict):
    """Classification head over the fused vector (unused by late fusion)."""

    hidden: int = Field(0, ge=0, description="hidden units; 0 for a linear head")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the output layer")


class ModelConfig(_Strict):
    """A multimodal classifier."""

    num_classes: int = Field(2, ge=2, description="number of classes K")
    modalities: dict[str, ModalityConfig] = Field(description="modality name -> its config")
    fusion: FusionConfig
    head: HeadConfig = Field(default_factory=HeadConfig)
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="training-time modality dropout")
    auxiliary_loss_weight: float = Field(1.0, ge=0.0, description="weight of unimodal/contrastive losses")

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, value: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        if not value:
            raise ValueError("expected at least one modality")
        for name in value:
            check_modality(name)
        return value

    def encoder_for(self, modality: str) -> EncoderConfig:
        """The encoder config of ``modality`` (its default when none is given)."""
        return self.modalities[modality].encoder or EncoderConfig(name=DEFAULT_ENCODERS[modality])


def load_config(path: str | Path) -> ModelConfig:
    """Read a :class:`ModelConfig` from a ``.yaml``/``.yml`` or ``.json`` file.

    Raises:
        ValueError: naming the file when it is missing, unparsable or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"config file {path} could not be parsed: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at the top level, received {type(data).__name__}")
    try:
        return ModelConfig.model_validate(data)
    except ValueError as error:
        raise ValueError(f"config file {path} is invalid:\n{error}") from None


def save_config(config: ModelConfig, path: str | Path) -> None:
    """Write ``config`` atomically as YAML (or JSON for a ``.json`` path)."""
    path = Path(path)
    data = config.model_dump(mode="json")
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(path, text)

"""``build_model(config)``: a typed config in, an assembled classifier out."""

from __future__ import annotations

from pathlib import Path

import medfusion.encoders  # noqa: F401  (registers the encoders)
import medfusion.fusion  # noqa: F401  (registers the fusions)
from medfusion.encoders.base import ENCODERS
from medfusion.fusion.base import FUSIONS
from medfusion.fusion.featurizers import build_featurizer
from medfusion.models.classifier import ClassificationHead, MultimodalClassifier
from medfusion.models.config import ModelConfig, load_config


def build_model(config: ModelConfig | dict | str | Path) -> MultimodalClassifier:
    """Assemble encoders, fusion and head from ``config``.

    Args:
        config: a :class:`ModelConfig`, a plain dict of the same fields, or a YAML/JSON path.

    Raises:
        ValueError: on an unknown encoder/fusion name (listing the known ones) or a
            parameter a builder does not accept (listing the accepted ones).

    Example::

        model = build_model({
            "modalities": {"text": {}, "image": {}},
            "fusion": {"name": "late", "params": {"rule": "learned"}},
        })
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = ModelConfig.model_validate(config)
    fusion_builder = FUSIONS.get(config.fusion.name)
    modalities = sorted(config.modalities)
    if getattr(fusion_builder, "takes_raw_inputs", False):
        encoders = {}
        featurizers = {m: build_featurizer(m, **config.modalities[m].featurizer) for m in modalities}
        fusion = FUSIONS.build(
            config.fusion.name, featurizers=featurizers, num_classes=config.num_classes, **config.fusion.params
        )
    else:
        encoders = {}
        for m in modalities:
            spec = config.encoder_for(m)
            encoders[m] = ENCODERS[m].build(spec.name, **spec.params)
        dims = {m: encoders[m].out_dim for m in modalities}
        fusion = FUSIONS.build(config.fusion.name, dims=dims, num_classes=config.num_classes, **config.fusion.params)
    head = (
        None
        if fusion.out_dim is None
        else ClassificationHead(fusion.out_dim, config.num_classes, config.head.hidden, config.head.dropout)
    )
    return MultimodalClassifier(
        encoders,
        fusion,
        head,
        modality_dropout=config.modality_dropout,
        auxiliary_loss_weight=config.auxiliary_loss_weight,
    )

"""One smoke test over every registered encoder x fusion strategy x modality combination."""

from __future__ import annotations

import pytest
import torch

from factories import (
    COMBINATIONS,
    ENCODER_PARAMS,
    FUSION_VARIANTS,
    assert_all_parameters_have_gradients,
    first_ones_lack_one,
    make_batch,
    model_config,
)
from medfusion.encoders.base import ENCODERS
from medfusion.models import build_model

HEAVY = {("text", "pretrained"), ("volume", "densenet121"), ("image", "efficientnet_lite0"), ("image", "densenet121")}


def run_and_check(config: dict, modalities, present=None) -> None:
    torch.manual_seed(0)
    model = build_model(config)
    model.train()
    vocab = 30000 if config["modalities"].get("text", {}).get("encoder", {}).get("name") == "pretrained" else 50
    batch = make_batch(modalities, batch_size=4, present=present, text_vocab=vocab)
    output, losses = model.loss(batch)
    assert output.logits.shape == (4, 3)
    assert torch.isfinite(output.logits).all()
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert_all_parameters_have_gradients(model)


@pytest.mark.parametrize("combination", list(COMBINATIONS))
@pytest.mark.parametrize("variant", list(FUSION_VARIANTS))
def test_every_fusion_on_every_combination(variant: str, combination: str) -> None:
    modalities = COMBINATIONS[combination]
    run_and_check(model_config(variant, modalities), modalities)


def registered_encoders() -> list[tuple[str, str]]:
    return [(m, name) for m, reg in ENCODERS.items() for name in reg.names()]


def test_every_registered_encoder_has_test_settings() -> None:
    assert sorted(registered_encoders()) == sorted(ENCODER_PARAMS)


ENCODER_CASES = [
    pytest.param(m, name, marks=pytest.mark.slow) if (m, name) in HEAVY else (m, name)
    for (m, name) in sorted(ENCODER_PARAMS)
]


@pytest.mark.parametrize("variant", [v for v in FUSION_VARIANTS if v != "early"])
@pytest.mark.parametrize(("modality", "encoder"), ENCODER_CASES)
def test_every_encoder_with_every_learned_fusion(modality: str, encoder: str, variant: str) -> None:
    modalities = ("text", "image") if modality == "text" else ("text", modality)
    config = model_config(variant, modalities, encoders={modality: encoder})
    present = first_ones_lack_one(modalities, 4)
    run_and_check(config, modalities, present=present)

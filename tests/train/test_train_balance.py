"""Modality probes (detached) and OGM-GE gradient modulation, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from factories import make_batch, model_config
from medfusion.models import ModelConfig, build_model
from medfusion.train.balance import GradientBlend, ModalityProbes, modulate_gradients, ogm_ge_coefficients
from medfusion.train.config import BalanceConfig, OptimConfig
from medfusion.train.system import FusionSystem, probe_dims


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_ogm_ge_coefficients_match_a_hand_computation() -> None:
    labels = torch.tensor([0, 1, 1])
    logits = {
        # p(true) = sigmoid(2) on every row
        "image": torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0]]),
        # p(true) = 0.5 on the present rows 0 and 2
        "text": torch.zeros(3, 2),
        # present rows 0 and 2: p(true) = sigmoid(3); absent row 1 would pull the mean down if it counted
        "vitals": torch.tensor([[3.0, 0.0], [9.0, -9.0], [0.0, 3.0]]),
    }
    present = {"image": torch.tensor([True, True, True]), "text": torch.tensor([True, False, True]),
               "vitals": torch.tensor([True, False, True])}
    alpha = 0.7
    image, text, vitals = sigmoid(2.0), 0.5, sigmoid(3.0)  # 0.8808, 0.5, 0.9526
    expected = {
        "image": 1.0 - math.tanh(alpha * (image / ((text + vitals) / 2) - 1.0)),  # ratio 1.213
        "text": 1.0,  # ratio 0.545 <= 1: not modulated
        "vitals": 1.0 - math.tanh(alpha * (vitals / ((image + text) / 2) - 1.0)),  # ratio 1.380
    }
    coefficients = ogm_ge_coefficients(logits, present, labels, alpha)
    assert set(coefficients) == {"image", "text", "vitals"}
    for m in expected:
        assert coefficients[m] == pytest.approx(expected[m], rel=1e-6), m
    assert coefficients["vitals"] < coefficients["image"] < 1.0  # the most dominant is slowed most
    assert coefficients["image"] == pytest.approx(0.8522, abs=1e-4)
    assert coefficients["vitals"] == pytest.approx(0.7403, abs=1e-4)


def test_ogm_ge_weaker_modalities_and_ratio_one_keep_coefficient_one() -> None:
    labels = torch.tensor([1, 0])
    same = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    present = {m: torch.ones(2, dtype=torch.bool) for m in ("a", "b", "c")}
    coefficients = ogm_ge_coefficients({"a": same, "b": same.clone(), "c": same.clone()}, present, labels, 1.0)
    assert coefficients == {"a": 1.0, "b": 1.0, "c": 1.0}  # ratio exactly 1 -> not modulated


def test_ogm_ge_with_fewer_than_two_modalities_present_changes_nothing() -> None:
    labels = torch.tensor([1, 0])
    logits = {"image": torch.tensor([[0.0, 5.0], [5.0, 0.0]]), "text": torch.zeros(2, 2)}
    present = {"image": torch.tensor([True, True]), "text": torch.tensor([False, False])}
    assert ogm_ge_coefficients(logits, present, labels, 0.5) == {"image": 1.0, "text": 1.0}
    alone = ogm_ge_coefficients({"image": logits["image"]}, {"image": present["image"]}, labels, 0.5)
    assert alone == {"image": 1.0}


def _encoders() -> nn.ModuleDict:
    torch.manual_seed(0)
    encoders = nn.ModuleDict({"image": nn.Linear(4, 3), "text": nn.Linear(5, 2)})
    for p in encoders.parameters():
        p.grad = torch.randn_like(p)
    return encoders


def test_modulate_gradients_scales_and_adds_the_documented_noise() -> None:
    encoders = _encoders()
    before = {n: p.grad.clone() for n, p in encoders.named_parameters()}
    modulate_gradients(encoders, {"image": 0.25, "text": 1.0}, generator=torch.Generator().manual_seed(7))

    replay = torch.Generator().manual_seed(7)
    for name, parameter in encoders["image"].named_parameters():
        grad = before[f"image.{name}"]
        noise = torch.randn(grad.shape, generator=replay) * (grad.std().item() + 1e-8)
        torch.testing.assert_close(parameter.grad, grad * 0.25 + noise, rtol=1e-6, atol=1e-7)
        assert not torch.allclose(parameter.grad, grad * 0.25)  # the noise is really there
    for name, parameter in encoders["text"].named_parameters():
        assert torch.equal(parameter.grad, before[f"text.{name}"])  # coefficient 1: untouched


def test_modulate_gradients_is_reproducible_and_skips_missing_gradients() -> None:
    first, second = _encoders(), _encoders()
    first["text"].bias.grad = None
    second["text"].bias.grad = None
    for encoders in (first, second):
        modulate_gradients(encoders, {"image": 0.5, "text": 0.5}, generator=torch.Generator().manual_seed(1))
    for (name, a), b in zip(first.named_parameters(), second.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None) and (a.grad is None or torch.equal(a.grad, b.grad)), name
    assert first["text"].bias.grad is None


def _system(variant: str = "late-learned") -> tuple[FusionSystem, object]:
    torch.manual_seed(0)
    modalities = ("image", "vitals", "text")
    config = model_config(variant, modalities)
    config["num_classes"] = 2
    model = build_model(ModelConfig.model_validate(config))
    system = FusionSystem(model, OptimConfig(), BalanceConfig(modality="ogm_ge"))
    return system, make_batch(modalities, batch_size=6, num_classes=2)


def test_probes_detach_their_input() -> None:
    probes = ModalityProbes({"a": 3, "b": 2}, num_classes=2)
    features = {"a": torch.randn(4, 3, requires_grad=True), "b": torch.randn(4, 2, requires_grad=True)}
    logits = probes(features)
    present = {"a": torch.tensor([True, True, False, True]), "b": torch.tensor([False] * 4)}
    loss = probes.loss(logits, present, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert features["a"].grad is None and features["b"].grad is None
    assert probes.heads["a"].weight.grad.abs().sum() > 0
    # "b" has no present row: it adds nothing to the loss
    assert probes.heads["b"].weight.grad is None or probes.heads["b"].weight.grad.abs().sum() == 0
    expected = torch.nn.functional.cross_entropy(logits["a"][present["a"]], torch.tensor([0, 1, 1]))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("variant", ["late-learned", "intermediate", "early"])
def test_the_probe_loss_trains_the_probes_only(variant) -> None:
    system, batch = _system(variant)
    system.train()
    _, losses, probe_logits, _ = system._step(batch)
    assert set(probe_logits) == {"image", "text", "vitals"} == set(probe_dims(system.model))
    losses["probes"].backward()
    model_grads = [n for n, p in system.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert model_grads == [], model_grads
    for m, head in system.probes.heads.items():
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0, m


def test_the_objective_trains_the_encoders_and_the_probes() -> None:
    system, batch = _system()
    system.train()
    _, losses, _, _ = system._step(batch)
    losses["objective"].backward()
    for m, encoder in system.model.encoders.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), m
    assert all(h.weight.grad is not None for h in system.probes.heads.values())


# --------------------------------------------------------------------------- gradient blending


def _epoch(blend: GradientBlend, train: list[float], val: list[float]) -> dict[str, float]:
    """One epoch of per-head mean losses (recorded as two batches each), then the weight update."""
    for stage, values in (("train", train), ("val", val)):
        losses = {h: torch.tensor(v) for h, v in zip(blend.heads, values, strict=True)}
        for _ in range(2):
            blend.record(stage, losses, {h: 4 for h in blend.heads})
    return blend.update()


def test_gradient_blend_weights_match_a_hand_computation() -> None:
    blend = GradientBlend(["text", "image"])
    assert blend.heads == ["fused", "image", "text"]
    # first epoch: nothing to compare with, the weights stay uniform
    assert _epoch(blend, [1.0, 1.0, 1.0], [1.2, 1.2, 1.2]) == pytest.approx({h: 1 / 3 for h in blend.heads})
    weights = _epoch(blend, [0.5, 0.9, 0.6], [0.8, 1.1, 1.2])
    # dG = (0.4, 0.1, 0.0); dO = (0.3-0.2, 0.2-0.2, 0.6-0.2) = (0.1, 0.0, 0.4)
    raw = [0.4 / (0.01 + 1e-4), 0.1 / (0.0 + 1e-4), 0.0]
    assert weights == pytest.approx({h: r / sum(raw) for h, r in zip(blend.heads, raw, strict=True)}, rel=1e-4)
    # no head improves: the weights stay
    assert _epoch(blend, [0.4, 0.8, 0.5], [0.9, 1.2, 1.3]) == pytest.approx(weights)
    assert float(blend.sums.abs().sum()) == 0.0


def test_gradient_blend_sums_the_weighted_losses() -> None:
    blend = GradientBlend(["image", "text"])
    blend.weights.copy_(torch.tensor([0.5, 0.3, 0.2]))
    total = blend.blend({"fused": torch.tensor(2.0), "text": torch.tensor(10.0)})  # image: no rows in the batch
    assert float(total) == pytest.approx(0.5 * 2.0 + 0.2 * 10.0)


def test_gradient_blending_trains_encoders_through_the_unimodal_heads() -> None:
    system, batch = _system()
    system.balance = BalanceConfig(modality="gradient_blending")
    system.probes.detach = False
    system.blend = GradientBlend(list(system.probes.heads))
    system.train()
    _, losses, _, _ = system._step(batch)
    unimodal = sum(system.probes.losses(system.probes({m: o.pooled for m, o in system.model.encode(
        batch, system.model.presence(batch)).items()}), system.model.presence(batch), batch.labels).values())
    unimodal.backward()
    for m, encoder in system.model.encoders.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters()), m
    assert float(system.blend.sums[0, 1, 0]) == len(batch.labels)  # the training batch was recorded


def test_training_with_gradient_blending_logs_the_weights(make_config, tmp_path) -> None:
    import pandas as pd

    from medfusion.train import TrainConfig, train

    config = TrainConfig.model_validate(make_config(tmp_path / "run", "late", optim={"max_epochs": 3},
                                                    balance={"modality": "gradient_blending"}))
    train(config)
    metrics = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    columns = [f"train/blend_weight/{h}" for h in ("fused", "image", "text", "vitals")]
    weights = metrics[columns].dropna()
    assert len(weights) == 3
    assert weights.sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert weights.iloc[0].to_numpy() == pytest.approx([0.25] * 4)  # the first epoch has nothing to compare


def test_gradient_blending_is_refused_for_a_contrastive_task(make_config, tmp_path) -> None:
    from medfusion.train import TrainConfig

    raw = make_config(tmp_path, "joint_embedding", balance={"modality": "gradient_blending"})
    raw["task"] = "contrastive"
    with pytest.raises(ValueError, match="a contrastive task allows 'none'"):
        TrainConfig.model_validate(raw)

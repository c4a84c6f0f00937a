"""Missing modalities: absent rows never change any output; any missingness pattern runs."""

from __future__ import annotations

import pytest
import torch

from factories import FUSION_VARIANTS, each_lacks_one, make_batch, model_config
from medfusion.models import build_model
from medfusion.types import MultimodalBatch

MODALITIES = ("image", "vitals", "text")


def outputs_equal(a, b) -> None:
    for field, x in a._asdict().items():
        y = getattr(b, field)
        if x is None:
            assert y is None, field
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), field
            for key in x:
                torch.testing.assert_close(x[key], y[key], msg=f"{field}[{key}]")
        else:
            torch.testing.assert_close(x, y, msg=field)


def scrambled(batch: MultimodalBatch, seed: int) -> MultimodalBatch:
    """Same batch with the rows of absent modalities replaced by other values (NaN for floats)."""
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for m, x in batch.inputs.items():
        absent = ~batch.present[m]
        noise = torch.randint(1, 50, x.shape, generator=g) if m == "text" else torch.randn(x.shape, generator=g) * 100
        if m != "text":
            noise[..., 0] = float("nan")
        inputs[m] = torch.where(absent.view((-1,) + (1,) * (x.ndim - 1)), noise.to(x.dtype), x)
    return MultimodalBatch(inputs=inputs, present=batch.present, masks=batch.masks, labels=batch.labels)


@pytest.mark.parametrize("variant", list(FUSION_VARIANTS))
def test_absent_modality_values_do_not_change_outputs(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(variant, MODALITIES)).eval()
    present = {"image": torch.tensor([True, False, True, False, True, True]),
               "text": torch.tensor([True, True, False, False, True, True]),
               "vitals": torch.tensor([False, True, True, True, False, True])}
    batch = make_batch(MODALITIES, batch_size=6, present=present)
    with torch.no_grad():
        reference = model(batch, return_attention=True)
        for seed in (1, 2):
            outputs_equal(reference, model(scrambled(batch, seed), return_attention=True))


@pytest.mark.parametrize("variant", list(FUSION_VARIANTS))
def test_each_sample_lacking_a_different_modality_runs_and_trains(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(variant, MODALITIES)).train()
    batch = make_batch(MODALITIES, batch_size=6, present=each_lacks_one(MODALITIES, 6))
    output, losses = model.loss(batch)
    assert torch.isfinite(output.logits).all()
    losses["total"].backward()


@pytest.mark.parametrize("variant", list(FUSION_VARIANTS))
def test_modality_missing_from_the_batch_is_absent_everywhere(variant: str) -> None:
    torch.manual_seed(0)
    model = build_model(model_config(variant, MODALITIES)).eval()
    full = make_batch(MODALITIES, batch_size=4, present={"image": torch.zeros(4, dtype=torch.bool)})
    partial = MultimodalBatch(inputs={m: x for m, x in full.inputs.items() if m != "image"},
                              present={}, masks=full.masks, labels=full.labels)
    with torch.no_grad():
        torch.testing.assert_close(model(partial).logits, model(full).logits)


def test_single_present_modality_per_sample_with_late_average_is_that_modality() -> None:
    torch.manual_seed(0)
    model = build_model(model_config("late-average", MODALITIES)).eval()
    present = {"image": torch.tensor([True, False]), "text": torch.tensor([False, True]),
               "vitals": torch.tensor([False, False])}
    with torch.no_grad():
        output = model(make_batch(MODALITIES, batch_size=2, present=present))
    torch.testing.assert_close(output.logits.softmax(1)[0], output.per_modality_logits["image"][0].softmax(0))
    torch.testing.assert_close(output.logits.softmax(1)[1], output.per_modality_logits["text"][1].softmax(0))

"""The assembled classifier: bad input errors, modality dropout, losses."""

from __future__ import annotations

import pytest
import torch

from factories import make_batch, model_config
from medfusion.models import MultimodalClassifier, build_model, drop_modalities
from medfusion.types import MultimodalBatch

MODALITIES = ("image", "vitals", "text")


@pytest.fixture(scope="module")
def model() -> MultimodalClassifier:
    torch.manual_seed(0)
    return build_model(model_config("intermediate", MODALITIES)).eval()


def with_input(modality: str, value: torch.Tensor, **kwargs) -> MultimodalBatch:
    batch = make_batch(MODALITIES, batch_size=4, **kwargs)
    batch.inputs[modality] = value
    return batch


@pytest.mark.parametrize(
    ("modality", "value", "message"),
    [
        ("image", torch.randn(4, 32, 32), r"image: expected a 4-D tensor .* received shape \(4, 32, 32\)"),
        ("image", torch.randn(4, 3, 32, 32), r"image: .*3"),
        ("image", torch.zeros(4, 1, 32, 32, dtype=torch.uint8), r"image: expected a floating dtype, received torch.uint8"),
        ("vitals", torch.randn(4, 7), r"vitals: .*5.*7|vitals: .*7.*5"),
        ("text", torch.rand(4, 10), r"text: expected an integer dtype"),
    ],
)
def test_bad_input_names_modality_expected_and_received(model, modality, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        model(with_input(modality, value))


def test_nan_in_a_present_sample_is_named(model) -> None:
    image = torch.randn(4, 1, 32, 32)
    image[2, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"image: NaN or Inf in sample\(s\) \[2\]"):
        model(with_input("image", image))


def test_nan_in_an_absent_sample_is_ignored(model) -> None:
    image = torch.randn(4, 1, 32, 32)
    image[2] = float("inf")
    present = {"image": torch.tensor([True, True, False, True])}
    assert torch.isfinite(model(with_input("image", image, present=present)).logits).all()


def test_empty_text_of_a_present_sample_is_an_error(model) -> None:
    batch = make_batch(MODALITIES, batch_size=4)
    batch.masks["text"][1] = False
    with pytest.raises(ValueError, match=r"text: sample\(s\) \[1\] .*empty"):
        model(batch)


def test_unknown_modality_is_an_error(model) -> None:
    batch = make_batch(MODALITIES + ("signal",), batch_size=4)
    with pytest.raises(ValueError, match=r"built for modalities \['image', 'text', 'vitals'\]; received unknown \['signal'\]"):
        model(batch)


def test_sample_without_any_modality_is_named(model) -> None:
    absent = torch.tensor([True, False, True, True])
    present = {"image": absent, "text": absent, "vitals": absent}
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have no modality present"):
        model(make_batch(MODALITIES, batch_size=4, present=present))


def test_presence_mask_must_be_bool_of_batch_size(model) -> None:
    with pytest.raises(ValueError, match=r"image: expected presence mask \(B,\) as a bool tensor, received torch.int64"):
        model(make_batch(MODALITIES, batch_size=4, present={"image": torch.ones(4, dtype=torch.long)}))
    with pytest.raises(ValueError, match=r"image: expected presence mask \(B,\) of shape \(4,\), received \(3,\)"):
        model(make_batch(MODALITIES, batch_size=4, present={"image": torch.ones(3, dtype=torch.bool)}))


def test_batch_size_mismatch_between_modalities(model) -> None:
    with pytest.raises(ValueError, match=r"vitals: expected batch size 4"):
        model(with_input("vitals", torch.randn(3, 5)))


def test_loss_needs_labels(model) -> None:
    batch = make_batch(MODALITIES, batch_size=4)
    batch.labels = None
    with pytest.raises(ValueError, match="no labels"):
        model.loss(batch)


def test_loss_parts_add_up_for_late_fusion() -> None:
    torch.manual_seed(0)
    late = build_model(model_config("late-average", MODALITIES))
    _, losses = late.loss(make_batch(MODALITIES, batch_size=6))
    auxiliary = [v for k, v in losses.items() if k.startswith("unimodal/")]
    assert len(auxiliary) == 3
    torch.testing.assert_close(losses["total"], losses["classification"] + sum(auxiliary))


def test_drop_modalities_keeps_a_subset_and_one_modality_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    present = {"a": torch.rand(2000, generator=g) > 0.3, "b": torch.rand(2000, generator=g) > 0.3}
    present["a"] |= ~(present["a"] | present["b"])
    dropped = drop_modalities(present, 0.5, generator=torch.Generator().manual_seed(1))
    for m in present:
        assert not (dropped[m] & ~present[m]).any()
    assert (dropped["a"] | dropped["b"]).all()
    both = (present["a"] & present["b"]).sum()
    single = (present["a"] ^ present["b"]).sum()
    # A sample with both keeps 2 w.p. 1/4, else 1 (a lone survivor or a restored one): 1.25
    # expected; a sample with one always keeps it.
    expected = (1.25 * both + single) / (2 * both + single)
    kept = (dropped["a"].sum() + dropped["b"].sum()) / (present["a"].sum() + present["b"].sum())
    assert abs(kept - expected) < 0.03
    assert drop_modalities(present, 0.0)["a"].equal(present["a"])


def train_without_dropout_layers(model: MultimodalClassifier) -> MultimodalClassifier:
    model.train()
    for module in model.modules():
        if isinstance(module, (torch.nn.Dropout, torch.nn.MultiheadAttention)):  # MHA drops attention weights
            module.eval()
    return model


@pytest.mark.parametrize(("rate", "varies"), [(0.0, False), (0.5, True)])
def test_modality_dropout_changes_training_outputs_only_when_set(rate: float, varies: bool) -> None:
    torch.manual_seed(0)
    model = train_without_dropout_layers(build_model(model_config("intermediate", MODALITIES)
                                                     | {"modality_dropout": rate}))
    batch = make_batch(MODALITIES, batch_size=8)
    with torch.no_grad():
        outputs = [model(batch).logits for _ in range(3)]
        model.eval()
        evaluated = [model(batch).logits for _ in range(2)]
    assert (not all(torch.equal(outputs[0], o) for o in outputs[1:])) == varies
    torch.testing.assert_close(evaluated[0], evaluated[1])


def test_classifier_rejects_inconsistent_parts() -> None:
    model = build_model(model_config("intermediate", MODALITIES))
    with pytest.raises(ValueError, match="encoders for"):
        MultimodalClassifier({"text": model.encoders["text"]}, model.fusion, model.head)
    with pytest.raises(ValueError, match="a head is needed"):
        MultimodalClassifier(dict(model.encoders), model.fusion, None)
    with pytest.raises(ValueError, match="modality_dropout"):
        MultimodalClassifier(dict(model.encoders), model.fusion, model.head, modality_dropout=1.0)

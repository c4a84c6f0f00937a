"""Inference over a split with modalities taken away (predict.hide / predict.predict) and
cross-modal retrieval recall (studies.retrieval_recall) on hand-built embeddings."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from factories import make_batch, model_config
from medfusion.evaluate import studies
from medfusion.evaluate.predict import Predictions, hide, predict
from medfusion.models import MultimodalClassifier, build_model
from medfusion.types import FusionOutput, MultimodalBatch

MODALITIES = ("image", "text", "vitals")


def build(variant: str = "intermediate", modalities=MODALITIES, seed: int = 0) -> MultimodalClassifier:
    torch.manual_seed(seed)
    config = model_config(variant, modalities)
    config["num_classes"] = 2
    return build_model(config)


def batch_with(present: dict[str, list[bool]], seed: int = 0) -> MultimodalBatch:
    size = len(next(iter(present.values())))
    return make_batch(MODALITIES, batch_size=size, seed=seed, num_classes=2,
                      present={m: torch.tensor(v) for m, v in present.items()})


def vitals_only_batch(size: int) -> MultimodalBatch:
    """A large, cheap batch (vitals only; image and text absent everywhere)."""
    return make_batch(("vitals",), batch_size=size, num_classes=2)


# --------------------------------------------------------------------------- hide


def test_drop_removes_a_modality_from_every_row_and_keeps_the_others() -> None:
    model = build()
    batch = batch_with({"image": [True, False, True, True], "text": [True, True, False, True],
                        "vitals": [False, True, True, True]})
    present = hide(batch, model, drop=["text"])
    assert sorted(present) == sorted(MODALITIES)
    assert not present["text"].any()
    assert present["image"].tolist() == [True, False, True, True]
    assert present["vitals"].tolist() == [False, True, True, True]
    assert batch.present["text"].tolist() == [True, True, False, True], "the batch itself is left as it was"


def test_drop_accepts_any_iterable_of_names() -> None:
    model = build()
    batch = batch_with({m: [True] * 3 for m in MODALITIES})
    present = hide(batch, model, drop=(m for m in ["text", "image"]))  # a one-shot generator
    assert not present["text"].any() and not present["image"].any() and present["vitals"].all()


def test_drop_of_every_modality_leaves_rows_with_nothing() -> None:
    model = build()
    present = hide(batch_with({m: [True] * 3 for m in MODALITIES}), model, drop=MODALITIES)
    assert not any(p.any() for p in present.values())


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.75])
def test_missing_rate_hides_about_that_share(rate) -> None:
    model = build()
    batch = vitals_only_batch(4000)
    present = hide(batch, model, missing_rates={"vitals": rate}, generator=torch.Generator().manual_seed(0))
    hidden = 1.0 - present["vitals"].float().mean().item()
    assert abs(hidden - rate) < 0.03, hidden
    assert not present["image"].any() and not present["text"].any()


def test_missing_rates_zero_and_one_and_already_absent_rows() -> None:
    model = build()
    batch = batch_with({"image": [True, False] * 50, "text": [True] * 100, "vitals": [True] * 100})
    generator = torch.Generator().manual_seed(3)
    none_hidden = hide(batch, model, missing_rates={"image": 0.0}, generator=generator)
    assert none_hidden["image"].tolist() == [True, False] * 50
    all_hidden = hide(batch, model, missing_rates={"text": 1.0}, generator=generator)
    assert not all_hidden["text"].any()
    half = hide(batch, model, missing_rates={"image": 0.5}, generator=generator)
    assert not half["image"][1::2].any(), "hiding never makes an absent modality present"


def test_missing_rates_are_seeded_and_deterministic() -> None:
    model = build()
    batch = vitals_only_batch(500)
    rates = {"vitals": 0.4}
    first = hide(batch, model, missing_rates=rates, generator=torch.Generator().manual_seed(7))
    again = hide(batch, model, missing_rates=rates, generator=torch.Generator().manual_seed(7))
    other = hide(batch, model, missing_rates=rates, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first["vitals"], again["vitals"])
    assert not torch.equal(first["vitals"], other["vitals"])


@pytest.mark.parametrize("kwargs", [{"drop": ["ecg"]}, {"missing_rates": {"ecg": 0.5}}])
def test_unknown_modality_raises_naming_it(kwargs) -> None:
    model = build()
    with pytest.raises(ValueError, match=r"evaluate: unknown modality 'ecg'; the model has \['image', 'text', "
                                         r"'vitals'\]"):
        hide(batch_with({m: [True] * 2 for m in MODALITIES}), model, **kwargs)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rate_outside_unit_interval_raises(rate) -> None:
    model = build()
    with pytest.raises(ValueError, match=r"expected a missing rate in \[0, 1\] for text, received"):
        hide(batch_with({m: [True] * 2 for m in MODALITIES}), model, missing_rates={"text": rate})


# --------------------------------------------------------------------------- predict


def mixed_loader() -> list[MultimodalBatch]:
    """Two batches; some rows lack some modalities, every row has at least one."""
    return [batch_with({"image": [True, False, True, True, False], "text": [True, True, False, True, False],
                        "vitals": [True, True, True, False, True]}, seed=0),
            batch_with({"image": [True, True, False], "text": [False, True, True],
                        "vitals": [True, False, True]}, seed=1)]


@pytest.mark.parametrize("variant", ["early", "intermediate", "late-learned", "cross_attention", "joint_embedding"])
def test_predict_gives_probabilities_labels_and_presence(variant) -> None:
    model = build(variant)
    loader = mixed_loader()
    result = predict(model, loader)
    assert isinstance(result, Predictions)
    assert result.probs.shape == (8,) and result.probs.dtype == np.float64
    assert np.all((result.probs >= 0) & (result.probs <= 1)) and np.isfinite(result.probs).all()
    assert result.labels.tolist() == [0, 1, 0, 1, 0, 0, 1, 0]
    assert sorted(result.present) == sorted(MODALITIES)
    assert result.present["image"].tolist() == [True, False, True, True, False, True, True, False]


def test_predict_equals_the_eval_mode_softmax_of_the_positive_class() -> None:
    model = build("intermediate")
    batch = batch_with({m: [True] * 6 for m in MODALITIES})
    result = predict(model.train(), [batch])
    model.eval()
    with torch.no_grad():
        expected = model(batch).logits.softmax(dim=-1)[:, 1].double().numpy()
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_predict_restores_the_training_flag(training) -> None:
    model = build("late-learned").train(training)
    predict(model, mixed_loader(), missing_rates={"text": 0.5})
    assert model.training is training
    assert all(m.training is training for m in model.modules())


def test_predict_restores_the_training_flag_after_an_error() -> None:
    model = build().train()
    with pytest.raises(ValueError, match="missing rate"):
        predict(model, mixed_loader(), missing_rates={"text": 2.0})
    assert model.training


def test_rows_with_no_modality_left_get_the_fallback() -> None:
    model = build("late-learned")
    # row 0: text only; row 1: nothing at all in the data; rows 2, 3: several modalities
    batch = batch_with({"image": [False, False, True, True], "text": [True, False, True, False],
                        "vitals": [False, False, True, True]})
    result = predict(model, [batch], drop=["text"], fallback=0.25)
    assert result.probs[0] == 0.25 and result.probs[1] == 0.25
    assert np.all(result.probs[2:] != 0.25)
    stacked = np.stack([result.present[m] for m in MODALITIES], axis=1)
    assert stacked.any(axis=1).tolist() == [False, False, True, True]
    assert predict(model, [batch]).probs[1] == 0.5, "default fallback"


def test_dropping_a_modality_equals_data_without_it() -> None:
    """Taking a modality away at inference marks it absent: the same as data that never had it."""
    model = build("cross_attention")
    batch = batch_with({"image": [True, False, True, True], "text": [True, True, False, True],
                        "vitals": [True, True, True, False]})
    without_text = batch_with({"image": [True, False, True, True], "text": [False] * 4,
                               "vitals": [True, True, True, False]})
    dropped = predict(model, [batch], drop=["text"])
    np.testing.assert_array_equal(dropped.probs, predict(model, [without_text]).probs)
    assert not (dropped.probs == predict(model, [batch]).probs).all(), "text did matter"


def test_dropping_a_modality_absent_everywhere_changes_nothing() -> None:
    model = build("early")
    batch = batch_with({"image": [True, False, True, True], "text": [True, True, False, True],
                        "vitals": [False] * 4})
    np.testing.assert_array_equal(predict(model, [batch], drop=["vitals"]).probs, predict(model, [batch]).probs)


def test_hidden_rows_change_and_untouched_rows_keep_their_prediction() -> None:
    model = build("intermediate")
    batch = batch_with({m: [True] * 40 for m in MODALITIES})
    full = predict(model, [batch])
    partial = predict(model, [batch], missing_rates={"image": 0.5}, seed=1)
    hidden = ~partial.present["image"]
    assert 5 < hidden.sum() < 35
    np.testing.assert_allclose(partial.probs[~hidden], full.probs[~hidden], rtol=0, atol=1e-6)
    assert np.all(np.abs(partial.probs[hidden] - full.probs[hidden]) > 0)


def test_predict_is_deterministic_for_a_seed() -> None:
    model = build("late-learned")
    loader = [batch_with({m: [True] * 30 for m in MODALITIES}, seed=s) for s in range(3)]
    rates = {"image": 0.5, "text": 0.3}
    first = predict(model, loader, missing_rates=rates, seed=4)
    again = predict(model, loader, missing_rates=rates, seed=4)
    np.testing.assert_array_equal(first.probs, again.probs)
    for m in MODALITIES:
        np.testing.assert_array_equal(first.present[m], again.present[m])
    other = predict(model, loader, missing_rates=rates, seed=5)
    assert not np.array_equal(first.present["image"], other.present["image"])


# --------------------------------------------------------------------------- retrieval recall


def data_of(*batches: MultimodalBatch) -> SimpleNamespace:
    """A stand-in for ManifestDataModule: ``loader("test")`` gives ``batches``."""
    def loader(role: str, usable_only: bool = False):
        assert role == "test"
        return list(batches)
    return SimpleNamespace(loader=loader)


def keyed_batch(keys: list[int], text_present: list[bool] | None = None) -> MultimodalBatch:
    """An image + text batch whose pixel [0, 0, 0] carries each sample's key (read by the fake fuse)."""
    batch = make_batch(("image", "text"), batch_size=len(keys), num_classes=2)
    batch.inputs["image"][:, 0, 0, 0] = torch.tensor(keys, dtype=torch.float32)
    if text_present is not None:
        batch.present["text"] = torch.tensor(text_present)
    return batch


def with_embeddings(monkeypatch, model: MultimodalClassifier, image_of, text_of, dim: int = 16) -> None:
    """Replace ``model.fuse`` by one whose unit embeddings are image_of(key) / text_of(key) (vectors of ``dim``)."""
    def fuse(batch, present, features=None, return_attention=False):
        keys = batch.inputs["image"][:, 0, 0, 0].long().tolist()
        image = F.normalize(torch.stack([image_of(k, dim) for k in keys]), dim=-1)
        text = F.normalize(torch.stack([text_of(k, dim) for k in keys]), dim=-1)
        embeddings = {"image": image * present["image"][:, None], "text": text * present["text"][:, None]}
        return FusionOutput(logits=torch.zeros(len(keys), 2), embeddings=embeddings)
    monkeypatch.setattr(model, "fuse", fuse)


def one_hot(k: int, dim: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(k % dim), dim).float()


def test_retrieval_recall_is_one_when_each_image_is_closest_to_its_own_text(monkeypatch) -> None:
    model = build("joint_embedding", ("image", "text"))
    noise = torch.Generator().manual_seed(0)
    with_embeddings(monkeypatch, model, one_hot,
                    lambda k, d: one_hot(k, d) + 0.2 * torch.rand(d, generator=noise))
    # 12 keys over two batches; key 5's note is missing (not a pair, not a candidate)
    data = data_of(keyed_batch(list(range(7)), [True] * 5 + [False, True]), keyed_batch(list(range(7, 12))))
    result = studies.retrieval_recall(model, data)
    assert result["pairs"] == 11
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert result[f"{direction}_recall@{k}"] == 1.0


def test_retrieval_recall_counts_ranks(monkeypatch) -> None:
    """Image i is closer to text i + 1 than to its own text: never first, always second."""
    model = build("joint_embedding", ("image", "text"))
    with_embeddings(monkeypatch, model, one_hot, lambda k, d: 0.5 * one_hot(k, d) + one_hot(k - 1, d), dim=12)
    result = studies.retrieval_recall(model, data_of(keyed_batch(list(range(12)))), ks=(1, 2, 5))
    assert result == {"image_to_text_recall@1": 0.0, "image_to_text_recall@2": 1.0, "image_to_text_recall@5": 1.0,
                      "text_to_image_recall@1": 0.0, "text_to_image_recall@2": 1.0, "text_to_image_recall@5": 1.0,
                      "pairs": 12}


def test_retrieval_recall_of_an_untrained_joint_model_is_a_share() -> None:
    model = build("joint_embedding", MODALITIES)
    batch = batch_with({"image": [True, True, False, True, True, True], "text": [True, False, True, True, True, True],
                        "vitals": [True] * 6})
    result = studies.retrieval_recall(model, data_of(batch))
    assert result["pairs"] == 4
    assert all(0.0 <= v <= 1.0 for k, v in result.items() if k != "pairs")
    assert result["image_to_text_recall@5"] == 1.0, "4 candidates: always in the top 5"


def test_retrieval_recall_skips_rows_with_no_modality() -> None:
    model = build("joint_embedding", ("image", "text"))
    batch = make_batch(("image", "text"), batch_size=4, num_classes=2,
                       present={"image": torch.tensor([True, False, True, True]),
                                "text": torch.tensor([True, False, True, True])})
    assert studies.retrieval_recall(model, data_of(batch))["pairs"] == 3


@pytest.mark.parametrize(("variant", "modalities"), [("intermediate", ("image", "text")),
                                                     ("late-learned", MODALITIES),
                                                     ("joint_embedding", ("image", "vitals"))])
def test_retrieval_recall_is_none_without_an_image_text_joint_space(variant, modalities) -> None:
    model = build(variant, modalities)
    assert studies.retrieval_recall(model, data_of(make_batch(modalities, batch_size=3, num_classes=2))) is None

"""Vitals / tabular features: missing-value split, the fitted standardiser and the MLP encoder ("mlp")."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from factories import ENCODER_PARAMS, assert_all_parameters_have_gradients, make_inputs

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.vitals import FeatureStandardizer, VitalsMLP, split_missing

NAN = float("nan")
FEATURES, DIM = 5, 16

#: (N=3, F=5) training values; feature 1 row 1 and feature 2 rows 1-2 are missing (NaN),
#: feature 3 is never observed, feature 4 is constant.
TRAIN = torch.tensor([
    [1.0, 10.0, 5.0, NAN, 7.0],
    [3.0, NAN, NAN, NAN, 7.0],
    [8.0, 20.0, NAN, NAN, 7.0],
])
#: hand-computed over the observed values only, unbiased (N - 1) variance:
#: f0 [1, 3, 8]: mean 4, var (9 + 1 + 16) / 2 = 13; f1 [10, 20]: mean 15, var (25 + 25) / 1 = 50;
#: f2 [5]: one value -> std 1; f3 never observed -> mean 0, std 1; f4 constant -> std 1.
EXPECTED_MEAN = torch.tensor([4.0, 15.0, 5.0, 0.0, 7.0])
EXPECTED_STD = torch.tensor([math.sqrt(13.0), math.sqrt(50.0), 1.0, 1.0, 1.0])


def build(**overrides) -> VitalsMLP:
    torch.manual_seed(0)
    return ENCODERS["vitals"].build("mlp", **(copy.deepcopy(ENCODER_PARAMS[("vitals", "mlp")]) | overrides))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x (3, F) and an observed mask with a few missing entries (their values are garbage)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, FEATURES, generator=generator)
    mask = torch.ones(3, FEATURES, dtype=torch.bool)
    mask[0, 2] = mask[1, 0] = mask[1, 4] = mask[2, 3] = False
    return x, mask


# --- split_missing ------------------------------------------------------------------


def test_split_missing_takes_nan_as_missing_without_mask() -> None:
    x = torch.tensor([[1.0, NAN, -2.0], [NAN, 4.0, 0.0]])
    values, observed = split_missing(x, None)
    assert torch.equal(values, torch.tensor([[1.0, 0.0, -2.0], [0.0, 4.0, 0.0]]))
    assert torch.equal(observed, torch.tensor([[True, False, True], [False, True, True]]))


def test_split_missing_uses_the_mask_when_given() -> None:
    x = torch.tensor([[1.0, 9.0, NAN], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[True, False, False], [False, True, True]])
    values, observed = split_missing(x, mask)
    assert torch.equal(values, torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 5.0]]))
    assert observed is mask


# --- FeatureStandardizer --------------------------------------------------------------


def test_standardizer_starts_as_identity() -> None:
    standardizer = FeatureStandardizer(FEATURES)
    assert torch.equal(standardizer.mean, torch.zeros(FEATURES)) and torch.equal(standardizer.std, torch.ones(FEATURES))
    assert not standardizer.fitted
    x = torch.randn(2, FEATURES)
    assert torch.equal(standardizer(x, torch.ones(2, FEATURES, dtype=torch.bool)), x)


@pytest.mark.parametrize("with_mask", [True, False])
def test_fit_matches_hand_computed_statistics(with_mask: bool) -> None:
    standardizer = FeatureStandardizer(FEATURES)
    if with_mask:  # garbage at the unobserved entries must not count
        observed = ~torch.isnan(TRAIN)
        result = standardizer.fit(torch.where(observed, TRAIN, torch.tensor(1000.0)), observed)
    else:
        result = standardizer.fit(TRAIN)
    assert result is standardizer and standardizer.fitted
    torch.testing.assert_close(standardizer.mean, EXPECTED_MEAN)
    torch.testing.assert_close(standardizer.std, EXPECTED_STD)
    torch.testing.assert_close(standardizer.std[0], torch.tensor([1.0, 3.0, 8.0]).std())  # torch's unbiased std


def test_forward_standardises_observed_values_and_zeroes_missing_ones() -> None:
    standardizer = FeatureStandardizer(FEATURES).fit(TRAIN)
    x = torch.tensor([[4.0 + math.sqrt(13.0), 5.0, 6.0, 2.5, 9.0], [0.0, NAN, 1.0, 3.0, 7.0]])
    observed = torch.tensor([[True, True, True, True, True], [True, False, False, True, True]])
    values, _ = split_missing(x, observed)
    z = standardizer(values, observed)
    expected = torch.tensor([
        [1.0, (5.0 - 15.0) / math.sqrt(50.0), 1.0, 2.5, 2.0],
        [-4.0 / math.sqrt(13.0), 0.0, 0.0, 3.0, 0.0],
    ])
    torch.testing.assert_close(z, expected)


def test_fitted_statistics_survive_a_state_dict_round_trip() -> None:
    standardizer = FeatureStandardizer(FEATURES).fit(TRAIN)
    state = standardizer.state_dict()
    assert set(state) == {"mean", "std", "fitted"}
    restored = FeatureStandardizer(FEATURES)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.mean, EXPECTED_MEAN)
    assert torch.equal(restored.mean, standardizer.mean) and torch.equal(restored.std, standardizer.std)
    assert restored.fitted

    encoder = build().eval()
    encoder.standardizer.fit(TRAIN)
    copy_ = build().eval()
    torch.nn.init.normal_(copy_.value_weight)  # differs until the state dict is loaded
    copy_.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(copy_.standardizer.std, EXPECTED_STD)
    assert copy_.standardizer.fitted
    x, mask = batch()
    torch.testing.assert_close(copy_(x, mask).tokens, encoder(x, mask).tokens)


@pytest.mark.parametrize(
    ("x", "observed", "message"),
    [
        (torch.tensor([[1.0, float("inf"), 0.0, 0.0, 0.0]]), None,
         r"vitals: NaN or Inf among observed values; expected finite values or mask=False"),
        (torch.zeros(3, 4), None, r"vitals: expected size 5 at dim 1 of \(N, F\), received shape \(3, 4\)"),
        (torch.zeros(5), None, r"vitals: expected a 2-D tensor \(N, F\), received shape \(5,\)"),
        (torch.zeros(2, 5), torch.ones(2, 5), r"vitals: expected observed mask \(N, F\) as a bool tensor, "
                                              r"received torch.float32"),
    ],
)
def test_fit_bad_inputs_are_errors(x: torch.Tensor, observed, message: str) -> None:
    standardizer = FeatureStandardizer(FEATURES)
    with pytest.raises(ValueError, match=message):
        standardizer.fit(x, observed)
    assert not standardizer.fitted and torch.equal(standardizer.mean, torch.zeros(FEATURES))


def test_fit_ignores_inf_at_unobserved_entries() -> None:
    x = TRAIN.clone()
    observed = ~torch.isnan(x)
    x[~observed] = float("inf")
    standardizer = FeatureStandardizer(FEATURES).fit(x, observed)
    torch.testing.assert_close(standardizer.mean, EXPECTED_MEAN)


# --- VitalsMLP ----------------------------------------------------------------------


def test_registered_under_vitals() -> None:
    assert "mlp" in ENCODERS["vitals"].names()
    encoder = build()
    assert isinstance(encoder, VitalsMLP) and encoder.modality == "vitals" and encoder.out_dim == DIM


def test_output_shapes_tokens_and_pooled() -> None:
    encoder = build().eval()
    x, mask = batch()
    out = encoder(x, mask)
    assert out.pooled.shape == (3, DIM) and out.tokens.shape == (3, FEATURES + 1, DIM)
    assert out.token_mask.shape == (3, FEATURES + 1) and out.token_mask.dtype == torch.bool and out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.mean(dim=1))


def test_feature_tokens_embed_standardised_values_or_missingness() -> None:
    encoder = build().eval()
    encoder.standardizer.fit(TRAIN)
    x, mask = batch()
    with torch.no_grad():
        tokens = encoder(x, mask).tokens
        z = (x - EXPECTED_MEAN) / EXPECTED_STD
        for b in range(3):
            for f in range(FEATURES):
                if mask[b, f]:
                    expected = z[b, f] * encoder.value_weight[f] + encoder.feature_embedding[f]
                else:
                    expected = encoder.missing_embedding[f] + encoder.feature_embedding[f]
                torch.testing.assert_close(tokens[b, f], expected)


def test_missing_values_do_not_change_outputs() -> None:
    encoder = build().eval()
    encoder.standardizer.fit(TRAIN)
    x, mask = batch()
    reference = encoder(x, mask)
    for garbage in (1e6, -3.0, NAN, float("inf")):
        changed_x = torch.where(mask, x, torch.tensor(garbage))
        changed = encoder(changed_x, mask)
        assert torch.equal(changed.tokens, reference.tokens) and torch.equal(changed.pooled, reference.pooled)
    # without a mask NaN marks the missing values: same outputs
    nan_x = torch.where(mask, x, torch.tensor(NAN))
    unmasked = encoder(nan_x)
    assert torch.equal(unmasked.tokens, reference.tokens)


def test_observed_mean_value_differs_from_missing() -> None:
    """A value at the feature mean standardises to 0 like a missing one; the indicator tells them apart."""
    encoder = build().eval()
    encoder.standardizer.fit(TRAIN)
    x = EXPECTED_MEAN.unsqueeze(0).clone()
    observed = torch.ones(1, FEATURES, dtype=torch.bool)
    missing = observed.clone()
    missing[0, 0] = False
    a, b = encoder(x, observed), encoder(x, missing)
    assert not torch.allclose(a.tokens[0, 0], b.tokens[0, 0])
    assert not torch.allclose(a.tokens[0, -1], b.tokens[0, -1])  # the MLP summary token sees the indicator
    torch.testing.assert_close(a.tokens[0, 1:FEATURES], b.tokens[0, 1:FEATURES])


def test_fitting_changes_what_the_model_sees() -> None:
    encoder = build().eval()
    x, mask = batch()
    before = encoder(x, mask).pooled
    encoder.standardizer.fit(TRAIN)
    assert not torch.allclose(encoder(x, mask).pooled, before)


def test_samples_do_not_affect_each_other() -> None:
    encoder = build().eval()
    x, mask = batch()
    other_x, other_mask = x.clone(), mask.clone()
    other_x[1] = 10.0
    other_mask[1] = torch.tensor([True, False, True, False, True])
    reference, changed = encoder(x, mask), encoder(other_x, other_mask)
    assert not torch.allclose(changed.pooled[1], reference.pooled[1])
    torch.testing.assert_close(changed.tokens[[0, 2]], reference.tokens[[0, 2]])
    torch.testing.assert_close(encoder(x[:1], mask[:1]).pooled, reference.pooled[:1])


def test_gradients_reach_every_parameter() -> None:
    inputs, masks = make_inputs(["vitals"], batch_size=4)
    assert masks["vitals"].any() and not masks["vitals"].all()  # both observed and missing values
    encoder = build().train()
    encoder.standardizer.fit(inputs["vitals"], masks["vitals"])
    out = encoder(inputs["vitals"], masks["vitals"])
    (out.pooled.pow(2).sum() + out.tokens.pow(2).sum()).backward()
    assert_all_parameters_have_gradients(encoder)
    assert not any(name.startswith("standardizer") for name, _ in encoder.named_parameters())


def test_absent_rows_are_not_checked() -> None:
    encoder = build().eval()
    x, mask = batch()
    x[1] = NAN
    mask[1] = True  # NaN marked observed: only an error when the sample is present
    out = encoder(x, mask, torch.tensor([True, False, True]))
    assert torch.isfinite(out.tokens[[0, 2]]).all()
    with pytest.raises(ValueError, match=r"vitals: NaN or Inf in sample\(s\) \[1\]; expected finite values"):
        encoder(x, mask)
    with pytest.raises(ValueError, match=r"vitals: NaN or Inf in sample\(s\) \[1\]"):
        encoder(x, mask, torch.tensor([False, True, True]))


@pytest.mark.parametrize(
    ("x", "mask", "message"),
    [
        (torch.randn(2, 4), None, r"vitals: expected size 5 at dim 1 of \(B, F\), received shape \(2, 4\)"),
        (torch.randn(2, 5, 1), None, r"vitals: expected a 2-D tensor \(B, F\), received shape \(2, 5, 1\)"),
        (torch.ones(2, 5, dtype=torch.long), None, r"vitals: expected a floating dtype, received torch.int64"),
        (torch.randn(2, 5), torch.ones(2, 5, dtype=torch.int64),
         r"vitals: expected observed mask \(B, F\) as a bool tensor, received torch.int64"),
        (torch.randn(2, 5), torch.ones(2, 4, dtype=torch.bool),
         r"vitals: expected observed mask \(B, F\) of shape \(2, 5\), received \(2, 4\)"),
        (torch.tensor([[0.0, 1.0, float("inf"), 0.0, 0.0]]), None,
         r"vitals: NaN or Inf in sample\(s\) \[0\]; expected finite values"),
    ],
)
def test_bad_inputs_are_errors(x: torch.Tensor, mask, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()(x, mask)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depth": 0}, r"vitals encoder: expected depth to be an int >= 1, received 0"),
        ({"num_features": 0}, r"vitals encoder: expected num_features to be an int >= 1, received 0"),
        ({"hidden": True}, r"vitals encoder: expected hidden to be an int >= 1, received True"),
        ({"dropout": -0.1}, r"vitals encoder: expected dropout in \[0, 1\), received -0.1"),
    ],
)
def test_bad_arguments_are_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(**overrides)

"""Early fusion: fixed featurisations checked against hand computations, presence indicators."""

from __future__ import annotations

import pytest
import torch

from medfusion.fusion.early import EarlyFusion
from medfusion.fusion.featurizers import (
    GridFeaturizer,
    SignalFeaturizer,
    TextHashFeaturizer,
    VideoFeaturizer,
    VitalsFeaturizer,
    build_featurizer,
)


def test_text_hash_counts_term_frequencies() -> None:
    featurizer = TextHashFeaturizer(buckets=1_000_003)
    ids = torch.tensor([[5, 5, 9, 0]])
    features = featurizer(ids)
    bucket = lambda i: (i * 2654435761) % 1_000_003  # noqa: E731
    assert features[0, bucket(5)] == pytest.approx(2 / 3)
    assert features[0, bucket(9)] == pytest.approx(1 / 3)
    assert features.sum() == pytest.approx(1.0)  # padding (id 0) is not counted


def test_grid_featurizer_averages_blocks() -> None:
    image = torch.arange(16.0).view(1, 1, 4, 4)
    features = GridFeaturizer(spatial_dims=2, channels=1, size=2)(image)
    assert features.tolist() == [[2.5, 4.5, 10.5, 12.5]]
    volume = torch.ones(2, 2, 4, 4, 4)
    assert GridFeaturizer(spatial_dims=3, channels=2, size=2)(volume).shape == (2, 16)


def test_signal_featurizer_resamples_only_the_real_prefix() -> None:
    signal = torch.tensor([[[1.0, 3.0, 5.0, 7.0, 100.0, 100.0]]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    features = SignalFeaturizer(channels=1, length=2)(signal, mask)
    assert features.tolist() == [[2.0, 6.0]]


def test_vitals_featurizer_standardises_and_flags_missing() -> None:
    featurizer = VitalsFeaturizer(num_features=2)
    x = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
    observed = torch.tensor([[True, False], [True, True]])
    featurizer.standardizer.fit(torch.nan_to_num(x), observed)
    features = featurizer(x, observed)
    assert features[:, 2:].tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert features[0, 1] == 0.0  # missing value -> 0 after standardisation
    assert features[0, 0] == pytest.approx(-features[1, 0].item())  # mean 2 -> symmetric


def test_video_featurizer_shape_and_mean() -> None:
    video = torch.ones(2, 4, 1, 8, 8)
    features = VideoFeaturizer(channels=1, frames=2, size=2)(video)
    assert features.shape == (2, 8)
    assert torch.allclose(features, torch.ones(2, 8))


def test_featurizer_errors() -> None:
    with pytest.raises(ValueError, match=r"image: expected size 3 at dim 1"):
        GridFeaturizer(channels=3)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="positive int, received 0"):
        TextHashFeaturizer(buckets=0)
    with pytest.raises(ValueError, match=r"no featurizer for modality 'xray'"):
        build_featurizer("xray")
    with pytest.raises(ValueError, match="bad featurizer parameter for image"):
        build_featurizer("image", depth=3)


def make_fusion() -> EarlyFusion:
    torch.manual_seed(0)
    featurizers = {"image": GridFeaturizer(channels=1, size=2), "vitals": VitalsFeaturizer(num_features=3)}
    return EarlyFusion(featurizers, num_classes=2, hidden=8, depth=1, norm="none").eval()


def test_early_fusion_concatenates_features_and_presence() -> None:
    fusion = make_fusion()
    inputs = {"image": torch.ones(2, 1, 4, 4), "vitals": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    present = {"image": torch.tensor([True, False]), "vitals": torch.tensor([True, True])}
    features = fusion.featurize(inputs, present)
    expected = torch.tensor([
        [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0, 1.0, 1.0, 1.0, 0.0, 1.0],
    ])
    torch.testing.assert_close(features, expected)
    assert fusion(inputs, present).fused.shape == (2, 8)


def test_early_fusion_left_out_modality_must_be_absent() -> None:
    fusion = make_fusion()
    vitals = torch.randn(2, 3)
    out = fusion.featurize({"vitals": vitals}, {"image": torch.zeros(2, dtype=torch.bool)})
    assert out[:, :4].abs().sum() == 0 and out[:, -2].abs().sum() == 0
    with pytest.raises(ValueError, match="image is marked present but has no input tensor"):
        fusion.featurize({"vitals": vitals}, {"image": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"expected inputs for \['image', 'vitals'\], received \['signal'"):
        fusion.featurize({"signal": vitals, "vitals": vitals}, {})


def test_early_fusion_constructor_errors() -> None:
    with pytest.raises(ValueError, match="at least one modality"):
        EarlyFusion({}, num_classes=2)
    with pytest.raises(ValueError, match="hidden >= 1 and depth >= 1"):
        EarlyFusion({"image": GridFeaturizer()}, num_classes=2, depth=0)

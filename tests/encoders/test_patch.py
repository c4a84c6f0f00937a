"""Patch-local CNN ("patch_cnn"): token grid, strictly local receptive field, argument checks."""

from __future__ import annotations

import re

import pytest
import torch

from medfusion.encoders.base import ENCODERS
from medfusion.encoders.patch import PatchConvEncoder


def build(modality: str = "image", **overrides) -> PatchConvEncoder:
    torch.manual_seed(0)
    params = {"in_channels": 2, "widths": [4, 8], "strides": [2, 3], "out_dim": 16} | overrides
    return ENCODERS[modality].build("patch_cnn", **params)


@pytest.mark.parametrize(
    ("modality", "spatial", "grid"),
    [
        ("image", (12, 18), (2, 3)),  # patches of 2 * 3 = 6 px
        ("image", (13, 17), (2, 2)),  # the partial last patch of each side is dropped
        ("image", (6, 6), (1, 1)),
        ("volume", (6, 12, 18), (1, 2, 3)),
    ],
)
def test_shapes_and_token_grid(modality: str, spatial: tuple[int, ...], grid: tuple[int, ...]) -> None:
    encoder = build(modality)
    assert encoder.patch_size == 6 and encoder.token_grid(spatial) == grid
    out = encoder(torch.rand(3, 2, *spatial))
    n = torch.tensor(grid).prod().item()
    assert out.tokens.shape == (3, n, 16) and out.pooled.shape == (3, 16) and out.token_mask.all()
    torch.testing.assert_close(out.pooled, out.tokens.amax(dim=1))
    assert build(modality, pool="mean")(torch.rand(1, 2, *spatial)).pooled.shape == (1, 16)


@pytest.mark.parametrize(("modality", "spatial", "token", "box"), [
    ("image", (12, 18), 4, ((6, 12), (6, 12))),  # row 1, column 1 of a 2 x 3 grid
    ("volume", (12, 6, 12), 3, ((6, 12), (0, 6), (6, 12))),  # cell (1, 0, 1) of a 2 x 1 x 2 grid
])
def test_a_token_depends_on_its_patch_only(modality: str, spatial: tuple[int, ...], token: int,
                                          box: tuple[tuple[int, int], ...]) -> None:
    encoder = build(modality, standardize=False).train()
    x = torch.rand(2, 2, *spatial, requires_grad=True)
    encoder(x).tokens[0, token].sum().backward()
    inside = torch.zeros(spatial, dtype=torch.bool)
    inside[tuple(slice(a, b) for a, b in box)] = True
    gradient = x.grad[0].abs().sum(dim=0)
    assert (gradient[inside] > 0).any() and (gradient[~inside] == 0).all() and (x.grad[1] == 0).all()
    changed = x.detach().clone()
    changed[0][:, ~inside] = torch.rand(2, int((~inside).sum()))
    with torch.no_grad():
        before, after = encoder(x.detach()).tokens[0], encoder(changed).tokens[0]
    torch.testing.assert_close(after[token], before[token])
    others = [i for i in range(before.shape[0]) if i != token]
    assert not torch.allclose(after[others], before[others])


def test_standardize_z_scores_each_sample_and_channel_first() -> None:
    standardized, plain = build(), build(standardize=False)
    x = torch.rand(2, 2, 12, 18)
    z = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-5)
    with torch.no_grad():
        torch.testing.assert_close(standardized(x).tokens, plain(z).tokens)
        # a per-channel brightness and contrast change (stain intensity) leaves the tokens unchanged
        shifted = x * torch.tensor([2.0, 0.5]).view(1, 2, 1, 1) + torch.tensor([0.3, -1.0]).view(1, 2, 1, 1)
        torch.testing.assert_close(standardized(shifted).tokens, standardized(x).tokens, atol=1e-4, rtol=1e-4)


def test_an_input_smaller_than_one_patch_is_an_error() -> None:
    with pytest.raises(ValueError, match=re.escape("image: expected every spatial side >= 6 for this backbone, "
                                                   "received spatial size (5, 12)")):
        build()(torch.rand(1, 2, 5, 12))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strides": [2]}, "expected one stride per width (2), received strides [2]"),
    ({"strides": [2, 0]}, "expected every stride to be an int >= 1, received 0"),
    ({"depth": -1}, "expected depth to be an int >= 0, received -1"),
    ({"pool": "sum"}, "expected pool 'max' or 'mean', received 'sum'"),
    ({"standardize": "yes"}, "expected standardize to be true or false, received 'yes'"),
    ({"widths": []}, "expected at least one stage width, received widths=()"),
    ({"spatial_dims": 1}, "expected spatial_dims 2 (image) or 3 (volume), received 1"),
])
def test_bad_arguments_are_errors(kwargs: dict, message: str) -> None:
    params = {"in_channels": 1, "widths": [4, 8], "strides": [2, 2]} | kwargs
    with pytest.raises(ValueError, match=re.escape(f"image encoder: {message}")):
        PatchConvEncoder(**params)

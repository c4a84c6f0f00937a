"""Cross-attention fusion: masked attention, SDPA == explicit path, fallbacks, invariance, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medfusion.fusion.base import FUSIONS
from medfusion.fusion.cross_attention import CrossAttentionFusion, CrossAttentionLayer
from medfusion.types import EncoderOutput

DIMS = {"text": 6, "image": 5, "vitals": 4}
TOKENS = {"text": 5, "image": 4, "vitals": 3}


def make_features(batch: int, dims: dict[str, int] = DIMS, lengths: dict[str, list[int]] | None = None,
                  seed: int = 0) -> dict[str, EncoderOutput]:
    """Random features; ``lengths[m][b]`` real tokens for sample b (the rest is padding)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in dims.items():
        n = TOKENS[m]
        mask = torch.ones(batch, n, dtype=torch.bool)
        for b, length in enumerate((lengths or {}).get(m, [n] * batch)):
            mask[b, length:] = False
        out[m] = EncoderOutput(torch.randn(batch, d, generator=generator),
                               torch.randn(batch, n, d, generator=generator), mask)
    return out


def corrupt(features: dict[str, EncoderOutput], modality: str, rows: torch.Tensor | None = None,
            tokens: torch.Tensor | None = None) -> dict[str, EncoderOutput]:
    """Copy of ``features`` with NaN written into ``rows`` of a modality (pooled + tokens) or into masked ``tokens``."""
    changed = dict(features)
    pooled, toks, mask = features[modality]
    pooled, toks = pooled.clone(), toks.clone()
    if rows is not None:
        pooled[rows] = float("nan")
        toks[rows] = float("nan")
    if tokens is not None:
        toks[tokens] = float("nan")
    changed[modality] = EncoderOutput(pooled, toks, mask)
    return changed


def test_attention_rows_sum_to_one_and_masked_keys_get_zero_weight() -> None:
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(DIMS, 2, query="text", dim=8, heads=2, layers=2).eval()
    # sample 0: image padded to 2 tokens; 1: image absent; 2: vitals absent; 3: no key at all.
    features = make_features(4, lengths={"image": [2, 4, 4, 4], "text": [5, 3, 5, 5]})
    present = {"image": torch.tensor([True, False, True, False]), "vitals": torch.tensor([True, True, False, False])}
    attention = fusion(features, present, return_attention=True).attention
    assert sorted(attention) == ["text->image", "text->vitals"]
    image, vitals = attention["text->image"], attention["text->vitals"]
    total = torch.cat([image, vitals], dim=-1).sum(dim=-1)  # (layers, B, heads, Nq)
    for b in range(3):  # samples with at least one real key: real query rows sum to 1
        real = features["text"].token_mask[b]
        torch.testing.assert_close(total[:, b, :, real], torch.ones(2, 2, int(real.sum())))
    assert (image[:, 0, :, :, 2:] == 0).all()  # padded image tokens
    assert (image[:, 0, :, :, :2] > 0).all()
    assert (image[:, 1] == 0).all() and (vitals[:, 2] == 0).all()  # absent key modalities
    assert (image[:, 3] == 0).all() and (vitals[:, 3] == 0).all()  # no real key: zero rows
    assert (total[:, 1, :, 3:] == 0).all()  # padded query tokens: zero rows


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sdpa_path_matches_explicit_weights_path(bidirectional: bool) -> None:
    torch.manual_seed(1)
    fusion = CrossAttentionFusion(DIMS, 2, query="image", dim=8, heads=2, layers=2, bidirectional=bidirectional,
                                  dropout=0.1).eval()
    features = make_features(4, lengths={"text": [2, 5, 1, 5], "image": [4, 3, 4, 2], "vitals": [3, 1, 3, 2]})
    present = {"text": torch.tensor([True, False, True, True]), "image": torch.tensor([True, True, False, True])}
    fast = fusion(features, present)
    slow = fusion(features, present, return_attention=True)
    assert fast.attention is None and fast.logits is None
    torch.testing.assert_close(fast.fused, slow.fused, atol=1e-5, rtol=0)
    assert len(slow.attention) == (4 if bidirectional else 2)


def identity_layer(dim: int) -> CrossAttentionLayer:
    layer = CrossAttentionLayer(dim, heads=1)
    with torch.no_grad():
        for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
            proj.weight.copy_(torch.eye(dim))
            if proj.bias is not None:
                proj.bias.zero_()
        layer.ffn[-1].weight.zero_()
        layer.ffn[-1].bias.zero_()
    return layer.eval()


def test_layer_matches_hand_computation() -> None:
    layer = identity_layer(3)
    query = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]])
    keys = torch.tensor([[[1.0, 2.0, 0.0], [3.0, -1.0, 1.0], [5.0, 5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    out, weights = layer(query, keys, mask, need_weights=True)
    scores = torch.tensor([[1.0, 3.0], [4.0, -1.0]]) / math.sqrt(3.0)  # q k^T over the two real keys
    expected_weights = torch.cat([scores.softmax(dim=-1), torch.zeros(2, 1)], dim=1)
    torch.testing.assert_close(weights, expected_weights.view(1, 1, 2, 3))
    attended = expected_weights @ keys[0]
    expected = F.layer_norm(F.layer_norm(query[0] + attended, (3,)), (3,))  # FFN output is zero
    torch.testing.assert_close(out[0], expected)
    fast, none = layer(query, keys, mask)
    assert none is None
    torch.testing.assert_close(fast, out)


def test_layer_without_real_keys_falls_back_to_query() -> None:
    layer = identity_layer(3)
    query = torch.tensor([[[1.0, 0.0, -2.0]], [[0.5, 3.0, 1.0]]])
    keys = torch.tensor([[[4.0, -3.0, 9.0], [2.0, 2.0, -8.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    mask = torch.tensor([[False, False], [True, False]])
    for need_weights in (False, True):
        out, weights = layer(query, keys, mask, need_weights=need_weights)
        torch.testing.assert_close(out[0], F.layer_norm(F.layer_norm(query[0], (3,)), (3,)))
        assert torch.isfinite(out).all()
    assert (weights[0] == 0).all()
    torch.testing.assert_close(weights[1], torch.tensor([[[1.0, 0.0]]]))


def test_sample_without_keys_falls_back_to_its_query_tokens() -> None:
    torch.manual_seed(2)
    dims = {"text": 6, "image": 5}
    fusion = CrossAttentionFusion(dims, 2, dim=8, heads=2, dropout=0.2).eval()
    features = make_features(3, dims, lengths={"text": [5, 2, 4]})
    present = {"image": torch.tensor([True, False, True])}
    out = fusion(features, present, return_attention=True)
    changed = fusion(corrupt(features, "image", rows=torch.tensor([1])), present, return_attention=True)
    torch.testing.assert_close(out.fused, changed.fused)
    assert (out.attention["text->image"][:, 1] == 0).all()
    # Same as when the image is present but every image token is padding.
    text, image = features["text"], features["image"]
    padded = {"text": text, "image": EncoderOutput(image.pooled, image.tokens, torch.zeros_like(image.token_mask))}
    torch.testing.assert_close(fusion(padded, {}).fused[1, :16], out.fused[1, :16])
    # By hand: LN(q), then LN(x + FFN(x)), averaged over the real query tokens.
    layer = fusion.forward_layers[0]
    q = fusion.projections["text"](text.tokens[1, :2]) + fusion.type_embeddings["text"]
    x = layer.norm1(q)
    x = layer.norm2(x + layer.ffn(x))
    torch.testing.assert_close(out.fused[1, :8], x.mean(dim=0))
    torch.testing.assert_close(out.fused[1, 8:], torch.tensor([0.0] * 8 + [0.0, 1.0]))  # key summary, presence


@pytest.mark.parametrize("bidirectional", [False, True])
def test_absent_modality_and_padding_values_do_not_matter(bidirectional: bool) -> None:
    torch.manual_seed(3)
    fusion = CrossAttentionFusion(DIMS, 2, query="text", dim=8, heads=2, layers=2, bidirectional=bidirectional).eval()
    features = make_features(3, lengths={"text": [5, 5, 3], "image": [4, 2, 4]})
    present = {"text": torch.tensor([False, True, True]), "image": torch.tensor([True, False, True])}
    reference = fusion(features, present, return_attention=True)
    changed = corrupt(features, "text", rows=torch.tensor([0]), tokens=~features["text"].token_mask)
    changed = corrupt(changed, "image", rows=torch.tensor([1]), tokens=~features["image"].token_mask)
    for out in (fusion(changed, present, return_attention=True), fusion(changed, present)):
        torch.testing.assert_close(out.fused, reference.fused)
    out = fusion(changed, present, return_attention=True)
    for name, maps in reference.attention.items():
        torch.testing.assert_close(out.attention[name], maps)
        assert torch.isfinite(maps).all()
    assert (reference.fused[0, :8] == 0).all()  # absent query: zero query summary
    assert (reference.fused[0, 8:16] != 0).any()  # ... but its keys still speak
    if bidirectional:
        assert (reference.attention["image->text"][:, 0] == 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_each_sample_missing_a_different_modality(bidirectional: bool) -> None:
    torch.manual_seed(4)
    fusion = CrossAttentionFusion(DIMS, 2, dim=8, heads=2, bidirectional=bidirectional)
    present = {"text": torch.tensor([False, True, True]), "image": torch.tensor([True, False, True]),
               "vitals": torch.tensor([True, True, False])}
    for return_attention in (False, True):
        out = fusion(make_features(3), present, return_attention=return_attention)
        assert out.fused.shape == (3, fusion.out_dim) == (3, 2 * 8 + 3)
        assert torch.isfinite(out.fused).all()
        torch.testing.assert_close(out.fused[:, -3:], torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0]]))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_attention", [False, True])
def test_gradients_reach_every_parameter(bidirectional: bool, return_attention: bool) -> None:
    torch.manual_seed(5)
    fusion = CrossAttentionFusion(DIMS, 2, dim=8, heads=2, layers=2, bidirectional=bidirectional, dropout=0.1)
    features = make_features(4, lengths={"text": [5, 3, 5, 2], "image": [4, 4, 1, 3]})
    present = {"image": torch.tensor([True, False, True, True]), "text": torch.tensor([True, True, False, True])}
    fusion(features, present, return_attention=return_attention).fused.sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert (parameter.grad != 0).any(), name


def test_bidirectional_attention_shapes_and_registry() -> None:
    torch.manual_seed(6)
    fusion = FUSIONS.build("cross_attention", dims=DIMS, num_classes=2, dim=8, heads=2, layers=2,
                           bidirectional=True)
    assert isinstance(fusion, CrossAttentionFusion) and fusion.keys == ["image", "vitals"]
    out = fusion(make_features(3), {}, return_attention=True)
    shapes = {name: tuple(maps.shape) for name, maps in out.attention.items()}
    assert shapes == {"text->image": (2, 3, 2, 5, 4), "text->vitals": (2, 3, 2, 5, 3),
                      "image->text": (2, 3, 2, 4, 5), "vitals->text": (2, 3, 2, 3, 5)}
    torch.testing.assert_close(out.attention["image->text"].sum(-1), torch.ones(2, 3, 2, 4))


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"query must be one of \['image', 'text'\], received 'video'"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, query="video")
    with pytest.raises(ValueError, match="keys must differ from the query 'text'"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, keys=["image", "text"])
    with pytest.raises(ValueError, match=r"key must be one of \['image', 'text'\], received 'signal'"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, keys=["signal"])
    with pytest.raises(ValueError, match="at least one key modality"):
        CrossAttentionFusion({"text": 4}, 2)
    with pytest.raises(ValueError, match="at least one key modality"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, keys=[])
    with pytest.raises(ValueError, match="list of modalities"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, keys="image")
    with pytest.raises(ValueError, match="distinct keys"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, keys=["image", "image"])
    with pytest.raises(ValueError, match=r"dim divisible by heads, received dim=10, heads=4"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, dim=10, heads=4)
    with pytest.raises(ValueError, match="layers >= 1, received 0"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, layers=0)
    with pytest.raises(ValueError, match=r"dropout in \[0, 1\), received 1.5"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, dropout=1.5)
    with pytest.raises(ValueError, match="norm"):
        CrossAttentionFusion({"text": 4, "image": 4}, 2, norm="batch")


def test_forward_errors() -> None:
    dims = {"text": 6, "image": 5}
    fusion = CrossAttentionFusion(dims, 2, dim=8, heads=2)
    features = make_features(2, dims)
    with pytest.raises(ValueError, match=r"expected features for \['image', 'text'\], received \['text'\]"):
        fusion({"text": features["text"]}, {})
    with pytest.raises(ValueError, match=r"received \['image', 'text', 'vitals'\]"):
        fusion({**features, "vitals": make_features(2)["vitals"]}, {})
    image = features["image"]
    wrong = EncoderOutput(image.pooled, torch.randn(2, 4, 7), image.token_mask)
    with pytest.raises(ValueError, match=r"image tokens must have shape \(B=2, N, 5\), received \(2, 4, 7\)"):
        fusion({**features, "image": wrong}, {})
    wrong = EncoderOutput(image.pooled, image.tokens, image.token_mask.float())
    with pytest.raises(ValueError, match="image: expected token_mask"):
        fusion({**features, "image": wrong}, {})
    with pytest.raises(ValueError, match=r"text: expected present \(B,\) of shape \(2,\), received \(3,\)"):
        fusion(features, {"text": torch.ones(3, dtype=torch.bool)})
    layer = CrossAttentionLayer(4, 2)
    with pytest.raises(ValueError, match=r"expected query \(B, Nq, 4\) and keys \(B, Nk, 4\)"):
        layer(torch.randn(1, 2, 4), torch.randn(1, 3, 5), torch.ones(1, 3, dtype=torch.bool))

"""Joint-embedding fusion: unit embeddings, fused mean, retrieval, zero-shot, contrastive loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from factories import assert_all_parameters_have_gradients, each_lacks_one

from medfusion.fusion.base import FUSIONS
from medfusion.fusion.joint_embedding import JointEmbeddingFusion
from medfusion.losses import contrastive_loss
from medfusion.types import EncoderOutput

DIMS = {"image": 6, "signal": 5, "text": 4}
E = 8


def features(pooled: torch.Tensor) -> EncoderOutput:
    return EncoderOutput(pooled, pooled.unsqueeze(1), torch.ones(pooled.shape[0], 1, dtype=torch.bool))


def random_features(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in DIMS.items()}


def build(**kwargs) -> JointEmbeddingFusion:
    torch.manual_seed(0)
    return JointEmbeddingFusion(DIMS, 3, embed_dim=E, **kwargs)


PRESENT = {"image": torch.tensor([True, False, True, True, False]),
           "signal": torch.tensor([True, True, False, True, True])}


def test_registered_and_sizes() -> None:
    assert FUSIONS.get("joint_embedding") is JointEmbeddingFusion
    fusion = build(proj_hidden=7)
    assert fusion.out_dim == E
    out = fusion({m: features(v) for m, v in random_features(5).items()}, PRESENT)
    assert out.fused.shape == (5, E) and all(e.shape == (5, E) for e in out.embeddings.values())
    assert out.logits is None and out.modality_weights is None and out.per_modality_logits is None


def test_embeddings_unit_norm_absent_zero_and_fused_is_normalised_mean() -> None:
    fusion = build()
    out = fusion({m: features(v) for m, v in random_features(5).items()}, PRESENT)
    for m, e in out.embeddings.items():
        rows = PRESENT.get(m, torch.ones(5, dtype=torch.bool))
        torch.testing.assert_close(e[rows].norm(dim=-1), torch.ones(int(rows.sum())))
        assert (e[~rows] == 0).all()
    torch.testing.assert_close(out.fused.norm(dim=-1), torch.ones(5))
    # Sample 1 has signal and text: fused = normalise((e_signal + e_text) / 2).
    expected = F.normalize(out.embeddings["signal"][1] + out.embeddings["text"][1], dim=-1)
    torch.testing.assert_close(out.fused[1], expected)


def test_absent_rows_change_no_output_and_no_loss() -> None:
    fusion = build(proj_hidden=7)
    values = random_features(5)
    changed = {m: v.clone() for m, v in values.items()}
    changed["image"][1] = float("nan")
    changed["signal"][2] = 1e6
    one = fusion({m: features(v) for m, v in values.items()}, PRESENT)
    two = fusion({m: features(v) for m, v in changed.items()}, PRESENT)
    torch.testing.assert_close(one.fused, two.fused)
    for m in DIMS:
        torch.testing.assert_close(one.embeddings[m], two.embeddings[m])
    labels = torch.zeros(5, dtype=torch.long)
    loss_one = fusion.auxiliary_losses(one, PRESENT, labels)["contrastive"]
    loss_two = fusion.auxiliary_losses(two, PRESENT, labels)["contrastive"]
    assert torch.isfinite(loss_one)
    torch.testing.assert_close(loss_one, loss_two)


def test_auxiliary_loss_is_mean_over_pairs_on_rows_with_both() -> None:
    fusion = build()
    out = fusion({m: features(v) for m, v in random_features(5).items()}, PRESENT)
    e = out.embeddings
    scale = fusion.contrastive.clamped_logit_scale
    image, signal = PRESENT["image"], PRESENT["signal"]
    pairs = [
        contrastive_loss(e["image"][image & signal], e["signal"][image & signal], scale).loss,
        contrastive_loss(e["image"][image], e["text"][image], scale).loss,
        contrastive_loss(e["signal"][signal], e["text"][signal], scale).loss,
    ]
    loss = fusion.auxiliary_losses(out, PRESENT, torch.zeros(5, dtype=torch.long))["contrastive"]
    torch.testing.assert_close(loss, torch.stack(pairs).mean())


def test_auxiliary_loss_skips_pairs_with_fewer_than_two_rows() -> None:
    fusion = build()
    present = {"image": torch.tensor([True, False, False]), "signal": torch.tensor([False, True, False])}
    out = fusion({m: features(v) for m, v in random_features(3).items()}, present)
    loss = fusion.auxiliary_losses(out, present, torch.zeros(3, dtype=torch.long))
    # image&signal: 0 rows, image&text: 1 row, signal&text: 1 row -> every pair skipped.
    assert loss == {}


def test_each_sample_lacks_a_different_modality_and_gradients() -> None:
    fusion = build(proj_hidden=7)
    present = each_lacks_one(DIMS, 6)
    out = fusion({m: features(v) for m, v in random_features(6).items()}, present)
    assert torch.isfinite(out.fused).all()
    losses = fusion.auxiliary_losses(out, present, torch.zeros(6, dtype=torch.long))
    (losses["contrastive"] + (out.fused * torch.randn(6, E)).sum()).backward()
    assert_all_parameters_have_gradients(fusion)
    assert fusion.contrastive.logit_scale.grad != 0  # the temperature is learnable


def test_encode_one_modality_at_a_time() -> None:
    fusion = build()
    values = random_features(4)
    alone = fusion.encode({"text": features(values["text"])})
    together = fusion({m: features(v) for m, v in values.items()}, {})
    assert list(alone) == ["text"]
    torch.testing.assert_close(alone["text"], together.embeddings["text"])


def test_similarity_and_retrieve_top_k() -> None:
    fusion = JointEmbeddingFusion({"text": 2}, 2, embed_dim=3)
    query = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    candidates = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(fusion.similarity(query, candidates), torch.tensor([[0, r, 1, 0], [1, r, 0, 0]]))
    scores, indices = fusion.retrieve(query, candidates, k=2)
    assert indices.tolist() == [[2, 1], [0, 1]]
    torch.testing.assert_close(scores, torch.tensor([[1.0, r], [1.0, r]]))
    with pytest.raises(ValueError, match=r"1 <= k <= N=4 candidates, received k=0"):
        fusion.retrieve(query, candidates, k=0)
    with pytest.raises(ValueError, match=r"1 <= k <= N=4 candidates, received k=5"):
        fusion.retrieve(query, candidates, k=5)
    with pytest.raises(ValueError, match=r"expected b of shape \(N, 3\), received \(4, 2\)"):
        fusion.similarity(query, candidates[:, :2])


def test_zero_shot_single_and_ensembled_prompts() -> None:
    fusion = JointEmbeddingFusion({"text": 2}, 2, embed_dim=3, init_temperature=0.5)  # scale exp(log 2) = 2
    embeddings = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    classes = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(fusion.zero_shot(embeddings, classes), torch.tensor([[2.0, 0.0], [0.0, 2 * r]]))
    # Class 0 prompts normalise to (1,0,0) and (0,1,0): mean (0.5, 0.5, 0) -> (r, r, 0).
    # Class 1 prompts (0,0,3) and (0,0,1): both (0,0,1).
    prompts = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [[0.0, 0.0, 3.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(fusion.zero_shot(embeddings, prompts), torch.tensor([[2 * r, 0.0], [0.0, 2.0]]))
    with pytest.raises(ValueError, match=r"class_prompt_embeddings .* received \(2, 2, 2\)"):
        fusion.zero_shot(embeddings, prompts[..., :2])


def test_errors() -> None:
    fusion = build()
    x = features(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"expected features for \['image', 'signal', 'text'\], received \['text'\]"):
        fusion({"text": x}, {})
    with pytest.raises(ValueError, match=r"received \['audio'\]"):
        fusion.encode({"audio": x})
    with pytest.raises(ValueError, match=r"text features must have shape \(B, 4\), received \(2, 3\)"):
        fusion.encode({"text": features(torch.zeros(2, 3))})
    with pytest.raises(ValueError, match="embed_dim >= 1"):
        JointEmbeddingFusion(DIMS, 3, embed_dim=0)
    with pytest.raises(ValueError, match="init_temperature > 0"):
        JointEmbeddingFusion(DIMS, 3, init_temperature=-1.0)

"""Late fusion: each combination rule against its formula, missing modalities, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from factories import assert_all_parameters_have_gradients, each_lacks_one

from medfusion.fusion.base import FUSIONS
from medfusion.fusion.late import RULES, LateFusion
from medfusion.types import EncoderOutput

K = 3
NAMES = ("a", "b", "c")
# Known per-modality logits z_m for 2 samples; identity heads make z_m = pooled.
Z = {
    "a": torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]),
    "b": torch.tensor([[0.0, 1.0, 0.0], [-1.0, 3.0, 0.0]]),
    "c": torch.tensor([[1.0, 1.0, 4.0], [0.0, 0.0, 2.0]]),
}
P = {m: torch.softmax(z, dim=-1) for m, z in Z.items()}
A_ABSENT_IN_ROW_1 = {"a": torch.tensor([True, False])}


def features(pooled: torch.Tensor) -> EncoderOutput:
    return EncoderOutput(pooled, pooled.unsqueeze(1), torch.ones(pooled.shape[0], 1, dtype=torch.bool))


def all_features(values: dict[str, torch.Tensor]) -> dict[str, EncoderOutput]:
    return {m: features(v) for m, v in values.items()}


def identity_late(rule: str, **kwargs) -> LateFusion:
    """Late fusion whose unimodal classifiers return their input: z_m = pooled_m."""
    fusion = LateFusion({m: K for m in NAMES}, K, rule=rule, hidden=0, norm="none", **kwargs)
    with torch.no_grad():
        for head in fusion.classifiers.values():
            head[1].weight.copy_(torch.eye(K))
            head[1].bias.zero_()
    return fusion.eval()


def random_late(rule: str, dims: dict[str, int] | None = None) -> LateFusion:
    dims = dims or {"a": 4, "b": 3, "c": 5}
    weights = {m: float(i + 1) for i, m in enumerate(sorted(dims))} if rule == "weighted" else None
    return LateFusion(dims, K, rule=rule, weights=weights, hidden=6).eval()


def random_features(dims: dict[str, int], batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=g) for m, d in dims.items()}


def test_registered_and_produces_logits_itself() -> None:
    assert FUSIONS.get("late") is LateFusion
    assert identity_late("average").out_dim is None


def test_average_rule_formula() -> None:
    out = identity_late("average")(all_features(Z), {})
    expected = (P["a"] + P["b"] + P["c"]) / 3
    torch.testing.assert_close(out.logits, torch.log(expected))
    torch.testing.assert_close(out.logits.softmax(-1), expected)
    torch.testing.assert_close(out.modality_weights, torch.full((2, 3), 1 / 3))
    for m in NAMES:
        torch.testing.assert_close(out.per_modality_logits[m], Z[m])


def test_average_renormalises_over_present_modalities() -> None:
    out = identity_late("average")(all_features(Z), A_ABSENT_IN_ROW_1)
    torch.testing.assert_close(out.logits[0], torch.log((P["a"][0] + P["b"][0] + P["c"][0]) / 3))
    torch.testing.assert_close(out.logits[1], torch.log((P["b"][1] + P["c"][1]) / 2))
    torch.testing.assert_close(out.modality_weights, torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.0, 0.5, 0.5]]))
    torch.testing.assert_close(out.per_modality_logits["a"][1], torch.zeros(K))


def test_weighted_rule_formula_and_renormalisation() -> None:
    fusion = identity_late("weighted", weights={"a": 1.0, "b": 2.0, "c": 3.0})
    out = fusion(all_features(Z), A_ABSENT_IN_ROW_1)
    row0 = (1 * P["a"][0] + 2 * P["b"][0] + 3 * P["c"][0]) / 6
    row1 = (2 * P["b"][1] + 3 * P["c"][1]) / 5
    torch.testing.assert_close(out.logits, torch.log(torch.stack([row0, row1])))
    torch.testing.assert_close(out.modality_weights, torch.tensor([[1 / 6, 2 / 6, 3 / 6], [0.0, 2 / 5, 3 / 5]]))


def test_learned_rule_softmax_over_present_modalities() -> None:
    fusion = identity_late("learned")
    torch.testing.assert_close(fusion.learned_weights, torch.full((3,), 1 / 3))
    with torch.no_grad():
        fusion.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    out = fusion(all_features(Z), A_ABSENT_IN_ROW_1)
    e = [math.exp(0.5), math.exp(-1.0), math.exp(2.0)]
    w0 = torch.tensor(e) / sum(e)
    w1 = torch.tensor([0.0, e[1], e[2]]) / (e[1] + e[2])
    torch.testing.assert_close(out.modality_weights, torch.stack([w0, w1]))
    torch.testing.assert_close(out.modality_weights.sum(dim=1), torch.ones(2))
    torch.testing.assert_close(fusion.learned_weights, w0)
    row0 = w0[0] * P["a"][0] + w0[1] * P["b"][0] + w0[2] * P["c"][0]
    row1 = w1[1] * P["b"][1] + w1[2] * P["c"][1]
    torch.testing.assert_close(out.logits, torch.log(torch.stack([row0, row1])))
    assert identity_late("average").learned_weights is None


def test_max_rule_formula_and_one_hot_weights() -> None:
    out = identity_late("max")(all_features(Z), A_ABSENT_IN_ROW_1)
    s0 = torch.maximum(torch.maximum(P["a"][0], P["b"][0]), P["c"][0])
    s1 = torch.maximum(P["b"][1], P["c"][1])
    torch.testing.assert_close(out.logits, torch.log(torch.stack([s0, s1])))
    torch.testing.assert_close(out.logits.softmax(-1)[1], s1 / s1.sum())
    # Row 0: the fused prediction is class 2, where c has the largest probability.
    # Row 1: class 1 via b (b gives 0.936 for class 1, c gives 0.107).
    assert out.logits.argmax(-1).tolist() == [2, 1]
    torch.testing.assert_close(out.modality_weights, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))


def test_mlp_rule_matches_combiner_and_leave_one_out_weights() -> None:
    torch.manual_seed(0)
    fusion = identity_late("mlp")
    out = fusion(all_features(Z), A_ABSENT_IN_ROW_1)
    assert out.logits.shape == (2, K)

    def combiner(row: int, keep: tuple[str, ...]) -> torch.Tensor:
        parts = []
        for m in NAMES:
            parts += [P[m][row] if m in keep else torch.zeros(K), torch.tensor([float(m in keep)])]
        return fusion.combiner(torch.cat(parts)).detach()

    torch.testing.assert_close(out.logits[0], combiner(0, ("a", "b", "c")))
    torch.testing.assert_close(out.logits[1], combiner(1, ("b", "c")))
    for row, keep in ((0, ("a", "b", "c")), (1, ("b", "c"))):
        fused = combiner(row, keep).softmax(-1)
        pred = int(fused.argmax())
        delta = [
            abs(float(fused[pred] - combiner(row, tuple(x for x in keep if x != m)).softmax(-1)[pred]))
            if m in keep else 0.0
            for m in NAMES
        ]
        expected = torch.tensor(delta) / sum(delta)
        torch.testing.assert_close(out.modality_weights[row], expected)
    assert out.modality_weights[1, 0] == 0.0
    torch.testing.assert_close(out.modality_weights.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("rule", RULES)
def test_absent_rows_change_no_output(rule: str) -> None:
    torch.manual_seed(0)
    dims = {"a": 4, "b": 3, "c": 5}
    fusion = random_late(rule, dims)
    values = random_features(dims, 4)
    present = {"a": torch.tensor([True, False, True, False]), "c": torch.tensor([False, True, True, True])}
    changed = {m: v.clone() for m, v in values.items()}
    changed["a"][1] = float("nan")
    changed["a"][3] = 1e6
    changed["c"][0] = float("inf")
    one = fusion(all_features(values), present)
    two = fusion(all_features(changed), present)
    torch.testing.assert_close(one.logits, two.logits)
    torch.testing.assert_close(one.modality_weights, two.modality_weights)
    for m in dims:
        torch.testing.assert_close(one.per_modality_logits[m], two.per_modality_logits[m])
    assert torch.isfinite(one.logits).all()


@pytest.mark.parametrize("rule", RULES)
def test_each_sample_lacks_a_different_modality(rule: str) -> None:
    torch.manual_seed(0)
    dims = {"a": 4, "b": 3, "c": 5}
    fusion = random_late(rule, dims)
    present = each_lacks_one(dims, 6)
    out = fusion(all_features(random_features(dims, 6)), present)
    assert out.logits.shape == (6, K) and out.modality_weights.shape == (6, 3)
    assert torch.isfinite(out.logits).all()
    presence = torch.stack([present[m] for m in sorted(dims)], dim=1)
    assert (out.modality_weights[~presence] == 0).all()
    torch.testing.assert_close(out.modality_weights.sum(dim=1), torch.ones(6))
    for m in dims:
        assert (out.per_modality_logits[m][~present[m]] == 0).all()


def test_auxiliary_losses_are_unimodal_cross_entropies_on_present_rows() -> None:
    fusion = identity_late("average")
    present = {"a": torch.tensor([True, False]), "b": torch.tensor([False, False])}
    labels = torch.tensor([2, 1])
    out = fusion(all_features(Z), {**present, "b": torch.tensor([False, True])})
    losses = fusion.auxiliary_losses(out, present, labels)
    assert sorted(losses) == ["unimodal/a", "unimodal/c"]  # b has no present row here
    torch.testing.assert_close(losses["unimodal/a"], -torch.log_softmax(Z["a"][0], -1)[2])
    expected_c = -(torch.log_softmax(Z["c"][0], -1)[2] + torch.log_softmax(Z["c"][1], -1)[1]) / 2
    torch.testing.assert_close(losses["unimodal/c"], expected_c)


def test_gradients_reach_every_parameter_of_learned_rule() -> None:
    torch.manual_seed(0)
    dims = {"a": 4, "b": 3, "c": 5}
    fusion = LateFusion(dims, K, rule="learned", hidden=6)
    present = {"a": torch.tensor([True, False, True, True]), "b": torch.tensor([True, True, False, True])}
    labels = torch.tensor([0, 1, 2, 1])
    out = fusion(all_features(random_features(dims, 4)), present)
    loss = F.cross_entropy(out.logits, labels) + sum(fusion.auxiliary_losses(out, present, labels).values())
    loss.backward()
    assert_all_parameters_have_gradients(fusion)


def test_errors() -> None:
    dims = {"a": 2, "b": 2}
    with pytest.raises(ValueError, match=r"unknown rule 'median'.*'average', 'weighted', 'learned', 'max', 'mlp'"):
        LateFusion(dims, K, rule="median")
    with pytest.raises(ValueError, match=r"weights for exactly \['a', 'b'\], received \['a', 'x'\]"):
        LateFusion(dims, K, rule="weighted", weights={"a": 1.0, "x": 1.0})
    with pytest.raises(ValueError, match=r"weights for exactly \['a', 'b'\], received None"):
        LateFusion(dims, K, rule="weighted")
    with pytest.raises(ValueError, match=r"expected weights > 0, received \{'b': 0.0\}"):
        LateFusion(dims, K, rule="weighted", weights={"a": 1.0, "b": 0.0})
    with pytest.raises(ValueError, match=r"'weights' apply only to rule 'weighted', received rule 'average'"):
        LateFusion(dims, K, rule="average", weights={"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="num_classes >= 2"):
        LateFusion(dims, 1)
    with pytest.raises(ValueError, match="hidden >= 0"):
        LateFusion(dims, K, hidden=-1)
    fusion = LateFusion(dims, K)
    x = features(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"expected features for \['a', 'b'\], received \['a'\]"):
        fusion({"a": x}, {})
    with pytest.raises(ValueError, match=r"expected features for \['a', 'b'\], received \['a', 'b', 'c'\]"):
        fusion({"a": x, "b": x, "c": x}, {})
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\] have none"):
        fusion({"a": x, "b": x}, {"a": torch.tensor([True, False]), "b": torch.tensor([True, False])})

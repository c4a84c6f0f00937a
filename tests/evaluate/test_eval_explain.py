"""Explanations: modality attribution per strategy, deletion fidelity, image maps, pointing game."""

from __future__ import annotations

import math

import pytest
import torch

from factories import FUSION_VARIANTS, each_lacks_one, make_batch, model_config
from medfusion.evaluate.explain import (
    deletion_fidelity,
    explanation_method,
    image_attention_map,
    image_explanation_map,
    image_saliency,
    integrated_gradients,
    modality_attribution,
    pointing_game,
)
from medfusion.models import MultimodalClassifier, build_model
from medfusion.types import EncoderOutput

MODALITIES = ("image", "vitals", "text")
METHODS = {"late": "modality_weights", "cross_attention": "attention_mass", "early": "integrated_gradients",
           "intermediate": "integrated_gradients", "joint_embedding": "integrated_gradients"}


def build(variant: str, modalities=MODALITIES, seed: int = 0) -> MultimodalClassifier:
    torch.manual_seed(seed)
    return build_model(model_config(variant, modalities))


def mixed_batch(batch_size: int = 6, seed: int = 0):
    """Sample i lacks modality i % 3."""
    return make_batch(MODALITIES, batch_size=batch_size, seed=seed, present=each_lacks_one(MODALITIES, batch_size))


def presence(model, batch) -> torch.Tensor:
    present = model.presence(batch)
    return torch.stack([present[m] for m in model.modalities], dim=1)


@pytest.mark.parametrize("variant", sorted(FUSION_VARIANTS))
def test_attribution_shape_zero_for_absent_rows_sum_to_one(variant) -> None:
    model = build(variant).train()
    batch = mixed_batch()
    credit, modalities, method = modality_attribution(model, batch, n_steps=16)
    assert modalities == sorted(MODALITIES)
    assert method == METHODS[FUSION_VARIANTS[variant]["name"]] == explanation_method(model)
    assert credit.shape == (6, 3)
    assert torch.isfinite(credit).all() and (credit >= 0).all()
    assert (credit[~presence(model, batch)] == 0).all()
    torch.testing.assert_close(credit.sum(dim=1), torch.ones(6))
    assert model.training, "the model's mode is restored"
    assert all(p.grad is None for p in model.parameters()), "explaining leaves no parameter gradients"


@pytest.mark.parametrize("variant", ["late-average", "cross_attention", "early", "intermediate", "joint_embedding"])
def test_modality_absent_from_the_whole_batch_gets_zero(variant) -> None:
    model = build(variant)
    batch = make_batch(MODALITIES, batch_size=3, present={"vitals": torch.zeros(3, dtype=torch.bool)})
    credit, modalities, _ = modality_attribution(model, batch, n_steps=8)
    assert (credit[:, modalities.index("vitals")] == 0).all()
    torch.testing.assert_close(credit.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("variant", ["late-average", "late-weighted", "late-learned"])
def test_late_attribution_is_weight_times_unimodal_probability(variant) -> None:
    model = build(variant).eval()
    with torch.no_grad():
        model.fusion.classifiers["text"][1][-1].weight.mul_(5)  # spread the unimodal predictions
        if variant == "late-learned":
            model.fusion.weight_logits.copy_(torch.tensor([0.5, -0.2, 0.1]))
    batch = mixed_batch()
    credit, modalities, method = modality_attribution(model, batch)
    assert method == "modality_weights"
    with torch.no_grad():
        output = model(batch)
    predicted = output.logits.argmax(dim=1)
    expected = torch.zeros(6, 3)
    for i, m in enumerate(modalities):
        probs = torch.softmax(output.per_modality_logits[m], dim=-1)
        expected[:, i] = output.modality_weights[:, i] * probs[torch.arange(6), predicted]
    fused = torch.softmax(output.logits, dim=-1)[torch.arange(6), predicted]
    torch.testing.assert_close(expected.sum(dim=1), fused)  # an exact decomposition of the fused probability
    torch.testing.assert_close(credit, expected / fused.unsqueeze(1))


def test_late_attribution_of_a_given_class() -> None:
    model = build("late-average").eval()
    batch = mixed_batch()
    credit, modalities, _ = modality_attribution(model, batch, target=1)
    with torch.no_grad():
        output = model(batch)
    contribution = torch.stack([output.modality_weights[:, i] * torch.softmax(output.per_modality_logits[m], -1)[:, 1]
                                for i, m in enumerate(modalities)], dim=1)
    torch.testing.assert_close(credit, contribution / contribution.sum(dim=1, keepdim=True))


def zero_pooled_probs(model, batch, features, present) -> torch.Tensor:
    baseline = {m: f._replace(pooled=torch.zeros_like(f.pooled)) for m, f in features.items()}
    return torch.softmax(model.fuse(batch, present, baseline).logits, dim=-1)


@pytest.mark.parametrize("variant", ["intermediate", "joint_embedding"])
def test_integrated_gradients_completeness_on_pooled_features(variant) -> None:
    model = build(variant).eval()
    batch = mixed_batch()
    gradients = integrated_gradients(model, batch)
    present = model.presence(batch)
    with torch.no_grad():
        features = model.encode(batch, present)
        full = torch.softmax(model.fuse(batch, present, features).logits, dim=-1)
        base = zero_pooled_probs(model, batch, features, present)
    rows = torch.arange(6)
    change = full[rows, gradients.target] - base[rows, gradients.target]
    torch.testing.assert_close(gradients.totals.sum(dim=1), change, atol=1e-3, rtol=0)
    assert gradients.delta.abs().max() < 1e-3
    assert sorted(gradients.attributions) == sorted(MODALITIES)
    assert gradients.attributions["image"].shape == features["image"].pooled.shape
    assert (gradients.totals[~presence(model, batch)] == 0).all()
    torch.testing.assert_close(gradients.target, full.argmax(dim=1))


def test_integrated_gradients_completeness_on_raw_inputs_of_early_fusion() -> None:
    modalities = ("image", "vitals")
    model = build("early", modalities).eval()
    batch = make_batch(modalities, batch_size=4, present={"vitals": torch.tensor([True, False, True, True])})
    gradients = integrated_gradients(model, batch, target=2, n_steps=64)
    present = model.presence(batch)
    zero = make_batch(modalities, batch_size=4)
    zero.inputs = {m: torch.zeros_like(x) for m, x in batch.inputs.items()}
    zero.masks = batch.masks
    with torch.no_grad():
        change = torch.softmax(model.fuse(batch, present).logits, -1)[:, 2] \
            - torch.softmax(model.fuse(zero, present).logits, -1)[:, 2]
    torch.testing.assert_close(gradients.totals.sum(dim=1), change, atol=1e-4, rtol=0)
    assert gradients.attributions["image"].shape == (4, 1, 32, 32)
    assert (gradients.attributions["vitals"][1] == 0).all(), "an absent sample equals its baseline"


def test_early_fusion_text_is_attributed_at_its_bag_of_words_vector() -> None:
    model = build("early").eval()
    gradients = integrated_gradients(model, mixed_batch())
    buckets = model.fusion.featurizers["text"].out_dim
    assert gradients.attributions["text"].shape == (6, buckets)
    assert gradients.delta.abs().max() < 1e-4


def test_integrated_gradients_reject_other_strategies_and_bad_steps() -> None:
    with pytest.raises(ValueError, match="integrated gradients .* received LateFusion"):
        integrated_gradients(build("late-average"), mixed_batch())
    with pytest.raises(ValueError, match="n_steps .* received 0"):
        integrated_gradients(build("intermediate"), mixed_batch(), n_steps=0)
    with pytest.raises(ValueError, match=r"target classes in \[0, 3\)"):
        modality_attribution(build("intermediate"), mixed_batch(), target=3)


def embed(fusion, modality, features, present):
    return fusion._embed(modality, features[modality], present[modality])


@pytest.mark.parametrize("layers", [1, 2])
def test_cross_attention_attribution_equals_attention_mass_by_hand(layers) -> None:
    torch.manual_seed(0)
    config = model_config("cross_attention", MODALITIES)
    config["fusion"]["params"]["layers"] = layers
    model = build_model(config).eval()
    batch = mixed_batch()
    credit, modalities, method = modality_attribution(model, batch)
    assert method == "attention_mass"
    present = model.presence(batch)
    fusion = model.fusion
    with torch.no_grad():
        features = model.encode(batch, present)
        output = model.fuse(batch, present, features, return_attention=True)
        q, q_real = embed(fusion, "text", features, present)
        keys = [embed(fusion, k, features, present) for k in fusion.keys]
        k, k_real = torch.cat([e[0] for e in keys], 1), torch.cat([e[1] for e in keys], 1)
        weights = torch.cat([output.attention[f"text->{key}"] for key in fusion.keys], dim=-1)
        ratios = []
        for index, layer in enumerate(fusion.forward_layers):  # rebuild the attention branch from the weights
            values = layer._heads(layer.v_proj(k))
            context = (weights[index] @ values).transpose(1, 2).reshape(q.shape)
            branch = layer.out_proj(context)
            ratios.append(q.norm(dim=-1) / (q.norm(dim=-1) + branch.norm(dim=-1)))
            q = layer(q, k, k_real)[0]
    real = q_real.float()
    residual = (torch.stack(ratios).mean(0) * real).sum(1) / real.sum(1).clamp_min(1)
    for b in range(6):
        expected = torch.zeros(3)
        if q_real[b].any():
            mass = [(output.attention[f"text->{key}"][:, b].sum(-1).mean(dim=(0, 1)) * real[b]).sum() / real[b].sum()
                    for key in fusion.keys]
            expected[modalities.index("text")] = residual[b]
            for key, share in zip(fusion.keys, mass):
                expected[modalities.index(key)] = (1 - residual[b]) * share / sum(mass)
        else:  # no query: split by the number of real key tokens
            counts = {key: (features[key].token_mask[b] & present[key][b]).sum().float() for key in fusion.keys}
            for key in fusion.keys:
                expected[modalities.index(key)] = counts[key] / sum(counts.values())
        torch.testing.assert_close(credit[b], expected, atol=1e-5, rtol=1e-5)
    assert not q_real[1].any() and credit[1, modalities.index("text")] == 0  # sample 1 lacks the text


def test_cross_attention_without_keys_credits_the_query() -> None:
    model = build("cross_attention").eval()
    absent = torch.zeros(3, dtype=torch.bool)
    batch = make_batch(MODALITIES, batch_size=3, present={"image": absent, "vitals": absent})
    credit, modalities, _ = modality_attribution(model, batch)
    expected = torch.zeros(3, 3)
    expected[:, modalities.index("text")] = 1
    torch.testing.assert_close(credit, expected)


def driven_by_text() -> MultimodalClassifier:
    """Late fusion (weights image 1, text 2) whose image classifier is uniform and text classifier peaked."""
    model = build("late-weighted", ("image", "text")).eval()
    with torch.no_grad():
        image_out = model.fusion.classifiers["image"][1][-1]
        image_out.weight.zero_()
        image_out.bias.zero_()
        text_out = model.fusion.classifiers["text"][1][-1]
        text_out.weight.mul_(50)
        text_out.bias.zero_()
    return model


def test_deletion_fidelity_is_one_when_the_credited_modality_drives_the_output() -> None:
    model = driven_by_text()
    image_present = torch.tensor([True, True, True, True, True, False, False, True])
    batch = make_batch(("image", "text"), batch_size=8, present={"image": image_present})
    credit, modalities, _ = modality_attribution(model, batch)
    assert (credit[:, modalities.index("text")] >= credit[:, modalities.index("image")]).all()
    scores = deletion_fidelity(model, batch, credit)
    assert scores["fidelity"] == 1.0
    assert scores["samples"] == 6 and scores["ties"] == 0  # samples 5 and 6 have the text only
    assert scores["mean_drop_most"] > 0 > scores["mean_drop_least"]
    reversed_scores = deletion_fidelity(model, batch, 1 - credit)
    assert reversed_scores["fidelity"] == 0.0
    assert reversed_scores["mean_drop_most"] == pytest.approx(scores["mean_drop_least"])


def test_deletion_fidelity_drops_by_hand() -> None:
    model = driven_by_text()
    batch = make_batch(("image", "text"), batch_size=3)
    credit = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    scores = deletion_fidelity(model, batch, credit)
    with torch.no_grad():
        full = torch.softmax(model(batch).logits, -1)
        chosen = full.argmax(1)
        only = {m: torch.softmax(model.fuse(batch, {"image": torch.tensor([m == "image"] * 3),
                                                    "text": torch.tensor([m == "text"] * 3)}).logits, -1)
                for m in ("image", "text")}
    rows = torch.arange(3)
    p = full[rows, chosen]
    drop_text = p - only["image"][rows, chosen]  # removing the text leaves the image
    drop_image = p - only["text"][rows, chosen]
    assert scores["samples"] == 2 and scores["ties"] == 1
    assert scores["mean_drop_most"] == pytest.approx(float((drop_text[0] + drop_image[2]) / 2), abs=1e-6)
    assert scores["mean_drop_least"] == pytest.approx(float((drop_image[0] + drop_text[2]) / 2), abs=1e-6)
    assert scores["fidelity"] == 0.5


def test_deletion_fidelity_rejects_a_bad_attribution_and_reports_nan_when_nothing_is_scored() -> None:
    model = driven_by_text()
    batch = make_batch(("image", "text"), batch_size=3)
    with pytest.raises(ValueError, match=r"expected attribution of shape \(B, M\)=\(3, 2\).*received \(3, 3\)"):
        deletion_fidelity(model, batch, torch.ones(3, 3))
    single = make_batch(("image", "text"), batch_size=3, present={"image": torch.zeros(3, dtype=torch.bool)})
    scores = deletion_fidelity(model, single, torch.tensor([[0.0, 1.0]] * 3))
    assert scores["samples"] == 0 and math.isnan(scores["fidelity"])


def test_image_attention_map_is_on_the_token_grid_and_matches_the_attention() -> None:
    model = build("cross_attention-bidirectional").eval()
    batch = mixed_batch()
    maps = image_attention_map(model, batch)
    grid = model.encoders["image"].token_grid((32, 32))
    assert maps.shape == (6, *grid)
    present = model.presence(batch)
    with torch.no_grad():
        features = model.encode(batch, present)
        weights = model.fuse(batch, present, features, return_attention=True).attention["text->image"]
    real = features["text"].token_mask & present["text"].unsqueeze(1)
    for b in range(6):
        if present["image"][b] and present["text"][b]:
            expected = weights[:, b].mean(dim=(0, 1))[real[b]].mean(0)
            torch.testing.assert_close(maps[b].flatten(), expected)
        else:
            assert (maps[b] == 0).all()
    assert image_explanation_map(model, batch)[1] == "attention_map"
    with pytest.raises(ValueError, match="does not hold"):
        image_attention_map(model, batch, grid=(3, 3))


def test_image_attention_map_needs_image_keys() -> None:
    with pytest.raises(ValueError, match="expected cross-attention fusion with 'image' among its keys"):
        image_attention_map(build("intermediate"), mixed_batch())


@pytest.mark.parametrize("variant", ["early", "intermediate", "late-average"])
def test_image_saliency_shape_and_absent_rows(variant) -> None:
    model = build(variant)
    batch = mixed_batch()
    saliency = image_saliency(model, batch, n_steps=8, internal_batch_size=12)
    assert saliency.shape == (6, 32, 32)
    assert (saliency >= 0).all() and torch.isfinite(saliency).all()
    image_present = model.presence(batch)["image"]
    assert (saliency[~image_present] == 0).all() and (saliency[image_present].flatten(1).sum(1) > 0).all()
    maps, method = image_explanation_map(model, batch, n_steps=8)
    assert method == "integrated_gradients" and maps.shape == (6, 32, 32)


def test_pointing_game_hits_misses_tolerance_and_empty_masks() -> None:
    maps = torch.zeros(4, 2, 2)
    maps[0, 0, 0] = 1.0  # peak in the top-left quarter
    maps[1, 1, 1] = 1.0  # peak in the bottom-right quarter
    maps[2, 0, 0] = 1.0
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # hit
    masks[1, :4, :4] = True  # miss
    # sample 2: empty mask, skipped
    masks[3, 0, 0] = True  # all-zero map: a miss
    result = pointing_game(maps, masks, mode="nearest")
    assert result["samples"] == 3 and result["skipped"] == 1
    assert result["hit_rate"] == pytest.approx(1 / 3)
    assert result["mass_in_mask"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)


def test_pointing_game_tolerance_in_pixels() -> None:
    maps = torch.zeros(1, 8, 8)
    maps[0, 2, 2] = 1.0
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2, 5] = True  # three pixels to the right of the peak
    assert pointing_game(maps, masks)["hit_rate"] == 0.0
    assert pointing_game(maps, masks, tolerance=2.9)["hit_rate"] == 0.0
    assert pointing_game(maps, masks, tolerance=3)["hit_rate"] == 1.0


def test_pointing_game_bilinear_upsampling() -> None:
    maps = torch.tensor([[[0.0, 0.2], [0.1, 0.9]]])
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 8:, 8:] = True
    result = pointing_game(maps, masks)
    assert result["hit_rate"] == 1.0
    up = torch.nn.functional.interpolate(maps[:, None], size=(16, 16), mode="bilinear", align_corners=False)[0, 0]
    assert result["mass_in_mask"] == pytest.approx(float(up[8:, 8:].sum() / up.sum()))


def test_pointing_game_all_masks_empty_and_bad_arguments() -> None:
    result = pointing_game(torch.rand(2, 4, 4), torch.zeros(2, 8, 8, dtype=torch.bool))
    assert result["samples"] == 0 and result["skipped"] == 2 and math.isnan(result["hit_rate"])
    masks = torch.ones(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="non-negative"):
        pointing_game(-torch.rand(2, 4, 4), masks)
    with pytest.raises(ValueError, match="bool masks"):
        pointing_game(torch.rand(2, 4, 4), masks.float())
    with pytest.raises(ValueError, match="unknown mode 'bicubic'"):
        pointing_game(torch.rand(2, 4, 4), masks, mode="bicubic")
    with pytest.raises(ValueError, match="tolerance >= 0"):
        pointing_game(torch.rand(2, 4, 4), masks, tolerance=-1)


def test_pointing_game_scores_an_attention_map_against_masks() -> None:
    model = build("cross_attention").eval()
    batch = make_batch(MODALITIES, batch_size=3)
    maps = image_attention_map(model, batch)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, :16] = True
    result = pointing_game(maps, masks)
    assert result["samples"] == 3 and 0.0 <= result["hit_rate"] <= 1.0 and 0.0 < result["mass_in_mask"] < 1.0


def test_encoder_output_tiling_keeps_fields() -> None:
    from medfusion.evaluate.explain_base import tile_output

    output = EncoderOutput(torch.arange(2.0).view(2, 1), torch.zeros(2, 3, 1), torch.ones(2, 3, dtype=torch.bool))
    tiled = tile_output(output, 3)
    assert tiled.pooled.flatten().tolist() == [0.0, 1.0] * 3 and tiled.token_mask.shape == (6, 3)

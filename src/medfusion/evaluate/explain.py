"""Explanations of a multimodal classifier: how much each modality is credited, and how faithfully.

:func:`modality_attribution` gives each sample's credit of each modality (B, M) for the
probability of the explained class (by default the predicted one), with the method
native to the fusion strategy:

- **late** (``"modality_weights"``): credit_m = w_m * p_m[c], with w the fusion's own
  ``modality_weights`` and p_m[c] the unimodal classifier's probability of class c. For
  the ``average``, ``weighted`` and ``learned`` rules the fused probability is
  p[c] = sum_m w_m p_m[c], so the credits are an exact additive decomposition of the
  fused probability (credit_m / p[c] after normalisation). For ``max`` (w one-hot on the
  modality that gave the maximum) and ``mlp`` (w the normalised leave-one-out effects)
  the same product is used.
- **cross_attention** (``"attention_mass"``): the key modalities share the attention mass
  of the real query tokens (mean over layers, heads and real query tokens of the summed
  weights on each key modality's tokens). The query modality gets the share of the
  residual stream, measured with vector norms as in Kobayashi et al., "Attention is Not
  Only a Weight: Analyzing Transformers with Vector Norms" (EMNLP 2020): per forward
  layer and real query token, s = |q| / (|q| + |a|), with q the token entering the block
  and a the attention branch added to it (``out_proj`` output); s is averaged over layers
  and real query tokens. Credits: query s, key k (1 - s) * mass_k. A sample without a
  real key credits the query 1; a sample without its query splits the credit among the
  key modalities by their number of real tokens (the fused key summary is the mean over
  those tokens). Bidirectional models are explained by the query->key direction only.
- **early / intermediate / joint_embedding** (``"integrated_gradients"``): Captum
  ``IntegratedGradients`` (Sundararajan et al., "Axiomatic Attribution for Deep
  Networks", ICML 2017) of the class probability, all modalities moved together from a
  zero baseline with the same presence. The attribution point of a modality is its raw
  input for early fusion's float modalities, the hashed bag-of-words vector of the text
  featurizer for early fusion's token ids (ids are not differentiable; the zero vector is
  "no words"), and the encoder's pooled output fed into the fusion for intermediate and
  joint-embedding fusion. Per modality the attributions are summed (signed, so the
  modality totals add up to f(x) - f(baseline), the completeness axiom), then the absolute
  totals are normalised to sum 1.

Every credit row sums to 1 over the present modalities and is 0 for absent ones (a row
whose credits are all 0 is spread evenly over the present modalities).

:func:`deletion_fidelity` scores an attribution: deleting (marking absent) the most
credited modality should lower the predicted-class probability more than deleting the
least credited one (the deletion metric of Samek et al., "Evaluating the Visualization
of What a Deep Neural Network Has Learned", IEEE TNNLS 2017, at modality level).

Image maps and the pointing game are in :mod:`medfusion.evaluate.explain_maps` and
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from medfusion.encoders.base import masked_mean
from medfusion.evaluate.explain_base import (
    DEFAULT_STEPS,
    evaluating,
    explained_class,
    normalise_credit,
    presence_matrix,
    steps_of,
    tile,
    tile_batch,
    tile_output,
)
from medfusion.evaluate.explain_maps import (  # re-exported
    image_attention_map,
    image_explanation_map,
    image_saliency,
    pointing_game,
)
from medfusion.fusion.base import zero_absent
from medfusion.fusion.cross_attention import CrossAttentionFusion
from medfusion.fusion.early import EarlyFusion
from medfusion.fusion.intermediate import IntermediateFusion
from medfusion.fusion.joint_embedding import JointEmbeddingFusion
from medfusion.fusion.late import LateFusion
from medfusion.models.classifier import MultimodalClassifier
from medfusion.types import MultimodalBatch

#: Method names returned by :func:`modality_attribution`.
LATE_METHOD = "modality_weights"
ATTENTION_METHOD = "attention_mass"
GRADIENT_METHOD = "integrated_gradients"


class ModalityGradients(NamedTuple):
    """Integrated gradients of one batch.

    Attributes:
        attributions: {modality: tensor shaped like its attribution point} for the
            modalities present in at least one sample.
        totals: (B, M) signed sum of each modality's attributions (sorted modality
            order; zero for absent modalities).
        delta: (B,) Captum's convergence delta: sum of attributions - (f(x) - f(baseline)).
        target: (B,) explained class of each sample.
    """

    attributions: dict[str, Tensor]
    totals: Tensor
    delta: Tensor
    target: Tensor


def explanation_method(model: MultimodalClassifier) -> str:
    """The attribution method :func:`modality_attribution` uses for ``model``'s fusion.

    Raises:
        ValueError: on a fusion strategy with no attribution method.
    """
    fusion = model.fusion
    if isinstance(fusion, LateFusion):
        return LATE_METHOD
    if isinstance(fusion, CrossAttentionFusion):
        return ATTENTION_METHOD
    if isinstance(fusion, (EarlyFusion, IntermediateFusion, JointEmbeddingFusion)):
        return GRADIENT_METHOD
    raise ValueError(
        f"explain: no attribution method for fusion {type(fusion).__name__}; expected late, cross_attention, "
        "early, intermediate or joint_embedding fusion"
    )


def modality_attribution(model: MultimodalClassifier, batch: MultimodalBatch, *,
                         target: int | Tensor | None = None, n_steps: int = DEFAULT_STEPS,
                         internal_batch_size: int | None = None) -> tuple[Tensor, list[str], str]:
    """Credit of each modality for each sample's class probability (see the module notes).

    Args:
        model: a classifier; it is run in eval mode and left in its own mode.
        batch: the samples to explain.
        target: class explained: None (each sample's predicted class), an int, or (B,)
            indices. For a binary model, ``target=1`` explains the positive-class
            probability; the gradient and attention credits are the same for either class.
        n_steps: integration steps of integrated gradients.
        internal_batch_size: samples per forward pass of integrated gradients (None: all).

    Returns:
        credit (B, M) (rows sum to 1, 0 for absent modalities), the model's sorted
        modalities, and the method name (``"modality_weights"``, ``"attention_mass"`` or
        ``"integrated_gradients"``).

    Raises:
        ValueError: on an unsupported fusion, a bad batch or a bad target.
    """
    method = explanation_method(model)
    if method == GRADIENT_METHOD:
        gradients = integrated_gradients(model, batch, target=target, n_steps=n_steps,
                                         internal_batch_size=internal_batch_size)
        presence = presence_matrix(model, model.presence(batch))
        return normalise_credit(gradients.totals, presence), list(model.modalities), method
    present = model.presence(batch)
    with evaluating(model), torch.no_grad():
        chosen = explained_class(model, batch, present, target)
        if method == LATE_METHOD:
            credit = late_credit(model, batch, present, chosen)
        else:
            credit = attention_credit(model, batch, present)
    return normalise_credit(credit, presence_matrix(model, present)), list(model.modalities), method


def late_credit(model: MultimodalClassifier, batch: MultimodalBatch, present: dict[str, Tensor],
                target: Tensor) -> Tensor:
    """Unnormalised late-fusion credit w_m * p_m[target] (B, M)."""
    output = model.fuse(batch, present)
    probs = torch.stack(
        [torch.softmax(output.per_modality_logits[m], dim=-1).gather(1, target[:, None]).squeeze(1)
         for m in model.modalities], dim=1)
    return output.modality_weights * probs


def attention_credit(model: MultimodalClassifier, batch: MultimodalBatch, present: dict[str, Tensor]) -> Tensor:
    """Unnormalised cross-attention credit (B, M): residual share to the query, attention mass to the keys."""
    fusion = model.fusion
    features = model.encode(batch, present)
    entering, branch = [], []
    hooks = []
    for layer in fusion.forward_layers:
        hooks.append(layer.register_forward_pre_hook(lambda module, args: entering.append(args[0])))
        hooks.append(layer.out_proj.register_forward_hook(lambda module, args, out: branch.append(out)))
    try:
        output = model.fuse(batch, present, features, return_attention=True)
    finally:
        for hook in hooks:
            hook.remove()
    query = fusion.query
    real_query = features[query].token_mask & present[query].unsqueeze(1)  # (B, Nq)
    size = real_query.shape[0]
    mass = torch.stack([masked_mean(output.attention[f"{query}->{k}"].sum(-1).mean(dim=(0, 2)).unsqueeze(-1),
                                    real_query).squeeze(-1) for k in fusion.keys], dim=1)  # (B, K)
    key_tokens = torch.stack([(features[k].token_mask & present[k].unsqueeze(1)).sum(1) for k in fusion.keys],
                             dim=1).to(mass.dtype)  # (B, K)
    ratios = [q.norm(dim=-1) / (q.norm(dim=-1) + a.norm(dim=-1)).clamp_min(1e-12) for q, a in zip(entering, branch)]
    residual = masked_mean(torch.stack(ratios, 0).mean(0).unsqueeze(-1), real_query).squeeze(-1)  # (B,)
    has_query, has_key = real_query.any(1), key_tokens.sum(1) > 0
    attended = has_query & has_key
    by_attention = (1 - residual)[:, None] * mass / mass.sum(1, keepdim=True).clamp_min(1e-12)
    by_tokens = key_tokens / key_tokens.sum(1, keepdim=True).clamp_min(1)  # no query: the mean over key tokens
    key_share = torch.where(attended[:, None], by_attention, by_tokens)
    query_share = torch.where(attended, residual, has_query.to(mass.dtype))
    credit = torch.zeros(size, len(model.modalities), dtype=mass.dtype, device=mass.device)
    credit[:, model.modalities.index(query)] = query_share
    for i, k in enumerate(fusion.keys):
        credit[:, model.modalities.index(k)] = key_share[:, i]
    return credit


def integrated_gradients(model: MultimodalClassifier, batch: MultimodalBatch, *,
                         target: int | Tensor | None = None, n_steps: int = DEFAULT_STEPS,
                         internal_batch_size: int | None = None) -> ModalityGradients:
    """Integrated gradients of the class probability per modality (early, intermediate, joint embedding).

    The baseline is zero at every attribution point (raw float inputs and the text
    featurizer's vector for early fusion, encoder pooled outputs otherwise), with the
    same presence; rows of absent samples equal the baseline, so their attributions are 0.

    Args:
        model: a classifier with early, intermediate or joint-embedding fusion.
        batch: the samples to explain.
        target: class explained (see :func:`modality_attribution`).
        n_steps: Gauss-Legendre integration steps (>= 1).
        internal_batch_size: samples per forward pass of the interpolated batch (at
            least B; None: all B * n_steps at once).

    Returns:
        :class:`ModalityGradients`.

    Raises:
        ValueError: on another fusion strategy, ``n_steps < 1``, a bad batch or target.
    """
    from captum.attr import IntegratedGradients

    if explanation_method(model) != GRADIENT_METHOD:
        raise ValueError(f"explain: integrated gradients over modalities needs early, intermediate or "
                         f"joint_embedding fusion, received {type(model.fusion).__name__}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"explain: expected n_steps to be an int >= 1, received {n_steps!r}")
    present = model.presence(batch)
    with evaluating(model):
        chosen = explained_class(model, batch, present, target)
        build = _raw_points if model.fusion.takes_raw_inputs else _pooled_points
        points, forward, cleanup = build(model, batch, present)
        names = sorted(points)
        try:
            ig = IntegratedGradients(lambda *xs: forward(dict(zip(names, xs))))
            inputs = tuple(points[m] for m in names)
            attributions, delta = ig.attribute(inputs, baselines=tuple(torch.zeros_like(x) for x in inputs),
                                               target=chosen, n_steps=n_steps,
                                               internal_batch_size=internal_batch_size,
                                               return_convergence_delta=True)
        finally:
            cleanup()
    attributions = {m: a.detach() for m, a in zip(names, attributions)}
    size = chosen.shape[0]
    totals = torch.zeros(size, len(model.modalities), device=chosen.device)
    for i, m in enumerate(model.modalities):
        if m in attributions:
            totals[:, i] = torch.where(present[m], attributions[m].flatten(1).sum(1).to(totals.dtype),
                                       totals.new_zeros(()))
    return ModalityGradients(attributions, totals, delta.detach(), chosen)


Forward = Callable[[dict[str, Tensor]], Tensor]


def _raw_points(model: MultimodalClassifier, batch: MultimodalBatch, present: dict[str, Tensor]
                ) -> tuple[dict[str, Tensor], Forward, Callable[[], None]]:
    """Early fusion: raw float inputs, and the featurizer output for integer (token id) inputs."""
    fusion = model.fusion
    size = batch.batch_size
    points, replaced, hooks = {}, {}, []
    for m in fusion.modalities:
        if m not in batch.inputs or not present[m].any():
            continue
        x = zero_absent(batch.inputs[m], present[m])
        if x.is_floating_point():
            points[m] = x.detach()
            continue
        with torch.no_grad():
            points[m] = zero_absent(fusion.featurizers[m](x, batch.masks.get(m), present[m]), present[m])

        def hook(module, args, output, modality=m):
            return replaced.get(modality, output)

        hooks.append(fusion.featurizers[m].register_forward_hook(hook))
    raw = {m for m in points if batch.inputs[m].is_floating_point()}

    def forward(xs: dict[str, Tensor]) -> Tensor:
        n = steps_of(next(iter(xs.values())), size)
        tiled = tile_batch(batch, n)
        for m, x in xs.items():
            if m in raw:
                tiled.inputs[m] = x
            else:
                replaced[m] = x
        tiled_present = {m: tile(p, n) for m, p in present.items()}
        return torch.softmax(model.fuse(tiled, tiled_present).logits, dim=-1)

    def cleanup() -> None:
        for handle in hooks:
            handle.remove()
        replaced.clear()

    return points, forward, cleanup


def _pooled_points(model: MultimodalClassifier, batch: MultimodalBatch, present: dict[str, Tensor]
                   ) -> tuple[dict[str, Tensor], Forward, Callable[[], None]]:
    """Intermediate / joint embedding: the encoders' pooled outputs fed into the fusion."""
    size = batch.batch_size
    with torch.no_grad():
        features = model.encode(batch, present)
    points = {m: zero_absent(features[m].pooled, present[m]) for m in model.modalities if present[m].any()}

    def forward(xs: dict[str, Tensor]) -> Tensor:
        n = steps_of(next(iter(xs.values())), size)
        tiled = {m: tile_output(f, n) for m, f in features.items()}
        for m, x in xs.items():
            tiled[m] = tiled[m]._replace(pooled=x)
        tiled_present = {m: tile(p, n) for m, p in present.items()}
        return torch.softmax(model.fuse(batch, tiled_present, tiled).logits, dim=-1)

    return points, forward, lambda: None


def deletion_fidelity(model: MultimodalClassifier, batch: MultimodalBatch, attribution: Tensor) -> dict[str, float]:
    """Does deleting the most-credited modality hurt more than deleting the least-credited one?

    For every sample with at least two modalities present whose most and least credited
    present modalities differ in credit, the drop of the predicted-class probability (class
    predicted with every present modality) is measured when the most-credited modality
    is marked absent and when the least-credited one is.

    Args:
        model: the classifier that was explained.
        batch: the explained samples.
        attribution: (B, M) credit in ``model.modalities`` order (:func:`modality_attribution`).

    Returns:
        ``fidelity``: share of the scored samples where removing the most-credited
        modality drops the probability strictly more (higher = more faithful);
        ``mean_drop_most`` / ``mean_drop_least``: mean probability drops; ``samples``:
        number scored; ``ties``: samples skipped because their credits were equal.
        Scores are NaN when no sample is scored.

    Raises:
        ValueError: when ``attribution`` is not (B, M) or the batch is invalid.
    """
    present = model.presence(batch)
    presence = presence_matrix(model, present)
    if not isinstance(attribution, Tensor) or tuple(attribution.shape) != tuple(presence.shape):
        received = tuple(attribution.shape) if isinstance(attribution, Tensor) else type(attribution).__name__
        raise ValueError(f"deletion fidelity: expected attribution of shape (B, M)={tuple(presence.shape)} "
                         f"(modalities {model.modalities}), received {received}")
    credit = attribution.to(presence.device, torch.float32)
    most = credit.masked_fill(~presence, float("-inf")).argmax(dim=1)
    least = credit.masked_fill(~presence, float("inf")).argmin(dim=1)
    eligible = presence.sum(dim=1) >= 2
    tied = eligible & (credit.gather(1, most[:, None]) == credit.gather(1, least[:, None])).squeeze(1)
    scored = eligible & ~tied
    with evaluating(model), torch.no_grad():
        full = torch.softmax(model.fuse(batch, present).logits, dim=-1)
        predicted = full.argmax(dim=1, keepdim=True)
        chosen = full.gather(1, predicted).squeeze(1)
        drops = []
        for removed in (most, least):
            kept = {m: present[m] & ~(scored & (removed == i)) for i, m in enumerate(model.modalities)}
            probs = torch.softmax(model.fuse(batch, kept).logits, dim=-1).gather(1, predicted).squeeze(1)
            drops.append((chosen - probs)[scored])
    count = int(scored.sum())
    if count == 0:
        nan = float("nan")
        return {"fidelity": nan, "mean_drop_most": nan, "mean_drop_least": nan, "samples": 0,
                "ties": int(tied.sum())}
    return {
        "fidelity": float((drops[0] > drops[1]).float().mean()),
        "mean_drop_most": float(drops[0].mean()),
        "mean_drop_least": float(drops[1].mean()),
        "samples": count,
        "ties": int(tied.sum()),
    }


__all__ = [
    "ModalityGradients",
    "deletion_fidelity",
    "explanation_method",
    "image_attention_map",
    "image_explanation_map",
    "image_saliency",
    "integrated_gradients",
    "modality_attribution",
    "pointing_game",
]

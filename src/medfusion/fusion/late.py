"""Late (decision-level) fusion: one classifier per modality, predictions combined.

Each modality m has its own classifier giving logits z_m and probabilities
p_m = softmax(z_m) (B, K). With P (B, M) the presence of each modality (sorted order),
the rules combine in probability space, over the present modalities only (fixed rules
after Kittler et al., "On combining classifiers", IEEE TPAMI 20(3), 1998):

- ``average``:  w_bm = P_bm / sum_m P_bm;                 p = sum_m w_m p_m
- ``weighted``: w_bm = u_m P_bm / sum_m u_m P_bm (user u_m > 0); p = sum_m w_m p_m
- ``learned``:  w_b = softmax over the present m of a (a learnable, initialised 0)
- ``max``:      s_bk = max over present m of p_mbk;        fused logits = log s
- ``mlp``:      a learned MLP over concat_m [p_m (absent rows zeroed), P_m] gives the
  fused logits directly (stacked generalisation, Wolpert 1992).

The fused logits of the weighted rules are log(p) (clamped at 1e-8), so
softmax(logits) = p. ``modality_weights`` (B, M) are w for the weighted rules, one-hot
on the modality giving the maximum of the predicted class for ``max``, and normalised
leave-one-out effects |p(pred) - p_without_m(pred)| for ``mlp``. The unimodal
classifiers are trained by the auxiliary losses ``unimodal/<m>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.fusion.base import FUSIONS, FeatureNorm, Fusion, NormKind, check_features, zero_absent
from medfusion.types import EncoderOutput, FusionOutput

RULES = ("average", "weighted", "learned", "max", "mlp")
EPS = 1e-8


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    """Linear -> GELU -> Dropout -> Linear, or a single Linear when ``hidden`` is 0."""
    if hidden == 0:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


@FUSIONS.register("late")
class LateFusion(Fusion):
    """Per-modality classifiers whose predictions are combined by a rule.

    Args:
        dims: {modality: encoder out_dim}.
        num_classes: K.
        rule: one of ``average``, ``weighted``, ``learned``, ``max``, ``mlp``.
        weights: {modality: u_m > 0}, exactly the fusion's modalities; only for ``weighted``.
        hidden: hidden width of each unimodal classifier and of the ``mlp`` combiner
            (0: single linear layers).
        dropout: dropout of the unimodal classifiers (the combiner has none, so the
            leave-one-out weights are deterministic).
        norm: feature normalisation before each unimodal classifier.

    Inputs: features {m: EncoderOutput} (reads ``pooled`` (B, D_m)), present {m: (B,) bool}.
    Output: ``logits`` (B, K), ``per_modality_logits`` {m: (B, K)} (absent rows zero),
    ``modality_weights`` (B, M) (zero for absent, rows sum to 1).

    Raises:
        ValueError: on an unknown rule, bad ``weights``, ``weights`` with another rule,
            bad sizes, or features not matching the modalities.
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        *,
        rule: str = "average",
        weights: dict[str, float] | None = None,
        hidden: int = 64,
        dropout: float = 0.1,
        norm: NormKind = "layernorm",
    ) -> None:
        super().__init__()
        if not dims or any(not isinstance(d, int) or d < 1 for d in dims.values()):
            raise ValueError(f"late fusion: expected dims {{modality: size >= 1}}, received {dims}")
        if num_classes < 2:
            raise ValueError(f"late fusion: expected num_classes >= 2, received {num_classes}")
        if rule not in RULES:
            raise ValueError(f"late fusion: unknown rule {rule!r}; expected one of {list(RULES)}")
        if hidden < 0:
            raise ValueError(f"late fusion: expected hidden >= 0, received {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"late fusion: expected dropout in [0, 1), received {dropout}")
        self.modalities = sorted(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.rule = rule
        self.out_dim = None
        self.classifiers = nn.ModuleDict(
            {m: nn.Sequential(FeatureNorm(d, norm), _mlp(d, hidden, num_classes, dropout)) for m, d in dims.items()}
        )
        if weights is not None and rule != "weighted":
            raise ValueError(f"late fusion: 'weights' apply only to rule 'weighted', received rule {rule!r}")
        if rule == "weighted":
            self.register_buffer("user_weights", self._check_weights(weights))
        if rule == "learned":
            self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)))
        if rule == "mlp":
            self.combiner = _mlp(len(self.modalities) * (num_classes + 1), hidden, num_classes, 0.0)

    def _check_weights(self, weights: dict[str, float] | None) -> Tensor:
        received = sorted(weights) if weights is not None else None
        if received != self.modalities:
            raise ValueError(
                f"late fusion: rule 'weighted' needs weights for exactly {self.modalities}, received {received}"
            )
        bad = {m: w for m, w in weights.items() if not float(w) > 0}
        if bad:
            raise ValueError(f"late fusion: expected weights > 0, received {bad}")
        return torch.tensor([float(weights[m]) for m in self.modalities])

    @property
    def learned_weights(self) -> Tensor | None:
        """(M,) softmax of the learned weight logits (rule ``learned``; ``None`` otherwise)."""
        if self.rule != "learned":
            return None
        return torch.softmax(self.weight_logits.detach(), dim=0)

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor], return_attention: bool = False
    ) -> FusionOutput:
        check_features("late", self.modalities, features, self.dims)
        first = features[self.modalities[0]].pooled
        presence = self.presence_matrix(present, first.shape[0], first.device)
        empty = ~presence.any(dim=1)
        if empty.any():
            raise ValueError(
                f"late fusion: sample(s) {empty.nonzero().flatten().tolist()[:10]} have none of "
                f"{self.modalities} present; expected at least one"
            )
        logits = {
            m: self.classifiers[m](zero_absent(features[m].pooled, presence[:, i]))
            for i, m in enumerate(self.modalities)
        }
        probs = torch.stack([torch.softmax(logits[m], dim=-1) for m in self.modalities], dim=1)  # (B, M, K)
        probs = torch.where(presence.unsqueeze(-1), probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        fused, weights = self._combine(probs, presence)
        per_modality = {m: zero_absent(logits[m], presence[:, i]) for i, m in enumerate(self.modalities)}
        return FusionOutput(logits=fused, per_modality_logits=per_modality, modality_weights=weights)

    def _combine(self, probs: Tensor, presence: Tensor) -> tuple[Tensor, Tensor]:
        """Fused logits (B, K) and modality weights (B, M) from probabilities (B, M, K)."""
        if self.rule == "mlp":
            return self._combine_mlp(probs, presence)
        if self.rule == "max":
            scores = probs.masked_fill(~presence.unsqueeze(-1), -1.0)
            best = scores.max(dim=1).values  # (B, K)
            predicted = best.argmax(dim=1)
            source = scores.gather(2, predicted.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(-1)
            weights = F.one_hot(source.argmax(dim=1), probs.shape[1]).to(probs.dtype)
            return torch.log(best.clamp_min(EPS)), weights
        if self.rule == "learned":
            raw = self.weight_logits.expand_as(presence).masked_fill(~presence, float("-inf"))
            weights = torch.softmax(raw, dim=1)
        else:
            base = self.user_weights if self.rule == "weighted" else torch.ones(presence.shape[1])
            raw = torch.where(presence, base.to(probs), torch.zeros((), dtype=probs.dtype, device=probs.device))
            weights = raw / raw.sum(dim=1, keepdim=True)
        fused = (weights.unsqueeze(-1) * probs).sum(dim=1)
        return torch.log(fused.clamp_min(EPS)), weights

    def _mlp_logits(self, probs: Tensor, presence: Tensor) -> Tensor:
        """Combiner logits (B, K) from probabilities (B, M, K), absent rows zeroed."""
        kept = torch.where(presence.unsqueeze(-1), probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
        inputs = torch.cat([kept, presence.unsqueeze(-1).to(probs.dtype)], dim=-1)  # (B, M, K + 1)
        return self.combiner(inputs.flatten(1))

    def _combine_mlp(self, probs: Tensor, presence: Tensor) -> tuple[Tensor, Tensor]:
        logits = self._mlp_logits(probs, presence)
        with torch.no_grad():
            fused = torch.softmax(logits, dim=-1)
            predicted = fused.argmax(dim=1, keepdim=True)
            chosen = fused.gather(1, predicted).squeeze(1)
            deltas = []
            for i in range(presence.shape[1]):
                without = presence.clone()
                without[:, i] = False
                other = torch.softmax(self._mlp_logits(probs, without), dim=-1).gather(1, predicted).squeeze(1)
                deltas.append((chosen - other).abs())
            zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
            delta = torch.where(presence, torch.stack(deltas, dim=1), zero)
            total = delta.sum(dim=1, keepdim=True)
            uniform = presence.to(probs.dtype) / presence.sum(dim=1, keepdim=True)
            weights = torch.where(total > 0, delta / total.clamp_min(EPS), uniform)
        return logits, weights

    def auxiliary_losses(
        self, output: FusionOutput, present: dict[str, Tensor], labels: Tensor
    ) -> dict[str, Tensor]:
        """Cross-entropy of each unimodal classifier over the samples where its modality is present.

        Returns:
            {"unimodal/<m>": scalar}; a modality present in no sample is left out.
        """
        losses = {}
        for m in self.modalities:
            logits = output.per_modality_logits[m]
            rows = present[m] if m in present else torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
            if rows.any():
                losses[f"unimodal/{m}"] = F.cross_entropy(logits[rows], labels[rows])
        return losses

"""Joint-embedding fusion: modality towers projected to one normalised space (CLIP-style).

Each modality's pooled features are normalised and projected (linear, or a one-hidden
layer MLP) to an E-dimensional space and L2-normalised, as in CLIP (Radford et al.,
ICML 2021) and its medical variants (ConVIRT, Zhang et al. 2020; MedCLIP, Wang et al.
2022). Pairs of modalities are pulled together by the symmetric contrastive loss of
:mod:`medfusion.losses` with a learnable temperature. The fused representation read by
the classification head is the L2-normalised mean of the present modalities'
embeddings. The same space serves cross-modal retrieval (cosine top-k) and zero-shot
classification against class-prompt embeddings, with CLIP's prompt ensembling
(normalise each prompt embedding, average, renormalise).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.fusion.base import FUSIONS, FeatureNorm, Fusion, NormKind, check_features, zero_absent
from medfusion.losses import ContrastiveLoss, distributed_ready
from medfusion.types import EncoderOutput, FusionOutput


def _check_matrix(name: str, x: Tensor, dim: int) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != dim:
        received = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"joint embedding: expected {name} of shape (N, {dim}), received {received}")


@FUSIONS.register("joint_embedding")
class JointEmbeddingFusion(Fusion):
    """Projection heads to a shared unit-sphere space, trained with a contrastive loss.

    Args:
        dims: {modality: encoder out_dim}.
        num_classes: K (the classification head over ``fused`` is built by the classifier).
        embed_dim: size E of the joint space.
        proj_hidden: hidden width of each projection MLP (0: a single linear layer).
        norm: feature normalisation before each projection.
        init_temperature: initial temperature of the contrastive loss (learnable).
        max_logit_scale: upper bound of the contrastive logit scale (CLIP: 100).
        gather_distributed: gather embeddings across processes for the contrastive loss.

    Inputs: features {m: EncoderOutput} (reads ``pooled`` (B, D_m)), present {m: (B,) bool}.
    Output: ``embeddings`` {m: (B, E)} unit rows (absent rows zero), ``fused`` (B, E) unit rows.

    Raises:
        ValueError: on bad sizes, features not matching the modalities, or bad
            temperature settings.
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        *,
        embed_dim: int = 512,
        proj_hidden: int = 0,
        norm: NormKind = "layernorm",
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not dims or any(not isinstance(d, int) or d < 1 for d in dims.values()):
            raise ValueError(f"joint embedding: expected dims {{modality: size >= 1}}, received {dims}")
        if num_classes < 2:
            raise ValueError(f"joint embedding: expected num_classes >= 2, received {num_classes}")
        if embed_dim < 1 or proj_hidden < 0:
            raise ValueError(
                f"joint embedding: expected embed_dim >= 1 and proj_hidden >= 0, "
                f"received embed_dim={embed_dim}, proj_hidden={proj_hidden}"
            )
        self.modalities = sorted(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.out_dim = embed_dim
        self.projections = nn.ModuleDict(
            {m: self._projection(d, embed_dim, proj_hidden, norm) for m, d in dims.items()}
        )
        self.contrastive = ContrastiveLoss(init_temperature, max_logit_scale, gather=gather_distributed)

    @staticmethod
    def _projection(dim: int, embed_dim: int, hidden: int, norm: NormKind) -> nn.Module:
        if hidden == 0:
            return nn.Sequential(FeatureNorm(dim, norm), nn.Linear(dim, embed_dim))
        return nn.Sequential(FeatureNorm(dim, norm), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    @property
    def temperature(self) -> float:
        """Current (clamped) temperature of the contrastive loss."""
        return self.contrastive.temperature

    def encode(self, features: dict[str, EncoderOutput], present: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Unit-norm joint-space embeddings of any subset of the modalities.

        Args:
            features: {m: EncoderOutput} for one or more of the fusion's modalities.
            present: {m: (B,) bool}; a missing key means present.

        Returns:
            {m: (B, E)}, rows of absent samples zero.

        Raises:
            ValueError: on an unknown modality, no modality, or a wrong feature size.
        """
        unknown = sorted(set(features) - set(self.modalities))
        if unknown or not features:
            raise ValueError(
                f"joint embedding: expected features for some of {self.modalities}, received {sorted(features)}"
            )
        present = present or {}
        embeddings = {}
        for m in sorted(features):
            pooled = features[m].pooled
            if pooled.ndim != 2 or pooled.shape[1] != self.dims[m]:
                raise ValueError(
                    f"joint embedding: {m} features must have shape (B, {self.dims[m]}), "
                    f"received {tuple(pooled.shape)}"
                )
            rows = present.get(m, torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device))
            projected = self.projections[m](zero_absent(pooled, rows))
            embeddings[m] = zero_absent(F.normalize(projected, dim=-1), rows)
        return embeddings

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor], return_attention: bool = False
    ) -> FusionOutput:
        check_features("joint_embedding", self.modalities, features, self.dims)
        embeddings = self.encode(features, present)
        first = embeddings[self.modalities[0]]
        presence = self.presence_matrix(present, first.shape[0], first.device)
        stacked = torch.stack([embeddings[m] for m in self.modalities], dim=1)  # (B, M, E), absent rows zero
        count = presence.sum(dim=1, keepdim=True).clamp_min(1).to(stacked.dtype)
        fused = F.normalize(stacked.sum(dim=1) / count, dim=-1)
        return FusionOutput(embeddings=embeddings, fused=fused)

    def similarity(self, a: Tensor, b: Tensor) -> Tensor:
        """Cosine similarity matrix.

        Inputs: a (A, E), b (B, E). Returns (A, B).

        Raises:
            ValueError: when ``a`` or ``b`` is not (N, E).
        """
        _check_matrix("a", a, self.out_dim)
        _check_matrix("b", b, self.out_dim)
        return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T

    def retrieve(self, query: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` candidates most cosine-similar to each query, best first.

        Inputs: query (Q, E), candidates (N, E).

        Returns:
            scores (Q, k) cosine similarities and indices (Q, k) into ``candidates``.

        Raises:
            ValueError: when ``k`` is not in [1, N] or a shape is wrong.
        """
        scores = self.similarity(query, candidates)
        if not 1 <= k <= candidates.shape[0]:
            raise ValueError(f"retrieve: expected 1 <= k <= N={candidates.shape[0]} candidates, received k={k}")
        top = scores.topk(k, dim=1, largest=True, sorted=True)
        return top.values, top.indices

    def zero_shot(self, embeddings: Tensor, class_prompt_embeddings: Tensor) -> Tensor:
        """Zero-shot class logits: scaled cosine similarity to each class's prompt embedding.

        Inputs: embeddings (B, E); class_prompt_embeddings (K, E), or (K, P, E) for P
        prompts per class (each normalised, averaged, renormalised).

        Returns:
            logits (B, K) = exp(clamped logit scale) * cosine.

        Raises:
            ValueError: on wrong shapes.
        """
        _check_matrix("embeddings", embeddings, self.out_dim)
        prompts = class_prompt_embeddings
        if prompts.ndim == 3 and prompts.shape[-1] == self.out_dim:
            prompts = F.normalize(prompts, dim=-1).mean(dim=1)
        _check_matrix("class_prompt_embeddings (K, E) or (K, P, E)", prompts, self.out_dim)
        return self.contrastive.clamped_logit_scale.exp() * self.similarity(embeddings, prompts)

    def auxiliary_losses(
        self, output: FusionOutput, present: dict[str, Tensor], labels: Tensor
    ) -> dict[str, Tensor]:
        """Contrastive loss averaged over the sorted modality pairs.

        Each pair uses the samples where both modalities are present; a pair with fewer
        than 2 such samples (over all processes when gathering) is skipped.

        Returns:
            {"contrastive": scalar}, or {} when every pair is skipped.
        """
        embeddings = output.embeddings
        first = embeddings[self.modalities[0]]
        presence = self.presence_matrix(present, first.shape[0], first.device)
        gathering = self.contrastive.gather and distributed_ready()
        losses = []
        for (i, m), (j, n) in combinations(enumerate(self.modalities), 2):
            rows = presence[:, i] & presence[:, j]
            count = rows.sum()
            if gathering:
                dist.all_reduce(count)
            if int(count) < 2:
                continue
            losses.append(self.contrastive(embeddings[m][rows], embeddings[n][rows]).loss)
        if not losses:
            return {}
        return {"contrastive": torch.stack(losses).mean()}

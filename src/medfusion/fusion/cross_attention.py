"""Cross-attention fusion: one modality's tokens attend to the other modalities' tokens.

Scaled dot-product attention (Vaswani et al., "Attention Is All You Need", NeurIPS 2017)
applied across modalities, as in the co-attention layers of vision-language
transformers (LXMERT, Tan & Bansal, EMNLP 2019; ViLBERT, Lu et al., NeurIPS 2019; ViLT,
Kim et al., ICML 2021) and medical multimodal transformers (TransMed, Dai et al.,
Diagnostics 2021): the tokens of a query modality (words of a report) attend to the
tokens of key modalities (image patches, signal steps, vital-sign values), optionally
in both directions (LXMERT-style bidirectional co-attention).

Missing modalities: the tokens of an absent modality and padding tokens are replaced by
zeros before projection and masked out of every attention. A sample with no real key
falls back to its query representation (its attention output is zero, never NaN); a
sample without its query modality keeps the summary of its key tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.encoders.base import masked_mean
from medfusion.fusion.base import FUSIONS, FeatureNorm, Fusion, NormKind, check_features
from medfusion.types import EncoderOutput, FusionOutput
from medfusion.validation import check_mask


class CrossAttentionLayer(nn.Module):
    """One post-norm cross-attention block: ``x = LN(q + Attn(q, k)); x = LN(x + FFN(x))``.

    The key projection has no bias: it would add the same score to every key of a query
    row, which softmax ignores, so it could never be trained.

    Args:
        dim: token size D.
        heads: number of attention heads; must divide ``dim``.
        dropout: dropout on the attention weights and inside the FFN (training only).
        ffn_mult: hidden size of the FFN as a multiple of ``dim``.

    Raises:
        ValueError: on a non-positive size, ``dim % heads != 0`` or a dropout outside [0, 1).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, ffn_mult: int = 4) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or ffn_mult < 1:
            raise ValueError(
                f"cross-attention layer: expected dim, heads and ffn_mult >= 1, "
                f"received dim={dim}, heads={heads}, ffn_mult={ffn_mult}"
            )
        if dim % heads != 0:
            raise ValueError(
                f"cross-attention layer: expected dim divisible by heads, received dim={dim}, heads={heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"cross-attention layer: expected dropout in [0, 1), received {dropout}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, heads, N, D / heads)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, query: Tensor, keys: Tensor, key_mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``keys``.

        Inputs: query (B, Nq, D), keys (B, Nk, D), key_mask (B, Nk) bool, True = real key.

        Args:
            need_weights: compute attention explicitly and return its weights; otherwise
                use ``scaled_dot_product_attention`` and return ``None``.

        Returns:
            Updated query tokens (B, Nq, D) and the weights (B, heads, Nq, Nk) or ``None``.
            Masked keys get weight 0. A sample with no real key gets a zero attention
            output (so ``x = LN(q)`` before the FFN) and all-zero weight rows.

        Raises:
            ValueError: on mismatched shapes or a non-bool mask.
        """
        if query.ndim != 3 or keys.ndim != 3 or query.shape[-1] != self.dim or keys.shape[-1] != self.dim:
            raise ValueError(
                f"cross-attention layer: expected query (B, Nq, {self.dim}) and keys (B, Nk, {self.dim}), "
                f"received {tuple(query.shape)} and {tuple(keys.shape)}"
            )
        check_mask("keys", key_mask, (keys.shape[0], keys.shape[1]), "key_mask (B, Nk)")
        has_key = key_mask.any(dim=1)
        # A sample without real keys attends to all of them (finite), then its output is discarded.
        mask = (key_mask | ~has_key.unsqueeze(1))[:, None, None, :]
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(keys)), self._heads(self.v_proj(keys))
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            context = F.dropout(attn, p=p, training=p > 0.0) @ v
            weights = torch.where(has_key[:, None, None, None], attn, attn.new_zeros(()))
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        context = context.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.dim)
        attended = self.out_proj(context)
        attended = torch.where(has_key[:, None, None], attended, attended.new_zeros(()))
        x = self.norm1(query + attended)
        return self.norm2(x + self.ffn(x)), weights


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(Fusion):
    """Query-modality tokens attend to the tokens of the key modalities.

    Each used modality's tokens are normalised (``FeatureNorm``), projected to ``dim`` and
    given a learned modality-type embedding. The key sequence is the concatenation, in
    sorted key order, of all key modalities' tokens; a key is real when its token is real
    and its modality present. ``layers`` blocks update the query tokens; with
    ``bidirectional`` a second block per layer updates the key tokens by attending to the
    query tokens. Both directions of a layer read that layer's *input* tokens (parallel
    co-attention, as in LXMERT), and the updated key tokens feed the next layer.

    Args:
        dims: {modality: encoder out_dim}.
        num_classes: K (the classification head is applied by the classifier).
        query: the modality whose tokens ask the questions.
        keys: the modalities attended to; default: every other modality, sorted.
        dim: width of the attention blocks.
        heads: attention heads; must divide ``dim``.
        layers: number of stacked blocks.
        bidirectional: also let the key tokens attend to the query tokens.
        dropout: dropout inside the blocks (training only).
        norm: feature normalisation of the tokens before projection.

    Output: ``FusionOutput.fused`` (B, 2 * dim + M) = [masked mean of the final query
    tokens (zero when the query modality is absent or has no real token); masked mean of
    the final key tokens over real tokens of present key modalities (the projected tokens
    when unidirectional; zero when there is none); the (B, M) presence matrix].
    With ``return_attention``: ``attention = {"query->key": (layers, B, heads, Nq, Nk_key)}``
    per key modality, and with ``bidirectional`` also ``{"key->query": (layers, B, heads,
    Nk_key, Nq)}``. Rows of padding/absent attending tokens and of samples with no real
    attended token are zero; every other row sums to 1.

    Raises:
        ValueError: on an unknown query or key modality, a key equal to the query, no key,
            ``dim % heads != 0`` or another invalid size.
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        *,
        query: str = "text",
        keys: Sequence[str] | None = None,
        dim: int = 64,
        heads: int = 4,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        norm: NormKind = "layernorm",
    ) -> None:
        super().__init__()
        if query not in dims:
            raise ValueError(f"cross-attention fusion: query must be one of {sorted(dims)}, received {query!r}")
        if keys is None:
            keys = [m for m in sorted(dims) if m != query]
        elif isinstance(keys, str):
            raise ValueError(f"cross-attention fusion: expected keys as a list of modalities, received {keys!r}")
        for key in keys:
            if key == query:
                raise ValueError(
                    f"cross-attention fusion: keys must differ from the query {query!r}, received {list(keys)}"
                )
            if key not in dims:
                raise ValueError(f"cross-attention fusion: key must be one of {sorted(dims)}, received {key!r}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"cross-attention fusion: expected distinct keys, received {list(keys)}")
        if not keys:
            raise ValueError(
                f"cross-attention fusion: expected at least one key modality besides the query {query!r}, "
                f"received none (modalities {sorted(dims)})"
            )
        if layers < 1:
            raise ValueError(f"cross-attention fusion: expected layers >= 1, received {layers}")
        self.modalities = sorted(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes
        self.query = query
        self.keys = sorted(keys)
        self.dim = dim
        self.bidirectional = bidirectional
        used = sorted([query, *self.keys])
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(FeatureNorm(dims[m], norm), nn.Linear(dims[m], dim)) for m in used}
        )
        self.type_embeddings = nn.ParameterDict({m: nn.Parameter(0.02 * torch.randn(dim)) for m in used})
        self.forward_layers = nn.ModuleList([CrossAttentionLayer(dim, heads, dropout) for _ in range(layers)])
        self.reverse_layers = nn.ModuleList(
            [CrossAttentionLayer(dim, heads, dropout) for _ in range(layers)] if bidirectional else []
        )
        self.out_dim = 2 * dim + len(self.modalities)

    def _check_tokens(self, features: dict[str, EncoderOutput], batch: int) -> None:
        """Raise ``ValueError`` naming the modality on wrong token shapes or masks."""
        for m in sorted(self.projections):
            tokens = features[m].tokens
            if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[-1] != self.dims[m]:
                raise ValueError(
                    f"cross-attention fusion: {m} tokens must have shape (B={batch}, N, {self.dims[m]}), "
                    f"received {tuple(tokens.shape)}"
                )
            check_mask(m, features[m].token_mask, tokens.shape[:2], "token_mask (B, N)")

    def _embed(self, modality: str, output: EncoderOutput, present: Tensor) -> tuple[Tensor, Tensor]:
        """Projected tokens (B, N, dim) and real-token mask (B, N); padding/absent rows read as zero."""
        real = output.token_mask & present.unsqueeze(1)
        tokens = torch.where(real.unsqueeze(-1), output.tokens, output.tokens.new_zeros(()))
        return self.projections[modality](tokens) + self.type_embeddings[modality], real

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor], return_attention: bool = False
    ) -> FusionOutput:
        """Fuse token sequences by cross-attention.

        Inputs: features {modality: EncoderOutput(pooled (B, D_m), tokens (B, N_m, D_m),
        token_mask (B, N_m))}, present {modality: (B,) bool} (missing key: all present).

        Raises:
            ValueError: on missing/unexpected modalities or wrong feature/token sizes.
        """
        check_features("cross-attention", self.modalities, features, self.dims)
        first = features[self.query].tokens
        batch = first.shape[0]
        self._check_tokens(features, batch)
        for m in self.modalities:
            if m in present:
                check_mask(m, present[m], (batch,), "present (B,)")
        presence = self.presence_matrix(present, batch, first.device)
        column = {m: presence[:, i] for i, m in enumerate(self.modalities)}

        q, q_mask = self._embed(self.query, features[self.query], column[self.query])
        embedded = [self._embed(k, features[k], column[k]) for k in self.keys]
        k = torch.cat([e[0] for e in embedded], dim=1)
        k_mask = torch.cat([e[1] for e in embedded], dim=1)
        sizes = [e[0].shape[1] for e in embedded]

        forward_maps, reverse_maps = [], []
        for index, layer in enumerate(self.forward_layers):
            new_q, weights = layer(q, k, k_mask, need_weights=return_attention)
            if return_attention:
                forward_maps.append(torch.where(q_mask[:, None, :, None], weights, weights.new_zeros(())))
            if self.bidirectional:
                k, weights = self.reverse_layers[index](k, q, q_mask, need_weights=return_attention)
                if return_attention:
                    reverse_maps.append(
                        torch.where(k_mask[:, None, :, None], weights, weights.new_zeros(()))
                    )
            q = new_q

        fused = torch.cat([masked_mean(q, q_mask), masked_mean(k, k_mask), presence.to(q.dtype)], dim=1)
        if not return_attention:
            return FusionOutput(fused=fused)
        attention = {}
        for key, part in zip(self.keys, torch.stack(forward_maps).split(sizes, dim=-1)):
            attention[f"{self.query}->{key}"] = part
        if self.bidirectional:
            for key, part in zip(self.keys, torch.stack(reverse_maps).split(sizes, dim=-2)):
                attention[f"{key}->{self.query}"] = part
        return FusionOutput(fused=fused, attention=attention)

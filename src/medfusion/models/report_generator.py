"""Report generation: an image encoder and a transformer decoder that cross-attends to image patches.

An encoder-decoder captioner in the line of "Show, Attend and Tell" (Xu et al., ICML
2015), whose word-by-word attention over image regions shows where each word looks,
with the transformer decoder of Vaswani et al. ("Attention Is All You Need", NeurIPS
2017) in its pre-norm form (Xiong et al., "On Layer Normalization in the Transformer
Architecture", ICML 2020), as used for radiology reports by R2Gen (Chen et al., EMNLP
2020) and for pathology reports from histology patches.

- Image side: any :class:`~medfusion.encoders.image.SpatialEncoder` gives patch tokens
  (B, N, D_e) in row-major order over its token grid; they are layer-normalised,
  projected to the decoder width and given a fixed sin-cos encoding of their grid
  coordinates (as in DETR, Carion et al. 2020, and MAE, He et al. 2022), so attention
  can tell where a patch lies. Works for 2-D images and 3-D volumes alike.
- Text side: learned token and position embeddings; each layer runs causal
  self-attention, cross-attention to the image tokens (computed explicitly so its
  weights can be returned; masked image tokens get weight 0) and a feed-forward block,
  each as ``x + Block(LayerNorm(x))``. The output projection is optionally tied to the
  token embedding (Press & Wolf, EACL 2017).
- Training: teacher forcing, cross-entropy on ``tokens[:, 1:]`` given ``tokens[:, :-1]``
  with padding ignored and optional label smoothing (Szegedy et al., CVPR 2016).
- Decoding: greedy or beam search (:mod:`medfusion.models.decoding`) over a key/value
  cache: the image keys/values of every layer are projected once and each step runs the
  decoder on one new token, so a step costs O(t). Each generated word comes with the
  cross-attention that produced it, reordered with the beams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medfusion.encoders.image import SpatialEncoder
from medfusion.models.decoding import DecodingOptions, Hypothesis, beam_search, check_int, greedy_search
from medfusion.validation import check_mask

_OWNER = "report generator"


class GeneratorOutput(NamedTuple):
    """What :meth:`ReportGenerator.forward` returns.

    Attributes:
        logits: (B, T, V) next-token logits at every position.
        cross_attention: (B, layers, heads, T, N) word-to-patch attention, or ``None`` when
            not requested. Rows of padding tokens are zero; other rows sum to 1 over the
            real image tokens.
    """

    logits: Tensor
    cross_attention: Tensor | None = None


class GeneratedReport(NamedTuple):
    """One generated report with its word-to-region attention.

    Attributes:
        token_ids: generated token ids, bos and eos excluded.
        score: log-probability (eos included) over the GNMT length penalty
            ``((5 + L) / 6) ** length_penalty``, L = generated tokens with eos (a report cut
            at ``max_length`` has no eos).
        cross_attention: (T_gen, layers, heads, N) the attention of the step that produced
            each token (T_gen = len(token_ids)).
        mean_attention: (T_gen, N) the same averaged over layers and heads.
        grid: the image token grid; ``mean_attention[i].view(grid)`` is the map of word i.
    """

    token_ids: list[int]
    score: float
    cross_attention: Tensor
    mean_attention: Tensor
    grid: tuple[int, ...]


class ImageMemory(NamedTuple):
    """Image tokens the decoder attends to.

    Attributes:
        tokens: (B, N, dim) projected and position-encoded patch tokens.
        mask: (B, N) bool, True for real tokens.
        grid: token grid (row-major), ``prod(grid) == N``.
    """

    tokens: Tensor
    mask: Tensor
    grid: tuple[int, ...]


def grid_position_encoding(grid: tuple[int, ...], dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed sin-cos encoding of each grid cell's coordinates, cells in row-major order.

    Each axis gets ``dim // (2 * len(grid))`` frequencies ``10000 ** (-i / F)``: sin and cos
    of the coordinate times each; the remaining columns are zero.

    Returns:
        (prod(grid), dim) float32.

    Raises:
        ValueError: when ``dim < 2 * len(grid)``.
    """
    axes = len(grid)
    per_axis = dim // (2 * axes)
    if per_axis < 1:
        raise ValueError(f"report generator: expected dim >= {2 * axes} for a {axes}-D token grid, received {dim}")
    coordinates = torch.meshgrid(*(torch.arange(n, dtype=torch.float32, device=device) for n in grid), indexing="ij")
    frequencies = 10000.0 ** (-torch.arange(per_axis, dtype=torch.float32, device=device) / per_axis)
    parts = []
    for axis in coordinates:
        angles = axis.reshape(-1, 1) * frequencies
        parts += [angles.sin(), angles.cos()]
    encoding = torch.cat(parts, dim=1)
    return F.pad(encoding, (0, dim - encoding.shape[1]))


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, D) -> (B, heads, T, D / heads)."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, T, D / heads) -> (B, T, D)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over the tokens so far, with an optional key/value cache.

    The key projection has no bias (softmax ignores a score shared by all keys).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None, past: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend from ``x`` to the cached and the new tokens.

        Inputs: x (B, T, D); mask (B, 1, T, T_all) bool (True = may attend) or ``None``
        (every query sees every key: one new token after a cache); past keys and values
        (B, heads, T_past, D / heads) each.

        Returns:
            (B, T, D) and the keys and values of all T_all = T_past + T tokens.
        """
        q = _split_heads(self.query(x), self.heads)
        k, v = _split_heads(self.key(x), self.heads), _split_heads(self.value(x), self.heads)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(_merge_heads(context)), (k, v)


class ImageCrossAttention(nn.Module):
    """Multi-head attention from text tokens to image tokens, weights computed explicitly."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Image tokens (B, N, D) -> keys and values (B, heads, N, D / heads)."""
        return _split_heads(self.key(memory), self.heads), _split_heads(self.value(memory), self.heads)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, memory_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``softmax(Q K^T / sqrt(d))`` over the real image tokens.

        Inputs: x (B, T, D); keys, values (B, heads, N, D / heads); memory_mask (B, N) bool.

        Returns:
            (B, T, D) and the weights (B, heads, T, N): 0 on masked image tokens; a sample
            without any real image token gets zero weights and a zero output.
        """
        q = _split_heads(self.query(x), self.heads)
        scores = (q @ keys.transpose(-2, -1)) * self.scale
        has_key = memory_mask.any(dim=1)
        allowed = (memory_mask | ~has_key[:, None])[:, None, None, :]
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        weights = torch.where(has_key[:, None, None, None], weights, weights.new_zeros(()))
        p = self.dropout if self.training else 0.0
        attended = self.out(_merge_heads(F.dropout(weights, p=p, training=p > 0.0) @ values))
        return torch.where(has_key[:, None, None], attended, attended.new_zeros(())), weights


class DecoderLayer(nn.Module):
    """Pre-norm decoder block: causal self-attention, image cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = CausalSelfAttention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim)
        self.cross_attention = ImageCrossAttention(dim, heads, dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                          nn.Linear(ff_mult * dim, dim))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, self_mask: Tensor | None, memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor,
                past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Inputs as in :class:`CausalSelfAttention` and :class:`ImageCrossAttention`.

        Returns:
            (B, T, D) tokens, cross-attention weights (B, heads, T, N), self-attention keys/values.
        """
        attended, present = self.self_attention(self.self_norm(x), self_mask, past)
        x = x + self.residual_dropout(attended)
        attended, weights = self.cross_attention(self.cross_norm(x), *memory_kv, memory_mask)
        x = x + self.residual_dropout(attended)
        x = x + self.residual_dropout(self.feed_forward(self.ff_norm(x)))
        return x, weights, present


@dataclass
class DecoderCache:
    """Decoding state of R rows: image keys/values per layer and self-attention keys/values so far.

    Attributes:
        memory_kv: per layer, image keys and values (R, heads, N, D / heads).
        memory_mask: (R, N) bool, True for real image tokens.
        past: per layer, self-attention keys and values (R, heads, t, D / heads).
        grid: the image token grid.
    """

    memory_kv: list[tuple[Tensor, Tensor]]
    memory_mask: Tensor
    past: list[tuple[Tensor, Tensor]]
    grid: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Number of rows R."""
        return self.memory_mask.shape[0]

    @property
    def length(self) -> int:
        """Tokens fed so far (the position of the next one)."""
        return self.past[0][0].shape[2]

    def reorder(self, index: Tensor) -> None:
        """Make row r continue row ``index[r]`` (beam search); ``index`` (R,) int64."""
        self.memory_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory_kv]
        self.memory_mask = self.memory_mask.index_select(0, index)
        self.past = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.past]


class ReportGenerator(nn.Module):
    """Image encoder + transformer decoder writing a report, with word-to-patch attention.

    Args:
        image_encoder: a spatial encoder (e.g. ``ENCODERS["image"].build("cnn")``) giving
            patch tokens over its token grid.
        vocab_size: V, the tokenizer's vocabulary size.
        dim: decoder width.
        layers: decoder layers.
        heads: attention heads; must divide ``dim``.
        ff_mult: feed-forward hidden size as a multiple of ``dim``.
        dropout: dropout on embeddings, attention weights, residual branches and inside
            the feed-forward blocks (training only).
        max_length: longest token sequence the model reads or writes, bos and eos included.
        pad_id, bos_id, eos_id: special token ids (a :class:`WordPieceTokenizer` uses
            [PAD]=0, [CLS]=2 as bos and [SEP]=3 as eos).
        tie_embeddings: share the output projection's weight with the token embedding.
        label_smoothing: label smoothing of the training loss ``total``.

    Raises:
        ValueError: on a non-spatial encoder, a non-positive size, ``dim % heads != 0``,
            a dropout or label smoothing outside [0, 1), ``max_length < 2``, or special
            ids that are not distinct ids of the vocabulary.
    """

    def __init__(self, image_encoder: SpatialEncoder, vocab_size: int, *, dim: int = 128, layers: int = 2,
                 heads: int = 4, ff_mult: int = 4, dropout: float = 0.1, max_length: int = 128, pad_id: int = 0,
                 bos_id: int = 2, eos_id: int = 3, tie_embeddings: bool = True, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not isinstance(image_encoder, SpatialEncoder):
            raise ValueError(f"report generator: expected image_encoder to be a SpatialEncoder (image or volume "
                             f"encoder with token_grid), received {type(image_encoder).__name__}")
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("layers", layers), ("heads", heads),
                            ("ff_mult", ff_mult)):
            check_int(name, value, 1, owner=_OWNER)
        check_int("max_length", max_length, 2, owner=_OWNER)
        if dim % heads:
            raise ValueError(f"report generator: expected heads to divide dim={dim}, received heads={heads}")
        grid_axes = image_encoder.spatial_dims
        if dim < 2 * grid_axes:
            raise ValueError(f"report generator: expected dim >= {2 * grid_axes} for a {grid_axes}-D token grid, "
                             f"received {dim}")
        for name, value in (("dropout", dropout), ("label_smoothing", label_smoothing)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"report generator: expected {name} in [0, 1), received {value!r}")
        specials = {"pad_id": pad_id, "bos_id": bos_id, "eos_id": eos_id}
        for name, value in specials.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
                raise ValueError(f"report generator: expected {name} in [0, vocab_size={vocab_size}), "
                                 f"received {value!r}")
        if len(set(specials.values())) != 3:
            raise ValueError(f"report generator: expected distinct special ids, received {specials}")
        self.image_encoder = image_encoder
        self.vocab_size, self.dim, self.heads, self.max_length = vocab_size, dim, heads, max_length
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.label_smoothing = float(label_smoothing)
        self.image_norm = nn.LayerNorm(image_encoder.out_dim)
        self.image_projection = nn.Linear(image_encoder.out_dim, dim)
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_length, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, ff_mult, dropout) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, vocab_size)
        if tie_embeddings:
            self.output.weight = self.token_embedding.weight
        self._grids: dict[tuple[int, ...], tuple[int, ...]] = {}

    # -- encoding ---------------------------------------------------------------------------

    def token_grid(self, spatial_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The image token grid for inputs of ``spatial_shape`` (remembered per shape)."""
        if spatial_shape not in self._grids:
            self._grids[spatial_shape] = tuple(self.image_encoder.token_grid(spatial_shape))
        return self._grids[spatial_shape]

    def encode_images(self, images: Tensor) -> ImageMemory:
        """Encode images into the tokens the decoder attends to.

        Inputs: images (B, C, H, W) (or (B, C, D, H, W) with a volume encoder).

        Returns:
            :class:`ImageMemory` with tokens (B, N, dim), mask (B, N) and the grid.

        Raises:
            ValueError: from the encoder on a bad image tensor, or when the encoder's tokens
                do not match its token grid.
        """
        features = self.image_encoder(images)
        grid = self.token_grid(tuple(images.shape[2:]))
        if math.prod(grid) != features.tokens.shape[1]:
            raise ValueError(f"report generator: expected {math.prod(grid)} image tokens for grid {grid}, "
                             f"received {features.tokens.shape[1]}")
        position = grid_position_encoding(grid, self.dim, features.tokens.device).to(features.tokens.dtype)
        tokens = self.image_projection(self.image_norm(features.tokens)) + position
        return ImageMemory(tokens, features.token_mask, grid)

    # -- teacher-forced decoding -------------------------------------------------------------

    def _check_tokens(self, tokens: Tensor, token_mask: Tensor | None) -> Tensor:
        """Validate (B, T) ids and mask; return the mask (all True when ``None``)."""
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] < 1:
            received = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"report generator: expected tokens (B, T) with T >= 1, received {received}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"report generator: expected integer token ids, received {tokens.dtype}")
        if tokens.shape[1] > self.max_length:
            raise ValueError(f"report generator: expected at most max_length={self.max_length} tokens, "
                             f"received {tokens.shape[1]}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"report generator: expected token ids in [0, {self.vocab_size}), received ids in "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        if token_mask is None:
            token_mask = torch.ones_like(tokens, dtype=torch.bool)
        check_mask("tokens", token_mask, tuple(tokens.shape), "token_mask (B, T)")
        if not (token_mask[:, 0] & (tokens[:, 0] == self.bos_id)).all():
            raise ValueError(f"report generator: expected every sequence to start with a real bos_id={self.bos_id}, "
                             f"received first tokens {tokens[:, 0].tolist()[:10]}")
        return token_mask

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """(B, T) ids at positions start.. -> (B, T, dim)."""
        positions = self.position_embedding.weight[start:start + tokens.shape[1]]
        return self.embedding_dropout(self.token_embedding(tokens) + positions)

    def _decode(self, memory: ImageMemory, tokens: Tensor, token_mask: Tensor, return_attention: bool
                ) -> GeneratorOutput:
        """Teacher-forced decoder pass over validated tokens."""
        if memory.tokens.shape[0] != tokens.shape[0]:
            raise ValueError(f"report generator: expected as many token rows as images ({memory.tokens.shape[0]}), "
                             f"received {tokens.shape[0]}")
        length = tokens.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        self_mask = (causal & token_mask[:, None, :])[:, None]  # (B, 1, T, T)
        x = self._embed(tokens, 0)
        maps = []
        for layer in self.layers:
            memory_kv = layer.cross_attention.project_memory(memory.tokens)
            x, weights, _ = layer(x, self_mask, memory_kv, memory.mask)
            maps.append(weights)
        logits = self.output(self.final_norm(x))
        if not return_attention:
            return GeneratorOutput(logits)
        attention = torch.stack(maps, dim=1)  # (B, layers, heads, T, N)
        attention = torch.where(token_mask[:, None, None, :, None], attention, attention.new_zeros(()))
        return GeneratorOutput(logits, attention)

    def forward(self, images: Tensor, tokens: Tensor, token_mask: Tensor | None = None, *,
                return_attention: bool = False) -> GeneratorOutput:
        """Next-token logits for every position (teacher forcing).

        Inputs: images (B, C, H, W); tokens (B, T) int ids starting with bos, padded on the
        right; token_mask (B, T) bool, True for real tokens (``None``: all real).

        Args:
            return_attention: also return the cross-attention maps.

        Returns:
            :class:`GeneratorOutput` with logits (B, T, V) and cross_attention
            (B, layers, heads, T, N) or ``None``.

        Raises:
            ValueError: on bad images, ids outside the vocabulary, T > max_length, a bad
                mask, a sequence not starting with a real bos, or mismatched batch sizes.
        """
        token_mask = self._check_tokens(tokens, token_mask)
        return self._decode(self.encode_images(images), tokens, token_mask, return_attention)

    def loss(self, images: Tensor, tokens: Tensor, token_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Teacher-forcing loss: predict ``tokens[:, 1:]`` from ``tokens[:, :-1]``, padding ignored.

        Inputs as in :meth:`forward`; T >= 2.

        Returns:
            ``cross_entropy`` (mean over real target tokens), ``total`` (the same with
            ``label_smoothing``; the term to minimise) and ``accuracy`` (detached share
            of real target tokens predicted by the argmax).

        Raises:
            ValueError: as :meth:`forward`, when T < 2 or no sequence has a target token.
        """
        token_mask = self._check_tokens(tokens, token_mask)
        if tokens.shape[1] < 2 or not token_mask[:, 1:].any():
            raise ValueError("report generator: expected at least one real target token after bos, received "
                             f"tokens of shape {tuple(tokens.shape)} with {int(token_mask[:, 1:].sum())} real targets")
        output = self._decode(self.encode_images(images), tokens[:, :-1], token_mask[:, :-1], False)
        targets, real = tokens[:, 1:], token_mask[:, 1:]
        logits = output.logits.reshape(-1, self.vocab_size)
        labels = targets.masked_fill(~real, -100).reshape(-1)
        cross_entropy = F.cross_entropy(logits, labels, ignore_index=-100)
        total = cross_entropy if self.label_smoothing == 0.0 else F.cross_entropy(
            logits, labels, ignore_index=-100, label_smoothing=self.label_smoothing)
        correct = (output.logits.argmax(dim=-1) == targets) & real
        accuracy = (correct.sum() / real.sum()).detach()
        return {"cross_entropy": cross_entropy, "total": total, "accuracy": accuracy}

    # -- incremental decoding ----------------------------------------------------------------

    def start_cache(self, memory: ImageMemory) -> DecoderCache:
        """An empty decoding state over ``memory`` (image keys/values projected once per layer)."""
        rows = memory.tokens.shape[0]
        empty = memory.tokens.new_zeros(rows, self.heads, 0, self.dim // self.heads)
        return DecoderCache(
            memory_kv=[layer.cross_attention.project_memory(memory.tokens) for layer in self.layers],
            memory_mask=memory.mask, past=[(empty, empty) for _ in self.layers], grid=memory.grid)

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> tuple[Tensor, Tensor]:
        """Feed one token per row at position ``cache.length``; the cache grows by one.

        Inputs: tokens (R,) int ids.

        Returns:
            Next-token logits (R, V) and the cross-attention of this step (R, layers, heads, N).

        Raises:
            ValueError: on a shape not (R,), ids outside the vocabulary or a full cache.
        """
        if not isinstance(tokens, Tensor) or tuple(tokens.shape) != (cache.rows,):
            received = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"report generator: expected step tokens of shape ({cache.rows},), received {received}")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"report generator: expected token ids in [0, {self.vocab_size}), received "
                             f"{tokens.tolist()[:10]}")
        position = cache.length
        if position >= self.max_length:
            raise ValueError(f"report generator: the cache holds max_length={self.max_length} tokens; "
                             "no position is left")
        x = self._embed(tokens[:, None], position)
        maps = []
        for index, layer in enumerate(self.layers):
            x, weights, cache.past[index] = layer(x, None, cache.memory_kv[index], cache.memory_mask,
                                                  cache.past[index])
            maps.append(weights[:, :, 0])
        return self.output(self.final_norm(x))[:, 0], torch.stack(maps, dim=1)

    @torch.no_grad()
    def hypotheses(self, images: Tensor, *, method: Literal["greedy", "beam"] = "greedy",
                   beam_size: int | None = None, max_length: int | None = None, length_penalty: float = 1.0,
                   no_repeat_ngram: int = 0, min_length: int = 0) -> list[list[GeneratedReport]]:
        """Every finished hypothesis per image, best first (greedy: one). Arguments as :meth:`generate`."""
        if method not in ("greedy", "beam"):
            raise ValueError(f"report generator: expected method 'greedy' or 'beam', received {method!r}")
        if method == "greedy" and beam_size is not None:
            raise ValueError(f"report generator: beam_size applies to method='beam' only, received "
                             f"beam_size={beam_size!r} with method='greedy'")
        beam_size = 4 if beam_size is None else beam_size
        check_int("beam_size", beam_size, 1, owner=_OWNER)
        limit = self.max_length - 1
        max_length = limit if max_length is None else max_length
        check_int("max_length", max_length, 1, limit, owner=_OWNER)
        options = DecodingOptions(bos_id=self.bos_id, eos_id=self.eos_id, max_length=max_length,
                                  min_length=min_length, length_penalty=length_penalty,
                                  no_repeat_ngram=no_repeat_ngram, suppress=(self.pad_id, self.bos_id))
        was_training = self.training
        self.eval()
        try:
            memory = self.encode_images(images)
            batch, device = memory.tokens.shape[0], memory.tokens.device
            if method == "greedy":
                cache = self.start_cache(memory)
                pools = [[h] for h in greedy_search(lambda t, _: self.decode_step(t, cache), batch, options, device)]
            else:
                repeated = ImageMemory(memory.tokens.repeat_interleave(beam_size, dim=0),
                                       memory.mask.repeat_interleave(beam_size, dim=0), memory.grid)
                cache = self.start_cache(repeated)

                def step(tokens: Tensor, parents: Tensor | None) -> tuple[Tensor, Tensor]:
                    if parents is not None:
                        cache.reorder(parents)
                    return self.decode_step(tokens, cache)

                pools = beam_search(step, batch, beam_size, options, device)
        finally:
            self.train(was_training)
        return [[self._report(h, memory.grid) for h in pool] for pool in pools]

    def generate(self, images: Tensor, *, method: Literal["greedy", "beam"] = "greedy", beam_size: int | None = None,
                 max_length: int | None = None, length_penalty: float = 1.0, no_repeat_ngram: int = 0,
                 min_length: int = 0) -> list[GeneratedReport]:
        """Write one report per image (in eval mode, without gradients).

        Inputs: images (B, C, H, W).

        Args:
            method: "greedy" or "beam" (beam search; with ``beam_size=1`` it equals greedy).
            beam_size: beams per image for ``method="beam"`` (default 4); not allowed with greedy.
            max_length: most decoding steps (generated tokens, eos included); default and
                upper bound ``self.max_length - 1`` (bos takes one position).
            length_penalty: GNMT alpha: scores are ``log p / ((5 + L) / 6) ** alpha`` with L
                generated tokens (eos included); 0 ranks by raw log-probability, larger
                values favour longer reports.
            no_repeat_ngram: never repeat an n-gram of this size within a report; 0 disables.
            min_length: fewest report tokens before eos may be generated.

        Returns:
            One :class:`GeneratedReport` per image, in order.

        Raises:
            ValueError: on an unknown method, ``beam_size`` with greedy or < 1, an
                out-of-range ``max_length``/``min_length``/``no_repeat_ngram``, a
                non-finite ``length_penalty`` or bad images.
        """
        pools = self.hypotheses(images, method=method, beam_size=beam_size, max_length=max_length,
                                length_penalty=length_penalty, no_repeat_ngram=no_repeat_ngram,
                                min_length=min_length)
        return [pool[0] for pool in pools]

    @staticmethod
    def _report(hypothesis: Hypothesis, grid: tuple[int, ...]) -> GeneratedReport:
        attention = hypothesis.extras.float()
        return GeneratedReport(token_ids=hypothesis.tokens, score=hypothesis.score, cross_attention=attention,
                               mean_attention=attention.mean(dim=(1, 2)), grid=grid)


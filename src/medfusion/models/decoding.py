"""Greedy and beam-search decoding over any autoregressive step function.

Beam search (Sutskever et al., "Sequence to Sequence Learning with Neural Networks",
NeurIPS 2014) with fairseq's bookkeeping (Ott et al., NAACL 2019 demo): each step
extends every live hypothesis of a sample, keeps the ``2 * beam_size`` best candidates;
those that end with eos among the first ``beam_size`` are finished, the first
``beam_size`` others continue. A sample is done once ``beam_size`` hypotheses have
finished and its best live hypothesis, scored as if it ended now, is no better than the
worst of them (Hugging Face's ``early_stopping=False`` rule: exact for
``length_penalty <= 0``, a heuristic above), or after ``max_length`` steps (the live
hypotheses then finish as they are, without eos). With ``beam_size=1`` this is exactly
greedy decoding.

Length penalty (Wu et al. 2016, "Google's Neural Machine Translation System", GNMT):
a hypothesis of ``L`` generated tokens (eos included) and log-probability ``log p``
scores ``log p / lp(L)`` with ``lp(L) = ((5 + L) / 6) ** alpha``; ``alpha = 0`` ranks
by raw log-probability, ``alpha > 0`` favours longer hypotheses. Hypotheses are
searched by raw log-probability and ranked by this score once finished.

No-repeat n-gram blocking (Paulus et al., "A Deep Reinforced Model for Abstractive
Summarization", ICLR 2018): a token that would complete an n-gram already present in
the hypothesis' generated tokens gets probability 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

#: ``step(tokens (R,), parents (R,) | None) -> (logits (R, V), extras (R, *E))``: feed the last
#: token of each of R rows and return next-token logits plus per-row extras (attention maps).
#: ``parents[r]`` is the row that row r continues (a state cache must be reordered by it first);
#: ``None`` means every row continues itself.
StepFn = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]


def check_int(name: str, value, minimum: int, maximum: int | None = None, owner: str = "decoding") -> None:
    """Raise ``ValueError`` (prefixed by ``owner``) unless ``value`` is an int in [minimum, maximum]."""
    bad = isinstance(value, bool) or not isinstance(value, int) or value < minimum
    if bad or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{owner}: expected {name} to be an int {bounds}, received {value!r}")


@dataclass(frozen=True)
class DecodingOptions:
    """Settings shared by greedy and beam search.

    Args:
        bos_id: token fed first.
        eos_id: token that ends a hypothesis.
        max_length: most decoding steps (generated tokens, eos included).
        min_length: fewest generated tokens before eos is allowed (eos excluded).
        length_penalty: GNMT alpha (see the module header).
        no_repeat_ngram: block repeated n-grams of this size; 0 disables.
        suppress: tokens never generated (padding, bos).

    Raises:
        ValueError: on a non-int or out-of-range setting, a non-finite ``length_penalty``
            or ``eos_id`` among ``suppress``.
    """

    bos_id: int
    eos_id: int
    max_length: int
    min_length: int = 0
    length_penalty: float = 1.0
    no_repeat_ngram: int = 0
    suppress: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_int("bos_id", self.bos_id, 0)
        check_int("eos_id", self.eos_id, 0)
        check_int("max_length", self.max_length, 1)
        check_int("min_length", self.min_length, 0, self.max_length - 1)
        check_int("no_repeat_ngram", self.no_repeat_ngram, 0)
        penalty = self.length_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not math.isfinite(penalty):
            raise ValueError(f"decoding: expected length_penalty to be a finite number, received {penalty!r}")
        if self.eos_id in self.suppress:
            raise ValueError(f"decoding: eos_id={self.eos_id} cannot be suppressed, received suppress={self.suppress}")


class Hypothesis(NamedTuple):
    """One decoded sequence.

    Attributes:
        tokens: generated token ids, eos excluded.
        score: log-probability (eos included) divided by the GNMT length penalty.
        extras: (len(tokens), *E) the step extras of the step that produced each token.
    """

    tokens: list[int]
    score: float
    extras: Tensor


def length_normalizer(length: int, alpha: float) -> float:
    """GNMT length penalty ``((5 + length) / 6) ** alpha``."""
    return ((5.0 + length) / 6.0) ** alpha


def repeated_ngram_mask(history: Tensor, n: int, vocab_size: int) -> Tensor:
    """Tokens that would repeat an n-gram of ``history``.

    Inputs: history (R, t) generated token ids of each row.

    Returns:
        (R, V) bool, True where the token after the last ``n - 1`` tokens of a row would
        complete an n-gram that already occurs in that row.
    """
    rows, length = history.shape
    banned = torch.zeros(rows, vocab_size, dtype=torch.float32, device=history.device)
    if n < 1 or length < n:
        return banned.bool()
    windows = history.unfold(1, n, 1)  # (R, t - n + 1, n)
    prefix = history[:, length - (n - 1):]  # (R, n - 1)
    match = (windows[:, :, : n - 1] == prefix[:, None, :]).all(dim=-1)
    banned.scatter_add_(1, windows[:, :, -1], match.to(banned.dtype))
    return banned > 0


def constrained_log_probs(logits: Tensor, history: Tensor, options: DecodingOptions) -> Tensor:
    """Log-probabilities with suppressed, too-early-eos and repeated-n-gram tokens at -inf.

    A row whose every token is blocked keeps eos allowed, so it can always end.

    Inputs: logits (R, V), history (R, t) tokens generated so far.

    Returns:
        (R, V) float32 log-probabilities.
    """
    log_probs = logits.float().log_softmax(dim=-1)
    blocked = torch.zeros_like(log_probs, dtype=torch.bool)
    if options.suppress:
        blocked[:, list(options.suppress)] = True
    if history.shape[1] < options.min_length:
        blocked[:, options.eos_id] = True
    if options.no_repeat_ngram:
        blocked |= repeated_ngram_mask(history, options.no_repeat_ngram, log_probs.shape[1])
    stuck = blocked.all(dim=1)
    blocked[stuck, options.eos_id] = False
    return log_probs.masked_fill(blocked, float("-inf"))


def greedy_search(step: StepFn, batch_size: int, options: DecodingOptions, device: torch.device) -> list[Hypothesis]:
    """Pick the most probable allowed token at every step.

    Returns:
        One :class:`Hypothesis` per row.
    """
    tokens = torch.full((batch_size,), options.bos_id, dtype=torch.long, device=device)
    history = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    scores = torch.zeros(batch_size, device=device)
    lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    extras = []
    for _ in range(options.max_length):
        logits, extra = step(tokens, None)
        log_probs = constrained_log_probs(logits, history, options)
        best = log_probs.argmax(dim=1)
        alive = ~finished
        scores = scores + torch.where(alive, log_probs.gather(1, best[:, None])[:, 0], 0.0)
        lengths = lengths + alive.long()
        tokens = torch.where(alive, best, options.eos_id)
        history = torch.cat([history, tokens[:, None]], dim=1)
        extras.append(extra)
        finished = finished | (tokens == options.eos_id)
        if finished.all():
            break
    extras = torch.stack(extras, dim=1)  # (B, steps, *E)
    hypotheses = []
    for row in range(batch_size):
        length = int(lengths[row])
        ids = history[row, :length].tolist()
        kept = length - 1 if ids and ids[-1] == options.eos_id else length
        score = float(scores[row]) / length_normalizer(length, options.length_penalty)
        hypotheses.append(Hypothesis(ids[:kept], score, extras[row, :kept]))
    return hypotheses


def _add_finished(pool: list[Hypothesis], hypothesis: Hypothesis, beam_size: int) -> None:
    """Insert into ``pool`` keeping the ``beam_size`` best, best first."""
    pool.append(hypothesis)
    pool.sort(key=lambda h: -h.score)
    del pool[beam_size:]


def beam_search(step: StepFn, batch_size: int, beam_size: int, options: DecodingOptions,
                device: torch.device) -> list[list[Hypothesis]]:
    """Beam search batched over samples and beams (rows ``b * beam_size + k``).

    Args:
        step: the model's step function over ``batch_size * beam_size`` rows; every
            row starts from the same state as the other rows of its sample.
        batch_size: number of samples B.
        beam_size: K >= 1.
        options: decoding settings.
        device: where the token tensors live.

    Returns:
        Per sample, up to K finished hypotheses sorted by score, best first.

    Raises:
        ValueError: when ``beam_size`` is not an int >= 1.
    """
    check_int("beam_size", beam_size, 1)
    k = beam_size
    rows = batch_size * k
    tokens = torch.full((rows,), options.bos_id, dtype=torch.long, device=device)
    parents = None
    history = torch.zeros(batch_size, k, 0, dtype=torch.long, device=device)
    kept_extras = None  # (B, K, t, *E)
    scores = torch.full((batch_size, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: only one may expand, else they would duplicate
    pools: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size
    offsets = torch.arange(batch_size, device=device)[:, None] * k
    for t in range(options.max_length):
        logits, extra = step(tokens, parents)
        vocab = logits.shape[1]
        log_probs = constrained_log_probs(logits, history.reshape(rows, t), options).view(batch_size, k, vocab)
        candidates = (scores[:, :, None] + log_probs).view(batch_size, k * vocab)
        top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)
        top_beams, top_tokens = top_index // vocab, top_index % vocab
        extra = extra.reshape(batch_size, k, *extra.shape[1:])
        is_eos = top_tokens == options.eos_id
        for b in range(batch_size):
            if done[b]:
                continue
            for rank in range(k):
                if is_eos[b, rank] and math.isfinite(top_scores[b, rank]):
                    beam = int(top_beams[b, rank])
                    score = float(top_scores[b, rank]) / length_normalizer(t + 1, options.length_penalty)
                    trail = extra.new_zeros(0, *extra.shape[2:]) if kept_extras is None else kept_extras[b, beam]
                    _add_finished(pools[b], Hypothesis(history[b, beam].tolist(), score, trail), k)
        # The first K candidates that do not end continue (there are >= K: one eos per beam).
        order = torch.argsort(is_eos.to(torch.int8), dim=1, stable=True)[:, :k]
        beams = top_beams.gather(1, order)
        scores = top_scores.gather(1, order)
        tokens = top_tokens.gather(1, order)
        for b in range(batch_size):
            # Done when K hypotheses finished and the best live one, scored as if it ended now, is no better.
            best_live = float(scores[b, 0]) / length_normalizer(t + 1, options.length_penalty)
            done[b] = done[b] or (len(pools[b]) >= k and pools[b][-1].score >= best_live)
        if all(done):
            break
        history = torch.cat([history.gather(1, beams[:, :, None].expand(-1, -1, t)), tokens[:, :, None]], dim=2)
        step_extra = extra[torch.arange(batch_size, device=device)[:, None], beams][:, :, None]
        kept_extras = step_extra if kept_extras is None else torch.cat(
            [kept_extras[torch.arange(batch_size, device=device)[:, None], beams], step_extra], dim=2)
        parents = (offsets + beams).view(rows)
        tokens = tokens.view(rows)
    else:
        # max_length reached: the live hypotheses finish as they are (no eos).
        length = options.max_length
        for b in range(batch_size):
            if done[b]:
                continue
            for beam in range(k):
                if math.isfinite(scores[b, beam]) or not pools[b]:
                    score = float(scores[b, beam]) / length_normalizer(length, options.length_penalty)
                    _add_finished(pools[b], Hypothesis(history[b, beam].tolist(), score, kept_extras[b, beam]), k)
    return pools


"""Metrics of report generation: text overlap, clinical correctness, grounding, and a retrieval baseline.

**Text overlap.** Both metrics see the same tokens (:func:`normalise_report`): the text is
lower-cased and split into runs of ``[a-z0-9]``; punctuation and other characters are
dropped (the tokeniser of ``rouge-score``, close to the PTB tokeniser of ``pycocoevalcap``
that report-generation papers use, which also drops punctuation).

- :func:`bleu_scores`: corpus BLEU-1..4 (Papineni et al., "BLEU: a Method for Automatic
  Evaluation of Machine Translation", ACL 2002) computed by ``sacrebleu`` on those tokens
  (``tokenize="none"``). BLEU-n is the *cumulative* score, the geometric mean of the
  modified 1..n-gram precisions times the brevity penalty (``max_ngram_order=n``), as
  R2Gen (Chen et al., EMNLP 2020) and the papers that follow it report through
  ``pycocoevalcap``. No smoothing, as ``pycocoevalcap``: an n-gram order without a single
  match makes BLEU-n zero. One reference per hypothesis.
- :func:`rouge_l`: mean sentence-level ROUGE-L F1 (Lin, "ROUGE: A Package for Automatic
  Evaluation of Summaries", 2004) by ``rouge-score``, without stemming. (``pycocoevalcap``
  weighs recall with beta = 1.2 instead of F1, so its ROUGE-L differs slightly.)

**Clinical correctness.** :func:`clinical_scores` labels references and hypotheses with a
:class:`~.labeler.FindingLabeler` and scores each finding as a binary classification
(present in the reference = truth, present in the hypothesis = prediction): precision,
recall, F1 and support per finding, micro averages (pooled counts) and macro averages
(unweighted means over findings), as scikit-learn's ``precision_recall_fscore_support``
with ``zero_division=0``.

**Grounding.** A word's attention over the image's token grid (h, w) is compared with the
ground-truth mask (H, W) of what the word names (e.g. :func:`medfusion.data.synthetic.
pathology.word_masks`). :func:`upsample_attention` maps the grid onto pixels:

- ``"nearest"``: pixel row i belongs to token row ``floor(i * h / H)`` (columns alike): each
  token covers a block of pixels, the grid cut as :func:`medfusion.data.synthetic.
  histology.region_map` cuts the 3 x 3 regions (PyTorch's ``mode="nearest"``);
- ``"bilinear"``: half-pixel centres with clamped edges (PyTorch's ``mode="bilinear",
  align_corners=False``); each token's value sits at its block's centre.

With ``preserve_mass=True`` each token's attention is spread over the pixels in
proportion to its interpolation weights, so the map keeps the grid's total (nearest: a
token's attention spread evenly over its block). :func:`pointing_game` (Zhang et al.,
"Top-down Neural Attention by Excitation Backprop", ECCV 2016) scores a hit when the
attention's peak lies inside the mask: by default the first maximal pixel of the bilinear
map (as :func:`medfusion.evaluate.explain_maps.pointing_game`); with ``mode="nearest"``
the centre pixel of the peak token's block. :func:`attention_mass_inside` is the share of
the mass-preserving map inside the mask (nearest by default: exact per token).

**Baseline.** :func:`nearest_neighbour_reports` copies the report of the most similar
training image (cosine similarity of image features), the retrieval baseline of report
generation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from medfusion.evaluate.labeler import FindingLabeler

#: BLEU orders reported by :func:`bleu_scores`.
BLEU_ORDERS: tuple[int, ...] = (1, 2, 3, 4)
#: Upsampling modes of :func:`upsample_attention`.
UPSAMPLING: tuple[str, ...] = ("nearest", "bilinear")
#: Columns of :func:`report_generation_table`.
TABLE_COLUMNS: tuple[str, ...] = (
    "system", *(f"bleu_{n}" for n in BLEU_ORDERS), "rouge_l", "clinical_micro_f1", "clinical_macro_f1",
    "pointing_game", "mass_inside", "sentence_pointing_game", "sentence_mass_inside",
)
#: Grounding results :func:`report_generation_table` takes per system: of the finding word's map and of its sentence's.
GROUNDING_KEYS: tuple[str, ...] = ("pointing_game", "mass_inside", "sentence_pointing_game", "sentence_mass_inside")

_TOKEN = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------- text overlap


def normalise_report(text: str) -> str:
    """Lower-cased ``[a-z0-9]`` tokens of ``text`` joined by single spaces ("No effusion." -> "no effusion")."""
    return " ".join(_TOKEN.findall(text.lower()))


def _check_texts(name: str, texts) -> list[str]:
    """``texts`` (a list, tuple, array, Series, ...) as a list of strings."""
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise ValueError(f"report metrics: expected {name} as a sequence of strings, received {type(texts).__name__}")
    texts = list(texts)
    wrong = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if wrong:
        raise ValueError(f"report metrics: expected {name} to hold strings, received {type(texts[wrong[0]]).__name__} "
                         f"at index {wrong[0]}")
    return texts


def _check_pairs(references, hypotheses) -> tuple[list[str], list[str]]:
    """Both as lists of strings of one non-zero length."""
    refs, hyps = _check_texts("references", references), _check_texts("hypotheses", hypotheses)
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"report metrics: expected as many hypotheses as references (at least one), received "
                         f"{len(refs)} references and {len(hyps)} hypotheses")
    return refs, hyps


def bleu_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus-level cumulative BLEU-1..4 in [0, 1] (module docstring).

    Args:
        references: N reference reports.
        hypotheses: N generated reports, in the same order.

    Returns:
        ``{"bleu_1": ..., "bleu_2": ..., "bleu_3": ..., "bleu_4": ...}``.

    Raises:
        ValueError: on no reports, unequal lengths or a non-string.

    Examples::

        bleu_scores(["the cat sat on the mat"], ["the cat sat"])["bleu_1"]  # exp(1 - 6/3) = 0.368
    """
    from sacrebleu.metrics import BLEU  # imported when used: medfusion.evaluate imports without it

    refs, hyps = _check_pairs(references, hypotheses)
    refs, hyps = [normalise_report(t) for t in refs], [normalise_report(t) for t in hyps]
    scores = {}
    for n in BLEU_ORDERS:
        metric = BLEU(max_ngram_order=n, tokenize="none", smooth_method="none", lowercase=False)
        scores[f"bleu_{n}"] = metric.corpus_score(hyps, [refs]).score / 100.0
    return scores


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean ROUGE-L F1 in [0, 1] over report pairs (0 for a pair with an empty side).

    Args:
        references: N reference reports.
        hypotheses: N generated reports, in the same order.

    Raises:
        ValueError: on no reports, unequal lengths or a non-string.
    """
    from rouge_score import rouge_scorer  # imported when used: slow (nltk), and optional

    refs, hyps = _check_pairs(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    values = [scorer.score(normalise_report(r), normalise_report(h))["rougeL"].fmeasure for r, h in zip(refs, hyps)]
    return float(np.mean(values))


# --------------------------------------------------------------------------- clinical correctness


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 from counts; 0 where a denominator is 0."""
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=2 * tp + fp + fn > 0)
    return precision, recall, f1


def clinical_scores(references: Sequence[str], hypotheses: Sequence[str], labeler: FindingLabeler) -> dict:
    """Per-finding and averaged precision / recall / F1 of the findings the hypotheses state.

    Args:
        references: N reference reports (their labels are the truth).
        hypotheses: N generated reports, in the same order.
        labeler: labels both (its :attr:`~.labeler.FindingLabeler.findings` are scored).

    Returns:
        ``{"findings": {name: {"precision", "recall", "f1", "support"}}, "micro": {...},
        "macro": {...}}``; support counts the references stating the finding (micro and
        macro: all of them).

    Raises:
        ValueError: on no reports, unequal lengths, a non-string or a labeler that is not a
            :class:`~.labeler.FindingLabeler`.
    """
    if not isinstance(labeler, FindingLabeler):
        raise ValueError(f"report metrics: expected labeler to be a FindingLabeler, received "
                         f"{type(labeler).__name__}")
    refs, hyps = _check_pairs(references, hypotheses)
    truth, predicted = labeler.label_matrix(refs), labeler.label_matrix(hyps)
    tp = (truth & predicted).sum(axis=0)
    fp = (~truth & predicted).sum(axis=0)
    fn = (truth & ~predicted).sum(axis=0)
    support = truth.sum(axis=0)
    precision, recall, f1 = _prf(tp, fp, fn)
    findings = {name: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
                       "support": int(support[j])} for j, name in enumerate(labeler.findings)}
    micro = [float(x[0]) for x in _prf(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))]
    total = int(support.sum())
    return {
        "findings": findings,
        "micro": {"precision": micro[0], "recall": micro[1], "f1": micro[2], "support": total},
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean()),
                  "support": total},
    }


# --------------------------------------------------------------------------- grounding


def _interpolation(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) weights of 1-D upsampling (module docstring); rows sum to 1."""
    weights = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        weights[rows, rows * n_in // n_out] = 1.0
        return weights
    source = np.maximum((rows + 0.5) * n_in / n_out - 0.5, 0.0)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def _check_attention(attention) -> np.ndarray:
    """Finite non-negative float64 array (..., h, w)."""
    array = np.asarray(attention)
    if array.ndim < 2 or array.dtype.kind not in "biuf" or 0 in array.shape[-2:]:
        raise ValueError(f"grounding: expected attention as a numeric array (..., h, w), received shape "
                         f"{array.shape} dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError(f"grounding: expected finite non-negative attention, received min {np.nanmin(array)} "
                         f"and {int((~np.isfinite(array)).sum())} non-finite values")
    return array


def _check_grid(grid: tuple[int, int], size, mode: str) -> tuple[int, int]:
    """(H, W) of ``size``: two ints at least the token grid (h, w); ``mode`` a known upsampling."""
    if mode not in UPSAMPLING:
        raise ValueError(f"grounding: unknown mode {mode!r}; expected one of {list(UPSAMPLING)}")
    ok = isinstance(size, Sequence) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    if not ok or size[0] < grid[0] or size[1] < grid[1]:
        raise ValueError(f"grounding: expected size as two ints (H, W) >= the attention grid {tuple(grid)}, "
                         f"received {size!r}")
    return int(size[0]), int(size[1])


def upsample_attention(attention, size: tuple[int, int], *, mode: str = "bilinear",
                       preserve_mass: bool = False) -> np.ndarray:
    """Attention over a token grid as a map over pixels (module docstring).

    Args:
        attention: (..., h, w) non-negative attention per token.
        size: (H, W) of the output, at least (h, w).
        mode: "bilinear" or "nearest".
        preserve_mass: spread each token's attention over its pixels so that every map
            keeps its grid total (for mass shares); ``False`` keeps values (for overlays).

    Returns:
        (..., H, W) float64.

    Raises:
        ValueError: on a bad attention array, size or mode, or a size below the grid's.

    Examples::

        upsample_attention(np.array([[0.0, 1.0], [0.0, 0.0]]), (4, 4))[0]
        # bilinear: array([0.  , 0.25, 0.75, 1.  ])
    """
    array = _check_attention(attention)
    height, width = _check_grid(array.shape[-2:], size, mode)
    h, w = array.shape[-2:]
    rows, cols = _interpolation(h, height, mode), _interpolation(w, width, mode)
    if preserve_mass:  # columns sum to 1: each token's mass is kept
        rows, cols = rows / rows.sum(axis=0), cols / cols.sum(axis=0)
    return np.einsum("Hh,...hw,Ww->...HW", rows, array, cols)


def _check_masks(masks, batch: int | None, name: str = "mask") -> np.ndarray:
    """Bool masks (B, H, W) (or (H, W) when batch is None), none of them empty."""
    array = np.asarray(masks)
    ndim = 2 if batch is None else 3
    if array.ndim != ndim or (batch is not None and array.shape[0] != batch):
        expected = "(H, W)" if batch is None else f"(B={batch}, H, W)"
        raise ValueError(f"grounding: expected {name} of shape {expected}, received {array.shape}")
    if array.dtype != bool and not (array.dtype.kind in "biu" and np.isin(array, (0, 1)).all()):
        raise ValueError(f"grounding: expected a bool (or 0/1) {name}, received dtype {array.dtype}")
    array = array.astype(bool).reshape(-1, *array.shape[-2:])
    empty = np.flatnonzero(~array.any(axis=(1, 2)))
    if len(empty):
        raise ValueError(f"grounding: expected non-empty {name}s (a word with nothing to point at cannot be "
                         f"scored), received {len(empty)} empty at indices {empty[:5].tolist()}")
    return array


def pointing_game_batch(attention, masks, *, mode: str = "bilinear") -> np.ndarray:
    """Pointing-game hits of B attention maps (module docstring).

    Args:
        attention: (B, h, w) non-negative attention per token.
        masks: (B, H, W) bool ground truth, none empty; (H, W) at least (h, w).
        mode: "bilinear" (peak of the bilinear map) or "nearest" (centre of the peak token's block).

    Returns:
        (B,) bool; a constant map (all tokens equal) points nowhere and misses.

    Raises:
        ValueError: on bad shapes or values, an empty mask or an unknown mode.
    """
    array = _check_attention(attention)
    if array.ndim != 3:
        raise ValueError(f"grounding: expected attention of shape (B, h, w), received {array.shape}")
    grid = _check_masks(masks, len(array), "masks")
    height, width = _check_grid(array.shape[1:], grid.shape[1:], mode)
    flat = array.reshape(len(array), -1)
    informative = flat.max(axis=1) > flat.min(axis=1)
    if mode == "nearest":
        h, w = array.shape[1:]
        peak_row, peak_col = np.divmod(flat.argmax(axis=1), w)
        # token k covers pixels ceil(k * H / h) .. ceil((k + 1) * H / h) - 1: the middle one (rounded down)
        rows = (-(-peak_row * height // h) - (-(peak_row + 1) * height // h) - 1) // 2
        cols = (-(-peak_col * width // w) - (-(peak_col + 1) * width // w) - 1) // 2
    else:
        up = upsample_attention(array, (height, width), mode=mode).reshape(len(array), -1)
        rows, cols = np.divmod(up.argmax(axis=1), width)
    return grid[np.arange(len(array)), rows, cols] & informative


def pointing_game(attention, mask, *, mode: str = "bilinear") -> bool:
    """Whether the peak of ``attention`` (h, w) lies inside ``mask`` (H, W) (see :func:`pointing_game_batch`).

    Raises:
        ValueError: on bad shapes or values, an empty mask or an unknown mode.

    Examples::

        pointing_game(np.array([[0.1, 0.7], [0.1, 0.1]]), np.eye(4, dtype=bool)[::-1])  # peak (0, 3): True
    """
    array = _check_attention(attention)
    if array.ndim != 2:
        raise ValueError(f"grounding: expected attention of shape (h, w), received {array.shape}")
    return bool(pointing_game_batch(array[None], _check_masks(mask, None), mode=mode)[0])


def attention_mass_inside_batch(attention, masks, *, mode: str = "nearest") -> np.ndarray:
    """Share of each attention map's mass inside its mask (module docstring).

    Args:
        attention: (B, h, w) non-negative attention per token.
        masks: (B, H, W) bool ground truth, none empty; (H, W) at least (h, w).
        mode: "nearest" (each token's mass spread evenly over its block) or "bilinear".

    Returns:
        (B,) float64 in [0, 1]; 0 for an all-zero map.

    Raises:
        ValueError: on bad shapes or values, an empty mask or an unknown mode.
    """
    array = _check_attention(attention)
    if array.ndim != 3:
        raise ValueError(f"grounding: expected attention of shape (B, h, w), received {array.shape}")
    grid = _check_masks(masks, len(array), "masks")
    density = upsample_attention(array, grid.shape[1:], mode=mode, preserve_mass=True)
    total = density.sum(axis=(1, 2))
    inside = (density * grid).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def attention_mass_inside(attention, mask, *, mode: str = "nearest") -> float:
    """Share of the mass of ``attention`` (h, w) inside ``mask`` (H, W) (see :func:`attention_mass_inside_batch`).

    Raises:
        ValueError: on bad shapes or values, an empty mask or an unknown mode.

    Examples::

        attention_mass_inside(np.array([[0.5, 0.5], [0.0, 0.0]]), np.eye(4, dtype=bool))  # 2/4 * 0.5 = 0.25
    """
    array = _check_attention(attention)
    if array.ndim != 2:
        raise ValueError(f"grounding: expected attention of shape (h, w), received {array.shape}")
    return float(attention_mass_inside_batch(array[None], _check_masks(mask, None), mode=mode)[0])


# --------------------------------------------------------------------------- baseline and table


def nearest_neighbour_reports(train_features, train_reports: Sequence[str], query_features) -> list[str]:
    """The report of the most cosine-similar training image for each query (ties: lowest index).

    Args:
        train_features: (N, D) image features of the training set.
        train_reports: N reports of those images.
        query_features: (Q, D) image features of the queries.

    Returns:
        Q reports copied from the training set.

    Raises:
        ValueError: on bad shapes, non-finite values, a zero feature vector (no direction)
            or a report count different from N.
    """
    arrays = []
    for name, features in (("train_features", train_features), ("query_features", query_features)):
        array = np.asarray(features)
        if array.ndim != 2 or array.dtype.kind not in "biuf" or 0 in array.shape:
            raise ValueError(f"nearest neighbour: expected {name} as a non-empty numeric (rows, D) array, "
                             f"received shape {array.shape} dtype {array.dtype}")
        array = array.astype(np.float64)
        norms = np.linalg.norm(array, axis=1)
        if not np.isfinite(array).all() or not (norms > 0).all():
            raise ValueError(f"nearest neighbour: expected finite non-zero rows of {name}, received "
                             f"{int((~(norms > 0)).sum())} zero or non-finite rows")
        arrays.append(array / norms[:, None])
    train, query = arrays
    if train.shape[1] != query.shape[1]:
        raise ValueError(f"nearest neighbour: expected query_features with D={train.shape[1]} like "
                         f"train_features, received D={query.shape[1]}")
    reports = _check_texts("train_reports", train_reports)
    if len(reports) != len(train):
        raise ValueError(f"nearest neighbour: expected {len(train)} train_reports (one per row of train_features), "
                         f"received {len(reports)}")
    best = (query @ train.T).argmax(axis=1)  # argmax returns the first maximum: the lowest index
    return [reports[i] for i in best.tolist()]


def report_generation_table(references: Sequence[str], systems: Mapping[str, Sequence[str]],
                            labeler: FindingLabeler,
                            grounding: Mapping[str, Mapping[str, float]] | None = None) -> list[dict]:
    """One row of metrics per report-generation system.

    Args:
        references: N reference reports.
        systems: {system name: N generated reports}.
        labeler: the finding labeler of the clinical scores.
        grounding: optional {system name: {key of :data:`GROUNDING_KEYS`: value}} (hit rate of
            the pointing game, mean share of attention mass inside the mask; of the finding
            words' maps and of their sentences'); systems and keys not named get NaN.

    Returns:
        Rows with the keys of :data:`TABLE_COLUMNS`, in the order of ``systems``.

    Raises:
        ValueError: on no systems, bad reports, or grounding naming an unknown system or key.
    """
    if not isinstance(systems, Mapping) or not systems:
        raise ValueError("report table: expected systems as a non-empty mapping name -> hypotheses")
    grounding = dict(grounding or {})
    unknown = sorted(set(grounding) - set(systems))
    if unknown:
        raise ValueError(f"report table: grounding names unknown system(s) {unknown}; expected names from "
                         f"{list(systems)}")
    for name, values in grounding.items():
        if not isinstance(values, Mapping) or set(values) - set(GROUNDING_KEYS):
            raise ValueError(f"report table: expected grounding[{name!r}] with keys from {list(GROUNDING_KEYS)}, "
                             f"received {values!r}")
    rows = []
    for name, hypotheses in systems.items():
        clinical = clinical_scores(references, hypotheses, labeler)
        row: dict = {"system": name, **bleu_scores(references, hypotheses), "rouge_l": rouge_l(references, hypotheses),
                     "clinical_micro_f1": clinical["micro"]["f1"], "clinical_macro_f1": clinical["macro"]["f1"]}
        row.update({key: float(grounding.get(name, {}).get(key, math.nan)) for key in GROUNDING_KEYS})
        rows.append(row)
    return rows

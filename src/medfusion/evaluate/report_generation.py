"""Evaluation of a trained report generator: text overlap, clinical correctness, grounding, a retrieval baseline.

:func:`evaluate_report_run` writes a report for every image of a split with each decoding
method of the run's config and scores them against the reference reports in one table
(:func:`~.report_metrics.report_generation_table`) together with the nearest-neighbour
baseline:

- **Text overlap**: corpus BLEU-1..4 and mean ROUGE-L F1 (:mod:`.report_metrics`).
- **Clinical correctness**: micro / macro F1 (and per finding P / R / F1) of the findings
  stated by the generated report vs the reference, both labelled by the rule-based
  :class:`~.labeler.FindingLabeler` of the run's domain ("pathology" or "chest").
- **Grounding**: every *positive* finding mention of a generated report (the labeler's
  lexicon and negation rules: "tumour cells" -> tumour, "no necrosis" is skipped) whose
  finding is present in the image's ground-truth masks (``ground_truth/masks.npz`` next to
  the manifest, as the synthetic cohorts write it) is scored with the cross-attention
  that wrote it: the mean over the mention's tokens of the attention averaged over
  layers and heads. Scores: pointing game (the peak of the bilinearly upsampled map lies
  in the finding's mask) and the share of attention mass inside the mask; the mass a
  uniform map would put there (the mask's share of the image) is reported as chance.
  The same two scores are given for the map of the *sentence* holding the mention (mean
  over its tokens): a word that the sentence's first words already determine ("Sheets
  of pleomorphic" -> "tumour") needs no look at the image when it is written, while the
  words that decide the sentence and name the region do. A mention of a finding the
  image does not show is a clinical false positive, not a grounding case.
- **Nearest neighbour**: each query image gets the reference report of the training
  image whose pooled features from the trained model's own image encoder are most
  cosine-similar (:func:`~.report_metrics.nearest_neighbour_reports`); it has no attention.

Outputs in the run folder: ``report_metrics.json`` (table, per-finding clinical scores,
grounding details, settings) and ``report_metrics.md`` (the table). Report texts are
not written (in real use they are patient data).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.evaluate.labeler import POSITIVE, FindingLabeler, split_sentences
from medfusion.evaluate.report_metrics import (
    GROUNDING_KEYS, TABLE_COLUMNS, attention_mass_inside_batch, clinical_scores, nearest_neighbour_reports,
    pointing_game_batch,
    report_generation_table,
)
from medfusion.files import atomic_write_text
from medfusion.models.report_generator import ReportGenerator
from medfusion.train.report_config import DecodeConfig
from medfusion.train.report_data import ReportDataModule, ReportPair
from medfusion.train.report_run import encoder_channels, load_report_run

#: Files written into the run folder.
METRICS_JSON, METRICS_MARKDOWN = "report_metrics.json", "report_metrics.md"
#: Table row of the retrieval baseline.
NEAREST_NEIGHBOUR = "nearest neighbour"
# pieces that attach to the previous word when report text is rebuilt from tokens
_ATTACHED = frozenset(".,;:!?)%")


class WrittenReport(NamedTuple):
    """A generated report as text, with the attention of each of its T tokens.

    Attributes:
        text: the report (lower-cased by the tokenizer).
        spans: T character spans ``(start, end)`` in ``text``, one per generated token
            (empty for special tokens).
        attention: (T, h, w) float32 cross-attention of each token's step, mean over
            layers and heads, on the image token grid (h, w).
        score: the decoder's length-normalised log-probability.
    """

    text: str
    spans: list[tuple[int, int]]
    attention: np.ndarray
    score: float


class Highlight(NamedTuple):
    """A stretch of a written report with its attention map.

    Attributes:
        text: the words.
        start, end: character span in the report.
        finding: the finding it names (a finding mention), or ``None`` (a sentence).
        attention: (h, w) mean attention of its tokens.
    """

    text: str
    start: int
    end: int
    finding: str | None
    attention: np.ndarray


def token_text(tokenizer: WordPieceTokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Text of WordPiece ids and the character span of every id in it.

    Pieces starting with ``##`` continue the previous word; punctuation (``. , ; : ! ? ) %``)
    attaches to it; special tokens give empty spans. The text is ``tokenizer.decode(token_ids)``
    except that ``;``, ``:``, ``)`` and ``%`` attach too (``decode`` attaches ``. , ! ?`` only).
    """
    text, spans = "", []
    for token in token_ids:
        piece = tokenizer.decode([int(token)])
        if not piece:
            spans.append((len(text), len(text)))
            continue
        if piece.startswith("##"):
            piece, separator = piece[2:], ""
        else:
            separator = "" if not text or piece in _ATTACHED else " "
        text += separator
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


def decode_arguments(decode: DecodeConfig, method: str | None = None, beam_size: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :meth:`ReportGenerator.generate` from a decode config.

    Args:
        decode: the run's decode settings.
        method: "greedy" or "beam"; default the config's first method.
        beam_size: beams for "beam" (default the config's); given with "greedy" the
            generator refuses it.
    """
    method = method or decode.methods[0]
    if beam_size is None and method == "beam":
        beam_size = decode.beam_size
    return {"method": method, "beam_size": beam_size, "max_length": decode.max_length,
            "length_penalty": decode.length_penalty, "no_repeat_ngram": decode.no_repeat_ngram,
            "min_length": decode.min_length}


def method_name(arguments: dict[str, Any]) -> str:
    """Table name of a generator decoding: "generator, greedy" or "generator, beam 4"."""
    beam = arguments["method"] == "beam"
    return f"generator, beam {arguments['beam_size']}" if beam else "generator, greedy"


@torch.no_grad()
def write_reports(model: ReportGenerator, tokenizer: WordPieceTokenizer, images: torch.Tensor,
                  **arguments: Any) -> list[WrittenReport]:
    """Generate reports for images (B, C, H, W) and rebuild their text with per-token attention.

    Args:
        arguments: keyword arguments of :meth:`ReportGenerator.generate` (:func:`decode_arguments`).

    Raises:
        ValueError: as :meth:`ReportGenerator.generate`.
    """
    written = []
    for generated in model.generate(images, **arguments):
        text, spans = token_text(tokenizer, generated.token_ids)
        attention = generated.mean_attention.reshape(-1, *generated.grid).cpu().numpy().astype(np.float32)
        written.append(WrittenReport(text, spans, attention, float(generated.score)))
    return written


def _tokens_in(report: WrittenReport, start: int, end: int) -> list[int]:
    return [i for i, (a, b) in enumerate(report.spans) if a < end and b > start]


def finding_highlights(report: WrittenReport, labeler: FindingLabeler) -> list[Highlight]:
    """The positive finding mentions of a written report with their attention (mean over their tokens)."""
    highlights = []
    for mention in labeler.mentions(report.text):
        tokens = _tokens_in(report, mention.start, mention.end)
        if mention.status == POSITIVE and tokens:
            highlights.append(Highlight(mention.text, mention.start, mention.end, mention.finding,
                                        report.attention[tokens].mean(axis=0)))
    return highlights


def sentence_highlights(report: WrittenReport) -> list[Highlight]:
    """Each sentence of a written report with its attention (mean over its tokens)."""
    highlights = []
    for start, end in split_sentences(report.text):
        tokens = _tokens_in(report, start, end)
        if tokens:
            highlights.append(Highlight(report.text[start:end], start, end, None,
                                        report.attention[tokens].mean(axis=0)))
    return highlights


class GroundTruthMasks:
    """Finding masks per patient from ``ground_truth/masks.npz`` (:func:`~medfusion.data.synthetic.files.load_masks`).

    Args:
        folder: the data folder (the manifest's).
    """

    def __init__(self, folder: str | Path) -> None:
        from medfusion.data.synthetic.files import load_masks

        loaded = load_masks(folder)
        self.masks: np.ndarray = loaded["masks"]
        self.findings = [str(name) for name in loaded["finding_names"]]
        self.rows = {str(p): i for i, p in enumerate(loaded["patient_id"].tolist())}

    @staticmethod
    def available(folder: str | Path) -> bool:
        """Whether the data folder has ground-truth masks."""
        return (Path(folder) / "ground_truth" / "masks.npz").is_file()

    def mask(self, patient_id: str, finding: str) -> np.ndarray | None:
        """(H, W) bool mask of a finding in a patient's image; None when absent or unknown."""
        row = self.rows.get(str(patient_id))
        if row is None or finding not in self.findings:
            return None
        mask = self.masks[row, self.findings.index(finding)]
        return mask if mask.ndim == 2 and mask.any() else None


class GroundingScores:
    """Collects the grounded finding words of one system and scores them (see the module docstring).

    A word counts when its finding has a non-empty ground-truth mask in the patient's image.
    """

    #: Keys of :meth:`summary` (and of each finding's entry) besides ``findings``.
    KEYS = ("words", *GROUNDING_KEYS, "uniform_mass_inside")

    def __init__(self) -> None:
        self.findings: list[str] = []
        self.maps: list[np.ndarray] = []
        self.sentence_maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []

    def add(self, highlights: Iterable[Highlight], sentences: Sequence[Highlight], patient_id: str,
            truth: GroundTruthMasks) -> None:
        """Keep the finding words of one report whose finding the patient's image shows.

        Args:
            highlights: the report's finding mentions (:func:`finding_highlights`).
            sentences: the report's sentences (:func:`sentence_highlights`); each mention is
                also scored with the map of the sentence that holds it.
        """
        for highlight in highlights:
            mask = truth.mask(patient_id, highlight.finding)
            if mask is not None:
                sentence = next(s for s in sentences if s.start <= highlight.start < s.end)
                self.findings.append(highlight.finding)
                self.maps.append(highlight.attention)
                self.sentence_maps.append(sentence.attention)
                self.masks.append(mask)

    def summary(self) -> dict[str, Any]:
        """Pointing game, mass inside (of the word's and its sentence's map) and chance, overall and per finding.

        NaN without words.
        """
        if not self.maps:
            return {**{key: 0 if key == "words" else math.nan for key in self.KEYS}, "findings": {}}
        masks, maps, sentence_maps = np.stack(self.masks), np.stack(self.maps), np.stack(self.sentence_maps)
        hits = pointing_game_batch(maps, masks).astype(float)
        inside = attention_mass_inside_batch(maps, masks)
        sentence_hits = pointing_game_batch(sentence_maps, masks).astype(float)
        sentence_inside = attention_mass_inside_batch(sentence_maps, masks)
        chance = masks.mean(axis=(1, 2))
        findings = np.array(self.findings)

        def scores(rows: np.ndarray) -> dict[str, Any]:
            return {"words": int(rows.sum()), "pointing_game": float(hits[rows].mean()),
                    "mass_inside": float(inside[rows].mean()),
                    "sentence_pointing_game": float(sentence_hits[rows].mean()),
                    "sentence_mass_inside": float(sentence_inside[rows].mean()),
                    "uniform_mass_inside": float(chance[rows].mean())}

        every = np.ones(len(findings), dtype=bool)
        return {**scores(every), "findings": {name: scores(findings == name) for name in sorted(set(self.findings))}}


def _batches(pairs: Iterator[ReportPair], size: int) -> Iterator[list[ReportPair]]:
    chunk: list[ReportPair] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _stack(chunk: list[ReportPair]) -> torch.Tensor:
    return torch.from_numpy(np.stack([pair.image for pair in chunk]))


@torch.no_grad()
def _pooled(model: ReportGenerator, images: torch.Tensor) -> np.ndarray:
    """(B, D) pooled features of the model's own image encoder."""
    return model.image_encoder(images).pooled.cpu().numpy()


def evaluate_report_run(run_dir: str | Path, split: str = "test", domain: str | None = None, *,
                        batch_size: int = 32, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the generator of a run (each configured decoding) and the nearest-neighbour baseline on a split.

    Args:
        run_dir: a finished report run (:func:`~medfusion.train.report_run.train_report`).
        split: split role "train", "val" or "test".
        domain: labeler domain "pathology" or "chest"; default the run's ``data.domain``.
        batch_size: images generated at once.
        progress: called with a line of text per stage.

    Returns:
        The content of ``report_metrics.json``: ``table`` (rows of
        :data:`~.report_metrics.TABLE_COLUMNS`), ``clinical`` and ``grounding`` per system,
        ``reports`` (count), ``split``, ``domain``, ``decode``, ``seconds``.

    Raises:
        ValueError: on a folder that is not a finished run, an unknown split or domain,
            or a split without image-report pairs.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    model, tokenizer, config = load_report_run(run_dir)
    labeler = FindingLabeler(domain or config.data.domain)
    data = ReportDataModule(config.data, encoder_channels(config), batch_size, config.seed, tokenizer)
    folder = Path(config.data.manifest).parent
    truth = GroundTruthMasks(folder) if GroundTruthMasks.available(folder) else None
    settings = [decode_arguments(config.decode, method) for method in config.decode.methods]
    systems: dict[str, list[str]] = {method_name(arguments): [] for arguments in settings}
    grounded = {name: GroundingScores() for name in systems}
    references, query_features = [], []
    for chunk in _batches(data.pairs(split), batch_size):
        images = _stack(chunk)
        references += [pair.report for pair in chunk]
        query_features.append(_pooled(model, images))
        for arguments in settings:
            name = method_name(arguments)
            written = write_reports(model, tokenizer, images, **arguments)
            systems[name] += [report.text for report in written]
            if truth is not None:
                for pair, report in zip(chunk, written):
                    grounded[name].add(finding_highlights(report, labeler), sentence_highlights(report),
                                       pair.patient_id, truth)
        say(f"{split}: {len(references)} reports written")
    train_reports, train_features = [], []
    for chunk in _batches(data.pairs("train"), batch_size):
        train_reports += [pair.report for pair in chunk]
        train_features.append(_pooled(model, _stack(chunk)))
    systems[NEAREST_NEIGHBOUR] = nearest_neighbour_reports(np.concatenate(train_features), train_reports,
                                                           np.concatenate(query_features))
    say(f"nearest neighbour over {len(train_reports)} training reports")
    grounding = {name: g.summary() for name, g in grounded.items()}
    table = report_generation_table(references, systems, labeler, {
        name: {key: g[key] for key in GROUNDING_KEYS} for name, g in grounding.items()})
    result = {
        "run": str(Path(run_dir).resolve()), "split": split, "domain": labeler.domain, "reports": len(references),
        "train_reports": len(train_reports), "ground_truth_masks": truth is not None,
        "decode": config.decode.model_dump(mode="json"), "table": table,
        "clinical": {name: clinical_scores(references, hypotheses, labeler) for name, hypotheses in systems.items()},
        "grounding": grounding, "seconds": time.perf_counter() - started,
    }
    atomic_write_text(Path(run_dir) / METRICS_JSON, json.dumps(_finite(result), indent=2))
    atomic_write_text(Path(run_dir) / METRICS_MARKDOWN, metrics_markdown(result))
    return result


def _finite(value: Any) -> Any:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def format_value(value: float | None) -> str:
    """Three decimals, or "–" for a metric that does not apply."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def metrics_markdown(result: dict[str, Any]) -> str:
    """The metrics table of :func:`evaluate_report_run` as Markdown, with its notes."""
    lines = [f"# Report generation — {result['split']} split, {result['reports']} reports", "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in result["table"]:
        lines.append("| " + " | ".join([row["system"], *(format_value(row[c]) for c in TABLE_COLUMNS[1:])]) + " |")
    lines += ["", f"Clinical scores: rule-based `{result['domain']}` labeler on reference and generated reports. "
              f"Nearest neighbour: the report of the most similar of {result['train_reports']} training images "
              "(cosine of the trained image encoder's pooled features)."]
    for name, grounding in result["grounding"].items():
        if grounding["words"]:
            lines.append(f"Grounding of {name}: {grounding['words']} positive finding words present in the masks; "
                         f"a uniform map would put {grounding['uniform_mass_inside']:.3f} of its mass inside.")
    if not result["ground_truth_masks"]:
        lines.append("No ground_truth/masks.npz next to the manifest: grounding not scored.")
    return "\n".join(lines) + "\n"

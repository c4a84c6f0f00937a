"""A rule-based finding labeler for pathology and chest X-ray reports, with negation and uncertainty.

The clinical-correctness scores of report generation (:func:`~.report_metrics.clinical_scores`)
compare the findings a generated report states with those of the reference report. This
module turns a report into those findings with regular expressions, the approach of the
NIH / CheXpert labelers, without a trained model:

1. **Sentences.** The text is split after ``.``, ``!`` or ``?`` followed by white space or
   by a capital letter (Open-i writes "apex.There are"), and at line breaks.
2. **Mentions.** Each finding has a lexicon of regular expressions (:data:`LEXICONS`,
   case-insensitive). Findings are matched in a priority order and a matched span is not
   matched again by a later finding: "bilateral interstitial opacities" is *infiltrates*,
   not also *consolidation* (the MeSH mapping of :mod:`medfusion.data.synthetic.openi`
   draws opacities qualified bilateral / diffuse / interstitial / multiple / scattered as
   infiltrates).
3. **Negation and uncertainty.** NegEx (Chapman et al., "A Simple Algorithm for
   Identifying Negated Findings and Diseases in Discharge Summaries", J Biomed Inform
   2001): trigger phrases (:data:`NEGATION_TRIGGERS`, :data:`UNCERTAINTY_TRIGGERS`) act
   forwards ("no", "without", "negative for", "free of", "no evidence of", "rules out",
   "possible", "may represent", ...), backwards ("is absent", "not seen", "has resolved",
   "cannot be excluded", ...) or both ways ("resolved", "ruled out", "versus",
   "suspected"). A scope runs from its trigger to the nearest *break*: the sentence's end, a ``;`` or
   ``:``, a termination term ("but", "however", "although", "which", ...) or any other
   trigger, pseudo-triggers included ("no change", "no interval change", "not only": they
   negate nothing). Commas do not end a scope, so "No consolidation, effusion, or
   pneumothorax." negates all three; unlike NegEx there is no five-word window. Triggers
   are matched longest first, so "cannot exclude" is uncertainty, not the negation "not".
   Backward scopes also stop at a comma ("opacity, atelectasis versus scarring" leaves
   the opacity positive).
   A mention is *negated* when a negation scope overlaps it, else *uncertain* when an
   uncertainty scope does, else *positive*.
4. **Labels.** A finding is labelled present when it has a positive mention; uncertain
   mentions count as absent by default (only definite statements count, as in the common
   clinical-efficacy scores of report generation that keep the CheXpert labeler's
   positive class) or as present with ``uncertain_as_positive=True`` (CheXpert's U-Ones
   policy, Irvin et al., AAAI 2019). The chest domain adds ``"no finding"``: present when
   no finding has a positive or uncertain mention (CheXpert's rule).

Domains (:data:`DOMAINS`):

- ``"pathology"``: the findings of :mod:`medfusion.data.synthetic.pathology` (tumour,
  mitosis, necrosis, lymphocytes, gland), with the usual synonyms (carcinoma, malignancy,
  invasion, in situ; mitotic figures / activity; necrotic debris; lymphoid aggregate;
  glandular structures, acini).
- ``"chest"``: the findings of :mod:`medfusion.data.synthetic.xray` (consolidation,
  infiltrates, effusion, cardiomegaly, pneumothorax, nodule) plus ``"no finding"``, with
  the synonyms of the Open-i MeSH mapping (pneumonia, airspace disease, infiltrate,
  opacity; edema, congestion; pleural fluid; enlarged heart; hydropneumothorax; mass,
  granuloma).

Measured (``tests/evaluate/test_labeler.py``): the labels of 300 generated pathology and
300 generated chest reports are recovered exactly (every finding of every report); on the
3,927 real Open-i reports the chest labels agree with the rendered MeSH coding for 97.9%
of finding-report pairs (90.2% of reports on every label; consolidation, the loosest,
95.0%). Rules, not a trained labeler: a phrase the lexicon lacks is missed, and a
negation phrased in a way the triggers do not cover reads as positive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

#: Report domains with a lexicon.
DOMAINS: tuple[str, ...] = ("pathology", "chest")
#: Label name of the chest domain's "no finding" (no finding positive or uncertain).
NO_FINDING = "no finding"
#: Mention statuses.
POSITIVE, NEGATED, UNCERTAIN = "positive", "negated", "uncertain"

_OPACITY = (r"(?:opacit(?:y|ies)|opacifications?|densit(?:y|ies)|infiltrates?"
            r"|air[ -]?space (?:disease|opacit(?:y|ies))|consolidations?)")
_HEART = (r"(?:heart(?: size)?|cardiac (?:silhouette|shadow|size|contours?)|cardiomediastinal silhouette"
          r"|heart shadow)")
_SPREAD = r"(?:bilateral|diffuse|interstitial|multifocal|multiple|scattered|bibasilar|bibasal|biapical)"

#: Lexicon per domain: {finding: regular expressions}, in output order.
LEXICONS = MappingProxyType({
    "pathology": MappingProxyType({
        "tumour": (r"tumou?rs?(?: cells?)?", r"(?:adeno)?carcinomas?", r"malignan(?:cy|cies|t)",
                   r"neoplas(?:ms?|tic|ia)", r"invasi(?:on|ve)", r"in[ -]situ"),
        "mitosis": (r"mitos(?:is|es)", r"mitotic(?: (?:figures?|activity|count|rate|index))?"),
        "necrosis": (r"(?:comedo)?necros(?:is|es)", r"necrotic(?: debris)?"),
        "lymphocytes": (r"lymphocyt(?:es?|ic)(?: infiltrates?)?", r"lymphoid (?:aggregates?|follicles?|infiltrates?)"),
        "gland": (r"glands?", r"glandular(?: structures?)?", r"acin(?:i|us|ar)"),
    }),
    "chest": MappingProxyType({
        "consolidation": (r"consolidat(?:ion|ions|ive|ed)", r"(?:broncho)?pneumonias?", _OPACITY),
        "infiltrates": (rf"{_SPREAD}(?: [\w-]+){{0,3}}? {_OPACITY}",
                        rf"{_OPACITY}(?: [\w-]+){{0,6}}? (?:bilaterally|in both lungs?|throughout the lungs)",
                        r"(?:pulmonary |interstitial |alveolar )?edema", r"(?:pulmonary|vascular|venous) congestion",
                        r"interstitial (?:lung )?disease"),
        "effusion": (r"(?<!pericardial )effusions?", r"pleural fluid"),
        "cardiomegaly": (r"cardiomegaly", rf"{_HEART}(?: [\w-]+){{0,4}}? (?:enlarged|enlargement|large|increased)",
                         rf"(?:enlarge(?:d|ment)|large)(?: of)?(?: the)? {_HEART}"),
        "pneumothorax": (r"(?:hydro|hemo|haemo)?pneumothora(?:x|ces)",),
        "nodule": (r"nodules?", r"nodular (?:opacit(?:y|ies)|densit(?:y|ies))", r"(?:calcified )?granulomas?",
                   r"granulomata", r"mass(?:es)?", r"round(?:ed)? (?:opacit(?:y|ies)|densit(?:y|ies))"),
    }),
})
# matching order where spans compete: the more specific lexicon first
_PRIORITY = MappingProxyType({
    "pathology": ("tumour", "mitosis", "necrosis", "lymphocytes", "gland"),
    "chest": ("infiltrates", "nodule", "pneumothorax", "effusion", "cardiomegaly", "consolidation"),
})

#: Negation triggers: (phrases, direction) with direction "forward", "backward" or "both".
NEGATION_TRIGGERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no", "not", "without", "negative for", "free of", "absence of", "no evidence of", "no sign of",
      "no signs of", "without evidence of", "no findings of", "rules out", "resolution of", "clear of", "none",
      "neither", "nor", "never", "denies"), "forward"),
    (("absent", "is absent", "are absent", "not seen", "not identified", "not present", "not demonstrated",
      "not visualized", "not appreciated", "not evident", "has resolved", "have resolved", "was ruled out",
      "were ruled out"), "backward"),
    (("resolved", "ruled out"), "both"),
)
#: Uncertainty triggers, as :data:`NEGATION_TRIGGERS`.
UNCERTAINTY_TRIGGERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("possible", "possibly", "probable", "probably", "may represent", "may be", "might represent",
      "could represent", "could be", "questionable", "question of", "suspicious for", "concern for",
      "concerning for", "suggestive of", "cannot exclude", "can not exclude", "cannot rule out",
      "difficult to exclude", "rule out", "r/o", "consider", "borderline", "equivocal", "likely"), "forward"),
    (("cannot be excluded", "can not be excluded", "not excluded", "not ruled out", "is possible",
      "is questioned"), "backward"),
    (("versus", "vs", "suspected"), "both"),
)
#: Phrases that look like triggers but negate nothing; they end other scopes.
PSEUDO_TRIGGERS: tuple[str, ...] = (
    "no change", "no interval change", "no significant change", "no significant interval change",
    "not changed", "not significantly changed", "without change", "no increase", "not only", "gram negative",
)
#: Terms that end a scope.
TERMINATION_TERMS: tuple[str, ...] = (
    "but", "however", "although", "though", "which", "except", "aside from", "apart from", "yet",
    "nevertheless", "whereas", "otherwise",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?])(?=[A-Z])|\s*\n\s*")


def _alternation(phrases) -> str:
    """A regex alternation of literal phrases, longest first, on word boundaries."""
    ordered = sorted(phrases, key=len, reverse=True)
    return r"(?<![\w/])(?:" + "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered) + r")(?![\w/])"


def _trigger_table() -> tuple[re.Pattern, dict[str, tuple[str, str]]]:
    """One pattern matching every trigger, and {lower-case phrase: (kind, direction)}."""
    kinds: dict[str, tuple[str, str]] = {}
    for kind, table in ((NEGATED, NEGATION_TRIGGERS), (UNCERTAIN, UNCERTAINTY_TRIGGERS)):
        for phrases, direction in table:
            kinds.update({p: (kind, direction) for p in phrases})
    kinds.update({p: ("pseudo", "none") for p in PSEUDO_TRIGGERS})
    kinds.update({p: ("termination", "none") for p in TERMINATION_TERMS})
    pattern = re.compile(_alternation(kinds) + r"|[;:]", re.IGNORECASE)
    return pattern, kinds


_TRIGGERS, _TRIGGER_KINDS = _trigger_table()


@dataclass(frozen=True)
class Mention:
    """One finding mention in a report.

    Attributes:
        finding: the finding's name.
        text: the matched words.
        start, end: character offsets in the report.
        sentence: index of its sentence.
        status: "positive", "negated" or "uncertain".
    """

    finding: str
    text: str
    start: int
    end: int
    sentence: int
    status: str


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the non-empty sentences of ``text`` (module docstring, step 1)."""
    spans, start = [], 0
    for boundary in _SENTENCE_END.finditer(text):
        spans.append((start, boundary.start()))
        start = boundary.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _scopes(sentence: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each negation / uncertainty scope in one sentence (offsets in it)."""
    found = []
    for match in _TRIGGERS.finditer(sentence):
        phrase = " ".join(match.group().lower().split())
        kind, direction = _TRIGGER_KINDS.get(phrase, ("termination", "none"))  # ";" and ":" end scopes
        found.append((kind, direction, match.start(), match.end()))
    scopes = []
    for j, (kind, direction, start, end) in enumerate(found):
        if direction in ("forward", "both"):
            scopes.append((kind, end, found[j + 1][2] if j + 1 < len(found) else len(sentence)))
        if direction in ("backward", "both"):  # back to the previous break or comma
            scopes.append((kind, max(found[j - 1][3] if j else 0, sentence.rfind(",", 0, start) + 1), start))
    return scopes


class FindingLabeler:
    """Labels the findings a report states, with NegEx-style negation (see the module docstring).

    Args:
        domain: "pathology" or "chest" (:data:`DOMAINS`).
        uncertain_as_positive: count uncertain mentions ("possible effusion") as present
            (U-Ones); by default they count as absent.

    Attributes:
        findings: label names in output order (the chest domain ends with ``"no finding"``).

    Raises:
        ValueError: on an unknown domain or a non-bool ``uncertain_as_positive``.

    Examples::

        labeler = FindingLabeler("chest")
        labeler.label("Small right pleural effusion. No pneumothorax or consolidation.")
        # {'consolidation': False, 'infiltrates': False, 'effusion': True, 'cardiomegaly': False,
        #  'pneumothorax': False, 'nodule': False, 'no finding': False}
    """

    def __init__(self, domain: str, *, uncertain_as_positive: bool = False) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"labeler: unknown domain {domain!r}; expected one of {list(DOMAINS)}")
        if not isinstance(uncertain_as_positive, bool):
            raise ValueError(f"labeler: expected uncertain_as_positive to be a bool, received "
                             f"{uncertain_as_positive!r}")
        self.domain = domain
        self.uncertain_as_positive = uncertain_as_positive
        lexicon = LEXICONS[domain]
        self._patterns = [(name, re.compile(r"(?<!\w)(?:" + "|".join(lexicon[name]) + r")(?!\w)", re.IGNORECASE))
                          for name in _PRIORITY[domain]]
        self.findings: tuple[str, ...] = (*lexicon, *((NO_FINDING,) if domain == "chest" else ()))

    def __repr__(self) -> str:
        return f"FindingLabeler({self.domain!r}, uncertain_as_positive={self.uncertain_as_positive})"

    def mentions(self, text: str) -> list[Mention]:
        """Every finding mention of ``text`` with its status, in text order.

        Raises:
            ValueError: if ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise ValueError(f"labeler: expected a report string, received {type(text).__name__}")
        found = []
        for index, (start, end) in enumerate(split_sentences(text)):
            sentence = text[start:end]
            scopes = _scopes(sentence)
            claimed: list[tuple[int, int]] = []
            for name, pattern in self._patterns:
                for match in pattern.finditer(sentence):
                    a, b = match.span()
                    if any(a < y and b > x for x, y in claimed):
                        continue
                    claimed.append((a, b))
                    hits = {kind for kind, x, y in scopes if a < y and b > x}
                    status = NEGATED if NEGATED in hits else UNCERTAIN if UNCERTAIN in hits else POSITIVE
                    found.append(Mention(name, match.group(), start + a, start + b, index, status))
        return sorted(found, key=lambda m: m.start)

    def label(self, text: str) -> dict[str, bool]:
        """{finding: stated present} for one report, in :attr:`findings` order.

        Raises:
            ValueError: if ``text`` is not a string.
        """
        stated = {POSITIVE, UNCERTAIN} if self.uncertain_as_positive else {POSITIVE}
        mentions = self.mentions(text)
        labels = {name: False for name in self.findings}
        for mention in mentions:
            labels[mention.finding] |= mention.status in stated
        if self.domain == "chest":
            labels[NO_FINDING] = not any(m.status in (POSITIVE, UNCERTAIN) for m in mentions)
        return labels

    def label_matrix(self, texts) -> np.ndarray:
        """(N, F) bool labels of N reports, columns in :attr:`findings` order.

        Raises:
            ValueError: if ``texts`` is a string or holds a non-string.
        """
        if isinstance(texts, str):
            raise ValueError("labeler: expected a sequence of reports, received a single string")
        rows = [list(self.label(text).values()) for text in texts]
        return np.array(rows, dtype=bool).reshape(len(rows), len(self.findings))

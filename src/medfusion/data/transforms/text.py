"""Text (str): lower-casing, clinical abbreviation expansion, word dropout."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from medfusion.data.transforms.base import Generator, Transform, _probability, _twin


def _text(name: str, x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{name}: expected text (str), received {type(x).__name__}")
    return x


#: Common clinical abbreviations -> expansions (matched as whole words, case-insensitively).
CLINICAL_ABBREVIATIONS: dict[str, str] = {
    "SOB": "shortness of breath", "DOE": "dyspnea on exertion", "CP": "chest pain",
    "RLL": "right lower lobe", "LLL": "left lower lobe", "RUL": "right upper lobe", "LUL": "left upper lobe",
    "RML": "right middle lobe", "h/o": "history of", "c/o": "complains of", "s/p": "status post",
    "r/o": "rule out", "w/": "with", "w/o": "without", "b/l": "bilateral", "y/o": "year old",
    "HTN": "hypertension", "DM": "diabetes mellitus", "CHF": "congestive heart failure",
    "AF": "atrial fibrillation", "AFib": "atrial fibrillation", "MI": "myocardial infarction",
    "STEMI": "ST-elevation myocardial infarction", "CAD": "coronary artery disease",
    "COPD": "chronic obstructive pulmonary disease", "PE": "pulmonary embolism", "DVT": "deep vein thrombosis",
    "PNA": "pneumonia", "CXR": "chest x-ray", "ECG": "electrocardiogram", "EKG": "electrocardiogram",
    "LBBB": "left bundle branch block", "RBBB": "right bundle branch block",
    "LVEF": "left ventricular ejection fraction",
    "EF": "ejection fraction", "HR": "heart rate", "BP": "blood pressure", "RR": "respiratory rate",
    "NAD": "no acute distress", "abx": "antibiotics", "hx": "history", "dx": "diagnosis", "tx": "treatment",
}


class Lowercase(Transform):
    """Lower-case the text."""

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        return _text("Lowercase", x).lower()


class ExpandAbbreviations(Transform):
    """Replace whole-word abbreviations by their expansion ("SOB" -> "shortness of breath").

    Args:
        mapping: {abbreviation: expansion}; default :data:`CLINICAL_ABBREVIATIONS`.
        ignore_case: also match other cases ("sob", "Cxr").
    """

    def __init__(self, mapping: Mapping[str, str] | None = None, ignore_case: bool = True) -> None:
        mapping = dict(CLINICAL_ABBREVIATIONS if mapping is None else mapping)
        if not mapping or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in mapping.items()):
            raise ValueError("ExpandAbbreviations: expected a non-empty {abbreviation: expansion} of strings")
        self.ignore_case = ignore_case
        self.mapping = {(k.lower() if ignore_case else k): v for k, v in mapping.items()}
        keys = sorted(mapping, key=len, reverse=True)  # "w/o" before "w/"
        self.pattern = re.compile(r"(?<![\w/])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w/])",
                                  re.IGNORECASE if ignore_case else 0)

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        key = (lambda m: m.group(0).lower()) if self.ignore_case else (lambda m: m.group(0))
        return self.pattern.sub(lambda m: self.mapping[key(m)], _text("ExpandAbbreviations", x))


class RandTokenDropout(Transform):
    """Drop each whitespace-separated word with probability ``p`` (at least one word is kept)."""

    def __init__(self, p: float = 0.1) -> None:
        _probability("p", p)
        self.p = p

    def __call__(self, x: str, rng: Generator | None = None) -> str:
        words = _text("RandTokenDropout", x).split()
        if not words:
            return x
        g = self.generator(rng)
        keep = g.random(len(words)) >= self.p
        if not keep.any():
            keep[g.integers(len(words))] = True
        return " ".join(w for w, k in zip(words, keep) if k)


# -- dictionary twins -------------------------------------------------------------------------


Lowercased = _twin(Lowercase)
ExpandAbbreviationsd = _twin(ExpandAbbreviations)
RandTokenDropoutd = _twin(RandTokenDropout)

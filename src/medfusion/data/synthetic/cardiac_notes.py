"""Cardiology clinic notes with history, medications, symptoms, negation and uncertainty.

One note per patient, e.g.::

    71M. PMH: HTN, T2DM, old inferior MI, known AF. Meds: ramipril, metformin, aspirin,
    atorvastatin, apixaban. Seen in cardiology clinic with exertional dyspnoea x3 months.
    +orthopnoea. ? mild ankle oedema. Denies palpitations or chest pain. HR 94 irregular,
    BP 128/76. JVP raised, bibasal crackles. Plan: echo, ECG, BNP.

    58F. PMH: nil of note. No prior MI. Meds: none. Seen in cardiology clinic with
    palpitations x2 weeks. ? paroxysmal AF, Holter pending. No orthopnoea. HR 72, BP 131/80.
    Chest clear, no oedema. Plan: ECG, Holter.

What a note states:

- **history** (:data:`HISTORY`): hypertension, diabetes, a prior myocardial infarction
  *with its territory* (``old anterior MI``, ``prior inferior MI s/p PCI``: the territory
  words anterior / inferior / lateral appear only there), known atrial fibrillation, CHF;
  each true item is written unless dropped as a documentation gap (probability
  ``omit``); some absent items are negated (``No prior MI.``, ``No known arrhythmia.``);
- **medications** that follow the documented history (an anticoagulant for AF, a loop
  diuretic for CHF, aspirin and a statin after an MI, ...);
- **symptoms** (:data:`SYMPTOMS`): present ones, some hedged (``? mild ankle oedema``,
  ``possible orthopnoea``); absent ones, some denied (``Denies palpitations``); with
  palpitations and no AF, sometimes ``? paroxysmal AF, Holter pending`` (an *uncertain* AF
  that is not AF);
- vitals quoted from the measurements (the pulse sometimes called irregular in AF), the
  exam (congestion signs), a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: History items a note may document (columns of ``NoteBatch.documented``).
HISTORY: tuple[str, ...] = ("HTN", "DM", "prior MI", "AF", "CHF")
#: Symptoms a note may report, hedge or deny (columns of the symptom flags).
SYMPTOMS: tuple[str, ...] = ("exertional dyspnoea", "orthopnoea", "oedema", "palpitations", "chest pain")
#: Territory words of a prior MI (index = territory code).
MI_TERRITORIES: tuple[str, ...] = ("anterior", "inferior", "lateral")

_HX_WORDS = {"HTN": ("HTN", "hypertension"), "DM": ("T2DM", "DM2"), "AF": ("known AF", "paroxysmal AF"),
             "CHF": ("CHF", "heart failure")}
_MI_WORDS = ("old {t} MI", "prior {t} MI s/p PCI", "{t} STEMI in the past")
_MEDS = {"HTN": ("ramipril", "amlodipine", "lisinopril"), "DM": ("metformin", "insulin", "empagliflozin"),
         "prior MI": ("aspirin, atorvastatin", "clopidogrel, rosuvastatin"),
         "AF": ("apixaban", "warfarin", "rivaroxaban"), "CHF": ("furosemide, bisoprolol", "sacubitril/valsartan")}
_PRESENT = ({"exertional dyspnoea": "exertional dyspnoea", "orthopnoea": "orthopnoea", "oedema": "ankle oedema",
             "palpitations": "palpitations", "chest pain": "chest pain"},
            {"exertional dyspnoea": "DOE", "orthopnoea": "orthopnoea (3 pillows)", "oedema": "leg swelling",
             "palpitations": "palpitations", "chest pain": "chest tightness"})
_HEDGED = ("? mild {s}", "possible {s}")
_DENIED = {"exertional dyspnoea": "SOB on exertion", "orthopnoea": "orthopnoea", "oedema": "leg swelling",
           "palpitations": "palpitations", "chest pain": "chest pain"}
_VISIT = ("Seen in cardiology clinic", "Reviewed in HF clinic", "Referred by GP")
_CONGESTED = ("JVP raised, bibasal crackles.", "Bibasal crackles, pitting oedema to mid-shin.", "JVP raised.")
_CLEAR = ("Chest clear, no oedema.", "JVP not raised, chest clear.", "HS I+II+0, chest clear.")
_PLAN = ("Plan: echo, ECG, BNP.", "Plan: ECG, echo.", "Plan: ECG, Holter.", "Plan: review with echo.")


@dataclass
class CardiacFacts:
    """The ground truth a note is written from (all arrays of length N).

    Attributes:
        age: (N,) int years.
        male: (N,) bool.
        htn, dm: (N,) bool hypertension, diabetes.
        prior_mi: (N,) bool old myocardial infarction.
        mi_territory: (N,) int territory of the old MI (index of :data:`MI_TERRITORIES`; any
            value where ``prior_mi`` is False).
        af: (N,) bool atrial fibrillation.
        chf: (N,) bool known heart failure.
        congestion: (N,) bool fluid overload (raises dyspnoea, orthopnoea, oedema, signs).
        heart_rate, systolic_bp, diastolic_bp: (N,) measured values quoted as they are.
    """

    age: np.ndarray
    male: np.ndarray
    htn: np.ndarray
    dm: np.ndarray
    prior_mi: np.ndarray
    mi_territory: np.ndarray
    af: np.ndarray
    chf: np.ndarray
    congestion: np.ndarray
    heart_rate: np.ndarray
    systolic_bp: np.ndarray
    diastolic_bp: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.age))
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if value.shape != (n,):
                raise ValueError(f"cardiac notes: expected {f.name} of shape ({n},) like age, received {value.shape}")
            setattr(self, f.name, value)
        territory = self.mi_territory[self.prior_mi.astype(bool)]
        if not np.isin(territory, (0, 1, 2)).all():
            raise ValueError(f"cardiac notes: expected mi_territory in {{0, 1, 2}} where prior_mi, received "
                             f"{sorted(set(territory.tolist()))}")

    def __len__(self) -> int:
        return len(self.age)


@dataclass
class CardiacNotes:
    """Generated notes and what they state.

    Attributes:
        texts: N notes.
        documented: (N, len(HISTORY)) bool, history item written as present.
        symptoms: (N, len(SYMPTOMS)) bool, symptom stated present (hedged or not).
        hedged: (N, len(SYMPTOMS)) bool, present symptom stated with uncertainty.
        denied: (N, len(SYMPTOMS)) bool, symptom explicitly denied.
        af_query: (N,) bool, the note raises "? paroxysmal AF" without a diagnosis.
    """

    texts: list[str]
    documented: np.ndarray
    symptoms: np.ndarray
    hedged: np.ndarray
    denied: np.ndarray
    af_query: np.ndarray


def generate_cardiac_notes(facts: CardiacFacts, rng: np.random.Generator, omit: float = 0.1) -> CardiacNotes:
    """Write one clinic note per patient from ``facts``.

    Args:
        facts: per-patient ground truth.
        rng: the random generator; the same state gives the same notes.
        omit: probability that each true history item and each present symptom goes
            unwritten (documentation gaps), in [0, 1).

    Returns:
        :class:`CardiacNotes`.

    Raises:
        ValueError: if ``facts`` is not a :class:`CardiacFacts` or ``omit`` is out of range.
    """
    if not isinstance(facts, CardiacFacts):
        raise ValueError(f"cardiac notes: expected facts to be a CardiacFacts, received {type(facts).__name__}")
    if isinstance(omit, bool) or not isinstance(omit, (int, float, np.floating)) or not 0 <= omit < 1:
        raise ValueError(f"cardiac notes: expected omit in [0, 1), received {omit!r}")
    n = len(facts)
    truth = np.stack([facts.htn, facts.dm, facts.prior_mi, facts.af, facts.chf], axis=1).astype(bool)
    documented = truth & (rng.random(truth.shape) >= omit)
    congestion, af = facts.congestion.astype(bool), facts.af.astype(bool)
    p_symptom = np.stack([np.where(congestion, 0.85, 0.2), np.where(congestion, 0.6, 0.05),
                          np.where(congestion, 0.6, 0.1), np.where(af, 0.7, 0.1), np.full(n, 0.15)], axis=1)
    felt = rng.random(p_symptom.shape) < p_symptom
    symptoms = felt & (rng.random(felt.shape) >= omit)
    hedged = symptoms & (rng.random(felt.shape) < 0.25)
    hedged[:, SYMPTOMS.index("palpitations")] = False
    denied = ~felt & (rng.random(felt.shape) < 0.5)
    palpitations = symptoms[:, SYMPTOMS.index("palpitations")]
    af_query = palpitations & ~af & (rng.random(n) < 0.5)
    negate_mi, negate_af = (rng.random((2, n)) < 0.3) & ~truth[:, [2, 3]].T
    # one draw in 0..11 per choice: modulo 2, 3 or 4 options stays uniform
    draws = {name: rng.integers(0, 12, n) for name in ("hx", "mi", "visit", "exam", "plan", "phrase", "hedge")}
    meds = rng.integers(0, 6, (n, len(HISTORY)))
    months = rng.integers(1, 13, n)
    irregular = af & (rng.random(n) < 0.5)
    texts = []
    for i in range(n):
        hx, drugs = [], []
        for j, item in enumerate(HISTORY):
            if not documented[i, j]:
                continue
            if item == "prior MI":
                territory = MI_TERRITORIES[int(facts.mi_territory[i])]
                hx.append(_MI_WORDS[draws["mi"][i] % 3].format(t=territory))
            else:
                hx.append(_HX_WORDS[item][draws["hx"][i] % 2])
            options = _MEDS[item]
            drugs.append(options[meds[i, j] % len(options)])
        parts = [f"{int(facts.age[i])}{'M' if facts.male[i] else 'F'}. PMH: {', '.join(hx) if hx else 'nil of note'}."]
        if negate_mi[i]:
            parts.append("No prior MI.")
        if negate_af[i]:
            parts.append("No known arrhythmia.")
        parts.append(f"Meds: {', '.join(drugs)}." if drugs else "Meds: none.")
        said = [SYMPTOMS[j] for j in np.flatnonzero(symptoms[i] & ~hedged[i])]
        wording = _PRESENT[draws["phrase"][i] % 2]
        visit = _VISIT[draws["visit"][i] % 3]
        parts.append(f"{visit} with {wording[said[0]]} x{months[i]} months." if said else f"{visit} for review.")
        if len(said) > 1:
            parts.append("+" + ", +".join(wording[s] for s in said[1:]) + ".")
        for j in np.flatnonzero(hedged[i]):
            parts.append(_sentence(_HEDGED[draws["hedge"][i] % 2].format(s=_PRESENT[0][SYMPTOMS[j]])))
        if af_query[i]:
            parts.append("? paroxysmal AF, Holter pending.")
        no = [_DENIED[SYMPTOMS[j]] for j in np.flatnonzero(denied[i])]
        if no:
            parts.append("Denies " + (", ".join(no[:-1]) + " or " if len(no) > 1 else "") + no[-1] + ".")
        pulse = f"HR {int(facts.heart_rate[i])}{' irregular' if irregular[i] else ''}"
        parts.append(f"{pulse}, BP {int(facts.systolic_bp[i])}/{int(facts.diastolic_bp[i])}.")
        parts.append((_CONGESTED if congestion[i] else _CLEAR)[draws["exam"][i] % 3])
        parts.append(_PLAN[draws["plan"][i] % 4])
        texts.append(" ".join(parts))
    return CardiacNotes(texts=texts, documented=documented, symptoms=symptoms, hedged=hedged, denied=denied,
                        af_query=af_query)


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    return text[:1].upper() + text[1:] + "."

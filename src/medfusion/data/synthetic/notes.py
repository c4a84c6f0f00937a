"""Emergency-department triage notes in clinical shorthand, generated from ground truth.

One note per patient, e.g.::

    67M w/ h/o COPD, HTN p/w cough x3d. +chills, +SOB. Denies CP. Febrile to 38.9.
    HR 112, BP 131/78. Crackles R base. Possible RLL infiltrate. CXR ordered.

    45F p/w SOB x1d. No fever. No cough. T 36.8, HR 88. Lungs CTA bilat. Will obtain CXR.

What a note says, sentence by sentence:

- opening: age, sex, history (``h/o`` COPD, HTN, DM, CHF, asthma, CKD), chief complaint
  and duration;
- symptoms present (``+chills``, ``c/o cough``) and pertinent negatives for some absent
  ones (``Denies cough, SOB or CP.``, ``No N/V.``); :data:`SYMPTOMS` lists them;
- fever, always stated: febrile (measured T >= 38.0 deg C) or not (``no fever``,
  ``afebrile``, ``denies fevers``), sometimes with the value;
- some of T, HR and BP quoted from the measured vitals. SpO2 and RR values are **never**
  written (at most "SpO2/RR per flowsheet"): oxygenation is information the vitals alone
  carry;
- the chest exam: a *localising* finding naming a side and lobe (``crackles R base``,
  ``decreased BS over LLL``), often with an uncertain impression (``possible RLL
  infiltrate``, ``? LUL PNA``, ``cannot exclude right lower lobe pneumonia``), or a
  non-localising one (``lungs CTA bilat.``). Side words (R, L, right, left, RUL, RML, RLL,
  LUL, LLL) appear **only** in this sentence;
- a plan (``CXR ordered``).

Abbreviations used: SOB, CP, N/V, c/o, p/w, h/o, w/, x3d, T, HR, BP, SpO2, RR, CXR, PNA,
BS, CTA, bilat., RUL/RML/RLL/LUL/LLL, R/L.

All random choices are drawn as arrays up front; strings are then assembled in one pass
(10k notes in well under a second).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from medfusion.data.synthetic.vitals import FEVER_THRESHOLD

#: Symptoms a note may report or deny (order of the ``symptoms`` / ``negated`` columns).
SYMPTOMS: tuple[str, ...] = ("cough", "sputum", "chills", "SOB", "chest pain", "nausea")
#: Lobe named for (side, zone): side 0 = patient's right, 1 = left; zone 0 = upper, 1 = lower.
LOBES = (("RUL", "RLL"), ("LUL", "LLL"))
#: History items and their base rates (CHF comes from the facts).
HISTORY = (("COPD", 0.15), ("HTN", 0.3), ("DM", 0.15), ("asthma", 0.07), ("CKD", 0.05))

_PRESENT = {"cough": ("cough", "c/o cough"), "sputum": ("+sputum", "productive cough"),
            "chills": ("+chills", "chills"), "SOB": ("+SOB", "c/o SOB"),
            "chest pain": ("+CP", "c/o chest pain"), "nausea": ("+N/V", "nausea")}
_NEGATED = {"cough": ("cough", "cough"), "sputum": ("sputum", "sputum"), "chills": ("chills", "chills"),
            "SOB": ("SOB", "SOB"), "chest pain": ("CP", "chest pain"), "nausea": ("N/V", "N/V")}
_COMPLAINT = {"cough": "cough", "SOB": "SOB", "chest pain": "chest pain", "chills": "chills"}
_FEBRILE = ("Febrile to {t}.", "+fevers, T {t}.", "Reports fevers; T {t} at triage.")
_AFEBRILE = ("No fever.", "Afebrile.", "Denies fevers.")
_EXAM = (
    ("Crackles {S} upper field.", "Bronchial BS over {lobe}.", "Rhonchi {side} upper lung."),
    ("Crackles {S} base.", "Decreased BS over {lobe}.", "Rhonchi {side} base."),
)
_IMPRESSION = ("Possible {lobe} infiltrate.", "? {lobe} PNA.", "Cannot exclude {side} {zone} lobe pneumonia.",
               "{lobe} infiltrate suspected.", "Concern for {lobe} PNA.")
_NO_FOCAL = ("Lungs CTA bilat.", "No focal crackles.", "Breath sounds equal bilat., no focal findings.")
_PLAN = ("CXR ordered.", "Will obtain CXR.", "CXR pending.", "Plan CXR, labs.")


@dataclass
class NoteFacts:
    """The ground truth a note is written from (all arrays of length N).

    Attributes:
        age: (N,) int years.
        male: (N,) bool.
        temperature, heart_rate, systolic_bp, diastolic_bp: (N,) measured vitals (quoted as is).
        infection: (N,) bool, raises the odds of cough, sputum and chills.
        dyspnoea: (N,) bool, raises the odds of SOB.
        chest_pain: (N,) bool, raises the odds of chest pain.
        chf_history: (N,) bool, "h/o CHF".
        side: (N,) int side named by the exam: -1 none, 0 patient's right, 1 left.
        zone: (N,) int zone of the named lobe: 0 upper, 1 lower (ignored where side is -1).
    """

    age: np.ndarray
    male: np.ndarray
    temperature: np.ndarray
    heart_rate: np.ndarray
    systolic_bp: np.ndarray
    diastolic_bp: np.ndarray
    infection: np.ndarray
    dyspnoea: np.ndarray
    chest_pain: np.ndarray
    chf_history: np.ndarray
    side: np.ndarray
    zone: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.age))
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if value.shape != (n,):
                raise ValueError(f"notes: expected {f.name} of shape ({n},) like age, received {value.shape}")
            setattr(self, f.name, value)
        if not np.isin(self.side, (-1, 0, 1)).all() or not np.isin(self.zone[self.side >= 0], (0, 1)).all():
            raise ValueError(f"notes: expected side in {{-1, 0, 1}} and zone in {{0, 1}}, received sides "
                             f"{sorted(set(self.side.tolist()))} and zones {sorted(set(self.zone.tolist()))}")

    def __len__(self) -> int:
        return len(self.age)


@dataclass
class NoteBatch:
    """Generated notes and what they state.

    Attributes:
        texts: N notes.
        symptoms: (N, S) bool, symptom s of :data:`SYMPTOMS` reported present.
        negated: (N, S) bool, symptom s explicitly denied.
        febrile: (N,) bool, the note states a fever.
        side: (N,) int8 side named (-1 none, 0 right, 1 left).
        uncertain: (N,) bool, the note carries an uncertain impression ("possible ...").
    """

    texts: list[str]
    symptoms: np.ndarray
    negated: np.ndarray
    febrile: np.ndarray
    side: np.ndarray
    uncertain: np.ndarray


def _pick(rng: np.random.Generator, options: tuple, n: int) -> np.ndarray:
    return rng.integers(0, len(options), n)


def generate_notes(facts: NoteFacts, rng: np.random.Generator) -> NoteBatch:
    """Write one triage note per patient from ``facts``.

    Args:
        facts: per-patient ground truth.
        rng: the random generator; the same state gives the same notes.

    Returns:
        :class:`NoteBatch` with the texts and the symptom / negation / side flags they express.

    Raises:
        ValueError: if ``facts`` is not a :class:`NoteFacts`.
    """
    if not isinstance(facts, NoteFacts):
        raise ValueError(f"notes: expected facts to be a NoteFacts, received {type(facts).__name__}")
    n = len(facts)
    infection, dyspnoea, pain = (np.asarray(a, bool) for a in (facts.infection, facts.dyspnoea, facts.chest_pain))
    p_present = np.stack([
        np.where(infection, 0.8, 0.3), np.where(infection, 0.55, 0.1), np.where(infection, 0.55, 0.08),
        np.where(dyspnoea, 0.7, 0.3), np.where(pain, 0.6, 0.2), np.full(n, 0.12),
    ], axis=1)
    symptoms = rng.random((n, len(SYMPTOMS))) < p_present
    symptoms[:, 1] &= symptoms[:, 0]  # sputum only with a cough
    negated = ~symptoms & (rng.random((n, len(SYMPTOMS))) < 0.6)
    negated[:, 1] = False  # "no sputum" is never written
    febrile = facts.temperature >= FEVER_THRESHOLD
    history = rng.random((n, len(HISTORY))) < np.array([rate for _, rate in HISTORY])
    phrasing = rng.integers(0, 2, (n, len(SYMPTOMS)))
    draws = {
        "fever": _pick(rng, _FEBRILE, n), "afebrile": _pick(rng, _AFEBRILE, n),
        "exam": rng.integers(0, 3, n), "impression": _pick(rng, _IMPRESSION, n),
        "no_focal": _pick(rng, _NO_FOCAL, n), "plan": _pick(rng, _PLAN, n),
        "days": rng.integers(1, 8, n), "pw": rng.random(n) < 0.5, "denies": rng.random(n) < 0.5,
    }
    uncertain = (facts.side >= 0) & (rng.random(n) < 0.75)
    quote = rng.random((n, 3)) < np.array([0.55, 0.6, 0.5])  # T, HR, BP
    flowsheet = rng.random(n) < 0.25
    texts = []
    for i in range(n):
        parts = []
        hx = [HISTORY[j][0] for j in np.flatnonzero(history[i])]
        if facts.chf_history[i]:
            hx.insert(0, "CHF")
        present = [SYMPTOMS[j] for j in np.flatnonzero(symptoms[i])]
        complaint = next((_COMPLAINT[s] for s in present if s in _COMPLAINT),
                         "fever" if febrile[i] else "malaise")
        opening = f"{int(facts.age[i])}{'M' if facts.male[i] else 'F'}"
        if hx:
            opening += f" w/ h/o {', '.join(hx)}"
        verb = "p/w" if draws["pw"][i] else "presents with"
        parts.append(f"{opening} {verb} {complaint} x{draws['days'][i]}d.")
        others = [_PRESENT[s][phrasing[i, j]] for j, s in enumerate(SYMPTOMS) if symptoms[i, j] and s != complaint]
        if others:
            parts.append(_sentence(", ".join(others)))
        denied = [_NEGATED[s][phrasing[i, j]] for j, s in enumerate(SYMPTOMS) if negated[i, j]]
        if denied and draws["denies"][i]:
            parts.append("Denies " + (", ".join(denied[:-1]) + " or " if len(denied) > 1 else "") + denied[-1] + ".")
        elif denied:
            parts.append(" ".join(f"No {d}." for d in denied))
        t = f"{facts.temperature[i]:.1f}"
        if febrile[i]:
            parts.append(_FEBRILE[draws["fever"][i]].format(t=t))
        else:
            parts.append(_AFEBRILE[draws["afebrile"][i]])
        quoted = []
        if quote[i, 0] and not febrile[i]:
            quoted.append(f"T {t}")
        if quote[i, 1]:
            quoted.append(f"HR {int(facts.heart_rate[i])}")
        if quote[i, 2]:
            quoted.append(f"BP {int(facts.systolic_bp[i])}/{int(facts.diastolic_bp[i])}")
        if quoted:
            parts.append(", ".join(quoted) + ".")
        if flowsheet[i]:
            parts.append("SpO2/RR per flowsheet.")
        side = int(facts.side[i])
        if side >= 0:
            zone = int(facts.zone[i])
            words = dict(S="RL"[side], side=("right", "left")[side], zone=("upper", "lower")[zone],
                         lobe=LOBES[side][zone])
            parts.append(_EXAM[zone][draws["exam"][i]].format(**words))
            if uncertain[i]:
                parts.append(_IMPRESSION[draws["impression"][i]].format(**words))
        else:
            parts.append(_NO_FOCAL[draws["no_focal"][i]])
        parts.append(_PLAN[draws["plan"][i]])
        texts.append(" ".join(parts))
    return NoteBatch(texts=texts, symptoms=symptoms, negated=negated, febrile=febrile,
                     side=facts.side.astype(np.int8), uncertain=uncertain)


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    return text[:1].upper() + text[1:] + "."

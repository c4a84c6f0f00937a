"""Neurology notes after a transient episode, in clinical shorthand, generated from ground truth.

One note per patient, e.g.::

    34F w/ h/o migraine p/w a witnessed spell at home. Witnessed GTC, +tongue biting.
    Post-ictal confusion x20 min. Not on AEDs. Prior MRI w/ left mesial temporal sclerosis.
    Possible seizure vs syncope. EEG ordered.

    61M p/w transient LOC yesterday. Felt lightheaded beforehand. No tongue biting or
    incontinence. Returned to baseline immediately. Non-focal neuro exam. ? first unprovoked
    seizure. Routine EEG and MRI brain.

What a note says, sentence by sentence:

- opening: age, sex, history (``h/o`` migraine, HTN, DM, depression, ETOH use) and the episode;
- semiology: when present one or two of tongue biting, witnessed GTC, incontinence, staring
  spells, limb jerking; when absent, pertinent negatives (``No tongue biting or
  incontinence.``) and often a syncope-like prodrome;
- the post-ictal state, always stated: confusion with its duration, or its negation
  (``No post-ictal confusion.``, ``Returned to baseline immediately.``);
- anti-epileptic drugs (``On AED (LEV 500 bid).``) half of the time, from ``on_aed``;
- lateralising history naming a hemisphere (``Prior MRI w/ left mesial temporal
  sclerosis.``, ``h/o R temporal lobe injury (MVC).``) or none (``Non-focal neuro exam.``).
  Side words (R, L, right, left) appear **only** in this sentence;
- an uncertain impression (``Possible seizure vs syncope.``, ``Cannot exclude seizure.``)
  drawn independently of everything, and a plan (``EEG ordered.``).

Abbreviations used: p/w, h/o, w/, GTC, LOC, AED, LEV, EEG, MRI, MVC, HTN, DM, ETOH, r/o, x20 min.
All random choices are drawn as arrays up front; strings are then assembled in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

#: Semiology phrases a note may report (order of the ``semiology_items`` columns).
SEMIOLOGY: tuple[str, ...] = ("+tongue biting", "witnessed GTC", "urinary incontinence",
                              "staring spells with unresponsiveness", "rhythmic jerking of all 4 limbs")
HISTORY = (("migraine", 0.12), ("HTN", 0.2), ("DM", 0.1), ("depression", 0.12), ("ETOH use", 0.08))
_EPISODE = ("a witnessed spell", "transient LOC", "an episode of unresponsiveness", "a first-time event",
            "recurrent spells")
_WHEN = ("this AM", "yesterday", "2d ago", "at work", "at home")
_NEGATIVES = ("No tongue biting or incontinence.", "Denies tongue biting.", "No tongue biting, no incontinence.")
_PRODROME = ("Felt lightheaded beforehand.", "Preceded by nausea and diaphoresis.", "Vision greyed out before LOC.")
_POSTICTAL = ("Post-ictal confusion x{m} min.", "Confused and drowsy afterwards for ~{m} min.",
              "+post-ictal confusion.")
_NO_POSTICTAL = ("No post-ictal confusion.", "Returned to baseline immediately.",
                 "Back to baseline within minutes, no confusion.")
_AED = ("On AED (LEV 500 bid).", "On lamotrigine.")
_NO_AED = ("Not on AEDs.", "No AEDs.")
_SIDE = ("Prior MRI w/ {side} mesial temporal sclerosis.", "h/o {S} temporal lobe injury (MVC).",
         "Possible {side} hemispheric focus per outside neurology.", "{Side} frontal lesion on prior CT.")
_NO_SIDE = ("Non-focal neuro exam.", "No lateralising features.", "Neuro exam non-focal, no prior imaging.")
_IMPRESSION = ("Possible seizure vs syncope.", "? first unprovoked seizure.", "Cannot exclude seizure.",
               "DDx seizure vs convulsive syncope.", "Event of unclear etiology.")
_PLAN = ("EEG ordered.", "Routine EEG and MRI brain.", "EEG to r/o epileptiform activity.",
         "Plan EEG; seizure precautions.")


@dataclass
class NeuroNoteFacts:
    """The ground truth a note is written from (all arrays of length N).

    Attributes:
        age: (N,) int years.
        male: (N,) bool.
        semiology: (N,) bool, ictal semiology reported.
        postictal: (N,) bool, post-ictal confusion reported (else its negation).
        side: (N,) int hemisphere named: -1 none, 0 right, 1 left.
        on_aed: (N,) bool, on an anti-epileptic drug.
    """

    age: np.ndarray
    male: np.ndarray
    semiology: np.ndarray
    postictal: np.ndarray
    side: np.ndarray
    on_aed: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.age))
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if value.shape != (n,):
                raise ValueError(f"neuro notes: expected {f.name} of shape ({n},) like age, received {value.shape}")
            setattr(self, f.name, value)
        if not np.isin(self.side, (-1, 0, 1)).all():
            raise ValueError(f"neuro notes: expected side in {{-1, 0, 1}}, received {sorted(set(self.side.tolist()))}")

    def __len__(self) -> int:
        return len(self.age)


@dataclass
class NeuroNoteBatch:
    """Generated notes and what they state.

    Attributes:
        texts: N notes.
        semiology_items: (N, len(SEMIOLOGY)) bool, phrase j of :data:`SEMIOLOGY` written.
        negated: (N,) bool, a pertinent negative (tongue biting / incontinence) written.
        aed_stated: (N,) bool, the note mentions AEDs (either way).
    """

    texts: list[str]
    semiology_items: np.ndarray
    negated: np.ndarray
    aed_stated: np.ndarray


def generate_neuro_notes(facts: NeuroNoteFacts, rng: np.random.Generator) -> NeuroNoteBatch:
    """Write one neurology note per patient from ``facts`` (see the module docstring).

    Raises:
        ValueError: if ``facts`` is not a :class:`NeuroNoteFacts`.
    """
    if not isinstance(facts, NeuroNoteFacts):
        raise ValueError(f"neuro notes: expected facts to be a NeuroNoteFacts, received {type(facts).__name__}")
    n = len(facts)
    semiology = facts.semiology.astype(bool)
    # one or two semiology phrases where present: a random permutation's first one or two
    order = np.argsort(rng.random((n, len(SEMIOLOGY))), axis=1)
    count = np.where(semiology, rng.integers(1, 3, n), 0)
    items = np.zeros((n, len(SEMIOLOGY)), dtype=bool)
    np.put_along_axis(items, order[:, :2], np.arange(2)[None, :] < count[:, None], axis=1)
    negated = ~semiology & (rng.random(n) < 0.7)
    prodrome = ~semiology & (rng.random(n) < 0.5)
    history = rng.random((n, len(HISTORY))) < np.array([rate for _, rate in HISTORY])
    aed_stated = rng.random(n) < 0.5
    draws = {name: rng.integers(0, len(options), n) for name, options in (
        ("episode", _EPISODE), ("when", _WHEN), ("negatives", _NEGATIVES), ("prodrome", _PRODROME),
        ("postictal", _POSTICTAL), ("no_postictal", _NO_POSTICTAL), ("aed", _AED), ("no_aed", _NO_AED),
        ("side", _SIDE), ("no_side", _NO_SIDE), ("impression", _IMPRESSION), ("plan", _PLAN))}
    minutes = rng.choice((10, 15, 20, 30, 45), n)
    pw = rng.random(n) < 0.6
    texts = []
    for i in range(n):
        hx = [HISTORY[j][0] for j in np.flatnonzero(history[i])]
        opening = f"{int(facts.age[i])}{'M' if facts.male[i] else 'F'}" + (f" w/ h/o {', '.join(hx)}" if hx else "")
        parts = [f"{opening} {'p/w' if pw[i] else 'presents with'} {_EPISODE[draws['episode'][i]]} "
                 f"{_WHEN[draws['when'][i]]}."]
        if semiology[i]:
            phrases = [SEMIOLOGY[j] for j in order[i, : count[i]]]
            text = ", ".join(phrases)
            parts.append(text[0].upper() + text[1:] + ".")
        else:
            if prodrome[i]:
                parts.append(_PRODROME[draws["prodrome"][i]])
            if negated[i]:
                parts.append(_NEGATIVES[draws["negatives"][i]])
        if facts.postictal[i]:
            parts.append(_POSTICTAL[draws["postictal"][i]].format(m=minutes[i]))
        else:
            parts.append(_NO_POSTICTAL[draws["no_postictal"][i]])
        if aed_stated[i]:
            parts.append(_AED[draws["aed"][i]] if facts.on_aed[i] else _NO_AED[draws["no_aed"][i]])
        side = int(facts.side[i])
        if side >= 0:
            word = ("right", "left")[side]
            parts.append(_SIDE[draws["side"][i]].format(side=word, Side=word.capitalize(), S="RL"[side]))
        else:
            parts.append(_NO_SIDE[draws["no_side"][i]])
        parts.append(_IMPRESSION[draws["impression"][i]])
        parts.append(_PLAN[draws["plan"][i]])
        texts.append(" ".join(parts))
    return NeuroNoteBatch(texts=texts, semiology_items=items, negated=negated, aed_stated=aed_stated)

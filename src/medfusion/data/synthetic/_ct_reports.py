"""Baseline chest CT reports (FINDINGS / IMPRESSION), generated from ground truth, for :mod:`.radiology`.

One report per patient, e.g.::

    EXAM: CT chest without contrast (baseline).
    CLINICAL HISTORY: 67-year-old man, former smoker, 45 pack-years. Lung cancer screening.
    TECHNIQUE: Axial images of the chest without intravenous contrast.
    FINDINGS: Lungs: A 9 mm solid nodule with spiculated margins in the right upper lobe.
    Centrilobular emphysema, upper zone predominant. Pleura: No pleural effusion.
    Mediastinum: No mediastinal or hilar lymphadenopathy. Heart size is normal.
    IMPRESSION: 1. 9 mm spiculated solid nodule in the right upper lobe, possibly infectious
    or inflammatory. Follow-up CT in 3 months is recommended. 2. Emphysema.

What a report says:

- the smoking history (``current smoker, 40 pack-years``, ``never smoker``, ``former smoker,
  8 pack-years``) and an indication drawn independently of everything;
- one nodule: size (mm), composition (solid / ground-glass), margins (spiculated / smooth)
  and lobe, in FINDINGS and again in IMPRESSION with an uncertain qualifier ("possibly
  infectious or inflammatory", "indeterminate", "malignancy cannot be excluded"). Lobe names
  (right upper lobe, RUL, ...) appear **only** in these two sentences;
- emphysema when present ("Mild centrilobular emphysema.", and "2. Emphysema." in the
  impression), else "No emphysema." half of the time;
- pleura: "No pleural effusion." (negation) or "Small right pleural effusion.";
  mediastinum and heart: fixed negatives.

All random choices are drawn as arrays first; strings are then assembled in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from medfusion.data.synthetic._ct_anatomy import LOBE_NAMES, LOBES

_INDICATION = ("Lung cancer screening.", "Chronic cough.", "Dyspnea on exertion.", "Weight loss.",
               "Follow-up of abnormal chest radiograph.")
_NODULE = ("A {d} mm {comp} nodule with {margin} margins in the {lobe}.",
           "There is a {d} mm {spic}{comp} nodule in the {lobe}.",
           "{Lobe} ({abbr}) {comp} nodule measuring {d} mm, with {margin} margins.")
_QUALIFIER = ("possibly infectious or inflammatory", "indeterminate", "malignancy cannot be excluded",
              "likely benign but indeterminate", "of uncertain significance")
_FOLLOW_UP = ("Follow-up CT in 3 months is recommended.", "Short-term follow-up CT is recommended.",
              "Recommend CT follow-up in 3 months.")
_EMPHYSEMA = ("Centrilobular emphysema, upper zone predominant.", "Mild centrilobular emphysema.",
              "Moderate centrilobular and paraseptal emphysema.")
_NO_PLEURA = ("No pleural effusion.", "No pleural or pericardial effusion.")


@dataclass
class ReportFacts:
    """The ground truth a report is written from (all arrays of length N).

    Attributes:
        age: (N,) int years.
        male: (N,) bool.
        pack_years: (N,) int, 0 for never smokers.
        current_smoker: (N,) bool (only meaningful where pack_years > 0).
        emphysema: (N,) bool.
        lobe: (N,) int lobe code of the reported nodule (:data:`~._ct_anatomy.LOBES`).
        size_mm: (N,) int reported diameter.
        spiculated: (N,) bool.
        solid: (N,) bool (else ground-glass).
        effusion_side: (N,) int: -1 none, 0 right, 1 left.
    """

    age: np.ndarray
    male: np.ndarray
    pack_years: np.ndarray
    current_smoker: np.ndarray
    emphysema: np.ndarray
    lobe: np.ndarray
    size_mm: np.ndarray
    spiculated: np.ndarray
    solid: np.ndarray
    effusion_side: np.ndarray

    def __post_init__(self) -> None:
        n = len(np.asarray(self.age))
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            if value.shape != (n,):
                raise ValueError(f"ct reports: expected {f.name} of shape ({n},) like age, received {value.shape}")
            setattr(self, f.name, value)
        if not np.isin(self.lobe, range(len(LOBES))).all():
            raise ValueError(f"ct reports: expected lobe in 0..{len(LOBES) - 1}, received "
                             f"{sorted(set(self.lobe.tolist()))}")

    def __len__(self) -> int:
        return len(self.age)


def generate_ct_reports(facts: ReportFacts, rng: np.random.Generator) -> list[str]:
    """Write one baseline CT report per patient from ``facts`` (see the module docstring).

    Raises:
        ValueError: if ``facts`` is not a :class:`ReportFacts`.
    """
    if not isinstance(facts, ReportFacts):
        raise ValueError(f"ct reports: expected facts to be a ReportFacts, received {type(facts).__name__}")
    n = len(facts)
    draws = {name: rng.integers(0, len(options), n) for name, options in (
        ("indication", _INDICATION), ("nodule", _NODULE), ("qualifier", _QUALIFIER), ("follow_up", _FOLLOW_UP),
        ("emphysema", _EMPHYSEMA), ("no_pleura", _NO_PLEURA))}
    say_no_emphysema = rng.random(n) < 0.5
    quit_years = rng.integers(2, 20, n)
    reports = []
    for i in range(n):
        years = int(facts.pack_years[i])
        if years == 0:
            smoking = "never smoker"
        elif facts.current_smoker[i]:
            smoking = f"current smoker, {years} pack-years"
        else:
            smoking = f"former smoker, {years} pack-years, quit {quit_years[i]} years ago"
        lobe = int(facts.lobe[i])
        words = dict(d=int(facts.size_mm[i]), comp="solid" if facts.solid[i] else "ground-glass",
                     margin="spiculated" if facts.spiculated[i] else "smooth",
                     spic="spiculated " if facts.spiculated[i] else "smoothly marginated ",
                     lobe=LOBE_NAMES[lobe], Lobe=LOBE_NAMES[lobe].capitalize(), abbr=LOBES[lobe])
        lungs = [_NODULE[draws["nodule"][i]].format(**words)]
        if facts.emphysema[i]:
            lungs.append(_EMPHYSEMA[draws["emphysema"][i]])
        elif say_no_emphysema[i]:
            lungs.append("No emphysema.")
        side = int(facts.effusion_side[i])
        pleura = f"Small {('right', 'left')[side]} pleural effusion." if side >= 0 else \
            _NO_PLEURA[draws["no_pleura"][i]]
        impression = (f"1. {words['d']} mm {'spiculated ' if facts.spiculated[i] else ''}{words['comp']} nodule in "
                      f"the {words['lobe']}, {_QUALIFIER[draws['qualifier'][i]]}. {_FOLLOW_UP[draws['follow_up'][i]]}")
        if facts.emphysema[i]:
            impression += " 2. Emphysema."
        reports.append("\n".join([
            "EXAM: CT chest without contrast (baseline).",
            f"CLINICAL HISTORY: {int(facts.age[i])}-year-old {'man' if facts.male[i] else 'woman'}, {smoking}. "
            f"{_INDICATION[draws['indication'][i]]}",
            "TECHNIQUE: Axial images of the chest without intravenous contrast.",
            "FINDINGS: Lungs: " + " ".join(lungs) + f" Pleura: {pleura}",
            "Mediastinum: No mediastinal or hilar lymphadenopathy. Heart size is normal.",
            f"IMPRESSION: {impression}",
        ]))
    return reports

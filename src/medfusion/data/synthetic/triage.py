"""The ``triage`` scenario: pneumonia in the emergency department (chest X-ray + note + vitals).

A cohort of ED patients who had a chest X-ray (CXR) ordered for a suspected chest
infection. Every patient gets an X-ray (:mod:`.xray`), a triage note (:mod:`.notes`) and a
row of vital signs (:mod:`.vitals`), all drawn from one set of latent variables, so the
label can be traced to exactly what each modality shows.

Latent variables (independent unless stated):

| latent | rate | shown by |
|---|---|---|
| ``consolidation`` C, with side (R/L) and zone (upper/lower), uniform | 0.50 | **image only** (blotchy opacity in that lung zone) |
| ``fever`` F | 0.40 | vitals (temperature) **and** note ("febrile to 38.9" / "no fever"; cough, sputum and chills more likely) |
| ``hypoxia`` H | 0.40 | **vitals only** (SpO2, respiratory rate; HR also rises); never in the note |
| ``side_named`` N: the exam names a side and lobe | 0.70 | **note only** ("crackles R base", "possible RLL infiltrate") |
| ``note_side``: the side named, uniform R/L **independent of the image side** | - | note only |
| ``note_zone``: the zone of the named lobe = the consolidation's zone when there is one, else uniform | - | note |
| ``heart_failure`` (distractor) | 0.08 | image (cardiomegaly 0.85, bilateral infiltrates 0.7, effusion 0.5), note ("h/o CHF" 0.8, SOB), vitals (BP +14) |
| other distractors: cardiomegaly 0.05, infiltrates 0.04, effusion 0.05, pneumothorax 0.04, nodule 0.08 | - | image (pneumothorax also: SOB and chest pain in the note, HR +15) |

**Label.** ``infection = F or H`` and::

    pneumonia_true = C and infection and (not N or note_side == consolidation_side)

that is: a focal consolidation, with systemic signs of infection, and an exam that does not
localise to the *other* lung (a mismatch means another diagnosis, e.g. an old scar seen on
one side and pleuritic pain from the other). Prevalence about 0.21. Distractor findings
(bilateral infiltrates, effusion, ...) never make the label. ``pneumonia`` is
``pneumonia_true`` with each label flipped with probability ``label_noise``.

What this plants (ceilings are Bayes AUROC / accuracy from the exact latents, before
measurement and label noise):

| property | where | ceiling |
|---|---|---|
| **dominant easy modality** (imbalance) | image alone: C is a large bright blob, necessary for the label | AUROC 0.81 |
| **complementary** | C only in the image, H only in the vitals: image + vitals beats either | image 0.81, vitals 0.73, image+vitals 0.93 |
| **redundant** | F in vitals and note: without vitals, the note still gives F | image+text 0.91 vs image alone 0.81 |
| **cross-modal agreement** | when C and infection and N (22% of patients) the label is exactly "note side == image side": each modality alone is at chance there (both sides uniform and independent); fusion that keeps per-modality probabilities (late fusion) cannot compare sides, token-level fusion (cross-attention) can | all but agreement 0.96 / acc 0.89; all 1.0 / 1.0 |

``components["agreement_case"]`` marks that 22% subgroup, ``components["sides_agree"]``
its answer: report accuracy on it separately to tell strategies apart.

**Missingness.** Each modality is absent independently with the rate in ``missing``
(an absent image is all zeros, an absent note is ``""``, absent vitals are all NaN; the
``present`` flags say which). A patient left with no modality keeps its note. Each value
of a present vitals row is also missing (NaN) with probability ``missing_values`` (at least
one value stays). Finding masks and boxes describe the patient even where the image is
absent.

**Randomness.** One ``numpy.random.Generator(seed)`` spawns independent streams for the
latents, the X-rays, the vitals, the notes, missingness, label noise and the split, so the
same seed gives an identical cohort and changing e.g. ``missing`` leaves images and notes
unchanged.

**Splits.** Patient-level (one row per patient), stratified by the observed label,
``split_fractions`` of each class to train / val / test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from medfusion.data.synthetic._fields import image_size as image_size_pair
from medfusion.data.synthetic.notes import NoteFacts, generate_notes
from medfusion.data.synthetic.vitals import VITAL_NAMES, VITAL_UNITS, sample_vitals
from medfusion.data.synthetic.xray import (
    BOTH, CARDIOMEGALY, CONSOLIDATION, EFFUSION, FINDINGS, INFILTRATES, LOWER, NODULE, NO_SIDE, NO_ZONE,
    PNEUMOTHORAX, UPPER, Anatomy, XraySpec, render_xrays, sample_ctr,
)

#: Modalities of the triage scenario.
TRIAGE_MODALITIES: tuple[str, ...] = ("image", "text", "vitals")
#: Default per-modality missing rates.
DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"image": 0.1, "text": 0.05, "vitals": 0.1})
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Rates of the latent variables (see the module docstring).
RATES = MappingProxyType({
    "consolidation": 0.5, "fever": 0.4, "hypoxia": 0.4, "side_named": 0.7, "heart_failure": 0.08,
    "cardiomegaly": 0.05, "infiltrates": 0.04, "effusion": 0.05, "pneumothorax": 0.04, "nodule": 0.08,
})


@dataclass
class TriageCohort:
    """A synthetic triage cohort of N patients.

    Attributes:
        patient_id: (N,) str, "SYN-000001", ...
        split: (N,) str, "train" / "val" / "test".
        pneumonia: (N,) int64 observed label (with label noise).
        pneumonia_true: (N,) int64 label before noise.
        label_flipped: (N,) bool, where noise flipped the label.
        findings: (N, F) bool X-ray findings in :data:`~.xray.FINDINGS` order (no noise).
        finding_side: (N, F) int8 patient's side per finding (0 right, 1 left, 2 both, -1 none).
        finding_zone: (N, F) int8 zone per finding (0 upper, 1 lower, -1 none).
        vitals: (N, 6) float32 in :data:`~.vitals.VITAL_NAMES` order; NaN where missing.
        notes: N triage notes; ``""`` where the note is absent.
        images: (N, 1, H, W) float32 in [0, 1]; zeros where the image is absent.
        masks: (N, F, H, W) bool ground-truth finding masks.
        boxes: (N, F, 4) int32 ``(x0, y0, x1, y1)`` end-exclusive boxes, -1 where absent.
        present: {"image" | "text" | "vitals": (N,) bool}.
        age: (N,) int64 years; sex: (N,) str "M" / "F" (no bearing on the label).
        components: {name: (N,) array} the latent variables and derived signals (see the
            module docstring): consolidation, consolidation_side, consolidation_zone, fever,
            hypoxia, infection, side_named, note_side, note_zone, sides_agree,
            agreement_case, heart_failure, febrile_measured.
        anatomy: per-patient X-ray geometry (``anatomy.masks(size)`` gives lung and heart masks).
        ground_truth: human-readable description of the label design with realised rates.
        settings: the arguments the cohort was generated with.
    """

    patient_id: np.ndarray
    split: np.ndarray
    pneumonia: np.ndarray
    pneumonia_true: np.ndarray
    label_flipped: np.ndarray
    findings: np.ndarray
    finding_side: np.ndarray
    finding_zone: np.ndarray
    vitals: np.ndarray
    notes: list[str]
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    present: dict[str, np.ndarray]
    age: np.ndarray
    sex: np.ndarray
    components: dict[str, np.ndarray]
    anatomy: Anatomy
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    finding_names: ClassVar[tuple[str, ...]] = FINDINGS
    vital_names: ClassVar[tuple[str, ...]] = VITAL_NAMES
    vital_units: ClassVar[tuple[str, ...]] = VITAL_UNITS

    def __len__(self) -> int:
        return len(self.patient_id)

    def finding(self, name: str) -> np.ndarray:
        """(N,) bool flag of one finding.

        Raises:
            ValueError: on an unknown finding name.
        """
        if name not in FINDINGS:
            raise ValueError(f"triage: unknown finding {name!r}; expected one of {list(FINDINGS)}")
        return self.findings[:, FINDINGS.index(name)]

    def to_frame(self):
        """The tabular part as a pandas DataFrame: one row per patient.

        Columns: patient_id, split, pneumonia, pneumonia_true, age, sex, one bool column per
        finding, one column per vital sign, has_image / has_text / has_vitals, note.
        """
        import pandas as pd

        data: dict[str, Any] = {"patient_id": self.patient_id, "split": self.split, "pneumonia": self.pneumonia,
                                "pneumonia_true": self.pneumonia_true, "age": self.age, "sex": self.sex}
        data.update({name: self.findings[:, j] for j, name in enumerate(FINDINGS)})
        data.update({name: self.vitals[:, j] for j, name in enumerate(VITAL_NAMES)})
        data.update({f"has_{m}": self.present[m] for m in TRIAGE_MODALITIES})
        data["note"] = self.notes
        return pd.DataFrame(data)


def _check_rate(name: str, value: float, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < upper:
        raise ValueError(f"triage: expected {name} in [0, {upper}), received {value!r}")
    return float(value)


def _check_args(n_patients, seed, label_noise, missing, image_size, missing_values, split_fractions) -> dict[str, float]:
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ValueError(f"triage: expected n_patients to be an int >= 1, received {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"triage: expected seed to be an int >= 0, received {seed!r}")
    _check_rate("label_noise", label_noise, 0.5)
    _check_rate("missing_values", missing_values)
    if not isinstance(missing, Mapping):
        raise ValueError(f"triage: expected missing as a mapping modality -> rate, received {type(missing).__name__}")
    unknown = sorted(set(missing) - set(TRIAGE_MODALITIES))
    if unknown:
        raise ValueError(f"triage: unknown modality(ies) {unknown} in missing; expected keys from "
                         f"{list(TRIAGE_MODALITIES)}")
    rates = {m: _check_rate(f"missing[{m!r}]", missing.get(m, 0.0)) for m in TRIAGE_MODALITIES}
    image_size_pair(image_size)
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"triage: expected split_fractions as three non-negative numbers (train, val, test) "
                         f"summing to 1, received {split_fractions!r}")
    return rates


def stratified_split(labels: np.ndarray, rng: np.random.Generator, fractions=(0.7, 0.15, 0.15)) -> np.ndarray:
    """(N,) str split per row: each label class is shuffled and cut by ``fractions`` (train, val, test)."""
    labels = np.asarray(labels)
    split = np.empty(len(labels), dtype="<U5")
    cuts = np.cumsum(fractions)[:2]
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        bounds = np.round(cuts * len(rows)).astype(int)
        for name, part in zip(SPLITS, np.split(rows, bounds)):
            split[part] = name
    return split


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The latent variables of the module docstring."""
    r = RATES
    u = rng.random((n, 12))
    c = {
        "consolidation": u[:, 0] < r["consolidation"], "fever": u[:, 1] < r["fever"],
        "hypoxia": u[:, 2] < r["hypoxia"], "side_named": u[:, 3] < r["side_named"],
        "heart_failure": u[:, 4] < r["heart_failure"],
        "consolidation_side": rng.integers(0, 2, n).astype(np.int8),
        "consolidation_zone": rng.integers(0, 2, n).astype(np.int8),
    }
    note_side = rng.integers(0, 2, n).astype(np.int8)  # independent of the image side
    random_zone = rng.integers(0, 2, n).astype(np.int8)
    c["note_side"] = np.where(c["side_named"], note_side, NO_SIDE).astype(np.int8)
    c["note_zone"] = np.where(c["side_named"], np.where(c["consolidation"], c["consolidation_zone"], random_zone),
                              NO_ZONE).astype(np.int8)
    c["consolidation_side"] = np.where(c["consolidation"], c["consolidation_side"], NO_SIDE).astype(np.int8)
    c["consolidation_zone"] = np.where(c["consolidation"], c["consolidation_zone"], NO_ZONE).astype(np.int8)
    c["infection"] = c["fever"] | c["hypoxia"]
    c["sides_agree"] = c["consolidation"] & c["side_named"] & (c["note_side"] == c["consolidation_side"])
    c["agreement_case"] = c["consolidation"] & c["infection"] & c["side_named"]
    hf = c["heart_failure"]
    c["cardiomegaly"] = np.where(hf, u[:, 5] < 0.85, u[:, 5] < r["cardiomegaly"])
    c["infiltrates"] = np.where(hf, u[:, 6] < 0.7, u[:, 6] < r["infiltrates"])
    c["effusion"] = np.where(hf, u[:, 7] < 0.5, u[:, 7] < r["effusion"])
    c["pneumothorax"] = u[:, 8] < r["pneumothorax"]
    c["nodule"] = u[:, 9] < r["nodule"]
    c["chf_history"] = hf & (u[:, 10] < 0.8)
    c["male"] = u[:, 11] < 0.5
    c["age"] = np.clip(np.round(rng.normal(58, 18, n)), 18, 95).astype(np.int64)
    c["effusion_side"] = np.where(hf & (rng.random(n) < 0.5), BOTH, rng.integers(0, 2, n)).astype(np.int8)
    c["pneumothorax_side"] = rng.integers(0, 2, n).astype(np.int8)
    c["nodule_side"] = rng.integers(0, 2, n).astype(np.int8)
    c["nodule_zone"] = rng.integers(0, 2, n).astype(np.int8)
    return c


def _xray_spec(c: dict[str, np.ndarray], rng: np.random.Generator) -> XraySpec:
    n = len(c["consolidation"])
    present = np.zeros((n, len(FINDINGS)), dtype=bool)
    side = np.full((n, len(FINDINGS)), NO_SIDE, dtype=np.int8)
    zone = np.full((n, len(FINDINGS)), NO_ZONE, dtype=np.int8)
    present[:, CONSOLIDATION] = c["consolidation"]
    side[:, CONSOLIDATION], zone[:, CONSOLIDATION] = c["consolidation_side"], c["consolidation_zone"]
    present[:, INFILTRATES], side[:, INFILTRATES] = c["infiltrates"], BOTH
    present[:, EFFUSION], side[:, EFFUSION], zone[:, EFFUSION] = c["effusion"], c["effusion_side"], LOWER
    present[:, CARDIOMEGALY] = c["cardiomegaly"]
    present[:, PNEUMOTHORAX], side[:, PNEUMOTHORAX] = c["pneumothorax"], c["pneumothorax_side"]
    zone[:, PNEUMOTHORAX] = UPPER
    present[:, NODULE], side[:, NODULE], zone[:, NODULE] = c["nodule"], c["nodule_side"], c["nodule_zone"]
    return XraySpec(present, side, zone, sample_ctr(rng, c["cardiomegaly"]))


def generate_triage(
    n_patients: int,
    seed: int = 0,
    *,
    label_noise: float = 0.05,
    missing: Mapping[str, float] = DEFAULT_MISSING,
    image_size: int = 128,
    missing_values: float = 0.05,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> TriageCohort:
    """Generate the triage cohort (see the module docstring for the ground-truth design).

    Args:
        n_patients: N.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        label_noise: probability of flipping each observed label, in [0, 0.5).
        missing: {"image" | "text" | "vitals": rate in [0, 1)} of a whole modality being
            absent; modalities not named are never absent.
        image_size: X-ray height = width in pixels (>= 32).
        missing_values: probability of each value of a present vitals row being NaN.
        split_fractions: (train, val, test) shares of each label class.

    Returns:
        A :class:`TriageCohort`.

    Raises:
        ValueError: on a bad argument, naming it and the received value.

    Examples::

        cohort = generate_triage(1000, seed=0)
        cohort.images.shape     # (1000, 1, 128, 128)
        cohort.notes[0]         # '67M w/ h/o COPD p/w cough x3d. ...'
        cohort.pneumonia.mean() # about 0.21
    """
    rates = _check_args(n_patients, seed, label_noise, missing, image_size, missing_values, split_fractions)
    n = int(n_patients)
    streams = np.random.default_rng(seed).spawn(7)
    latent_rng, xray_rng, vitals_rng, notes_rng, missing_rng, noise_rng, split_rng = streams

    c = _latents(latent_rng, n)
    truth = c["consolidation"] & c["infection"] & (~c["side_named"] | c["sides_agree"])
    flipped = noise_rng.random(n) < label_noise
    label = (truth ^ flipped).astype(np.int64)

    xray = render_xrays(_xray_spec(c, xray_rng), xray_rng, image_size)
    vitals = sample_vitals(vitals_rng, fever=c["fever"], hypoxia=c["hypoxia"], tachycardia=c["pneumothorax"],
                           hypertension=c["heart_failure"])
    facts = NoteFacts(
        age=c["age"], male=c["male"], temperature=vitals[:, 0], heart_rate=vitals[:, 1],
        systolic_bp=vitals[:, 4], diastolic_bp=vitals[:, 5], infection=c["fever"],
        dyspnoea=c["heart_failure"] | c["pneumothorax"], chest_pain=c["pneumothorax"],
        chf_history=c["chf_history"], side=c["note_side"], zone=np.maximum(c["note_zone"], 0),
    )
    notes = generate_notes(facts, notes_rng)
    c["febrile_measured"] = notes.febrile

    # whole-modality and per-value missingness
    present = {m: missing_rng.random(n) >= rates[m] for m in TRIAGE_MODALITIES}
    present["text"] |= ~(present["image"] | present["vitals"])
    value_missing = missing_rng.random(vitals.shape) < missing_values
    value_missing[value_missing.all(axis=1), 0] = False
    vitals[value_missing | ~present["vitals"][:, None]] = np.nan
    images = xray.images
    images[~present["image"]] = 0.0
    texts = [t if keep else "" for t, keep in zip(notes.texts, present["text"].tolist())]

    split = stratified_split(label, split_rng, split_fractions)
    components = {k: c[k] for k in (
        "consolidation", "consolidation_side", "consolidation_zone", "fever", "hypoxia", "infection",
        "side_named", "note_side", "note_zone", "sides_agree", "agreement_case", "heart_failure",
        "febrile_measured",
    )}
    settings = dict(n_patients=n, seed=int(seed), label_noise=float(label_noise), missing=rates,
                    image_size=image_size, missing_values=float(missing_values),
                    split_fractions=tuple(float(f) for f in split_fractions))
    return TriageCohort(
        patient_id=np.array([f"SYN-{i + 1:06d}" for i in range(n)]),
        split=split, pneumonia=label, pneumonia_true=truth.astype(np.int64), label_flipped=flipped,
        findings=xray.spec.present, finding_side=xray.spec.side, finding_zone=xray.spec.zone,
        vitals=vitals, notes=texts, images=images, masks=xray.masks, boxes=xray.boxes, present=present,
        age=c["age"], sex=np.where(c["male"], "M", "F"), components=components, anatomy=xray.anatomy,
        ground_truth=_describe(label, truth, flipped, components, present), settings=settings,
    )


def _describe(label, truth, flipped, components, present) -> str:
    """The label design in words, with the realised rates of a cohort."""
    c = components
    lines = [
        "triage ground truth: pneumonia_true = consolidation AND (fever OR hypoxia) AND "
        "(no side named in the note OR note side == consolidation side); pneumonia = pneumonia_true "
        "with label noise.",
        "image only: consolidation (side, zone) and distractor findings; vitals only: hypoxia (SpO2, RR); "
        "vitals and note: fever (redundant); note only: the side named (compare with the image side).",
        f"realised: prevalence {truth.mean():.3f} (observed {label.mean():.3f}), label flips {flipped.mean():.3f}, "
        f"consolidation {c['consolidation'].mean():.3f}, fever {c['fever'].mean():.3f}, "
        f"hypoxia {c['hypoxia'].mean():.3f}, side named {c['side_named'].mean():.3f}, "
        f"agreement cases {c['agreement_case'].mean():.3f} "
        f"(of which sides agree {c['sides_agree'][c['agreement_case']].mean() if c['agreement_case'].any() else 0:.3f}).",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in TRIAGE_MODALITIES) + ".",
    ]
    return "\n".join(lines)

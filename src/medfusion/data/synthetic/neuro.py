"""The ``neuro`` scenario: seizure or not, from a neurology note and a scalp EEG (text + signal).

A cohort of patients seen after a transient episode ("spell", loss of consciousness).
Every patient gets a 19-channel EEG (:mod:`.eeg`, written as EDF) and a neurology note
(:mod:`._neuro_notes`), both drawn from one set of latent variables, so the label can be
traced to exactly what each modality shows.

Latent variables (independent unless stated):

| latent | rate | shown by |
|---|---|---|
| ``discharge`` D: 3 Hz spike-and-wave in the EEG | 0.50 | **EEG only** (100-200 µV, 3-8 s) |
| ``discharge_side``: generalised (all channels) 0.3, else one hemisphere, R/L uniform | - | EEG only |
| ``postictal`` P | 0.40 | EEG (alpha x0.3, diffuse 0.8-2.2 Hz delta) **and** note ("post-ictal confusion x20 min" / "no post-ictal confusion") |
| ``semiology`` S: tongue biting, witnessed GTC, incontinence, staring spells, limb jerking | 0.40 | **note only** (when absent: pertinent negatives, syncope-like prodrome) |
| ``side_named`` N: the note names a hemisphere (prior MRI, old injury, outside opinion) | 0.70 | **note only** |
| ``note_side``: the hemisphere named, uniform R/L **independent of the EEG side** | - | note only |
| ``on_aed`` (distractor) | 0.30 | note ("On AED (LEV 500 bid)." / "Not on AEDs.") |
| artefacts (distractors): eye blinks, muscle, electrode pops | see :mod:`.eeg` | EEG |

**Label.** ``ictal_features = P or S`` and::

    seizure_true = D and ictal_features and (not N or D is generalised or note_side == discharge_side)

that is: epileptiform discharges, with clinical or electrical signs of an ictal event, and
no history that puts the focus in the *other* hemisphere than the focal discharges (a
mismatch means the discharges are not the cause of this episode). Prevalence about 0.24.
``seizure`` is ``seizure_true`` with each label flipped with probability ``label_noise``.

What this plants (ceilings are Bayes AUROC / accuracy from the exact latents, before
measurement and label noise):

| property | where | ceiling |
|---|---|---|
| **dominant easy modality** (imbalance) | EEG alone: D is a large 3 Hz rhythm, necessary for the label; P is visible too | AUROC 0.92 |
| **complementary** | D only in the EEG, S only in the note | EEG 0.92, note 0.78, both without the side comparison 0.98 |
| **redundant** | P in the EEG and the note: without the EEG the note still gives P | |
| **cross-modal agreement** | when D is focal and ictal_features and N (16% of patients) the label is exactly "note side == EEG side": each modality alone is at chance there; fusion that keeps per-modality probabilities cannot compare sides, token-level fusion can | all 1.0 / 1.0 |

``components["agreement_case"]`` marks that subgroup and ``components["sides_agree"]`` its
answer: report accuracy on it separately to tell strategies apart.

**Ground truth for attention maps.** :attr:`NeuroCohort.events` holds every planted event
(discharge, blink, muscle, pop) with its channels and sample window;
:meth:`NeuroCohort.masks` expands them to (n, 4, C, T) masks, :meth:`NeuroCohort.events_frame`
to a table (written as ``ground_truth/events.parquet``).

**Missingness.** Each modality ("signal" = EEG, "text" = note) is absent independently with
the rate in ``missing`` (an absent EEG is all zeros, an absent note is ``""``; ``present``
says which). A patient left with neither keeps the note. Events describe the patient even
where the EEG is absent.

**Randomness.** One ``numpy.random.Generator(seed)`` spawns independent streams for the
latents, the EEG, the notes, missingness, label noise and the split: the same seed gives an
identical cohort, and changing ``missing`` or ``label_noise`` leaves signals and notes unchanged.

**Splits.** Patient-level (one row per patient), stratified by the observed label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from medfusion import __version__
from medfusion.data.io import write_edf
from medfusion.data.synthetic._cohort_checks import check_cohort_args
from medfusion.data.synthetic._neuro_notes import NeuroNoteFacts, generate_neuro_notes
from medfusion.data.synthetic.eeg import BOTH, EEG_CHANNELS, EVENT_KINDS, NO_SIDE, EEGEvents, EEGSpec, render_eeg
from medfusion.data.synthetic.files import write_description, write_manifest, write_patient_files
from medfusion.data.synthetic.triage import stratified_split
from medfusion.files import atomic_path, atomic_write_text

#: Modalities of the neuro scenario (manifest columns of the same names).
NEURO_MODALITIES: tuple[str, ...] = ("signal", "text")
#: Default per-modality missing rates.
NEURO_DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"signal": 0.1, "text": 0.05})
#: Rates of the latent variables (see the module docstring).
NEURO_RATES = MappingProxyType({
    "discharge": 0.5, "generalised": 0.3, "postictal": 0.4, "semiology": 0.4, "side_named": 0.7, "on_aed": 0.3,
})


@dataclass
class NeuroCohort:
    """A synthetic neuro cohort of N patients.

    Attributes:
        patient_id: (N,) str, "SYN-000001", ...
        split: (N,) str, "train" / "val" / "test".
        seizure: (N,) int64 observed label (with label noise).
        seizure_true: (N,) int64 label before noise.
        label_flipped: (N,) bool, where noise flipped the label.
        eeg: (N, C, T) float32 µV, channels in :data:`~.eeg.EEG_CHANNELS` order; zeros where absent.
        sampling_rate: Hz.
        notes: N neurology notes; ``""`` where the note is absent.
        events: planted EEG events (ground truth, see :class:`~.eeg.EEGEvents`).
        present: {"signal" | "text": (N,) bool}.
        age: (N,) int64 years; sex: (N,) str "M" / "F" (no bearing on the label).
        components: {name: (N,) array}: discharge, discharge_side (-1 none, 0 right, 1 left,
            2 generalised), generalised, postictal, semiology, ictal_features, side_named,
            note_side (-1, 0, 1), sides_agree, agreement_case, on_aed, discharge_onset_s,
            discharge_duration_s (NaN without a discharge), alpha_hz, spike_wave_hz.
        ground_truth: human-readable description of the label design with realised rates.
        settings: the arguments the cohort was generated with.
    """

    patient_id: np.ndarray
    split: np.ndarray
    seizure: np.ndarray
    seizure_true: np.ndarray
    label_flipped: np.ndarray
    eeg: np.ndarray
    sampling_rate: float
    notes: list[str]
    events: EEGEvents
    present: dict[str, np.ndarray]
    age: np.ndarray
    sex: np.ndarray
    components: dict[str, np.ndarray]
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    channel_names: ClassVar[tuple[str, ...]] = EEG_CHANNELS
    event_kinds: ClassVar[tuple[str, ...]] = EVENT_KINDS

    def __len__(self) -> int:
        return len(self.patient_id)

    def masks(self, rows=None) -> np.ndarray:
        """(n, 4, C, T) bool masks of the planted events by kind (:data:`~.eeg.EVENT_KINDS`) for ``rows``."""
        return self.events.masks(self.eeg.shape[-1], rows)

    def events_frame(self):
        """The planted events as a DataFrame (see :meth:`~.eeg.EEGEvents.to_frame`)."""
        return self.events.to_frame(self.patient_id, self.sampling_rate)

    def to_frame(self):
        """The tabular part as a pandas DataFrame: one row per patient.

        Columns: patient_id, split, seizure, seizure_true, age, sex, has_signal, has_text, note.
        """
        import pandas as pd

        data: dict[str, Any] = {"patient_id": self.patient_id, "split": self.split, "seizure": self.seizure,
                                "seizure_true": self.seizure_true, "age": self.age, "sex": self.sex}
        data.update({f"has_{m}": self.present[m] for m in NEURO_MODALITIES})
        data["note"] = self.notes
        return pd.DataFrame(data)


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The latent variables of the module docstring."""
    r = NEURO_RATES
    u = rng.random((n, 7))
    c = {
        "discharge": u[:, 0] < r["discharge"], "postictal": u[:, 1] < r["postictal"],
        "semiology": u[:, 2] < r["semiology"], "side_named": u[:, 3] < r["side_named"],
        "on_aed": u[:, 4] < r["on_aed"], "male": u[:, 5] < 0.5,
    }
    generalised = c["discharge"] & (u[:, 6] < r["generalised"])
    side = rng.integers(0, 2, n)
    c["discharge_side"] = np.where(c["discharge"], np.where(generalised, BOTH, side), NO_SIDE).astype(np.int8)
    c["generalised"] = generalised
    c["note_side"] = np.where(c["side_named"], rng.integers(0, 2, n), NO_SIDE).astype(np.int8)  # independent
    c["ictal_features"] = c["postictal"] | c["semiology"]
    focal = c["discharge"] & ~generalised
    c["sides_agree"] = focal & c["side_named"] & (c["note_side"] == c["discharge_side"])
    c["agreement_case"] = focal & c["ictal_features"] & c["side_named"]
    c["age"] = np.clip(np.round(rng.normal(42, 18, n)), 16, 90).astype(np.int64)
    return c


def generate_neuro(
    n_patients: int,
    seed: int = 0,
    *,
    label_noise: float = 0.05,
    missing: Mapping[str, float] = NEURO_DEFAULT_MISSING,
    sampling_rate: int = 128,
    duration_s: float = 20.0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    workers: int | None = None,
) -> NeuroCohort:
    """Generate the neuro cohort (see the module docstring for the ground-truth design).

    Args:
        n_patients: N.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        label_noise: probability of flipping each observed label, in [0, 0.5).
        missing: {"signal" | "text": rate in [0, 1)} of a whole modality being absent;
            modalities not named are never absent.
        sampling_rate: EEG rate in Hz (int >= 128).
        duration_s: EEG length in whole seconds (>= 10).
        split_fractions: (train, val, test) shares of each label class.
        workers: EEG rendering threads (the cohort does not depend on it).

    Returns:
        A :class:`NeuroCohort`; ``eeg`` is (N, 19, duration_s * sampling_rate) float32 µV.

    Raises:
        ValueError: on a bad argument, naming it and the received value.

    Examples::

        cohort = generate_neuro(1000, seed=0)
        cohort.eeg.shape        # (1000, 19, 2560)
        cohort.notes[0]         # '45F w/ h/o HTN p/w a witnessed spell this AM. Vision greyed ...'
        cohort.seizure.mean()   # about 0.27 (seizure_true: about 0.24, before label noise)
    """
    rates = check_cohort_args("neuro", NEURO_MODALITIES, n_patients, seed, label_noise, missing, split_fractions)
    n = int(n_patients)
    latent_rng, eeg_rng, notes_rng, missing_rng, noise_rng, split_rng = np.random.default_rng(seed).spawn(6)

    c = _latents(latent_rng, n)
    truth = c["discharge"] & c["ictal_features"] & (~c["side_named"] | c["generalised"] | c["sides_agree"])
    flipped = noise_rng.random(n) < label_noise
    label = (truth ^ flipped).astype(np.int64)

    batch = render_eeg(EEGSpec(c["discharge_side"], c["postictal"]), eeg_rng, sampling_rate=sampling_rate,
                       duration_s=duration_s, workers=workers)
    notes = generate_neuro_notes(NeuroNoteFacts(
        age=c["age"], male=c["male"], semiology=c["semiology"], postictal=c["postictal"], side=c["note_side"],
        on_aed=c["on_aed"]), notes_rng)

    present = {m: missing_rng.random(n) >= rates[m] for m in NEURO_MODALITIES}
    present["text"] |= ~present["signal"]
    eeg = batch.signals
    eeg[~present["signal"]] = 0.0
    texts = [t if keep else "" for t, keep in zip(notes.texts, present["text"].tolist())]
    split = stratified_split(label, split_rng, split_fractions)

    events = batch.events
    has = events.active[:, 0]  # slot 0 is the discharge
    components = {k: c[k] for k in (
        "discharge", "discharge_side", "generalised", "postictal", "semiology", "ictal_features", "side_named",
        "note_side", "sides_agree", "agreement_case", "on_aed",
    )}
    components["discharge_onset_s"] = np.where(has, events.onset[:, 0] / batch.sampling_rate, np.nan)
    components["discharge_duration_s"] = np.where(has, (events.end[:, 0] - events.onset[:, 0])
                                                  / batch.sampling_rate, np.nan)
    components["alpha_hz"], components["spike_wave_hz"] = batch.alpha_hz, batch.spike_wave_hz
    settings = dict(n_patients=n, seed=int(seed), label_noise=float(label_noise), missing=rates,
                    sampling_rate=int(batch.sampling_rate), duration_s=float(duration_s),
                    split_fractions=tuple(float(f) for f in split_fractions))
    return NeuroCohort(
        patient_id=np.array([f"SYN-{i + 1:06d}" for i in range(n)]), split=split, seizure=label,
        seizure_true=truth.astype(np.int64), label_flipped=flipped, eeg=eeg, sampling_rate=batch.sampling_rate,
        notes=texts, events=events, present=present, age=c["age"], sex=np.where(c["male"], "M", "F"),
        components=components, ground_truth=_describe(label, truth, flipped, components, present),
        settings=settings,
    )


def _describe(label, truth, flipped, components, present) -> str:
    """The label design in words, with the realised rates of a cohort."""
    c = components
    agree = c["agreement_case"]
    return "\n".join([
        "neuro ground truth: seizure_true = discharge AND (postictal OR semiology) AND (no side named in the note "
        "OR generalised discharge OR note side == discharge side); seizure = seizure_true with label noise.",
        "EEG only: 3 Hz spike-and-wave discharge (generalised or one hemisphere) and artefacts; EEG and note: "
        "post-ictal state (redundant); note only: semiology and the hemisphere named (compare with the EEG side).",
        f"realised: prevalence {truth.mean():.3f} (observed {label.mean():.3f}), label flips {flipped.mean():.3f}, "
        f"discharge {c['discharge'].mean():.3f} (of which generalised "
        f"{c['generalised'][c['discharge']].mean() if c['discharge'].any() else 0:.3f}), "
        f"postictal {c['postictal'].mean():.3f}, semiology {c['semiology'].mean():.3f}, "
        f"side named {c['side_named'].mean():.3f}, agreement cases {agree.mean():.3f} "
        f"(of which sides agree {c['sides_agree'][agree].mean() if agree.any() else 0:.3f}).",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in NEURO_MODALITIES) + ".",
    ])


def write_neuro_cohort(
    cohort: NeuroCohort,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` in the layout a user's real data would have.

    Layout (paths in the manifest are relative to ``out``)::

        manifest.parquet, manifest.csv   one row per patient: patient_id, split, seizure,
                                         seizure_true, age, sex, signal, text, gt_* components
        eeg/SYN-000001.edf               EEG as EDF+, 19 channels in µV      (column "signal")
        notes/SYN-000001.txt             neurology note, UTF-8               (column "text")
        ground_truth/events.parquet      one row per planted event: patient_id, kind,
                                         channels, onset_s, duration_s, onset_sample, end_sample
        cohort.json                      scenario, settings, channel names, ground truth text

    A missing modality has an empty path. The manifest is written last (see
    :func:`~.files.write_manifest`). EDF stores 16-bit samples: values read back lie
    within one quantisation step (channel range / 65535) of ``cohort.eeg``.

    Args:
        cohort: a generated neuro cohort.
        out: destination folder (created).
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.

    Raises:
        ValueError: if ``cohort`` is not a :class:`NeuroCohort`.
    """
    if not isinstance(cohort, NeuroCohort):
        raise ValueError(f"neuro: expected cohort to be a NeuroCohort, received {type(cohort).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = cohort.to_frame().drop(columns=["note", *(f"has_{m}" for m in NEURO_MODALITIES)])
    columns, total = write_patient_files(out, cohort.patient_id, {
        "signal": ("eeg/{}.edf", cohort.present["signal"],
                   lambda i, p: write_edf(p, cohort.eeg[i], cohort.sampling_rate, EEG_CHANNELS, "uV")),
        "text": ("notes/{}.txt", cohort.present["text"], lambda i, p: atomic_write_text(p, cohort.notes[i])),
    }, workers, progress)

    with atomic_path(out / "ground_truth" / "events.parquet", suffix=".parquet") as tmp:
        cohort.events_frame().to_parquet(tmp, index=False)
    for name in NEURO_MODALITIES:
        frame[name] = columns[name]
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, {
        "scenario": "neuro",
        "medfusion_version": __version__,
        "patients": len(cohort),
        "modalities": {"signal": "signal", "text": "text"},
        "label": "seizure",
        "sampling_rate": cohort.sampling_rate,
        "channel_names": list(EEG_CHANNELS),
        "units": "uV",
        "event_kinds": list(EVENT_KINDS),
        "settings": cohort.settings,
        "ground_truth": cohort.ground_truth,
        "sides": "0 = patient's right hemisphere (even electrodes), 1 = left (odd), 2 = generalised, -1 = none",
    })
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest


def load_neuro_events(out: str | Path):
    """The planted events written by :func:`write_neuro_cohort` (``ground_truth/events.parquet``) as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(Path(out) / "ground_truth" / "events.parquet")


__all__ = [
    "NEURO_DEFAULT_MISSING", "NEURO_MODALITIES", "NEURO_RATES", "NeuroCohort", "generate_neuro",
    "load_neuro_events", "write_neuro_cohort",
]

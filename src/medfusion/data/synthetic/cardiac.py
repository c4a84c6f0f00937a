"""The ``cardiac`` scenario: one-year heart-failure events (ECG + echo + PPG + clinic note).

A cohort of cardiology outpatients. Every patient gets a 12-lead ECG (:mod:`.ecg`), an
apical echo clip of the left ventricle (:mod:`.echo`), a finger PPG with a respiration
trace (:mod:`.waveforms`) and a clinic note (:mod:`.cardiac_notes`), all drawn from one set
of latent variables, so the label can be traced to exactly what each modality shows.

| latent | rate | shown by |
|---|---|---|
| ejection fraction (EF) group: reduced / mid-range / preserved | 0.30 / 0.15 / 0.55 | **echo only** |
| atrial fibrillation (AF) | 0.20 | ECG **and** PPG **and** note (redundant) |
| bundle branch block (BBB), RBBB or LBBB (1:1) | 0.12 | **ECG only** |
| prior MI, territory anterior / inferior / lateral (uniform) | 0.25 | **note only** |
| ST elevation (STE) in a territory's leads | 0.10; 0.40 after an MI | **ECG only** |
| congestion (distractor) | 0.12 / 0.20 / 0.35 by EF group | note, respiratory rate +3 |
| known CHF (distractor) | 0.05 / 0.15 / 0.35 by EF group | note (partly redundant with the echo) |
| hypertension, diabetes (distractors) | 0.5 / 0.25 | note |

- EF: reduced uniform in 15-40%, mid-range uniform in 40-50%, preserved N(60, 5) clipped
  to 50-75%; the echo shows it as the cavity area over the cycle (and a dilated LV when
  reduced).
- AF: the ECG has irregular RR intervals, no P waves and f waves; the PPG an irregular
  pulse; the note "known AF", an anticoagulant, sometimes "HR 96 irregular" (the history
  item is dropped with probability ``noise["text"]``).
- BBB widens the QRS to about 145 ms (RBBB) or 160 ms (LBBB), normal about 90 ms (as measured
  from the signal).
- After an MI, the STE territory is the MI's with probability 0.5, else one of the others.
- Congestion: dyspnoea, orthopnoea, oedema, raised JVP in the note.

**Label.** ST elevation in the territory of an old MI is the chronic pattern of an LV
aneurysm; anywhere else it is acute injury: ``acute_ste = STE and not (prior MI and STE
territory == MI territory)``. Then::

    points = 2 [EF < 40] + [40 <= EF < 50] + AF + acute_ste + BBB + prior MI
    hf_event_true = points >= 3

Prevalence about 0.19. ``hf_event`` is ``hf_event_true`` with each label flipped with
probability ``label_noise``.

What this plants (ceilings are Bayes AUROC from the exact latents, with the default 10%
documentation gaps in the note, before signal noise and label noise; 2M-patient simulation):

| property | where | ceiling |
|---|---|---|
| **dominant easy modality** | echo alone: EF is a large, always-visible shape change worth 2 points | echo 0.86, ECG 0.78, note 0.80, PPG 0.64 |
| **complementary** | EF only in the echo, STE / BBB only in the ECG, prior MI only in the note | echo + ECG 0.97, echo + note 0.95, echo + ECG + note 0.997 |
| **redundant** | AF in the ECG, the PPG and the note: without the ECG, PPG or note still give it | echo + PPG 0.90 vs echo 0.86 |
| **cross-modal agreement** | ``agreement_case`` (below): the label is "ECG territory != note territory" | accuracy 0.5 alone, 1.0 with both |

``components["agreement_case"]`` marks the patients with STE after an MI whose other points
sum to 2 (about 2.5% of patients, label balanced): there the label is exactly
``components["territories_differ"]``, which needs the STE territory (ECG) *and* the MI
territory (note; when the note documents the MI); each modality alone is at chance there.
Report accuracy on that subgroup separately to tell strategies apart.

**Noise.** ``noise`` scales each modality: "ecg", "ppg" (white noise, baseline wander,
mains; 0 = clean), "echo" (speckle; 0 = clean shapes), and "text" is the probability that
a true history item or symptom goes unwritten. **Missingness**: each modality is absent
independently with its rate in ``missing`` (absent arrays are zeros, an absent note is
``""``, ``present`` says which); a patient left with none keeps the note.

**Randomness.** One ``numpy.random.Generator(seed)`` spawns independent streams (latents,
beats, ECG, echo, PPG, notes, missingness, label noise, split): the same seed gives an
identical cohort, and changing noise or missingness leaves the other draws unchanged.

**Splits.** Patient-level (one row per patient), stratified by the observed label.

**On disk** (:func:`write_cardiac_cohort`; manifest paths are relative to ``out/``)::

    manifest.parquet, manifest.csv   one row per patient: patient_id, split, hf_event,
                                     hf_event_true, age, sex, path columns ecg, echo, ppg,
                                     text ("" = modality missing), gt_* ground-truth columns
    ecg/SYN-000001.hea + .dat        WFDB, the leads (I, II, III, aVR, aVL, aVF, V1-V6) in mV
    ppg/SYN-000001.hea + .dat        WFDB, PLETH and RESP in normalised units (NU)
    echo/SYN-000001.mp4              the echo clip (H.264, gray as RGB), fps = frames * HR / 60
    notes/SYN-000001.txt             clinic note, UTF-8
    ground_truth/masks.npz           LV cavity masks (N, 1, F, H, W) bit-packed, boxes (N, 1, F, 4)
    cohort.json                      scenario, settings, channel names and units, ground truth

The manifest files are written last: a folder without ``manifest.parquet`` is unfinished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from medfusion import __version__
from medfusion.data.synthetic._fields import masks_to_boxes
from medfusion.data.synthetic.cardiac_notes import HISTORY, SYMPTOMS, CardiacFacts, generate_cardiac_notes
from medfusion.data.synthetic.echo import render_echo
from medfusion.data.synthetic.ecg import BBB_TYPES, LEADS, TERRITORIES, render_ecg
from medfusion.data.synthetic.files import save_masks, write_description, write_manifest, write_patient_files
from medfusion.data.synthetic.triage import stratified_split
from medfusion.data.synthetic.waveforms import render_ppg, render_respiration, sample_beats

#: Modalities of the cardiac scenario (manifest path columns).
CARDIAC_MODALITIES: tuple[str, ...] = ("ecg", "echo", "ppg", "text")
DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"ecg": 0.1, "echo": 0.15, "ppg": 0.2, "text": 0.05})
#: Noise scales: signal/echo multipliers (1 = default) and the note's documentation-gap rate.
DEFAULT_NOISE: Mapping[str, float] = MappingProxyType({"ecg": 1.0, "echo": 1.0, "ppg": 1.0, "text": 0.1})
_NOISE_RANGE = {"ecg": (10.0, True), "echo": (2.0, True), "ppg": (10.0, True), "text": (1.0, False)}
#: Channels of the PPG record.
PPG_CHANNELS: tuple[str, ...] = ("PLETH", "RESP")


@dataclass
class CardiacCohort:
    """A synthetic cardiac cohort of N patients.

    Attributes:
        patient_id: (N,) str, "SYN-000001", ...
        split: (N,) str, "train" / "val" / "test".
        hf_event: (N,) int64 observed label (with label noise); hf_event_true before noise.
        label_flipped: (N,) bool.
        ejection_fraction: (N,) float64 true EF in percent.
        ecg: (N, L, T) float32 mV, leads ``ecg_leads``; zeros where absent.
        echo: (N, F, 1, H, W) uint8 (intensity x 255, as in the MP4), one cardiac cycle; zeros
            where absent.
        echo_fps: (N,) frame rate making one clip one heartbeat (F * HR / 60).
        cavity: (N, F, H, W) bool ground-truth LV cavity masks (also where the echo is absent).
        ppg: (N, 2, T) float32 normalised units, channels :data:`PPG_CHANNELS`; zeros where absent.
        notes: N clinic notes; ``""`` where absent.
        present: {"ecg" | "echo" | "ppg" | "text": (N,) bool}.
        heart_rate, resp_rate: (N,) per minute; age: (N,) int64; sex: (N,) "M" / "F".
        components: {name: (N,) array} latents and derived signals (module docstring):
            ejection_fraction, ef_group (0 preserved, 1 mid-range, 2 reduced), reduced_ef,
            mid_range_ef, af, af_documented, af_query, bbb, bbb_type (index of
            :data:`~.ecg.BBB_TYPES`), st_elevation, st_territory and mi_territory (index of
            :data:`~.ecg.TERRITORIES`, -1 none), prior_mi, mi_documented, acute_ste, points,
            territories_differ, agreement_case, congestion, chf, htn, dm, systolic_bp, diastolic_bp.
        ground_truth: the label design in words with realised rates.
        settings: the arguments the cohort was generated with.
    """

    patient_id: np.ndarray
    split: np.ndarray
    hf_event: np.ndarray
    hf_event_true: np.ndarray
    label_flipped: np.ndarray
    ejection_fraction: np.ndarray
    ecg: np.ndarray
    echo: np.ndarray
    echo_fps: np.ndarray
    cavity: np.ndarray
    ppg: np.ndarray
    notes: list[str]
    present: dict[str, np.ndarray]
    heart_rate: np.ndarray
    resp_rate: np.ndarray
    age: np.ndarray
    sex: np.ndarray
    components: dict[str, np.ndarray]
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    ppg_channels: ClassVar[tuple[str, ...]] = PPG_CHANNELS

    def __len__(self) -> int:
        return len(self.patient_id)

    @property
    def ecg_leads(self) -> tuple[str, ...]:
        """Lead names of the ECG rows."""
        return tuple(self.settings["ecg_leads"])

    @property
    def sampling_rate(self) -> float:
        """Hz of the ECG and PPG."""
        return float(self.settings["sampling_rate"])

    def to_frame(self):
        """The tabular part as a pandas DataFrame: one row per patient.

        Columns: patient_id, split, hf_event, hf_event_true, age, sex, ejection_fraction,
        heart_rate, resp_rate, has_ecg / has_echo / has_ppg / has_text, note.
        """
        import pandas as pd

        data: dict[str, Any] = {"patient_id": self.patient_id, "split": self.split, "hf_event": self.hf_event,
                                "hf_event_true": self.hf_event_true, "age": self.age, "sex": self.sex,
                                "ejection_fraction": self.ejection_fraction, "heart_rate": self.heart_rate,
                                "resp_rate": self.resp_rate}
        data.update({f"has_{m}": self.present[m] for m in CARDIAC_MODALITIES})
        data["note"] = self.notes
        return pd.DataFrame(data)


def _fail(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"cardiac: expected {name} {expected}, received {value!r}")


def _number(name: str, value: Any, upper: float, closed: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))
    if not ok or not (0 <= value <= upper if closed else 0 <= value < upper):
        raise _fail(name, f"in [0, {upper}{']' if closed else ')'}", value)
    return float(value)


def _per_modality(name: str, given: Any, defaults: Mapping[str, float], check) -> dict[str, float]:
    if not isinstance(given, Mapping):
        raise _fail(name, "as a mapping modality -> value", type(given).__name__)
    unknown = sorted(set(given) - set(CARDIAC_MODALITIES))
    if unknown:
        raise ValueError(f"cardiac: unknown modality(ies) {unknown} in {name}; expected keys from "
                         f"{list(CARDIAC_MODALITIES)}")
    return {m: check(f"{name}[{m!r}]", m, given.get(m, defaults[m])) for m in CARDIAC_MODALITIES}


def _check_args(n_patients, seed, label_noise, missing, noise, sampling_rate, duration_s, ecg_leads,
                echo_frames, echo_size, split_fractions) -> tuple[dict[str, float], dict[str, float]]:
    for name, value, low in (("n_patients", n_patients, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise _fail(name, f"to be an int >= {low}", value)
    _number("label_noise", label_noise, 0.5)
    rates = _per_modality("missing", missing, {m: 0.0 for m in CARDIAC_MODALITIES},
                          lambda key, m, v: _number(key, v, 1.0))
    scales = _per_modality("noise", noise, DEFAULT_NOISE,
                           lambda key, m, v: _number(key, v, *_NOISE_RANGE[m]))
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)) \
            or not 100 <= sampling_rate <= 2000:
        raise _fail("sampling_rate", "in [100, 2000] Hz", sampling_rate)
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float, np.integer, np.floating)) \
            or not 2 <= duration_s <= 120:
        raise _fail("duration_s", "in [2, 120] s", duration_s)
    if isinstance(ecg_leads, str) or not ecg_leads or any(lead not in LEADS for lead in ecg_leads):
        raise _fail("ecg_leads", f"as a non-empty sequence of names from {list(LEADS)}", ecg_leads)
    if isinstance(echo_frames, bool) or not isinstance(echo_frames, (int, np.integer)) or echo_frames < 8 \
            or echo_frames % 8:
        raise _fail("echo_frames", "as a multiple of 8 (>= 8)", echo_frames)
    if isinstance(echo_size, bool) or not isinstance(echo_size, (int, np.integer)) or echo_size < 32 or echo_size % 2:
        raise _fail("echo_size", "as an even int >= 32 (H.264 needs even sides)", echo_size)
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise _fail("split_fractions", "as three non-negative numbers (train, val, test) summing to 1",
                    split_fractions)
    return rates, scales


def _latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The latent variables of the module docstring."""
    u = rng.random((n, 11))
    group = np.where(u[:, 0] < 0.30, 2, np.where(u[:, 0] < 0.45, 1, 0))  # 2 reduced, 1 mid-range, 0 preserved
    ef = np.select([group == 2, group == 1], [rng.uniform(15, 40, n), rng.uniform(40, 50, n)],
                   np.clip(rng.normal(60, 5, n), 50, 75))
    prior_mi = u[:, 2] < 0.25
    mi_territory = rng.integers(0, 3, n)
    ste = u[:, 3] < np.where(prior_mi, 0.40, 0.10)
    other = (mi_territory + rng.integers(1, 3, n)) % 3
    ste_territory = np.where(prior_mi, np.where(u[:, 4] < 0.5, mi_territory, other), rng.integers(0, 3, n))
    c = {
        "ef_group": group, "reduced_ef": group == 2, "mid_range_ef": group == 1, "af": u[:, 1] < 0.20,
        "prior_mi": prior_mi, "mi_territory": np.where(prior_mi, mi_territory, -1),
        "st_elevation": ste, "st_territory": np.where(ste, ste_territory, -1),
        "bbb": u[:, 5] < 0.12, "congestion": u[:, 6] < np.array([0.12, 0.20, 0.35])[group],
        "chf": u[:, 7] < np.array([0.05, 0.15, 0.35])[group], "htn": u[:, 8] < 0.5, "dm": u[:, 9] < 0.25,
        "male": u[:, 10] < 0.55, "ejection_fraction": ef,
    }
    c["bbb_type"] = np.where(c["bbb"], rng.integers(1, 3, n), 0)
    c["acute_ste"] = ste & ~(prior_mi & (ste_territory == mi_territory))
    c["points"] = group + c["af"] + c["acute_ste"] + c["bbb"] + prior_mi
    c["territories_differ"] = ste & prior_mi & (ste_territory != mi_territory)
    c["agreement_case"] = ste & prior_mi & (c["points"] - c["acute_ste"] == 2)
    c["age"] = np.clip(np.round(rng.normal(66, 12, n)), 30, 95).astype(np.int64)
    hr = np.where(c["af"], rng.normal(95, 15, n), rng.normal(72, 10, n) + 6 * c["reduced_ef"])
    c["heart_rate"] = np.round(np.clip(hr, 50, 150))
    c["resp_rate"] = np.round(np.clip(rng.normal(15, 2.5, n) + 3 * c["congestion"], 8, 32))
    c["systolic_bp"] = np.round(np.clip(rng.normal(128, 16, n) + 10 * c["htn"], 85, 200))
    c["diastolic_bp"] = np.round(np.clip(0.55 * c["systolic_bp"] + rng.normal(8, 7, n), 40, c["systolic_bp"] - 15))
    return c


def generate_cardiac(
    n_patients: int,
    seed: int = 0,
    *,
    label_noise: float = 0.05,
    missing: Mapping[str, float] = DEFAULT_MISSING,
    noise: Mapping[str, float] = DEFAULT_NOISE,
    sampling_rate: float = 250.0,
    duration_s: float = 10.0,
    ecg_leads: tuple[str, ...] = LEADS,
    echo_frames: int = 16,
    echo_size: int = 64,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> CardiacCohort:
    """Generate the cardiac cohort (see the module docstring for the ground-truth design).

    Args:
        n_patients: N.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        label_noise: probability of flipping each observed label, in [0, 0.5).
        missing: {"ecg" | "echo" | "ppg" | "text": rate in [0, 1)} of a whole modality
            being absent; modalities not named are never absent.
        noise: {"ecg" | "ppg": scale in [0, 10], "echo": scale in [0, 2], "text":
            documentation-gap rate in [0, 1)}; modalities not named keep :data:`DEFAULT_NOISE`.
        sampling_rate: Hz of the ECG and PPG records, in [100, 2000].
        duration_s: seconds of ECG and PPG, in [2, 120].
        ecg_leads: the leads to keep, e.g. ``("II",)`` for a single-lead ECG.
        echo_frames: frames per echo clip (one heartbeat), a multiple of 8.
        echo_size: echo height = width in pixels, even, >= 32.
        split_fractions: (train, val, test) shares of each label class.

    Returns:
        A :class:`CardiacCohort`.

    Raises:
        ValueError: on a bad argument, naming it and the received value.

    Examples::

        cohort = generate_cardiac(1000, seed=0)
        cohort.ecg.shape        # (1000, 12, 2500)
        cohort.echo.shape       # (1000, 16, 1, 64, 64)
        cohort.hf_event.mean()  # about 0.2
    """
    rates, scales = _check_args(n_patients, seed, label_noise, missing, noise, sampling_rate, duration_s,
                                ecg_leads, echo_frames, echo_size, split_fractions)
    n, leads = int(n_patients), tuple(ecg_leads)
    latent_rng, beat_rng, ecg_rng, echo_rng, ppg_rng, notes_rng, missing_rng, noise_rng, split_rng = \
        np.random.default_rng(seed).spawn(9)
    c = _latents(latent_rng, n)
    truth = c["points"] >= 3
    flipped = noise_rng.random(n) < label_noise
    label = (truth ^ flipped).astype(np.int64)

    n_samples = int(round(duration_s * sampling_rate))
    beats = sample_beats(beat_rng, c["heart_rate"], c["af"], duration_s)
    ecg = render_ecg(ecg_rng, beats, af=c["af"], st_territory=c["st_territory"], bbb=c["bbb_type"],
                     resp_rate=c["resp_rate"], sampling_rate=sampling_rate, duration_s=duration_s, leads=leads,
                     noise=scales["ecg"])
    echo = render_echo(echo_rng, c["ejection_fraction"] / 100, frames=echo_frames, size=echo_size,
                       noise=scales["echo"])
    respiration = render_respiration(ppg_rng, c["resp_rate"], sampling_rate, n_samples, noise=scales["ppg"])
    ppg = np.stack([render_ppg(ppg_rng, beats, respiration, sampling_rate, noise=scales["ppg"]), respiration], 1)
    facts = CardiacFacts(age=c["age"], male=c["male"], htn=c["htn"], dm=c["dm"], prior_mi=c["prior_mi"],
                         mi_territory=c["mi_territory"], af=c["af"], chf=c["chf"], congestion=c["congestion"],
                         heart_rate=c["heart_rate"], systolic_bp=c["systolic_bp"], diastolic_bp=c["diastolic_bp"])
    notes = generate_cardiac_notes(facts, notes_rng, omit=scales["text"])
    c["af_documented"] = notes.documented[:, HISTORY.index("AF")]
    c["mi_documented"] = notes.documented[:, HISTORY.index("prior MI")]
    c["af_query"] = notes.af_query

    present = {m: missing_rng.random(n) >= rates[m] for m in CARDIAC_MODALITIES}
    present["text"] |= ~(present["ecg"] | present["echo"] | present["ppg"])
    ecg[~present["ecg"]] = 0.0
    ppg[~present["ppg"]] = 0.0
    echo.frames[~present["echo"]] = 0.0
    texts = [t if keep else "" for t, keep in zip(notes.texts, present["text"].tolist())]

    split = stratified_split(label, split_rng, split_fractions)
    settings = dict(n_patients=n, seed=int(seed), label_noise=float(label_noise), missing=rates, noise=scales,
                    sampling_rate=float(sampling_rate), duration_s=float(duration_s), ecg_leads=list(leads),
                    echo_frames=int(echo_frames), echo_size=int(echo_size),
                    split_fractions=tuple(float(f) for f in split_fractions))
    components = {k: c[k] for k in (
        "ejection_fraction", "ef_group", "reduced_ef", "mid_range_ef", "af", "af_documented", "af_query", "bbb",
        "bbb_type", "st_elevation", "st_territory", "prior_mi", "mi_territory", "mi_documented", "acute_ste",
        "points", "territories_differ", "agreement_case", "congestion", "chf", "htn", "dm",
        "systolic_bp", "diastolic_bp",
    )}
    return CardiacCohort(
        patient_id=np.array([f"SYN-{i + 1:06d}" for i in range(n)]), split=split, hf_event=label,
        hf_event_true=truth.astype(np.int64), label_flipped=flipped, ejection_fraction=c["ejection_fraction"],
        ecg=ecg, echo=echo.frames, echo_fps=echo_frames * c["heart_rate"] / 60, cavity=echo.cavity, ppg=ppg,
        notes=texts, present=present, heart_rate=c["heart_rate"], resp_rate=c["resp_rate"], age=c["age"],
        sex=np.where(c["male"], "M", "F"), components=components,
        ground_truth=_describe(label, truth, flipped, c, present), settings=settings,
    )


def _describe(label, truth, flipped, c, present) -> str:
    """The label design in words, with the realised rates of a cohort."""
    agreement = c["agreement_case"]
    differ = c["territories_differ"][agreement].mean() if agreement.any() else 0.0
    return "\n".join([
        "cardiac ground truth: points = 2 [EF < 40] + [40 <= EF < 50] + AF + acute STE + BBB + prior MI; "
        "hf_event_true = points >= 3; acute STE = STE not in the territory of a prior MI; hf_event = hf_event_true "
        "with label noise.",
        "echo only: EF; ECG only: STE (territory), BBB; note only: prior MI (territory); ECG, PPG and note: AF "
        "(redundant); agreement: STE territory (ECG) vs MI territory (note).",
        f"realised: prevalence {truth.mean():.3f} (observed {label.mean():.3f}), label flips {flipped.mean():.3f}, "
        f"EF < 40 {c['reduced_ef'].mean():.3f}, AF {c['af'].mean():.3f}, BBB {c['bbb'].mean():.3f}, "
        f"STE {c['st_elevation'].mean():.3f}, prior MI {c['prior_mi'].mean():.3f}, "
        f"agreement cases {agreement.mean():.3f} (of which territories differ {differ:.3f}).",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in CARDIAC_MODALITIES) + ".",
    ])


def write_cardiac_cohort(
    cohort: CardiacCohort,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` (see the module docstring for the layout).

    Args:
        cohort: a generated cardiac cohort.
        out: destination folder (created).
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.

    Raises:
        ValueError: if ``cohort`` is not a :class:`CardiacCohort`.
    """
    from medfusion.data.io import write_video, write_wfdb  # lazy: wfdb and PyAV are heavy imports
    from medfusion.files import atomic_write_text

    if not isinstance(cohort, CardiacCohort):
        raise ValueError(f"cardiac: expected cohort to be a CardiacCohort, received {type(cohort).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fs, leads = cohort.sampling_rate, list(cohort.ecg_leads)
    columns, total = write_patient_files(out, cohort.patient_id, {
        "ecg": ("ecg/{}.hea", cohort.present["ecg"], lambda i, p: write_wfdb(p, cohort.ecg[i], fs, leads, "mV")),
        "echo": ("echo/{}.mp4", cohort.present["echo"],
                 lambda i, p: write_video(p, cohort.echo[i], float(cohort.echo_fps[i]))),
        "ppg": ("ppg/{}.hea", cohort.present["ppg"],
                lambda i, p: write_wfdb(p, cohort.ppg[i], fs, list(PPG_CHANNELS), "NU")),
        "text": ("notes/{}.txt", cohort.present["text"], lambda i, p: atomic_write_text(p, cohort.notes[i])),
    }, workers, progress)

    masks = cohort.cavity[:, None]  # (N, 1, F, H, W)
    save_masks(out, cohort.patient_id, ("lv_cavity",), masks, masks_to_boxes(masks))
    frame = cohort.to_frame()[["patient_id", "split", "hf_event", "hf_event_true", "age", "sex"]]
    for m in CARDIAC_MODALITIES:
        frame[m] = columns[m]
    frame["gt_heart_rate"], frame["gt_resp_rate"] = cohort.heart_rate, cohort.resp_rate
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, {
        "scenario": "cardiac", "medfusion_version": __version__, "patients": len(cohort),
        "modalities": {"ecg": "signal", "echo": "video", "ppg": "signal", "text": "text"},
        "label": "hf_event", "ecg_leads": leads, "ecg_units": "mV", "ppg_channels": list(PPG_CHANNELS),
        "ppg_units": "NU", "sampling_rate": fs, "echo_frames": cohort.echo.shape[1],
        "echo_size": list(cohort.echo.shape[-2:]), "mask_names": ["lv_cavity"],
        "history_items": list(HISTORY), "symptoms": list(SYMPTOMS), "st_territories": list(TERRITORIES),
        "bbb_types": list(BBB_TYPES), "settings": cohort.settings, "ground_truth": cohort.ground_truth,
    })
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest

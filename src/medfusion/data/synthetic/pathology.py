"""The ``pathology`` scenario: an H&E patch and its pathology report, graded low / high.

Every patient has one histology patch (:mod:`.histology`, a 3 x 3 grid of named regions)
and a report whose sentences describe the findings and the region each sits in::

    Sheets of pleomorphic tumour cells in the upper left and center regions. Immunostains
    confirm stromal invasion in the center focus; the upper left focus is in situ. Mitotic
    figures are seen in the upper left and center regions. No necrosis identified. Dense
    lymphocytic infiltrate in the lower right region.

Every finding word and region word of a report is linked to its ground-truth mask
(:attr:`PathologyCohort.sentences`, one row per linked word; :func:`word_masks` turns rows
into masks): the ground truth for report generation and for scoring word-to-region
attention.

Latent variables (regions are distinct cells of the grid, uniform):

| latent | rate | shown by |
|---|---|---|
| ``tumour`` T: one tumour focus | 0.65 | image (dense pleomorphic nuclei) **and** report (redundant) |
| ``multifocal`` MF: a second tumour focus | 0.5 of T | image and report |
| mitoses: one *active* focus with 3-6 mitotic figures, other foci *quiet* with 0-2 | unifocal: active 0.5; MF: exactly one focus active, uniform | image (count the dark figures); report names the regions holding mitoses, and grades them ("frequent" >= 3 / "occasional") **only when** ``quantified`` |
| ``quantified``: the report grades mitotic activity | 0.4 | report |
| ``invasive`` focus: for MF, which focus immunostains show to be invasive (the other is in situ), uniform and **independent of which focus is active** | - | **report only** (immunostains are not on the H&E patch) |
| ``necrosis`` N | 0.25 with T, 0.05 without | image (pale debris without nuclei) and report (redundant) |
| distractors: ``lymphocytes`` 0.4, normal ``gland`` 0.3 with T / 0.6 without | - | image and report |

**Label.** ``high_grade_true = T and (mitoses in the invasive focus >= 3 or N)`` (the grade
belongs to the invasive component; for a unifocal tumour the invasive focus is the one
focus). ``high_grade`` flips it with probability ``label_noise``. Prevalence about 0.41.

| property | where | Bayes accuracy (no noise) |
|---|---|---|
| **redundant** | T and N in image and report: without the image the report still gives them | - |
| **complementary** | mitotic counts only in the image when the report does not grade them (60%); the invasive focus only in the report | image 0.88, report 0.85, both 1.0 |
| **dominant easy modality** (imbalance) | the report: a few keywords ("carcinoma", "necrosis", "frequent") decide 85% of labels; the image holds slightly more but must be counted | report 0.85 |
| **cross-modal agreement** | ``agreement_case`` = MF and not N and not quantified (about 15%): the label is exactly "invasive focus (report) == active focus (image)"; each modality alone is at chance there | each alone 0.5, both 1.0 |

The report is at chance where it does not grade the mitoses of a tumour without necrosis
(29% of patients); the image where a tumour without necrosis is multifocal (24%).

``components["agreement_case"]`` marks that subgroup, ``components["regions_agree"]`` its answer.

**Missingness.** Image and report are absent independently with the rates in ``missing``
(an absent image is all zeros, an absent report ``""`` with no sentence rows); a patient
left with neither keeps the image. Masks describe the patch even where the image is absent.

**Randomness.** One ``numpy.random.Generator(seed)`` spawns independent streams (latents,
images, reports, missingness, label noise, split). **Splits** are patient-level and
stratified by the observed label.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from medfusion.data.synthetic._fields import image_size as image_size_pair
from medfusion.data.synthetic.histology import (
    GLAND, GLAND_TISSUE, GRID, HISTOLOGY_FINDINGS, LYMPHOCYTES, LYMPHOID_TISSUE, MITOSIS, NECROSIS,
    NECROSIS_TISSUE, REGION_NAMES, TUMOUR, TUMOUR_TISSUE, HistologySpec, region_map, render_histology,
)
from medfusion.data.synthetic.triage import stratified_split

#: Modalities of the pathology scenario.
PATHOLOGY_MODALITIES: tuple[str, ...] = ("image", "text")
#: Default per-modality missing rates.
DEFAULT_MISSING: Mapping[str, float] = MappingProxyType({"image": 0.05, "text": 0.1})
#: Mitotic figures in the invasive focus that make a tumour high grade.
MITOSIS_THRESHOLD = 3
#: Rates of the latent variables (see the module docstring).
RATES = MappingProxyType({
    "tumour": 0.65, "multifocal": 0.5, "active": 0.5, "quantified": 0.4, "necrosis_tumour": 0.25,
    "necrosis_other": 0.05, "lymphocytes": 0.4, "gland_tumour": 0.3, "gland_other": 0.6,
})
_COMPONENTS = ("tumour", "multifocal", "necrosis", "lymphocytes", "gland", "quantified", "invasive_region",
               "active_region", "invasive_mitoses", "regions_agree", "agreement_case")

# templates: [finding word], {R} = region names + " region(s)", {r} = bare region names
_TUMOUR = ("Sheets of pleomorphic [tumour cells] in the {R}.",
           "[Carcinoma] with large pleomorphic nuclei occupies the {R}.",
           "Nests of atypical [tumour cells] with marked nuclear pleomorphism in the {R}.")
_NO_TUMOUR = ("No [tumour] identified.", "No evidence of [malignancy].", "Negative for [tumour].")
_FREQUENT = ("[Mitotic figures] are frequent in the {R}.", "Brisk [mitotic activity] in the {R}.")
_OCCASIONAL = ("Occasional [mitotic figures] in the {R}.", "[Mitoses] are scant in the {R}.")
_SEEN = ("[Mitotic figures] are seen in the {R}.", "[Mitoses] are present in the {R}.")
_NO_MITOSES = ("No [mitotic figures] identified.", "[Mitoses] are not seen.")
_NECROSIS = ("Foci of [necrosis] in the {R}.", "Areas of coagulative [necrosis] in the {R}.",
             "[Necrotic debris] fills the {R}.")
_NO_NECROSIS = ("No [necrosis] identified.", "[Necrosis] is absent.")
_LYMPHOCYTES = ("Dense [lymphocytic infiltrate] in the {R}.", "A [lymphoid aggregate] is present in the {R}.",
                "Sheets of small [lymphocytes] in the {R}.")
_GLAND = ("Benign [glands] with open lumens in the {R}.", "Normal [glandular structures] in the {R}.",
          "A [normal gland] is seen in the {R}.")
_TOKEN = re.compile(r"(\[[^\]]+\]|\{R\}|\{r\})")
_WORD_COLUMNS = ("patient_id", "sentence", "sentence_start", "sentence_end", "kind", "word", "start", "end",
                 "finding", "finding_index", "negated", "region", "regions")


@dataclass
class PathologyCohort:
    """A synthetic pathology cohort of N patients (one patch and one report each).

    Attributes:
        patient_id: (N,) str "SYN-000001", ...
        split: (N,) str "train" / "val" / "test".
        high_grade: (N,) int64 observed label (with label noise); high_grade_true: before noise.
        label_flipped: (N,) bool.
        findings: (N, F) bool in :data:`~.histology.HISTOLOGY_FINDINGS` order.
        regions: (N, F, 9) bool, the regions of :data:`~.histology.REGION_NAMES` each finding occupies.
        mitoses: (N, 9) int8 mitotic figures per region.
        images: (N, 3, H, W) float32 RGB in [0, 1]; zeros where absent.
        masks: (N, F, H, W) bool; boxes: (N, F, 4) int32 (-1 where empty).
        reports: N reports; ``""`` where absent.
        sentences: one row per linked word of the present reports, columns ``patient_id,
            sentence`` (index in its report), ``sentence_start, sentence_end, kind`` ("finding" or
            "region"), ``word, start, end`` (character offsets in the report), ``finding,
            finding_index, negated, region`` (region name of a region word, else ""), ``regions``
            (region indices whose part of the finding mask the word refers to; empty when negated).
        present: {"image" | "text": (N,) bool}.
        components: {name: (N,) array} latents and derived signals (module docstring).
        ground_truth: the label design in words with realised rates.
        settings: the arguments the cohort was generated with.
    """

    patient_id: np.ndarray
    split: np.ndarray
    high_grade: np.ndarray
    high_grade_true: np.ndarray
    label_flipped: np.ndarray
    findings: np.ndarray
    regions: np.ndarray
    mitoses: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    reports: list[str]
    sentences: pd.DataFrame
    present: dict[str, np.ndarray]
    components: dict[str, np.ndarray]
    ground_truth: str
    settings: dict[str, Any] = field(default_factory=dict)

    finding_names: ClassVar[tuple[str, ...]] = HISTOLOGY_FINDINGS
    region_names: ClassVar[tuple[str, ...]] = REGION_NAMES

    def __len__(self) -> int:
        return len(self.patient_id)

    def region_text(self) -> dict[str, list[str]]:
        """{finding: N strings "upper left;center"} naming the regions each finding occupies."""
        names = np.array(REGION_NAMES)
        return {name: [";".join(names[row]) for row in self.regions[:, f]]
                for f, name in enumerate(HISTOLOGY_FINDINGS)}

    def to_frame(self) -> pd.DataFrame:
        """One row per patient: patient_id, split, high_grade, high_grade_true, one bool column per
        finding, mitotic_count, ``<finding>_regions`` (";"-joined names), has_image, has_text, report."""
        data: dict[str, Any] = {"patient_id": self.patient_id, "split": self.split, "high_grade": self.high_grade,
                                "high_grade_true": self.high_grade_true}
        data.update({name: self.findings[:, f] for f, name in enumerate(HISTOLOGY_FINDINGS)})
        data["mitotic_count"] = self.mitoses.sum(axis=1).astype(np.int64)
        data.update({f"{name}_regions": values for name, values in self.region_text().items()})
        data.update({f"has_{m}": self.present[m] for m in PATHOLOGY_MODALITIES})
        data["report"] = self.reports
        return pd.DataFrame(data)


def word_masks(words: pd.DataFrame, masks: np.ndarray, patient_id: np.ndarray) -> np.ndarray:
    """Ground-truth masks of linked words.

    Args:
        words: rows of a sentences table (:attr:`PathologyCohort.sentences` or
            ``ground_truth/sentences.parquet``).
        masks: (N, F, H, W) bool finding masks; patient_id: (N,) ids of their rows.

    Returns:
        (R, H, W) bool: the finding's mask inside the regions the word refers to (empty for
        negated words).

    Raises:
        ValueError: on a patient id not in ``patient_id``.
    """
    index = {str(p): i for i, p in enumerate(np.asarray(patient_id).tolist())}
    unknown = sorted(set(words["patient_id"].astype(str)) - set(index))
    if unknown:
        raise ValueError(f"pathology: expected words of the given patients, received unknown ids {unknown[:5]}")
    rows = np.array([index[str(p)] for p in words["patient_id"]], dtype=np.intp)
    chosen = np.zeros((len(words), GRID * GRID), dtype=bool)
    for j, regions in enumerate(words["regions"]):
        chosen[j, np.asarray(regions, dtype=np.intp)] = True
    return masks[rows, words["finding_index"].to_numpy(np.intp)] & chosen[:, region_map(masks.shape[-2:])]


def _check_rate(name: str, value: Any, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < upper:
        raise ValueError(f"pathology: expected {name} in [0, {upper}), received {value!r}")
    return float(value)


def _check_args(n_patients, seed, label_noise, missing, image_size, split_fractions) -> dict[str, float]:
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 1:
        raise ValueError(f"pathology: expected n_patients to be an int >= 1, received {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"pathology: expected seed to be an int >= 0, received {seed!r}")
    _check_rate("label_noise", label_noise, 0.5)
    image_size_pair(image_size, minimum=64)
    if not isinstance(missing, Mapping):
        raise ValueError(f"pathology: expected missing as a mapping modality -> rate, "
                         f"received {type(missing).__name__}")
    unknown = sorted(set(missing) - set(PATHOLOGY_MODALITIES))
    if unknown:
        raise ValueError(f"pathology: unknown modality(ies) {unknown} in missing; expected keys from "
                         f"{list(PATHOLOGY_MODALITIES)}")
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"pathology: expected split_fractions as three non-negative numbers (train, val, test) "
                         f"summing to 1, received {split_fractions!r}")
    return {m: _check_rate(f"missing[{m!r}]", missing.get(m, 0.0)) for m in PATHOLOGY_MODALITIES}


def _latents(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], HistologySpec]:
    """The latent variables of the module docstring and the tissue they put on the patch."""
    r = RATES
    u = rng.random((n, 7))
    rows = np.arange(n)
    tumour = u[:, 0] < r["tumour"]
    multifocal = tumour & (u[:, 1] < r["multifocal"])
    necrosis = np.where(tumour, u[:, 2] < r["necrosis_tumour"], u[:, 2] < r["necrosis_other"])
    lymphocytes = u[:, 3] < r["lymphocytes"]
    gland = np.where(tumour, u[:, 4] < r["gland_tumour"], u[:, 4] < r["gland_other"])
    quantified = u[:, 5] < r["quantified"]
    cells = np.argsort(rng.random((n, GRID * GRID)), axis=1)  # distinct regions per patient
    foci = cells[:, :2]  # tumour foci (second one used when multifocal)
    # focus 0 is active with probability 0.5 (unifocal); multifocal: exactly one active focus
    active = np.where(multifocal, rng.integers(0, 2, n), np.where(u[:, 6] < r["active"], 0, -1))
    invasive = np.where(multifocal, rng.integers(0, 2, n), 0)  # independent of `active`
    counts = np.stack([np.where(active == k, rng.integers(3, 7, n), rng.integers(0, 3, n)) for k in (0, 1)], 1)
    counts[~tumour] = 0
    counts[~multifocal, 1] = 0

    tissue = np.zeros((n, GRID * GRID), dtype=np.int8)
    mitoses = np.zeros((n, GRID * GRID), dtype=np.int8)
    for k, on in ((0, tumour), (1, multifocal)):
        tissue[rows[on], foci[on, k]] = TUMOUR_TISSUE
        mitoses[rows[on], foci[on, k]] = counts[on, k]
    for column, code, on in ((2, NECROSIS_TISSUE, necrosis), (3, LYMPHOID_TISSUE, lymphocytes),
                             (4, GLAND_TISSUE, gland)):
        tissue[rows[on], cells[on, column]] = code
    invasive_mitoses = np.where(tumour, counts[rows, invasive], 0)
    c = {
        "tumour": tumour, "multifocal": multifocal, "necrosis": necrosis, "lymphocytes": lymphocytes,
        "gland": gland, "quantified": quantified,
        "invasive_region": np.where(tumour, foci[rows, invasive], -1).astype(np.int8),
        "active_region": np.where(tumour & (active >= 0), foci[rows, np.maximum(active, 0)], -1).astype(np.int8),
        "invasive_mitoses": invasive_mitoses.astype(np.int64),
        "regions_agree": multifocal & (active == invasive),
        "agreement_case": multifocal & ~necrosis & ~quantified,
    }
    return c, HistologySpec(tissue, mitoses)


class _ReportWriter:
    """Builds one report sentence by sentence and records every linked word with its offsets."""

    def __init__(self, patient_id: str, rows: list[dict]) -> None:
        self.patient_id, self.rows, self.text, self.count = patient_id, rows, "", 0

    def add(self, *clauses: tuple[str, int, list[int], bool]) -> None:
        """One sentence made of clauses ``(template, finding, regions, negated)``."""
        start = len(self.text) + (1 if self.text else 0)
        self.text += " " if self.text else ""
        words = []
        for template, finding, regions, negated in clauses:
            for token in _TOKEN.split(template):
                if token.startswith("["):
                    words.append(self._word("finding", token[1:-1], finding, negated, "", regions))
                elif token in ("{R}", "{r}"):
                    for j, region in enumerate(regions):
                        if j:
                            self.text += " and " if j == len(regions) - 1 else ", "
                        words.append(self._word("region", REGION_NAMES[region], finding, False,
                                                REGION_NAMES[region], [region]))
                    self.text += (" regions" if len(regions) > 1 else " region") if token == "{R}" else ""
                else:
                    self.text += token
        for row in words:
            row.update(sentence=self.count, sentence_start=start, sentence_end=len(self.text))
        self.rows.extend(words)
        self.count += 1

    def _word(self, kind: str, word: str, finding: int, negated: bool, region: str, regions: list[int]) -> dict:
        start = len(self.text)
        self.text += word
        return {"patient_id": self.patient_id, "kind": kind, "word": word, "start": start, "end": len(self.text),
                "finding": HISTOLOGY_FINDINGS[finding], "finding_index": finding, "negated": negated,
                "region": region, "regions": [] if negated else [int(x) for x in regions]}


def _write_reports(ids: np.ndarray, c: dict[str, np.ndarray], spec: HistologySpec, keep: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[str], pd.DataFrame]:
    """Reports for the patients where ``keep`` (others ``""``) and their linked-word table."""
    n = len(ids)
    pick = rng.integers(0, 6, (n, 5))  # template choice per sentence kind (modulo 2 or 3 options)
    regions = spec.regions
    texts, rows = [], []
    for i in range(n):
        if not keep[i]:
            texts.append("")
            continue
        report = _ReportWriter(str(ids[i]), rows)
        tumour_cells = np.flatnonzero(regions[i, TUMOUR]).tolist()
        if c["tumour"][i]:
            report.add((_TUMOUR[pick[i, 0] % 3], TUMOUR, tumour_cells, False))
            if c["multifocal"][i]:
                invasive = int(c["invasive_region"][i])
                other = [cell for cell in tumour_cells if cell != invasive]
                report.add(("Immunostains confirm stromal [invasion] in the {r} focus", TUMOUR, [invasive], False),
                           ("; the {r} focus is [in situ].", TUMOUR, other, False))
            _mitosis_sentence(report, spec.mitoses[i], bool(c["quantified"][i]), pick[i, 1])
        else:
            report.add((_NO_TUMOUR[pick[i, 0] % 3], TUMOUR, [], True))
        necrosis_cells = np.flatnonzero(regions[i, NECROSIS]).tolist()
        if necrosis_cells:
            report.add((_NECROSIS[pick[i, 2] % 3], NECROSIS, necrosis_cells, False))
        elif c["tumour"][i]:
            report.add((_NO_NECROSIS[pick[i, 2] % 2], NECROSIS, [], True))
        for finding, templates, column in ((LYMPHOCYTES, _LYMPHOCYTES, 3), (GLAND, _GLAND, 4)):
            cells = np.flatnonzero(regions[i, finding]).tolist()
            if cells:
                report.add((templates[pick[i, column] % 3], finding, cells, False))
        texts.append(report.text)
    table = pd.DataFrame(rows, columns=list(_WORD_COLUMNS))
    return texts, table.astype({"sentence": np.int64, "sentence_start": np.int64, "sentence_end": np.int64,
                                "start": np.int64, "end": np.int64, "finding_index": np.int64, "negated": bool})


def _mitosis_sentence(report: _ReportWriter, counts: np.ndarray, quantified: bool, pick: int) -> None:
    """Mitoses of a tumour: graded by count when ``quantified``, else only where they are."""
    cells = np.flatnonzero(counts).tolist()
    if not cells:
        report.add((_NO_MITOSES[pick % 2], MITOSIS, [], True))
    elif not quantified:
        report.add((_SEEN[pick % 2], MITOSIS, cells, False))
    else:
        frequent = [cell for cell in cells if counts[cell] >= MITOSIS_THRESHOLD]
        occasional = [cell for cell in cells if counts[cell] < MITOSIS_THRESHOLD]
        if frequent and occasional:
            report.add(("[Mitotic figures] are frequent in the {r} focus", MITOSIS, frequent, False),
                        (" and [occasional] in the {r} focus.", MITOSIS, occasional, False))
        else:
            report.add(((_FREQUENT if frequent else _OCCASIONAL)[pick % 2], MITOSIS, cells, False))


def generate_pathology(
    n_patients: int,
    seed: int = 0,
    *,
    label_noise: float = 0.05,
    missing: Mapping[str, float] = DEFAULT_MISSING,
    image_size: int = 128,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> PathologyCohort:
    """Generate the pathology cohort (see the module docstring for the ground-truth design).

    Args:
        n_patients: N.
        seed: seed of the one ``numpy.random.Generator`` all randomness comes from.
        label_noise: probability of flipping each observed label, in [0, 0.5).
        missing: {"image" | "text": rate in [0, 1)} of the modality being absent; modalities
            not named are never absent.
        image_size: patch height = width in pixels (>= 64).
        split_fractions: (train, val, test) shares of each label class.

    Returns:
        A :class:`PathologyCohort`.

    Raises:
        ValueError: on a bad argument, naming it and the received value.

    Examples::

        cohort = generate_pathology(500, seed=0)
        cohort.images.shape       # (500, 3, 128, 128)
        cohort.reports[0]         # 'No tumour identified. Dense lymphocytic infiltrate in the ...'
        cohort.high_grade.mean()  # about 0.41
    """
    rates = _check_args(n_patients, seed, label_noise, missing, image_size, split_fractions)
    n = int(n_patients)
    latent_rng, image_rng, report_rng, missing_rng, noise_rng, split_rng = np.random.default_rng(seed).spawn(6)
    c, spec = _latents(latent_rng, n)
    batch = render_histology(spec, image_rng, image_size)
    truth = c["tumour"] & ((c["invasive_mitoses"] >= MITOSIS_THRESHOLD) | c["necrosis"])
    flipped = noise_rng.random(n) < label_noise
    label = (truth ^ flipped).astype(np.int64)

    present = {m: missing_rng.random(n) >= rates[m] for m in PATHOLOGY_MODALITIES}
    present["image"] |= ~present["text"]
    images = batch.images
    images[~present["image"]] = 0.0
    ids = np.array([f"SYN-{i + 1:06d}" for i in range(n)])
    reports, sentences = _write_reports(ids, c, spec, present["text"], report_rng)
    split = stratified_split(label, split_rng, split_fractions)
    settings = dict(n_patients=n, seed=int(seed), label_noise=float(label_noise), missing=rates,
                    image_size=image_size, split_fractions=tuple(float(f) for f in split_fractions))
    return PathologyCohort(
        patient_id=ids, split=split, high_grade=label, high_grade_true=truth.astype(np.int64), label_flipped=flipped,
        findings=spec.present, regions=spec.regions, mitoses=spec.mitoses, images=images, masks=batch.masks,
        boxes=batch.boxes, reports=reports, sentences=sentences, present=present,
        components={k: c[k] for k in _COMPONENTS}, ground_truth=_describe(label, truth, flipped, c, present),
        settings=settings,
    )


def _describe(label, truth, flipped, c, present) -> str:
    """The label design in words, with the realised rates of a cohort."""
    case = c["agreement_case"]
    return "\n".join([
        f"pathology ground truth: high_grade_true = tumour AND (mitoses in the invasive focus >= "
        f"{MITOSIS_THRESHOLD} OR necrosis); high_grade = high_grade_true with label noise.",
        "image and report: tumour, its regions, necrosis, lymphocytes, glands (redundant); image only: mitotic "
        "counts unless the report grades them; report only: which focus of a multifocal tumour is invasive.",
        f"realised: prevalence {truth.mean():.3f} (observed {label.mean():.3f}), label flips {flipped.mean():.3f}, "
        f"tumour {c['tumour'].mean():.3f}, multifocal {c['multifocal'].mean():.3f}, necrosis "
        f"{c['necrosis'].mean():.3f}, report grades mitoses {c['quantified'].mean():.3f}, agreement cases "
        f"{case.mean():.3f} (of which regions agree {c['regions_agree'][case].mean() if case.any() else 0:.3f}).",
        "present: " + ", ".join(f"{m} {present[m].mean():.3f}" for m in PATHOLOGY_MODALITIES) + ".",
    ])


def write_pathology_cohort(
    cohort: PathologyCohort,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``cohort`` under ``out`` in the layout of :mod:`.files`.

    Layout: ``images/SYN-000001.png`` (RGB 8-bit, column "image"), ``reports/SYN-000001.txt``
    (column "text"), ``ground_truth/masks.npz`` (:func:`~.files.save_masks`),
    ``ground_truth/sentences.parquet`` (the linked-word table), ``cohort.json``, and
    ``manifest.parquet`` / ``manifest.csv`` (written last): the columns of
    :meth:`PathologyCohort.to_frame` without the report and presence flags, plus image,
    text and ``gt_<component>``.

    Args:
        cohort: a generated pathology cohort.
        out: destination folder (created).
        workers: writer threads (default: CPU count, at most 8).
        progress: called as ``progress(files_done, files_total)``.

    Returns:
        The path of ``manifest.parquet``.
    """
    # the writers import pydicom, PyAV, ...: only when writing
    from medfusion import __version__
    from medfusion.data.io import write_png
    from medfusion.data.synthetic.files import save_masks, write_description, write_manifest, write_patient_files
    from medfusion.files import atomic_path, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = cohort.to_frame().drop(columns=["report", *(f"has_{m}" for m in PATHOLOGY_MODALITIES)])
    pixels = np.clip(np.rint(cohort.images * 255), 0, 255).astype(np.uint8)  # (N, 3, H, W)
    columns, total = write_patient_files(out, cohort.patient_id, {
        "image": ("images/{}.png", cohort.present["image"], lambda i, p: write_png(p, pixels[i])),
        "text": ("reports/{}.txt", cohort.present["text"], lambda i, p: atomic_write_text(p, cohort.reports[i])),
    }, workers, progress)

    save_masks(out, cohort.patient_id, cohort.finding_names, cohort.masks, cohort.boxes)
    with atomic_path(out / "ground_truth" / "sentences.parquet", suffix=".parquet") as tmp:
        cohort.sentences.to_parquet(tmp, index=False)
    frame["image"], frame["text"] = columns["image"], columns["text"]
    for name, values in sorted(cohort.components.items()):
        frame[f"gt_{name}"] = values
    write_description(out, {
        "scenario": "pathology", "medfusion_version": __version__, "patients": len(cohort),
        "modalities": {"image": "image", "text": "text"}, "label": "high_grade", "image_formats": ["png"],
        "finding_names": list(cohort.finding_names), "region_names": list(cohort.region_names),
        "mitosis_threshold": MITOSIS_THRESHOLD, "settings": cohort.settings, "ground_truth": cohort.ground_truth,
        "sentences": "ground_truth/sentences.parquet: one row per linked word; its mask is the finding's mask "
                     "inside the listed regions (medfusion.data.synthetic.pathology.word_masks)",
    })
    manifest = write_manifest(frame, out)
    if progress is not None:
        progress(total, total)
    return manifest

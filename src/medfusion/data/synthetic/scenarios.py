"""Every synthetic scenario behind one call: generate a cohort and write it as real files.

| scenario | modalities (files) | label |
|---|---|---|
| triage | chest X-ray (PNG, DICOM), triage note, vital signs | pneumonia |
| cardiac | 12-lead ECG (WFDB), echo clip (MP4), PPG + respiration (WFDB), clinic note | hf_event |
| neuro | EEG (EDF), neurology note | seizure |
| pathology | histology patch (PNG), pathology report with region-linked sentences | high_grade |
| radiology | chest CT volume (NIfTI, DICOM series for a subset), CT report | suspicious |
| retrieval | chest X-ray (PNG, DICOM subset) + real Open-i report (generated without the archive) | abnormal |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from medfusion.data.synthetic.cardiac import generate_cardiac, write_cardiac_cohort
from medfusion.data.synthetic.files import write_triage_cohort
from medfusion.data.synthetic.neuro import generate_neuro, write_neuro_cohort
from medfusion.data.synthetic.pathology import generate_pathology, write_pathology_cohort
from medfusion.data.synthetic.radiology import generate_radiology, write_radiology_cohort
from medfusion.data.synthetic.retrieval import generate_retrieval, write_retrieval_cohort
from medfusion.data.synthetic.triage import generate_triage


class Scenario(NamedTuple):
    """A scenario's generator and writer."""

    generate: Callable[..., Any]
    write: Callable[..., Path]


SCENARIOS: dict[str, Scenario] = {
    "triage": Scenario(generate_triage, write_triage_cohort),
    "cardiac": Scenario(generate_cardiac, write_cardiac_cohort),
    "neuro": Scenario(generate_neuro, write_neuro_cohort),
    "pathology": Scenario(generate_pathology, write_pathology_cohort),
    "radiology": Scenario(generate_radiology, write_radiology_cohort),
    "retrieval": Scenario(generate_retrieval, write_retrieval_cohort),
}


def _split(function: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    accepted = inspect.signature(function).parameters
    return {k: v for k, v in options.items() if k in accepted}


def synthesize(scenario: str, patients: int, seed: int, out: str | Path,
               progress: Callable[[int, int], None] | None = None, **options: Any) -> tuple[Any, Path]:
    """Generate ``patients`` of ``scenario`` with ``seed`` and write them under ``out``.

    ``options`` go to the generator or the writer that accepts them (e.g. ``image_size``,
    ``label_noise`` to the generator; ``image_formats`` to the triage writer).

    Returns:
        (the cohort, the manifest path).

    Raises:
        ValueError: on an unknown scenario, or an option neither function accepts.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; available: {', '.join(SCENARIOS)}")
    generate, write = SCENARIOS[scenario]
    for_generator, for_writer = _split(generate, options), _split(write, options)
    unused = sorted(set(options) - set(for_generator) - set(for_writer))
    if unused:
        raise ValueError(f"scenario {scenario!r} does not take option(s) {unused}")
    cohort = generate(patients, seed=seed, **for_generator)
    return cohort, write(cohort, out, progress=progress, **for_writer)

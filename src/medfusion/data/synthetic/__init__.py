"""Synthetic cohorts with known ground truth: one module per scenario plus shared renderers.

- :mod:`.triage`: pneumonia in the emergency department (chest X-ray + triage note + vitals),
  :func:`generate_triage` -> :class:`TriageCohort`.
- :mod:`.xray`: vectorised chest X-ray renderer with zoned findings and masks.
- :mod:`.notes`: triage notes in clinical shorthand.
- :mod:`.vitals`: disease-conditioned vital signs.

Images follow the radiological convention: the patient's right is on the image left.
"""

from medfusion.data.synthetic._fields import masks_to_boxes
from medfusion.data.synthetic.notes import SYMPTOMS, NoteBatch, NoteFacts, generate_notes
from medfusion.data.synthetic.triage import (
    DEFAULT_MISSING, TRIAGE_MODALITIES, TriageCohort, generate_triage, stratified_split,
)
from medfusion.data.synthetic.vitals import FEVER_THRESHOLD, VITAL_NAMES, VITAL_UNITS, sample_vitals
from medfusion.data.synthetic.xray import (
    BOTH, FINDINGS, LEFT, LOWER, NO_SIDE, NO_ZONE, RIGHT, UPPER, Anatomy, XrayBatch, XraySpec,
    random_anatomy, render_xrays, sample_ctr,
)

__all__ = [
    "BOTH", "DEFAULT_MISSING", "FEVER_THRESHOLD", "FINDINGS", "LEFT", "LOWER", "NO_SIDE", "NO_ZONE", "RIGHT",
    "SYMPTOMS", "TRIAGE_MODALITIES", "UPPER", "VITAL_NAMES", "VITAL_UNITS", "Anatomy", "NoteBatch", "NoteFacts",
    "TriageCohort", "XrayBatch", "XraySpec", "generate_notes", "generate_triage", "masks_to_boxes",
    "random_anatomy", "render_xrays", "sample_ctr", "sample_vitals", "stratified_split",
]

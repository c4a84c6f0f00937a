"""Per-modality preprocessing and augmentation: array transforms and their dictionary twins.

As in MONAI (``transforms/intensity/array.py`` + ``dictionary.py``): each array transform
``T`` acts on one array (or text) and its twin ``Td(keys, ...)`` acts on
``sample["inputs"][key]`` of a dataset sample (see
:class:`~medfusion.data.datasets.manifest.ManifestDataset`), skipping modalities the
sample lacks. Layouts (no batch axis): image (C, H, W), volume (C, D, H, W),
signal (C, T), video (T, C, H, W), vitals (F,), text str.

Randomness: every transform is called as ``t(x, rng=None)``; a random transform draws
from ``rng`` when given, else from its own generator, seeded by
``t.set_random_state(seed)``. The same seed gives the same output.
:class:`Compose` applies each transform with its own probability and seeds its children
from one seed.

One module per concern: :mod:`~medfusion.data.transforms.base` (the :class:`Transform` base,
:class:`Compose`, the dictionary-twin machinery), :mod:`~medfusion.data.transforms.image`
(images, volumes and video frames; flips and the left-right rule),
:mod:`~medfusion.data.transforms.signal`, :mod:`~medfusion.data.transforms.text`,
:mod:`~medfusion.data.transforms.video` and :mod:`~medfusion.data.transforms.vitals`.
"""

from medfusion.data.transforms.base import (
    Compose,
    Generator,
    MapTransform,
    Transform,
)
from medfusion.data.transforms.image import (
    Affine,
    Affined,
    Flip,
    Flipd,
    NormalizeIntensity,
    NormalizeIntensityd,
    RandAffine,
    RandAffined,
    RandFlip,
    RandFlipd,
    RandGaussianNoise,
    RandGaussianNoised,
    Resize,
    Resized,
    affine,
)
from medfusion.data.transforms.signal import (
    Bandpass,
    Bandpassd,
    RandBaselineWander,
    RandBaselineWanderd,
    RandLeadDropout,
    RandLeadDropoutd,
    RandScaleAmplitude,
    RandScaleAmplituded,
    RandTimeShift,
    RandTimeShiftd,
    Resample,
    Resampled,
    ScaleAmplitude,
    ScaleAmplituded,
    TimeShift,
    TimeShiftd,
    time_shift,
)
from medfusion.data.transforms.text import (
    CLINICAL_ABBREVIATIONS,
    ExpandAbbreviations,
    ExpandAbbreviationsd,
    Lowercase,
    Lowercased,
    RandTokenDropout,
    RandTokenDropoutd,
)
from medfusion.data.transforms.video import (
    CenterTemporalCrop,
    CenterTemporalCropd,
    RandTemporalCrop,
    RandTemporalCropd,
    UniformFrameSampling,
    UniformFrameSamplingd,
)
from medfusion.data.transforms.vitals import (
    VitalsStandardizer,
    VitalsStandardizerd,
)

__all__ = [
    "Affine",
    "Affined",
    "Bandpass",
    "Bandpassd",
    "CLINICAL_ABBREVIATIONS",
    "CenterTemporalCrop",
    "CenterTemporalCropd",
    "Compose",
    "ExpandAbbreviations",
    "ExpandAbbreviationsd",
    "Flip",
    "Flipd",
    "Generator",
    "Lowercase",
    "Lowercased",
    "MapTransform",
    "NormalizeIntensity",
    "NormalizeIntensityd",
    "RandAffine",
    "RandAffined",
    "RandBaselineWander",
    "RandBaselineWanderd",
    "RandFlip",
    "RandFlipd",
    "RandGaussianNoise",
    "RandGaussianNoised",
    "RandLeadDropout",
    "RandLeadDropoutd",
    "RandScaleAmplitude",
    "RandScaleAmplituded",
    "RandTemporalCrop",
    "RandTemporalCropd",
    "RandTimeShift",
    "RandTimeShiftd",
    "RandTokenDropout",
    "RandTokenDropoutd",
    "Resample",
    "Resampled",
    "Resize",
    "Resized",
    "ScaleAmplitude",
    "ScaleAmplituded",
    "TimeShift",
    "TimeShiftd",
    "Transform",
    "UniformFrameSampling",
    "UniformFrameSamplingd",
    "VitalsStandardizer",
    "VitalsStandardizerd",
    "affine",
    "time_shift",
]

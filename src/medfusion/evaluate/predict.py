"""Running a trained classifier over a split, whole or with modalities taken away.

Removing a modality at inference marks it absent (never fills it with fake values), which
every strategy handles; ``missing_rates`` hides each modality from a random share of the
samples (seeded), for robustness-to-missingness curves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from medfusion.models import MultimodalClassifier
from medfusion.types import MultimodalBatch


@dataclass
class Predictions:
    """Positive-class probabilities of one pass over a split.

    Attributes:
        labels: (N,) int64.
        probs: (N,) float64 positive-class probability.
        present: {modality: (N,) bool} what the model saw.
    """

    labels: np.ndarray
    probs: np.ndarray
    present: dict[str, np.ndarray]


def hide(batch: MultimodalBatch, model: MultimodalClassifier, drop: Iterable[str] = (),
         missing_rates: Mapping[str, float] | None = None, generator: torch.Generator | None = None
         ) -> dict[str, torch.Tensor]:
    """Presence of ``batch`` with ``drop`` removed from every sample and each modality
    hidden from a random share ``missing_rates[m]`` of the samples.

    Returns:
        {modality: (B,) bool}; a sample may be left with no modality (see :func:`predict`).

    Raises:
        ValueError: on an unknown modality or a rate outside [0, 1].
    """
    drop = tuple(drop)  # iterated twice: a one-shot iterable (generator) would be used up by the check
    present = {m: p.clone() for m, p in model.presence(batch, require_any=False).items()}
    for m in drop + tuple(missing_rates or {}):
        if m not in present:
            raise ValueError(f"evaluate: unknown modality {m!r}; the model has {sorted(present)}")
    for m in drop:
        present[m] = torch.zeros_like(present[m])
    for m, rate in sorted((missing_rates or {}).items()):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"evaluate: expected a missing rate in [0, 1] for {m}, received {rate}")
        hidden = torch.rand(present[m].shape, generator=generator) < rate
        present[m] = present[m] & ~hidden.to(present[m].device)
    return present


@torch.no_grad()
def predict(model: MultimodalClassifier, loader: DataLoader, *, drop: Iterable[str] = (),
            missing_rates: Mapping[str, float] | None = None, seed: int = 0,
            fallback: float = 0.5) -> Predictions:
    """Positive-class probabilities of ``model`` over ``loader`` (eval mode, restored after).

    A sample with no modality (none in the data, or none left after ``drop`` /
    ``missing_rates``) cannot be predicted from data: it gets the ``fallback`` probability (an uninformed guess; it ties with
    every other such sample in AUROC), and ``Predictions.present`` shows it had nothing.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    labels, probs, seen = [], [], {m: [] for m in model.modalities}
    try:
        for batch in loader:
            present = hide(batch, model, tuple(drop), missing_rates, generator)
            some = torch.stack([present[m] for m in sorted(present)], dim=1).any(dim=1)
            prob = torch.full((len(some),), fallback, dtype=torch.float64)
            if some.any():
                logits = model.fuse(batch.select(some), {m: p[some] for m, p in present.items()}).logits
                prob[some] = logits.softmax(dim=-1)[:, 1].double()
            probs.append(prob.numpy())
            labels.append(batch.labels.numpy())
            for m in seen:
                seen[m].append(present[m].numpy())
    finally:
        model.train(was_training)
    return Predictions(labels=np.concatenate(labels), probs=np.concatenate(probs),
                       present={m: np.concatenate(v) for m, v in seen.items()})

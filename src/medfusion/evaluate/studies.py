"""Measurements of one trained run on its test split: performance, missing modalities,
ablation over modality subsets, cross-modal retrieval, explanations and cost.

Each function takes a trained model and its data module (:func:`medfusion.train.run.load_trained`)
and returns JSON-ready numbers.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch

from medfusion.evaluate.metrics import classification_metrics, metric_table
from medfusion.evaluate.predict import Predictions, predict
from medfusion.models import MultimodalClassifier
from medfusion.train.data import ManifestDataModule
from medfusion.types import MultimodalBatch

#: Shares of samples from which one modality is hidden, for robustness curves.
MISSING_RATES = (0.0, 0.25, 0.5, 0.75, 0.9)


def f1_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The operating point with the highest F1: the threshold ``t`` (predict positive when
    ``probs >= t``) among the observed probabilities; the highest such ``t`` on ties, 0.5
    when ``labels`` has no positive.

    Args:
        labels: (N,) 0/1.
        probs: (N,) positive-class probabilities.
    """
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"f1_threshold: expected labels and probs of one shape (N,), received {y.shape} and {p.shape}")
    positives = y.sum()
    if positives == 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    p_sorted, tp = p[order], np.cumsum(y[order])
    last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # last index of each distinct probability
    tp, predicted = tp[last], np.flatnonzero(last) + 1.0
    f1 = 2 * tp / (predicted + positives)
    best = np.flatnonzero(f1 == f1.max())[0]  # the first best = the highest threshold
    return float(p_sorted[last][best])


def performance(model: MultimodalClassifier, data: ManifestDataModule, n_boot: int, seed: int,
                drop: tuple[str, ...] = ()) -> tuple[Predictions, dict[str, list[float]], float]:
    """Test predictions, every metric with its 95% bootstrap interval ([value, low, high]), and
    the threshold of F1 and accuracy: the F1-best one on the validation split (:func:`f1_threshold`),
    so the operating point never sees the test labels. ``drop``: modalities removed from every sample.
    """
    validation = predict(model, data.loader("val"), drop=drop)
    threshold = f1_threshold(validation.labels, validation.probs)
    predictions = predict(model, data.loader("test"), drop=drop)
    table = metric_table(predictions.labels, predictions.probs, n_boot=n_boot, seed=seed, threshold=threshold)
    return predictions, {name: [float(x) for x in interval] for name, interval in table.items()}, threshold


def auroc_of(predictions: Predictions) -> float:
    """AUROC of a prediction pass."""
    return float(classification_metrics(predictions.labels, predictions.probs)["auroc"])


def missing_modalities(model: MultimodalClassifier, data: ManifestDataModule, seed: int) -> dict[str, Any]:
    """AUROC with each modality removed from every test sample, and at each missing rate.

    Returns:
        {"drop": {m: auroc}, "curve": {m: {rate: auroc}}, "ablation": {"a+b": auroc}}
        where ablation keeps only the named subset of modalities at inference.
    """
    loader = list(data.loader("test"))  # read and collated once, reused by every pass
    modalities = model.modalities
    result: dict[str, Any] = {"drop": {}, "curve": {}, "ablation": {}}
    for m in modalities:
        if len(modalities) > 1:
            result["drop"][m] = auroc_of(predict(model, loader, drop=[m]))
        result["curve"][m] = {str(rate): auroc_of(predict(model, loader, missing_rates={m: rate}, seed=seed))
                              for rate in MISSING_RATES}
    for size in range(1, len(modalities) + 1):
        for kept in combinations(modalities, size):
            dropped = [m for m in modalities if m not in kept]
            result["ablation"]["+".join(kept)] = auroc_of(predict(model, loader, drop=dropped))
    return result


@torch.no_grad()
def retrieval_recall(model: MultimodalClassifier, data: ManifestDataModule, ks=(1, 5, 10)) -> dict[str, float] | None:
    """Recall@k of image->text and text->image search among test pairs (joint embedding only).

    A query's match is the same patient's other modality; queries and candidates are the test
    samples with both modalities. None for strategies without a joint space.
    """
    if model.fusion.__class__.__name__ != "JointEmbeddingFusion" or not {"image", "text"} <= set(model.modalities):
        return None
    model.eval()
    images, texts = [], []
    for batch in data.loader("test"):
        present = model.presence(batch, require_any=False)  # a sample with no modality is no pair: skipped
        both = present["image"] & present["text"]
        if not both.any():
            continue
        output = model.fuse(batch.select(both), {m: p[both] for m, p in present.items()})
        images.append(output.embeddings["image"])
        texts.append(output.embeddings["text"])
    if not images:
        return {"pairs": 0}
    image, text = torch.cat(images), torch.cat(texts)
    similarity = image @ text.T  # unit rows
    target = torch.arange(len(image))
    result = {}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        rank = (scores > scores[target, target].unsqueeze(1)).sum(dim=1)  # 0 = best
        for k in ks:
            result[f"{direction}_recall@{k}"] = float((rank < k).float().mean())
    result["pairs"] = len(image)
    return result


def first_batch(data: ManifestDataModule, size: int, role: str = "test") -> tuple[MultimodalBatch, np.ndarray]:
    """The first ``size`` samples of a split that have a used modality, as one batch, and their indices."""
    dataset = data.dataset(role)
    indices = data.usable(role)[:size]
    samples = [dataset[int(i)] for i in indices]
    kept = [i for i, s in zip(indices, samples, strict=True) if s is not None]
    return data.collate()([s for s in samples if s is not None]), np.asarray(kept)


def explanation(model: MultimodalClassifier, data: ManifestDataModule, masks: dict[str, np.ndarray] | None,
                finding: str = "consolidation", size: int = 64, n_steps: int = 32) -> dict[str, Any]:
    """Which explanation the strategy gives, its deletion fidelity and, with ground-truth
    masks, its pointing-game score on images with the finding (the first of the masks'
    findings when the cohort has no ``finding``), on the first ``size`` test samples
    (integrated gradients with ``n_steps`` steps; the convergence delta is kept).
    """
    from medfusion.evaluate import explain

    batch, indices = first_batch(data, size)
    attribution, modalities, method = explain.modality_attribution(model, batch, n_steps=n_steps,
                                                                   internal_batch_size=512)
    fidelity = explain.deletion_fidelity(model, batch, attribution)
    result: dict[str, Any] = {"method": method, "fidelity": fidelity,
                              "mean_attribution": dict(zip(modalities, attribution.mean(dim=0).tolist(), strict=True))}
    if masks is not None and "image" in model.modalities:
        names = [str(n) for n in masks["finding_names"]]
        result["pointing"] = pointing(model, data.dataset("test").patient_ids[indices], batch, masks,
                                      finding if finding in names else names[0],
                                      n_steps)
    return result


def pointing(model: MultimodalClassifier, patient_ids: np.ndarray, batch: MultimodalBatch,
             masks: dict[str, np.ndarray], finding: str, n_steps: int = 32) -> dict[str, Any] | None:
    """Pointing game of the image explanation on the samples of ``batch`` (patients
    ``patient_ids``) whose X-ray shows ``finding``."""
    from medfusion.evaluate import explain

    ids = [str(p) for p in patient_ids]
    index = {str(p): i for i, p in enumerate(masks["patient_id"])}
    column = list(masks["finding_names"]).index(finding)
    gt = torch.from_numpy(np.stack([masks["masks"][index[p], column] for p in ids]))
    rows = gt.flatten(1).any(dim=1) & model.presence(batch)["image"]
    if not rows.any():
        return None
    maps, source = explain.image_explanation_map(model, batch, n_steps=n_steps, internal_batch_size=512)
    score = explain.pointing_game(maps[rows], gt[rows])
    return {"source": source, "finding": finding, **score}

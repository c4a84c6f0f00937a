"""Zero-shot classification in the joint space: class prompts, templates and prompt ensembling.

As in CLIP (Radford et al., ICML 2021, section 3.1.4): each class name is written into
several sentences ("chest x-ray showing {}", ...), with synonyms a report would use
(:data:`CLASS_PHRASES`); every prompt is embedded, the class's prompt embeddings are
normalised, averaged and renormalised, and an image's class probabilities are the softmax
of its scaled cosine similarity to each class. Evaluated by one-vs-rest AUROC (95%
bootstrap interval) against manifest label columns (:data:`LABEL_COLUMNS` maps a class
name to its column; ``normal`` is ``abnormal == 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medfusion.data.datasets.manifest import ManifestDataset, read_manifest
from medfusion.evaluate.metrics import Interval, bootstrap_ci
from medfusion.retrieval.embed import JointEmbedder
from medfusion.retrieval.indexing import manifest_path

#: Sentence templates each class phrase is written into.
DEFAULT_TEMPLATES: tuple[str, ...] = ("{}.", "chest x-ray showing {}.", "findings consistent with {}.",
                                      "there is {}.")
#: Phrases reports use for a class (a class not listed is its own single phrase).
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "normal": ("no acute cardiopulmonary abnormality", "the lungs are clear", "normal chest"),
    "pneumonia": ("pneumonia", "airspace consolidation", "focal airspace opacity"),
    "consolidation": ("consolidation", "airspace consolidation", "focal airspace opacity"),
    "effusion": ("pleural effusion", "blunting of the costophrenic angle"),
    "cardiomegaly": ("cardiomegaly", "the heart is enlarged"),
    "pneumothorax": ("pneumothorax",),
    "nodule": ("pulmonary nodule", "granuloma"),
    "infiltrates": ("bilateral infiltrates", "interstitial opacities"),
}
#: Class name -> manifest label column, where they differ.
LABEL_COLUMNS: dict[str, str] = {"pneumonia": "consolidation"}


def class_prompts(name: str, templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every template filled with every phrase of class ``name``.

    Raises:
        ValueError: on a blank name or a template without ``{}``.
    """
    if not name.strip():
        raise ValueError("zero-shot: a class name is blank")
    bad = [t for t in templates if "{}" not in t]
    if bad or not templates:
        raise ValueError(f"zero-shot: expected templates containing '{{}}', received {list(templates)}")
    phrases = CLASS_PHRASES.get(name.strip().lower(), (name.strip(),))
    return [t.format(p) for p in phrases for t in templates]


def parse_classes(text: str) -> list[str]:
    """``"pneumonia, effusion,normal"`` -> ["pneumonia", "effusion", "normal"].

    Raises:
        ValueError: on fewer than 2 classes or a repeated one.
    """
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"zero-shot: expected at least 2 distinct comma-separated classes, received {text!r}")
    return classes


class ZeroShotClassifier:
    """Class probabilities from the similarity of embeddings to class prompt embeddings.

    Args:
        embedder: a trained joint-embedding run with a text encoder.
        classes: class names (K >= 2).
        templates: prompt templates.

    Attributes:
        prompts: {class: prompts}; prompt_embeddings: (K, P_max, E) tensor (classes with
            fewer prompts repeat their own, which leaves their normalised average unchanged).
    """

    def __init__(self, embedder: JointEmbedder, classes: Sequence[str],
                 templates: Sequence[str] = DEFAULT_TEMPLATES) -> None:
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"zero-shot: expected at least 2 distinct classes, received {list(classes)}")
        self.embedder, self.classes = embedder, list(classes)
        self.prompts = {c: class_prompts(c, templates) for c in self.classes}
        width = max(len(p) for p in self.prompts.values())
        rows = []
        for c in self.classes:
            embedded = embedder.embed_texts(self.prompts[c])
            rows.append(np.resize(embedded, (width, embedded.shape[1])))  # cycle a class's own prompts
        self.prompt_embeddings = torch.from_numpy(np.stack(rows))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, K) softmax class probabilities of (N, E) unit embeddings."""
        with torch.no_grad():
            logits = self.embedder.model.fusion.zero_shot(torch.from_numpy(np.asarray(embeddings, np.float32)),
                                                          self.prompt_embeddings)
        return logits.softmax(dim=1).numpy()


def label_matrix(frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """(N, K) 0/1 labels of each class from manifest columns (``normal``: ``abnormal == 0``).

    Raises:
        ValueError: naming a class with no label column.
    """
    columns = []
    for name in classes:
        key = name.strip().lower()
        if key == "normal" and "normal" not in frame.columns and "abnormal" in frame.columns:
            columns.append(1 - frame["abnormal"].astype(int).to_numpy())
            continue
        column = LABEL_COLUMNS.get(key, key)
        if column not in frame.columns:
            raise ValueError(f"zero-shot: class {name!r} has no label column {column!r} in the manifest; "
                             f"available columns: {list(frame.columns)}")
        columns.append(frame[column].astype(int).to_numpy())
    return np.stack(columns, axis=1)


def evaluate_zero_shot(embedder: JointEmbedder, data: str | Path, classes: Sequence[str], *, split: str = "test",
                       modality: str = "image", templates: Sequence[str] = DEFAULT_TEMPLATES,
                       n_boot: int = 1000, seed: int = 0, batch_size: int = 64) -> dict[str, dict]:
    """Zero-shot AUROC of each class on one split of a manifest.

    Returns:
        {class: {"auroc": Interval or None (one label value only), "positives": int, "n": int}}.

    Raises:
        ValueError: on a class without a label column or an empty split.
    """
    path = manifest_path(data)
    frame, _ = read_manifest(path)
    label_matrix(frame.head(1), classes)  # fail on a missing column before embedding
    dataset = ManifestDataset(path, {modality: modality}, None, split=split, validate_files=False,
                              check_leakage=False)
    if len(dataset) == 0:
        raise ValueError(f"{path}: split {split!r} has no rows")
    rows, vectors = [], []
    for batch_rows, batch_vectors in embedder.embed_manifest(dataset, modality, batch_size=batch_size):
        rows += batch_rows
        vectors.append(batch_vectors)
    probabilities = ZeroShotClassifier(embedder, classes, templates).probabilities(np.concatenate(vectors))
    labels = label_matrix(frame.loc[rows], classes)
    results = {}
    for k, name in enumerate(classes):
        y = labels[:, k]
        auroc: Interval | None = None
        if 0 < y.sum() < len(y):
            auroc = bootstrap_ci(y, probabilities[:, k], "auroc", n_boot=n_boot, seed=seed)
        results[name] = {"auroc": auroc, "positives": int(y.sum()), "n": int(len(y))}
    return results

"""Tiny configs shared by the test packages (imported as ``tiny_runs``; ``tests/`` is on the path).

- :func:`config_dict`: a tiny classifier of any strategy over the triage cohort's image, note and vitals.
- :data:`CLIP_CONFIG`: a tiny contrastive dual encoder over a retrieval cohort (format it with
  ``manifest``, ``out`` and ``epochs``).
"""

from __future__ import annotations

import copy
from pathlib import Path

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]

#: Tiny model of every strategy (widths, dims and hidden sizes of 8).
MODALITIES = {
    "image": {"encoder": {"name": "cnn", "params": {"in_channels": 1, "widths": [4, 8], "out_dim": 8,
                                                    "norm_groups": 2}},
              "featurizer": {"channels": 1, "size": 4}},
    "text": {"encoder": {"name": "transformer", "params": {"dim": 8, "depth": 1, "heads": 2}},
             "featurizer": {"buckets": 32}},
    "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 8, "out_dim": 8}},
               "featurizer": {"num_features": 6}},
}

FUSIONS = {
    "early": {"name": "early", "params": {"hidden": 8, "depth": 1}},
    "intermediate": {"name": "intermediate", "params": {"hidden": 8, "dropout": 0.3}},
    "late": {"name": "late", "params": {"rule": "learned", "hidden": 8}},
    "cross_attention": {"name": "cross_attention", "params": {"query": "text", "dim": 8, "heads": 2}},
    "joint_embedding": {"name": "joint_embedding", "params": {"embed_dim": 8}},
}


def config_dict(manifest: str | Path, out: str | Path, fusion: str = "late", **sections) -> dict:
    """A tiny training config (image + text + vitals of the triage cohort) as a dict.

    ``sections`` update the top-level sections: ``optim={"max_epochs": 2}`` replaces those keys only.
    """
    config = {
        "seed": 0,
        "data": {"manifest": str(manifest), "label": "pneumonia", "modalities": {"image": "image", "text": "text"},
                 "vitals_columns": list(VITALS), "vocab_size": 100, "max_length": 32},
        "model": {"num_classes": 2, "modalities": copy.deepcopy(MODALITIES), "fusion": copy.deepcopy(FUSIONS[fusion]),
                  "modality_dropout": 0.2},
        "optim": {"lr": 0.003, "batch_size": 16, "max_epochs": 1, "patience": 3},
        "balance": {"class_weights": "auto", "modality": "none"},
        "run": {"out": str(out), "progress": False, "threads": 1},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


CLIP_CONFIG = """
seed: 0
task: contrastive
data:
  manifest: {manifest}
  label: abnormal
  modalities: {{image: image, text: text}}
  vocab_size: 200
  max_length: 48
model:
  num_classes: 2
  modalities:
    image: {{encoder: {{name: cnn, params: {{in_channels: 1, widths: [4, 8], out_dim: 16, norm_groups: 2}}}}}}
    text: {{encoder: {{name: transformer, params: {{dim: 16, depth: 1, heads: 2}}}}}}
  fusion: {{name: joint_embedding, params: {{embed_dim: 16}}}}
optim: {{lr: 0.003, batch_size: 32, max_epochs: {epochs}, patience: 2}}
balance: {{class_weights: none}}
run: {{out: {out}, progress: false, threads: 1}}
"""

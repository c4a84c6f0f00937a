"""A tiny synthetic retrieval cohort on disk and a tiny CLIP run trained on it (shared by the retrieval tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.train import load_train_config, train

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
optim: {{lr: 0.003, batch_size: 32, max_epochs: 2, patience: 2}}
balance: {{class_weights: none}}
run: {{out: {out}, progress: false, threads: 1}}
"""


@pytest.fixture(scope="session")
def retrieval_data(tmp_path_factory) -> Path:
    """Folder of a 160-study retrieval cohort (generated reports, 32-px PNG X-rays, metadata)."""
    folder = tmp_path_factory.mktemp("retrieval") / "data"
    synthesize("retrieval", 160, 0, folder, source="generated", image_size=32)
    return folder


@pytest.fixture(scope="session")
def clip_run(retrieval_data, tmp_path_factory) -> Path:
    """Run folder of a dual encoder trained 2 epochs on :func:`retrieval_data`."""
    root = tmp_path_factory.mktemp("clip")
    path = root / "clip.yaml"
    path.write_text(CLIP_CONFIG.format(manifest=retrieval_data / "manifest.parquet", out=root / "run"))
    train(load_train_config(path))
    return root / "run"

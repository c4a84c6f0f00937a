"""A tiny synthetic retrieval cohort on disk and a tiny CLIP run trained on it (shared by the retrieval tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.train import load_train_config, train
from tiny_runs import CLIP_CONFIG



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
    path.write_text(CLIP_CONFIG.format(manifest=retrieval_data / "manifest.parquet", out=root / "run", epochs=2))
    train(load_train_config(path))
    return root / "run"

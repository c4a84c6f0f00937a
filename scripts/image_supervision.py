"""Why the demo's image encoder is unstable: the weak label, not the architecture.

Trains the demo's image-only model (the image branch of ``configs/triage/intermediate.yaml``:
a from-scratch CNN, widths 8/16/32) on one triage cohort with two labels and two schedules,
over several seeds, and scores each run on the test split:

- label ``pneumonia`` (what the demo trains on: the X-ray shows a consolidation, which is
  necessary but not sufficient) and label ``consolidation`` (the finding itself, a direct
  supervision a real cohort rarely has);
- schedule ``demo`` (the demo's: batch 64, at most 10 epochs, early stopping after 3
  epochs without a better validation AUROC) and ``long`` (batch 32, 20 epochs, no early
  stop before the end);
- test AUROC against the training label, and for the consolidation-trained model also
  against ``pneumonia``: what a consolidation detector is worth for the demo's task (the
  image-alone ceiling of the synthetic cohort is 0.81 before label noise).

    medfusion synth --scenario triage --patients 1200 --image-size 64 --out data/triage1200
    .venv/bin/python scripts/image_supervision.py --data data/triage1200 --seeds 0,1,2,3,4

Writes ``benchmarks/results/image_supervision.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from medfusion.data.datasets import ManifestDataset
from medfusion.evaluate.metrics import classification_metrics, seed_summary
from medfusion.evaluate.predict import predict
from medfusion.files import atomic_write_text
from medfusion.train import TrainConfig, train
from medfusion.train.config import load_train_config
from medfusion.train.run import load_trained

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "triage" / "intermediate.yaml"
SCHEDULES = {"demo": {"batch_size": 64, "max_epochs": 10, "patience": 3},
             "long": {"batch_size": 32, "max_epochs": 20, "patience": 20}}
LABELS = ("pneumonia", "consolidation")


def image_only_config(manifest: Path, label: str, schedule: str, seed: int, out: Path) -> TrainConfig:
    """The image branch of the triage intermediate config, alone, trained on ``label``."""
    config = load_train_config(CONFIG, {
        "seed": seed, "data": {"manifest": str(manifest.resolve()), "label": label},
        "optim": SCHEDULES[schedule], "run": {"out": str(out.resolve()), "progress": False}})
    config.data.modalities = {"image": config.data.modalities["image"]}
    config.data.vitals_columns = []
    config.model.modalities = {"image": config.model.modalities["image"]}
    config.model.modality_dropout = 0.0
    return TrainConfig.model_validate(config.model_dump())


def run_one(manifest: Path, label: str, schedule: str, seed: int, out: Path) -> dict:
    """Train (unless finished) and score one run: test AUROC on its label and on pneumonia."""
    config = image_only_config(manifest, label, schedule, seed, out)
    summary = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else train(config)
    model, data, _ = load_trained(out)
    predictions = predict(model, data.loader("test"))
    pneumonia = ManifestDataset(manifest, {"image": "image"}, "pneumonia", split="test").labels
    image = predictions.present["image"]
    return {"epochs": summary["epochs"],
            "auroc": classification_metrics(predictions.labels[image], predictions.probs[image])["auroc"],
            "auroc_pneumonia": classification_metrics(pneumonia[image], predictions.probs[image])["auroc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/triage1200"), help="triage cohort folder")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/image_supervision"), help="run folders")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/image_supervision.json"))
    args = parser.parse_args()
    manifest = args.data / "manifest.parquet"
    if not manifest.is_file():
        raise SystemExit(f"image_supervision: no manifest at {manifest}; run medfusion synth first (see --help)")
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    rows = []
    for label in LABELS:
        for schedule in SCHEDULES:
            runs = {seed: run_one(manifest, label, schedule, seed, args.out / f"{label}_{schedule}" / f"seed{seed}")
                    for seed in seeds}
            row = {"label": label, "schedule": schedule, "runs": {str(s): r for s, r in runs.items()}}
            for key in ("auroc", "auroc_pneumonia"):
                row[f"{key}_mean_ci"] = list(seed_summary(np.array([r[key] for r in runs.values()])))
            rows.append(row)
            print(f"{label:14s} {schedule:5s} AUROC on its label {row['auroc_mean_ci'][0]:.3f} "
                  f"({row['auroc_mean_ci'][1]:.3f}-{row['auroc_mean_ci'][2]:.3f}), on pneumonia "
                  f"{row['auroc_pneumonia_mean_ci'][0]:.3f}; per seed "
                  + ", ".join(f"{r['auroc']:.3f} ({r['epochs']} ep)" for r in runs.values()), flush=True)
    result = {"data": str(args.data), "seeds": seeds, "schedules": SCHEDULES, "rows": rows,
              "test_samples_with_image": int(sum(ManifestDataset(manifest, {"image": "image"}, "pneumonia",
                                                                 split="test").presence()["image"])),
              "seconds": time.perf_counter() - started}
    atomic_write_text(args.json, json.dumps(result, indent=2))
    print(f"written {args.json} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()

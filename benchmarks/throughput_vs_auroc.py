"""Training throughput and test AUROC of the ~1M-parameter image (100x100) + vitals model, with and without a stem.

Issue 4's target is >= 400 training samples/s on 2 CPU cores for a ~1M-parameter image
(100 x 100) + vitals model "at no loss of AUROC". This script measures both sides on the
same machine:

- **throughput**: :func:`medfusion.evaluate.cost.measure_training_throughput` (forward,
  loss, backward, AdamW step; batch 64 from the real training loader; data loading not
  included) for each image encoder;
- **AUROC**: each model trained with :func:`medfusion.train.train` on the same triage
  cohort (label ``pneumonia``, modalities image + vitals, patient-level splits) for each
  seed; test AUROC with a 95% bootstrap interval per seed (bootstrap seed 0), the mean
  across seeds with a Student-t interval, and DeLong's test of each model against the
  reference on every seed (same test patients).

Usage (a 100 x 100 triage cohort first)::

    medfusion synth --scenario triage --patients 3000 --image-size 100 --out data/triage100
    .venv/bin/python benchmarks/throughput_vs_auroc.py --data data/triage100 --seeds 0,1,2

Writes ``benchmarks/results/throughput_vs_auroc.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from medfusion.evaluate.cost import count_parameters, measure_training_throughput
from medfusion.evaluate.metrics import bootstrap_ci, delong_test, seed_summary
from medfusion.evaluate.predict import predict
from medfusion.files import atomic_write_text
from medfusion.train import TrainConfig, train
from medfusion.train.run import build_run, load_trained

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]
#: Image encoders compared; the first is the reference (the target model of training_throughput.py).
ENCODERS = {
    "cnn (reference)": {"name": "cnn", "params": {"in_channels": 1, "widths": [32, 64, 128, 256], "out_dim": 128}},
    "cnn, stem 2": {"name": "cnn", "params": {"in_channels": 1, "widths": [32, 64, 128, 256], "out_dim": 128,
                                              "stem": 2}},
    "cnn, stem 4": {"name": "cnn", "params": {"in_channels": 1, "widths": [32, 64, 128, 256], "out_dim": 128,
                                              "stem": 4}},
}


def config(encoder: dict, data: Path, seed: int, epochs: int, out: Path) -> TrainConfig:
    """Image + vitals intermediate fusion on the triage cohort in ``data``."""
    return TrainConfig.model_validate({
        "seed": seed,
        "data": {"manifest": str((data / "manifest.parquet").resolve()), "label": "pneumonia",
                 "modalities": {"image": "image"}, "vitals_columns": VITALS},
        "model": {"num_classes": 2, "fusion": {"name": "intermediate"}, "modality_dropout": 0.1, "modalities": {
            "image": {"encoder": encoder, "featurizer": {"channels": 1, "size": 16}},
            "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 64, "out_dim": 128}},
                       "featurizer": {"num_features": 6}}}},
        "optim": {"lr": 0.003, "batch_size": 64, "max_epochs": epochs, "patience": 3},
        "balance": {"class_weights": "auto"},
        "run": {"out": str(out.resolve()), "progress": False}})


def throughput(train_config: TrainConfig, steps: int) -> tuple[float, int]:
    """Training samples/s on one batch of the real training loader, and trainable parameters."""
    system, data = build_run(train_config)
    batch = next(iter(data.train_dataloader()))
    return measure_training_throughput(system.model, batch, steps=steps), count_parameters(system.model)["trainable"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="triage data folder with 100 x 100 images")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="timed optimisation steps of the throughput")
    parser.add_argument("--runs", type=Path, default=Path("runs/throughput_vs_auroc"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput_vs_auroc.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(2)
    results = {"machine": {"processor": platform.processor() or platform.machine(), "threads": 2,
                           "torch": torch.__version__}, "data": str(args.data), "seeds": seeds,
               "bootstrap_seed": 0, "epochs": args.epochs, "target_samples_per_s": 400, "models": {}}
    probabilities: dict[str, dict[int, np.ndarray]] = {}
    labels: dict[int, np.ndarray] = {}
    rows = {}
    for name, encoder in ENCODERS.items():  # all timings first, before any training shares the cores
        samples_per_s, parameters = throughput(config(encoder, args.data, 0, 1, args.runs / "probe"), args.steps)
        rows[name] = {"encoder": encoder, "parameters": parameters, "samples_per_s": samples_per_s, "seeds": {}}
        print(f"{name}: {parameters:,} parameters, {samples_per_s:.0f} training samples/s", flush=True)
    for name, encoder in ENCODERS.items():
        row = rows[name]
        probabilities[name] = {}
        for seed in seeds:
            out = args.runs / f"{name.replace(' (reference)', '').replace(', ', '_').replace(' ', '')}_seed{seed}"
            start = time.perf_counter()
            summary = train(config(encoder, args.data, seed, args.epochs, out))
            model, data, _ = load_trained(out)
            predictions = predict(model, data.loader("test"))
            labels[seed], probabilities[name][seed] = predictions.labels, predictions.probs
            auroc = bootstrap_ci(predictions.labels, predictions.probs, "auroc", seed=0)
            row["seeds"][seed] = {"auroc": list(auroc), "epochs": summary["epochs"],
                                  "train_seconds": summary["train_seconds"], "seconds": time.perf_counter() - start}
            print(f"  seed {seed}: test AUROC {auroc.format()} ({summary['epochs']} epochs)", flush=True)
        row["auroc_across_seeds"] = list(seed_summary(np.array([row["seeds"][s]["auroc"][0] for s in seeds])))
        results["models"][name] = row
    reference = next(iter(ENCODERS))
    for name in list(ENCODERS)[1:]:
        results["models"][name]["delong_vs_reference"] = {
            seed: delong_test(labels[seed], probabilities[reference][seed], probabilities[name][seed])
            for seed in seeds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"\n{'model':18s} {'params':>10s} {'samples/s':>10s}  AUROC mean across seeds (95% t-interval)")
    for name, row in results["models"].items():
        mean, low, high = row["auroc_across_seeds"]
        print(f"{name:18s} {row['parameters']:>10,} {row['samples_per_s']:>10.0f}  {mean:.3f} ({low:.3f}–{high:.3f})")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

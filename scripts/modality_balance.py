"""Modality-imbalance methods compared in measured runs: none, OGM-GE and gradient blending.

Trains one config (default the triage intermediate-fusion config) with
``balance.modality`` = none, ogm_ge and gradient_blending over several seeds, everything
else equal, and scores each run on the test split:

- AUROC of the fused model with a 95% bootstrap interval (bootstrap seed 0), and the mean
  across seeds with a Student-t interval;
- the fused model with one modality alone (the others hidden): whether the weaker
  modalities' encoders learned anything, which is what the two methods are for;
- the validation AUROC of each per-modality probe at the best epoch (read from the run's
  ``logs/metrics.csv``).

    .venv/bin/python scripts/modality_balance.py --config configs/triage/intermediate.yaml --seeds 0,1,2

Writes ``benchmarks/results/modality_balance.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from medfusion.evaluate.metrics import bootstrap_ci, seed_summary
from medfusion.evaluate.predict import predict
from medfusion.files import atomic_write_text
from medfusion.train import train
from medfusion.train.config import load_train_config
from medfusion.train.run import load_trained

METHODS = ("none", "ogm_ge", "gradient_blending")


def probe_aurocs(run: Path, modalities: list[str]) -> dict[str, float]:
    """Validation probe AUROC per modality at the epoch of the best validation AUROC."""
    log = pd.read_csv(run / "logs" / "metrics.csv")
    rows = log.dropna(subset=["val/auroc"])
    best = rows.loc[rows["val/auroc"].idxmax()]
    return {m: float(best[f"val/probe_auroc/{m}"]) for m in modalities if f"val/probe_auroc/{m}" in best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/triage/intermediate.yaml"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", type=Path, default=Path("runs/modality_balance"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/modality_balance.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {"config": str(args.config), "seeds": seeds, "bootstrap_seed": 0, "split": "test", "methods": {}}
    for method in METHODS:
        row: dict = {"seeds": {}}
        for seed in seeds:
            out = args.runs / f"{method}_seed{seed}"
            config = load_train_config(args.config, {"seed": seed, "balance": {"modality": method},
                                                      "run": {"out": str(out), "progress": False}})
            start = time.perf_counter()
            summary = train(config)
            model, data, _ = load_trained(out)
            loader = data.loader("test")
            full = predict(model, loader)
            alone = {}
            for m in model.modalities:
                hidden = predict(model, loader, drop=[o for o in model.modalities if o != m])
                alone[m] = list(bootstrap_ci(hidden.labels, hidden.probs, "auroc", seed=0))
            row["seeds"][seed] = {
                "auroc": list(bootstrap_ci(full.labels, full.probs, "auroc", seed=0)), "alone": alone,
                "val_probe_auroc": probe_aurocs(out, list(model.modalities)), "epochs": summary["epochs"],
                "seconds": time.perf_counter() - start}
            print(f"{method:18s} seed {seed}: AUROC {row['seeds'][seed]['auroc'][0]:.3f}; alone "
                  + ", ".join(f"{m} {v[0]:.3f}" for m, v in alone.items()), flush=True)
        row["auroc_across_seeds"] = list(seed_summary(np.array([row["seeds"][s]["auroc"][0] for s in seeds])))
        row["alone_across_seeds"] = {
            m: list(seed_summary(np.array([row["seeds"][s]["alone"][m][0] for s in seeds])))
            for m in row["seeds"][seeds[0]]["alone"]}
        results["methods"][method] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print("\nmethod             AUROC mean (95% t)       one modality alone (mean over seeds)")
    for method, row in results["methods"].items():
        mean, low, high = row["auroc_across_seeds"]
        alone = ", ".join(f"{m} {v[0]:.3f}" for m, v in row["alone_across_seeds"].items())
        print(f"{method:18s} {mean:.3f} ({low:.3f}–{high:.3f})   {alone}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

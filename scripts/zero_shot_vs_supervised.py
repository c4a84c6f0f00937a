"""Zero-shot AUROC of a CLIP run next to supervised image classifiers trained on 1%, 10%, 100% of the labels.

The supervised model has the CLIP run's image encoder architecture (same config) with a
classification head, trained from scratch on the same patient-level training split with
``train_fraction`` of its patients; every AUROC is on the same test split, with a 95%
bootstrap interval (bootstrap seed 0; training seed ``--seed``).

    .venv/bin/python scripts/zero_shot_vs_supervised.py --clip runs/retrieval/clip --data data/retrieval

Writes ``benchmarks/results/zero_shot.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medfusion.evaluate.metrics import bootstrap_ci
from medfusion.evaluate.predict import predict
from medfusion.files import atomic_write_text
from medfusion.retrieval.embed import JointEmbedder
from medfusion.retrieval.zero_shot import LABEL_COLUMNS, evaluate_zero_shot
from medfusion.train import TrainConfig, train
from medfusion.train.run import load_trained


def supervised_config(clip: TrainConfig, label: str, fraction: float, epochs: int, seed: int, out: Path) -> TrainConfig:
    """An image-only classifier config with the CLIP run's image encoder, on ``fraction`` of the training patients."""
    data = clip.data.model_copy(update={"label": label, "modalities": {"image": clip.data.modalities["image"]},
                                        "train_fraction": fraction})
    model = {"num_classes": 2, "modalities": {"image": clip.model.modalities["image"].model_dump()},
             "fusion": {"name": "intermediate", "params": {}}}
    return TrainConfig.model_validate({
        "seed": seed, "task": "classification", "data": data.model_dump(), "model": model,
        "optim": {**clip.optim.model_dump(), "max_epochs": epochs},
        "balance": {"class_weights": "auto"}, "run": {"out": str(out), "progress": False}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True, help="run folder of the CLIP model")
    parser.add_argument("--data", type=Path, required=True, help="retrieval data folder (manifest.parquet)")
    parser.add_argument("--classes", default="pneumonia,effusion,cardiomegaly", help="findings to compare")
    parser.add_argument("--fractions", default="0.01,0.1,1.0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=Path("runs/zero_shot_supervised"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/zero_shot.json"))
    args = parser.parse_args()
    classes = [c.strip() for c in args.classes.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]

    embedder = JointEmbedder(args.clip)
    _, _, clip_config = load_trained(args.clip)
    zero_shot = evaluate_zero_shot(embedder, args.data, [*classes, "normal"])
    results = {"clip_run": str(args.clip), "fingerprint": embedder.fingerprint, "training_seed": args.seed,
               "bootstrap_seed": 0, "split": "test", "classes": {}}
    for name in classes:
        label = LABEL_COLUMNS.get(name, name)
        row = {"label_column": label, "positives": zero_shot[name]["positives"], "n": zero_shot[name]["n"],
               "zero_shot_auroc": list(zero_shot[name]["auroc"]) if zero_shot[name]["auroc"] else None,
               "supervised": {}}
        for fraction in fractions:
            out = args.runs / f"{label}_{fraction:g}"
            start = time.perf_counter()
            summary = train(supervised_config(clip_config, label, fraction, args.epochs, args.seed, out))
            model, data, config = load_trained(out)
            predictions = predict(model, data.loader("test"))
            auroc = bootstrap_ci(predictions.labels, predictions.probs, "auroc", seed=0)
            row["supervised"][f"{fraction:g}"] = {
                "auroc": list(auroc), "train_patients": summary["train_patients"],
                "train_positives": int(data.class_counts()[1]), "parameters": summary["parameters"],
                "seconds": time.perf_counter() - start}
            print(f"{name}: supervised {fraction:.0%} of labels -> AUROC {auroc.format()}", flush=True)
        results["classes"][name] = row
        zs = zero_shot[name]["auroc"]
        print(f"{name}: zero-shot AUROC {zs.format() if zs else 'n/a'}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

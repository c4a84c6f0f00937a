"""Early-fusion emergency triage at batch 1: model-only latency and latency from raw files.

Targets (DESIGN.md): p50 <= 2 ms model-only and <= 20 ms from raw files (chest X-ray
DICOM or PNG + vitals + note); the seed document's budget is 100 ms. The model is the
early-fusion model of ``configs/triage/early.yaml`` (latency does not depend on the
weights); the files are a synthetic triage cohort written in real formats. "From raw
files" times, per patient: reading the X-ray (DICOM or PNG), reading and tokenising the
note, taking the vitals row, collating, and the forward pass.

Usage::

    python benchmarks/triage_latency.py [--patients 200] [--out benchmarks/results/triage_latency.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medfusion.data.collate import MultimodalCollate
from medfusion.data.io import read_dicom, read_image, read_text
from medfusion.data.synthetic.scenarios import synthesize
from medfusion.data.tokenizer import WordPieceTokenizer
from medfusion.evaluate.cost import measure_latency
from medfusion.files import atomic_write_text
from medfusion.models import build_model
from medfusion.train.config import load_train_config

VITALS = ["temperature", "heart_rate", "spo2", "respiratory_rate", "systolic_bp", "diastolic_bp"]


def percentiles(times_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times_ms, 50)), "p90_ms": float(np.percentile(times_ms, 90)),
            "p99_ms": float(np.percentile(times_ms, 99)), "n": len(times_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--config", type=Path, default=Path("configs/triage/early.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/triage_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="medfusion-triage-latency-"))
    cohort, manifest = synthesize("triage", args.patients, seed=0, out=folder, image_size=128,
                                  missing={"image": 0.0, "text": 0.0, "vitals": 0.0})
    frame = pd.read_parquet(manifest)
    tokenizer = WordPieceTokenizer.train(cohort.notes, vocab_size=1000)
    config = load_train_config(args.config).model
    model = build_model(config).eval()
    collate = MultimodalCollate(["image", "text", "vitals"], tokenizer=tokenizer, max_length=64)

    def sample(row, image_column: str, reader) -> dict:
        image = reader(folder / row[image_column]).array
        if image_column == "image_dicom":
            image = image / 255.0  # the synthetic DICOMs store 8-bit values
        return {"inputs": {"image": image.astype(np.float32), "text": read_text(folder / row["text"]).text,
                           "vitals": row[VITALS].to_numpy(np.float32)},
                "present": {"image": True, "text": True, "vitals": True}}

    first = collate([sample(frame.iloc[0], "image", read_image)])
    result = {"model_only": measure_latency(model, first, repeats=500, warmup=20)}
    print(f"model only, batch 1: p50 {result['model_only']['p50_ms']:.3f} ms, "
          f"p99 {result['model_only']['p99_ms']:.3f} ms")
    with torch.no_grad():
        for image_column, reader, label in (("image", read_image, "png"), ("image_dicom", read_dicom, "dicom")):
            times = []
            for _, row in frame.iterrows():
                start = time.perf_counter()
                model(collate([sample(row, image_column, reader)]))
                times.append(1000 * (time.perf_counter() - start))
            result[f"from_{label}"] = percentiles(times[5:])
            print(f"from raw files ({label} + note + vitals): p50 {result[f'from_{label}']['p50_ms']:.2f} ms, "
                  f"p99 {result[f'from_{label}']['p99_ms']:.2f} ms")
    result.update({"machine": {"processor": platform.processor() or platform.machine(), "threads": 2,
                               "torch": torch.__version__},
                   "image_size": 128, "targets_ms": {"model_only_p50": 2, "from_files_p50": 20, "budget": 100},
                   "parameters": sum(p.numel() for p in model.parameters())})
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

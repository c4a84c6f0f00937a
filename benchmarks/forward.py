"""Parameter counts and CPU forward-pass time per fusion strategy and per registered encoder.

Default-size encoders (the library defaults, not the tiny test settings) on realistic
input sizes: text 64 tokens, chest X-ray 1x128x128, 8 vital signs, 12-lead ECG of
1000 samples, echo clip 8x1x64x64. Forward time: batch 32 (and batch 1), eval mode,
no grad, median and p90 over repeated runs after warm-up, ``torch.set_num_threads(2)``.
Each registered encoder alone (default size; volume 1x64x64x64): parameters and forward
time at batch 8.

Usage::

    python benchmarks/forward.py [--repeats 20] [--out benchmarks/results/forward.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medfusion.encoders import ENCODERS as ENCODERS_REGISTRY
from medfusion.files import atomic_write_text
from medfusion.models import build_model
from medfusion.models.config import DEFAULT_ENCODERS
from medfusion.types import MultimodalBatch

SHAPES = {"image": (1, 128, 128), "signal": (12, 1000), "vitals": (8,), "video": (8, 1, 64, 64)}
TEXT_LENGTH = 64
COMBINATIONS = {
    "text+image+vitals": ("text", "image", "vitals"),
    "text+signal": ("text", "signal"),
    "text+video": ("text", "video"),
}
STRATEGIES = {
    "early": {"name": "early"},
    "intermediate": {"name": "intermediate"},
    "late/average": {"name": "late", "params": {"rule": "average"}},
    "late/max": {"name": "late", "params": {"rule": "max"}},
    "late/learned": {"name": "late", "params": {"rule": "learned"}},
    "late/mlp": {"name": "late", "params": {"rule": "mlp"}},
    "cross_attention": {"name": "cross_attention"},
    "joint_embedding": {"name": "joint_embedding"},
}
FEATURIZERS = {"image": {"channels": 1, "size": 16}, "signal": {"channels": 12, "length": 64},
               "vitals": {"num_features": 8}, "video": {"channels": 1, "frames": 4, "size": 8},
               "text": {"buckets": 256}}
ENCODERS = {"image": {}, "signal": {"in_channels": 12}, "vitals": {"num_features": 8}, "video": {}, "text": {}}
ENCODER_SHAPES = {**SHAPES, "volume": (1, 64, 64, 64)}
#: Settings of single encoders that must match the benchmark inputs.
ENCODER_OVERRIDES = {("image", "vit"): {"img_size": 128}, ("image", "efficientnet_lite0"): {"in_channels": 1},
                     ("volume", "vit"): {"img_size": 64},
                     ("signal", "resnet1d"): {"in_channels": 12}, ("signal", "lstm"): {"in_channels": 12},
                     ("vitals", "mlp"): {"num_features": 8}, ("text", "transformer"): {}}
ENCODER_BATCH = 8


def batch_of(modalities, size: int, shapes=SHAPES) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for m in modalities:
        if m == "text":
            inputs[m] = torch.randint(5, 8000, (size, TEXT_LENGTH), generator=g)
        else:
            inputs[m] = torch.rand(size, *shapes[m], generator=g)
    return MultimodalBatch(inputs=inputs)


def time_forward(run, repeats: int) -> dict[str, float]:
    """Median and p90 milliseconds of ``run()`` after 3 warm-up calls."""
    with torch.no_grad():
        for _ in range(3):
            run()
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            timings.append(1000 * (time.perf_counter() - start))
    timings.sort()
    return {"median_ms": statistics.median(timings), "p90_ms": timings[int(0.9 * (len(timings) - 1))]}


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def encoder_rows(repeats: int) -> list[dict]:
    """Parameters and batch-8 forward time of every registered encoder at its default size."""
    rows = []
    for modality, registry in ENCODERS_REGISTRY.items():
        for name in registry.names():
            encoder = registry.build(name, **ENCODER_OVERRIDES.get((modality, name), {})).eval()
            x = batch_of([modality], ENCODER_BATCH, ENCODER_SHAPES).inputs[modality]
            if modality == "text":
                x = x.clamp_max(encoder.vocab_size - 1)
            row = {"modality": modality, "encoder": name, "parameters": trainable(encoder), "out_dim": encoder.out_dim,
                   f"batch{ENCODER_BATCH}": time_forward(lambda: encoder(x), repeats)}
            rows.append(row)
            print(f"encoder {modality:7s} {name:19s} params {row['parameters']:>11,}  "
                  f"B={ENCODER_BATCH} {row[f'batch{ENCODER_BATCH}']['median_ms']:9.2f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forward.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    for combination, modalities in COMBINATIONS.items():
        for strategy, fusion in STRATEGIES.items():
            config = {"modalities": {m: {"encoder": {"name": DEFAULT_ENCODERS[m], "params": ENCODERS[m]},
                                         "featurizer": FEATURIZERS[m]} for m in modalities},
                      "fusion": fusion}
            model = build_model(config).eval()
            row = {"combination": combination, "strategy": strategy, "parameters": trainable(model),
                   "fusion_parameters": trainable(model.fusion) + (trainable(model.head) if model.head else 0)}
            for size in (32, 1):
                batch = batch_of(modalities, size)
                row[f"batch{size}"] = time_forward(lambda: model(batch), args.repeats)  # noqa: B023
            rows.append(row)
            print(f"{combination:18s} {strategy:16s} params {row['parameters']:>9,}  "
                  f"B=32 {row['batch32']['median_ms']:8.2f} ms  B=1 {row['batch1']['median_ms']:7.2f} ms", flush=True)
    encoders = encoder_rows(max(3, args.repeats // 4))
    result = {"machine": {"processor": platform.processor() or platform.machine(), "threads": 2,
                          "torch": torch.__version__},
              "repeats": args.repeats, "shapes": SHAPES, "text_length": TEXT_LENGTH, "rows": rows,
              "encoder_shapes": ENCODER_SHAPES, "encoders": encoders}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

"""Training throughput (samples/s) on 2 CPU cores, per fusion strategy and for the target model.

Target (issue 4): >= 400 samples/s for a ~1M-parameter image (100x100) + vitals model.
The target model is measured with the plain residual CNN and with a stride-4 stem
(``stem: 4``); ``benchmarks/throughput_vs_auroc.py`` trains both to compare their AUROC.
Each model is trained with AdamW on batches of 64 synthetic triage inputs (chest X-ray
1x100x100 + 6 vital signs; + a 48-token note for the text strategies); throughput is
measured with :func:`medfusion.evaluate.cost.measure_training_throughput` after one warm-up
step. Data loading is not included (see the comparison report's training time for that).

Usage::

    python benchmarks/training_throughput.py [--out benchmarks/results/training_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from medfusion.evaluate.cost import count_parameters, measure_training_throughput
from medfusion.files import atomic_write_text
from medfusion.models import build_model
from medfusion.types import MultimodalBatch

BATCH = 64
IMAGE = {"encoder": {"name": "cnn", "params": {"in_channels": 1, "widths": [32, 64, 128, 256], "out_dim": 128}},
         "featurizer": {"channels": 1, "size": 16}}
#: The same CNN after a stride-4 patchify stem (``stem: 4``): a quarter of the resolution for the residual stages.
IMAGE_STEM4 = {"encoder": {"name": "cnn", "params": {**IMAGE["encoder"]["params"], "stem": 4}},
               "featurizer": IMAGE["featurizer"]}
VITALS = {"encoder": {"name": "mlp", "params": {"num_features": 6, "hidden": 64, "out_dim": 128}},
          "featurizer": {"num_features": 6}}
TEXT = {"encoder": {"name": "transformer", "params": {"vocab_size": 1000, "dim": 64, "depth": 1, "heads": 4,
                                                      "max_length": 48}},
        "featurizer": {"buckets": 256}}
MODELS = {
    "image+vitals intermediate (target model)": ({"image": IMAGE, "vitals": VITALS}, {"name": "intermediate"}),
    "image+vitals intermediate, stem 4": ({"image": IMAGE_STEM4, "vitals": VITALS}, {"name": "intermediate"}),
    "image+vitals late (learned)": ({"image": IMAGE, "vitals": VITALS}, {"name": "late", "params": {"rule": "learned"}}),
    "image+vitals+text early": ({"image": IMAGE, "vitals": VITALS, "text": TEXT}, {"name": "early"}),
    "image+vitals+text intermediate": ({"image": IMAGE, "vitals": VITALS, "text": TEXT}, {"name": "intermediate"}),
    "image+vitals+text late": ({"image": IMAGE, "vitals": VITALS, "text": TEXT},
                               {"name": "late", "params": {"rule": "learned"}}),
    "image+vitals+text cross_attention": ({"image": IMAGE, "vitals": VITALS, "text": TEXT},
                                          {"name": "cross_attention", "params": {"query": "text"}}),
    "image+vitals+text joint_embedding": ({"image": IMAGE, "vitals": VITALS, "text": TEXT},
                                          {"name": "joint_embedding"}),
}


def batch_of(modalities) -> MultimodalBatch:
    g = torch.Generator().manual_seed(0)
    inputs = {"image": torch.rand(BATCH, 1, 100, 100, generator=g), "vitals": torch.randn(BATCH, 6, generator=g)}
    masks = {}
    if "text" in modalities:
        inputs["text"] = torch.randint(5, 1000, (BATCH, 48), generator=g)
        masks["text"] = torch.ones(BATCH, 48, dtype=torch.bool)
    return MultimodalBatch(inputs=inputs, masks=masks, labels=torch.randint(0, 2, (BATCH,), generator=g))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    for name, (modalities, fusion) in MODELS.items():
        model = build_model({"num_classes": 2, "modalities": modalities, "fusion": fusion})
        samples_per_s = measure_training_throughput(model, batch_of(modalities), steps=args.steps)
        row = {"model": name, "parameters": count_parameters(model)["trainable"], "samples_per_s": samples_per_s}
        rows.append(row)
        print(f"{name:42s} params {row['parameters']:>9,}  {samples_per_s:7.0f} samples/s", flush=True)
    result = {"machine": {"processor": platform.processor() or platform.machine(), "threads": 2,
                          "torch": torch.__version__}, "batch": BATCH, "image": [1, 100, 100], "rows": rows,
              "target_samples_per_s": 400}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

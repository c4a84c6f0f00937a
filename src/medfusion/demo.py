"""A short end-to-end run of every fusion strategy on random-but-valid toy tensors.

The toy task plants a binary label in three modalities (text + image + vitals, the
triage trio), each modality carrying part of the evidence, and hides 20% of each
modality at random:

- image (1, 32, 32): noise, plus a bright 8x8 blob on the left when y = 1 and on the
  right when y = 0 (85% of samples; the rest get the opposite side);
- text: random token ids, with the "finding" token 7 present in 75% of positives and
  25% of negatives;
- vitals (8 features): feature 0 drawn from N(y, 1), the others pure noise, 10% of
  values unobserved.

Each strategy is trained with Adam for a few hundred steps on fresh batches and
evaluated on a fixed held-out set, whole and with the image removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from rich.progress import Progress

from medfusion.metrics import accuracy, binary_auroc
from medfusion.models import MultimodalClassifier, build_model
from medfusion.types import MultimodalBatch

TOY_VOCAB = 1000
TOY_LENGTH = 24
FINDING_TOKEN = 7

#: Toy model settings: small encoders sized for a CPU demo.
TOY_MODALITIES = {
    "text": {"encoder": {"name": "transformer", "params": {"vocab_size": TOY_VOCAB, "dim": 32, "depth": 1,
                                                           "heads": 4, "max_length": TOY_LENGTH}},
             "featurizer": {"buckets": 128}},
    "image": {"encoder": {"name": "cnn", "params": {"in_channels": 1, "widths": [8, 16, 32], "out_dim": 32}},
              "featurizer": {"channels": 1, "size": 8}},
    "vitals": {"encoder": {"name": "mlp", "params": {"num_features": 8, "hidden": 32, "out_dim": 32}},
               "featurizer": {"num_features": 8}},
}

#: Strategy name -> fusion config.
STRATEGIES = {
    "early": {"name": "early", "params": {"hidden": 64}},
    "intermediate": {"name": "intermediate"},
    "late/average": {"name": "late", "params": {"rule": "average", "hidden": 32}},
    "late/learned": {"name": "late", "params": {"rule": "learned", "hidden": 32}},
    "late/mlp": {"name": "late", "params": {"rule": "mlp", "hidden": 32}},
    "cross_attention": {"name": "cross_attention", "params": {"query": "text", "dim": 32, "heads": 4}},
    "joint_embedding": {"name": "joint_embedding", "params": {"embed_dim": 32}},
}


def toy_batch(batch_size: int, generator: torch.Generator, missing_rate: float = 0.2) -> MultimodalBatch:
    """A random-but-valid text + image + vitals batch with a planted binary label."""
    g = generator
    y = torch.randint(0, 2, (batch_size,), generator=g)

    image = 0.5 * torch.randn(batch_size, 1, 32, 32, generator=g)
    left = (y == 1) ^ (torch.rand(batch_size, generator=g) < 0.15)
    start = torch.where(left, 4, 20).unsqueeze(1)
    columns = torch.arange(32).unsqueeze(0)
    blob = ((columns >= start) & (columns < start + 8)).float()  # (B, 32)
    image[:, 0, 12:20, :] += blob.unsqueeze(1)

    ids = torch.randint(10, TOY_VOCAB, (batch_size, TOY_LENGTH), generator=g)
    has_finding = torch.rand(batch_size, generator=g) < torch.where(y == 1, 0.75, 0.25)
    position = torch.randint(1, TOY_LENGTH - 1, (batch_size,), generator=g)
    ids[has_finding, position[has_finding]] = FINDING_TOKEN
    lengths = torch.randint(TOY_LENGTH // 2, TOY_LENGTH + 1, (batch_size,), generator=g)
    text_mask = torch.arange(TOY_LENGTH).unsqueeze(0) < lengths.unsqueeze(1)
    text_mask[has_finding, position[has_finding]] = True
    ids = torch.where(text_mask, ids, torch.zeros((), dtype=ids.dtype))

    vitals = torch.randn(batch_size, 8, generator=g)
    vitals[:, 0] += y.float()
    observed = torch.rand(batch_size, 8, generator=g) >= 0.1

    present = {m: torch.rand(batch_size, generator=g) >= missing_rate for m in ("image", "text", "vitals")}
    nobody = ~(present["image"] | present["text"] | present["vitals"])
    present["image"] = present["image"] | nobody
    return MultimodalBatch(
        inputs={"text": ids, "image": image, "vitals": vitals},
        present=present,
        masks={"text": text_mask, "vitals": observed},
        labels=y,
    )


def toy_config(strategy: str) -> dict:
    """Model config dict of a demo strategy."""
    return {"num_classes": 2, "modalities": TOY_MODALITIES, "fusion": STRATEGIES[strategy]}


@dataclass
class DemoResult:
    """Measured figures of one strategy."""

    strategy: str
    parameters: int
    train_seconds: float
    forward_ms: float
    accuracy: float
    auroc: float
    auroc_without_image: float


def evaluate(model: MultimodalClassifier, batch: MultimodalBatch) -> tuple[float, float]:
    """(accuracy, AUROC) of ``model`` on ``batch``."""
    model.eval()
    with torch.no_grad():
        logits = model(batch).logits
    return accuracy(logits, batch.labels), binary_auroc(logits.softmax(dim=1)[:, 1], batch.labels)


def without(batch: MultimodalBatch, modality: str) -> MultimodalBatch:
    """``batch`` with ``modality`` marked absent for every sample (samples left empty are dropped)."""
    present = dict(batch.present)
    present[modality] = torch.zeros(batch.batch_size, dtype=torch.bool)
    keep = torch.stack([present[m] for m in present], dim=1).any(dim=1)
    return MultimodalBatch(
        inputs={m: x[keep] for m, x in batch.inputs.items()},
        present={m: p[keep] for m, p in present.items()},
        masks={m: x[keep] for m, x in batch.masks.items()},
        labels=batch.labels[keep],
    )


def run_strategy(strategy: str, steps: int, batch_size: int, seed: int, test: MultimodalBatch,
                 progress: Progress | None = None) -> DemoResult:
    """Train one strategy on fresh toy batches and measure it."""
    torch.manual_seed(seed)
    model = build_model(toy_config(strategy))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed + 1)
    task = progress.add_task(strategy, total=steps) if progress else None
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        _, losses = model.loss(toy_batch(batch_size, generator))
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        if progress:
            progress.advance(task)
    train_seconds = time.perf_counter() - start

    model.eval()
    sample = toy_batch(32, torch.Generator().manual_seed(seed + 2))
    with torch.no_grad():
        model(sample)
        timings = []
        for _ in range(10):
            t0 = time.perf_counter()
            model(sample)
            timings.append(time.perf_counter() - t0)
    acc, auroc = evaluate(model, test)
    _, auroc_no_image = evaluate(model, without(test, "image"))
    return DemoResult(
        strategy=strategy,
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        train_seconds=train_seconds,
        forward_ms=1000 * sorted(timings)[len(timings) // 2],
        accuracy=acc,
        auroc=auroc,
        auroc_without_image=auroc_no_image,
    )


def run_demo(steps: int = 300, batch_size: int = 32, test_size: int = 1024, seed: int = 0,
             strategies: list[str] | None = None) -> list[DemoResult]:
    """Train and measure every strategy (or ``strategies``) on the toy task.

    Raises:
        ValueError: on an unknown strategy name.
    """
    names = strategies or list(STRATEGIES)
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"demo: unknown strategies {unknown}; known: {list(STRATEGIES)}")
    test = toy_batch(test_size, torch.Generator().manual_seed(seed + 10_000))
    with Progress(transient=True) as progress:
        return [run_strategy(name, steps, batch_size, seed, test, progress) for name in names]

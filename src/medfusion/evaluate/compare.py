"""The measured comparison of fusion strategies (``medfusion compare`` and ``medfusion demo``).

Trains every strategy and each unimodal baseline on the same patient-level splits of one
synthetic cohort, over several seeds, evaluates every run on the test split, and writes
``results.json`` (then the report, :mod:`medfusion.evaluate.report`). Nothing is lost when
the job is interrupted: the cohort, every finished run (``run.json``) and every finished
evaluation (``evaluation.json``) are kept and reused by the next invocation with the same
output folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medfusion.evaluate import studies
from medfusion.evaluate.metrics import delong_test, seed_summary
from medfusion.files import atomic_write_text
from medfusion.train.config import TrainConfig, load_train_config
from medfusion.train.run import load_trained, train

#: Fusion strategies, from simplest to most complex (the order of significance tests).
STRATEGIES = ("early", "intermediate", "late", "cross_attention", "joint_embedding")
Progress = Callable[[str], None]


class CompareSettings(BaseModel):
    """What the comparison runs."""

    model_config = ConfigDict(extra="forbid")

    scenario: str = Field("triage", description="synthetic scenario")
    patients: int = Field(1500, ge=50)
    image_size: int = Field(64, ge=32)
    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    unimodal: bool = Field(True, description="also train one intermediate model per single modality")
    learning_fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5],
                                            description="shares of training patients for learning curves (seed 0)")
    max_epochs: int = Field(6, ge=1)
    n_boot: int = Field(500, ge=50, description="bootstrap resamples for confidence intervals")
    configs: Path | None = Field(None, description="folder with <strategy>.yaml [default: configs/<scenario>]")
    out: Path = Field(Path("runs/compare"))


#: Scenarios whose generator takes an image size (the others have fixed-size modalities).
IMAGE_SIZE_SCENARIOS = ("triage", "pathology", "retrieval")


def config_folder(settings: CompareSettings) -> Path:
    """The folder of the strategy configs: ``settings.configs`` or ``configs/<scenario>``."""
    return settings.configs if settings.configs is not None else Path("configs") / settings.scenario


def ensure_cohort(settings: CompareSettings, progress: Progress) -> Path:
    """The cohort's manifest, generating and writing it on first use.

    Raises:
        ValueError: on an unknown scenario (listing the known ones).
    """
    from medfusion.data.synthetic.scenarios import SCENARIOS, synthesize

    if settings.scenario not in SCENARIOS:
        raise ValueError(f"compare: unknown scenario {settings.scenario!r}; available: {sorted(SCENARIOS)}")
    manifest = settings.out / "data" / "manifest.parquet"
    if not manifest.is_file():
        progress(f"generating {settings.patients} synthetic {settings.scenario} patients")
        options: dict[str, Any] = {"image_size": max(settings.image_size, 64) if settings.scenario == "pathology"
                                   else settings.image_size} if settings.scenario in IMAGE_SIZE_SCENARIOS else {}
        if settings.scenario == "triage":
            options["image_formats"] = ("png",)
        synthesize(settings.scenario, settings.patients, settings.seeds[0], manifest.parent, **options)
    return manifest


def load_ground_truth_masks(manifest: Path) -> dict[str, np.ndarray] | None:
    """The cohort's ground-truth masks (pointing game), or None when the scenario writes none."""
    from medfusion.data.synthetic.files import load_masks

    if not (manifest.parent / "ground_truth" / "masks.npz").is_file():
        return None
    return load_masks(manifest.parent)


def unimodal_names(settings: CompareSettings, manifest: Path) -> list[str]:
    """``only_<modality>`` for every modality of the scenario's intermediate-fusion config."""
    config = run_config(settings, manifest, "intermediate", settings.seeds[0])
    return [f"only_{m}" for m in sorted(config.model.modalities)]


def run_config(settings: CompareSettings, manifest: Path, name: str, seed: int, fraction: float = 1.0) -> TrainConfig:
    """The training config of one run: a strategy, or ``only_<modality>`` (intermediate fusion on one modality)."""
    strategy = "intermediate" if name.startswith("only_") else name
    path = config_folder(settings) / f"{strategy}.yaml"
    if not path.is_file():
        raise ValueError(f"compare: no config for strategy {strategy!r}: expected {path}")
    suffix = f"seed{seed}" + ("" if fraction == 1.0 else f"_frac{fraction:g}")
    overrides: dict[str, Any] = {
        "seed": seed, "data": {"manifest": str(manifest.resolve()), "train_fraction": fraction},
        "optim": {"max_epochs": settings.max_epochs},
        "run": {"out": str((settings.out / "runs" / name / suffix).resolve()), "progress": False}}
    config = load_train_config(path, overrides)
    if name.startswith("only_"):
        modality = name.removeprefix("only_")
        config.data.modalities = {m: c for m, c in config.data.modalities.items() if m == modality}
        if modality != "vitals":
            config.data.vitals_columns = []
        config.model.modalities = {modality: config.model.modalities[modality]}
        config.model.modality_dropout = 0.0
        config = TrainConfig.model_validate(config.model_dump())
    return config


def trained(config: TrainConfig, progress: Progress, label: str) -> dict[str, Any]:
    """``run.json`` of the run, training it first unless it already finished."""
    summary = Path(config.run.out) / "run.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    progress(f"training {label}")
    return train(config)


def evaluated(config: TrainConfig, settings: CompareSettings, masks, full: bool, progress: Progress,
              label: str) -> dict[str, Any]:
    """``evaluation.json`` of a finished run, computing it first unless it exists."""
    out = Path(config.run.out)
    path = out / "evaluation.json"
    if path.is_file():
        return json.loads(path.read_text())
    progress(f"evaluating {label}")
    model, data, _ = load_trained(out)
    predictions, metrics, threshold = studies.performance(model, data, settings.n_boot, config.seed)
    np.savez(out / "test_predictions.npz", labels=predictions.labels, probs=predictions.probs)
    result: dict[str, Any] = {"metrics": metrics, "threshold": threshold}
    if full:
        result["missing"] = studies.missing_modalities(model, data, config.seed)
        result["retrieval"] = studies.retrieval_recall(model, data)
        result["explanation"] = studies.explanation(model, data, masks)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def run_comparison(settings: CompareSettings, progress: Progress = print) -> dict[str, Any]:
    """Train and evaluate everything; write and return ``results.json``."""
    start = time.perf_counter()
    settings.out.mkdir(parents=True, exist_ok=True)
    manifest = ensure_cohort(settings, progress)
    masks = load_ground_truth_masks(manifest)
    names = list(settings.strategies)
    if settings.unimodal:
        names += unimodal_names(settings, manifest)
    results: dict[str, Any] = {"settings": json.loads(settings.model_dump_json()), "runs": {}}
    for name in names:
        entry: dict[str, Any] = {"seeds": {}}
        for seed in settings.seeds:
            config = run_config(settings, manifest, name, seed)
            label = f"{name} (seed {seed})"
            run = trained(config, progress, label)
            entry["seeds"][str(seed)] = {"run": run, "dir": str(config.run.out),
                                         "evaluation": evaluated(config, settings, masks, True, progress, label)}
        entry["cost"] = measured_cost(Path(run_config(settings, manifest, name, settings.seeds[0]).run.out),
                                      progress, name)
        entry["summary"] = summarise(entry["seeds"])
        if not name.startswith("only_"):
            entry["learning_curve"] = learning_curve(settings, manifest, name, progress)
            entry["modularity"] = modularity(settings, manifest, name, progress)
        results["runs"][name] = entry
        atomic_write_text(settings.out / "results.json", json.dumps(results, indent=2))
    results["significance"] = significance(settings, manifest, names)
    results["seconds"] = time.perf_counter() - start
    atomic_write_text(settings.out / "results.json", json.dumps(results, indent=2))
    return results


def measured_cost(run_dir: Path, progress: Progress, name: str) -> dict[str, Any]:
    """``cost.json`` of a run: parameters, MACs, latency, throughput, memory (measured once, then reused)."""
    from medfusion.evaluate.cost import cost_report

    path = run_dir / "cost.json"
    if path.is_file():
        return json.loads(path.read_text())
    progress(f"measuring the cost of {name}")
    model, data, _ = load_trained(run_dir)
    cost = cost_report(model, studies.first_batch(data, 1)[0], studies.first_batch(data, 32)[0])
    atomic_write_text(path, json.dumps(cost, indent=2))
    return cost


def summarise(seeds: dict[str, Any]) -> dict[str, Any]:
    """Mean and 95% t-interval across seeds of each metric, drop and ablation AUROC."""
    evaluations = [s["evaluation"] for s in seeds.values()]
    summary: dict[str, Any] = {"metrics": {}, "drop": {}, "curve": {}, "ablation": {}}
    for metric in evaluations[0]["metrics"]:
        summary["metrics"][metric] = list(seed_summary([e["metrics"][metric][0] for e in evaluations]))
    for part in ("drop", "ablation"):
        for key in evaluations[0]["missing"][part]:
            summary[part][key] = list(seed_summary([e["missing"][part][key] for e in evaluations]))
    for m, curve in evaluations[0]["missing"]["curve"].items():
        summary["curve"][m] = {rate: float(np.mean([e["missing"]["curve"][m][rate] for e in evaluations]))
                               for rate in curve}
    summary["train_seconds"] = float(np.mean([s["run"]["train_seconds"] for s in seeds.values()]))
    return summary


#: The swapped-in text encoder of the modularity study: same width, deeper (2 layers instead of 1).
SWAP_MODALITY = "text"


def modularity(settings: CompareSettings, manifest: Path, name: str, progress: Progress) -> dict[str, Any]:
    """Swap the text encoder of the first seed's model for a new one (same output width, two
    layers) and retrain only what the strategy needs: late fusion retrains the new encoder
    and its own classifier (the other modalities' encoders and classifiers stay frozen);
    every other strategy must retrain the new encoder and the fusion (and head), with the
    other encoders frozen. Reports the test AUROC before and after and the share of the
    model's parameters that had to be retrained.
    """
    from medfusion.data.tokenizer import WordPieceTokenizer
    from medfusion.encoders.base import ENCODERS
    from medfusion.train.data import TOKENIZER_FILE

    base = run_config(settings, manifest, name, settings.seeds[0])
    out = settings.out / "runs" / name / f"swap_{SWAP_MODALITY}"
    path = out / "modularity.json"
    if path.is_file():
        return json.loads(path.read_text())
    model, _, _ = load_trained(base.run.out)
    if SWAP_MODALITY not in model.modalities or model.fusion.takes_raw_inputs:
        return {"swappable": False, "reason": "early fusion has no modality encoder: any change retrains the network"}
    progress(f"swapping the {SWAP_MODALITY} encoder of {name}")
    config = base.model_copy(deep=True)
    encoder = config.model.encoder_for(SWAP_MODALITY)
    old = model.encoders[SWAP_MODALITY]
    encoder.params = {**encoder.params, "depth": 2, "vocab_size": old.vocab_size, "max_length": old.max_length}
    config.model.modalities[SWAP_MODALITY].encoder = encoder
    config.run.out = out.resolve()
    model.encoders[SWAP_MODALITY] = ENCODERS[SWAP_MODALITY].build(encoder.name, **encoder.params)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    retrained = [model.encoders[SWAP_MODALITY]]
    if model.fusion.__class__.__name__ == "LateFusion":
        retrained.append(model.fusion.classifiers[SWAP_MODALITY])
    else:
        retrained += [model.fusion] + ([model.head] if model.head is not None else [])
    for module in retrained:
        module.requires_grad_(True)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokenizer = WordPieceTokenizer.from_file(Path(base.run.out) / TOKENIZER_FILE)
    summary = train(config, initial=model, tokenizer=tokenizer)
    before = json.loads((Path(base.run.out) / "evaluation.json").read_text())["metrics"]["auroc"][0]
    after = evaluated(config, settings, None, False, progress, f"{name} with a new {SWAP_MODALITY} encoder")
    result = {"swappable": True, "modality": SWAP_MODALITY, "auroc_before": before,
              "auroc_after": after["metrics"]["auroc"][0], "retrained_parameters": trainable,
              "retrained_share": trainable / total, "train_seconds": summary["train_seconds"]}
    result["auroc_change"] = result["auroc_after"] - before
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def learning_curve(settings: CompareSettings, manifest: Path, name: str, progress: Progress) -> dict[str, float]:
    """Test AUROC at each share of training patients (first seed); 1.0 is the main run."""
    curve = {}
    for fraction in sorted(settings.learning_fractions):
        config = run_config(settings, manifest, name, settings.seeds[0], fraction)
        label = f"{name} on {fraction:.0%} of training patients"
        trained(config, progress, label)
        curve[f"{fraction:g}"] = evaluated(config, settings, None, False, progress, label)["metrics"]["auroc"][0]
    main = run_config(settings, manifest, name, settings.seeds[0])
    curve["1"] = json.loads((Path(main.run.out) / "evaluation.json").read_text())["metrics"]["auroc"][0]
    return curve


def significance(settings: CompareSettings, manifest: Path, names: list[str]) -> list[dict[str, Any]]:
    """DeLong tests on the test predictions, per seed: each fusion strategy against every
    simpler one and against every unimodal baseline."""
    def probs(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        out = Path(run_config(settings, manifest, name, seed).run.out)
        with np.load(out / "test_predictions.npz") as data:
            return data["labels"], data["probs"]

    fusion = [n for n in STRATEGIES if n in names]
    pairs = [(a, b) for i, b in enumerate(fusion) for a in fusion[:i]]
    pairs += [(u, b) for b in fusion for u in names if u.startswith("only_")]
    tests = []
    for simpler, complex_ in pairs:
        for seed in settings.seeds:
            labels, a = probs(simpler, seed)
            _, b = probs(complex_, seed)
            test = delong_test(labels, a, b)
            tests.append({"simpler": simpler, "complex": complex_, "seed": seed,
                          **{k: float(v) for k, v in test.items()}})
    return tests

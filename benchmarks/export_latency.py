"""Batch-1 latency of triage models: PyTorch against ONNX Runtime, float and dynamic int8.

For each run (``--run``, repeatable; by default an early-fusion and a late-fusion triage
run trained here for a few epochs from ``configs/triage/{early,late}.yaml`` on a
synthetic cohort), the model is exported to ONNX (float and int8, each verified against
PyTorch on the test split) and one test patient (X-ray + note + vitals) is predicted
``--repeats`` times by: the PyTorch model (``model(batch)``, input checks included), ONNX
Runtime through :class:`~medfusion.deploy.OnnxClassifier` (input checks and padding
included), and the bare ONNX Runtime session on prepared inputs. Same threads for
PyTorch and ONNX Runtime. Results go to ``benchmarks/results/export_latency.json``.

Usage::

    python benchmarks/export_latency.py [--run runs/triage/early ...] [--patients 300] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medfusion.data.synthetic.scenarios import synthesize
from medfusion.deploy import OnnxClassifier, export_model
from medfusion.deploy.runtime import complete_inputs
from medfusion.files import atomic_write_text
from medfusion.train.config import load_train_config
from medfusion.train.run import load_trained, train


def time_call(call: Callable[[], object], repeats: int, warmup: int = 20) -> dict[str, float]:
    """Percentiles (ms) of the wall-clock time of ``call`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": statistics.fmean(times), "repeats": repeats}


def train_runs(folder: Path, patients: int, epochs: int, threads: int) -> list[Path]:
    """Early- and late-fusion triage runs trained on a synthetic cohort under ``folder``."""
    _, manifest = synthesize("triage", patients, seed=0, out=folder / "data", image_size=128)
    runs = []
    for strategy in ("early", "late"):
        out = folder / "runs" / strategy
        overrides = {"data": {"manifest": str(manifest)}, "optim": {"max_epochs": epochs},
                     "run": {"out": str(out), "progress": False, "threads": threads}}
        train(load_train_config(Path("configs/triage") / f"{strategy}.yaml", overrides))
        runs.append(out)
    return runs


def benchmark_run(run: Path, folder: Path, repeats: int, threads: int) -> dict:
    """Exports and batch-1 latencies of one run."""
    model, data, config = load_trained(run)
    batch = next(iter(data.loader("test", usable_only=True))).select(torch.tensor([0]))
    result = {"fusion": config.model.fusion.name, "parameters": sum(p.numel() for p in model.parameters())}
    with torch.no_grad():
        result["pytorch"] = time_call(lambda: model(batch), repeats)
    for name, quantize in (("onnx", False), ("onnx_int8", True)):
        report = export_model(run, folder / f"{run.name}-{name}.onnx", quantize=quantize)
        runtime = OnnxClassifier(report.path, threads=threads)
        feeds = complete_inputs(runtime.spec, batch)
        result[name] = {
            "runtime": time_call(lambda: runtime.predict_proba(batch), repeats),
            "session": time_call(lambda: runtime.session.run(["probability"], feeds), repeats),
            "size_bytes": report.size_bytes,
            "max_abs_diff_vs_pytorch": report.verification.max_abs_diff,
        }
        if report.quantization is not None:
            q = report.quantization
            result[name].update(auroc_float=q.auroc_float, auroc_int8=q.auroc_quantized,
                                auroc_change=q.auroc_change, max_abs_diff_vs_float=q.max_abs_diff)
    return result


def print_table(results: dict[str, dict]) -> None:
    print(f"{'run':<12} {'path':<28} {'p50 ms':>8} {'p99 ms':>8} {'size':>10}")
    for run, r in results.items():
        print(f"{run:<12} {'pytorch model(batch)':<28} {r['pytorch']['p50_ms']:>8.3f} {r['pytorch']['p99_ms']:>8.3f}")
        for name in ("onnx", "onnx_int8"):
            for part in ("runtime", "session"):
                t = r[name][part]
                print(f"{run:<12} {name + ' ' + part:<28} {t['p50_ms']:>8.3f} {t['p99_ms']:>8.3f} "
                      f"{r[name]['size_bytes']:>10,}")
        q = r["onnx_int8"]
        change = "n/a" if q["auroc_change"] is None else f"{q['auroc_change']:+.4f}"
        print(f"{run:<12} parity float {r['onnx']['max_abs_diff_vs_pytorch']:.1e}; int8 AUROC "
              f"{q['auroc_float']} -> {q['auroc_int8']} ({change}), max |dp| {q['max_abs_diff_vs_float']:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, action="append", help="a finished triage run (repeatable)")
    parser.add_argument("--patients", type=int, default=300, help="cohort size when training here")
    parser.add_argument("--epochs", type=int, default=3, help="epochs when training here")
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="medfusion-export-latency-") as tmp:
        folder = Path(tmp)
        runs = args.run or train_runs(folder, args.patients, args.epochs, args.threads)
        torch.set_num_threads(args.threads)  # training sets its own thread count
        results = {run.name: benchmark_run(run, folder, args.repeats, args.threads) for run in runs}
    print_table(results)
    import onnxruntime

    summary = {"runs": results, "trained_here": not args.run, "patients": None if args.run else args.patients,
               "epochs": None if args.run else args.epochs, "batch_size": 1,
               "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    atomic_write_text(args.out, json.dumps(summary, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

"""Cross-attention latency as the number of key tokens grows: the quadratic term and what SDPA saves.

One :class:`~medfusion.fusion.cross_attention.CrossAttentionLayer` (dim 64, 4 heads), batch 8,
64 query tokens (a report) attending to N key tokens (image patches), N = 64 ... 4096, and
self-attention over N tokens (Nq = Nk = N, the quadratic case). Each is timed with the fused
``scaled_dot_product_attention`` path and with the explicit path that materialises the
(B, heads, Nq, Nk) weights (needed for attention maps). Median of repeated runs, 2 threads.

Usage::

    python benchmarks/cross_attention.py [--out benchmarks/results/cross_attention.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medfusion.files import atomic_write_text
from medfusion.fusion.cross_attention import CrossAttentionLayer

DIM, HEADS, BATCH, QUERY = 64, 4, 8, 64
KEYS = (64, 256, 1024, 2048, 4096)


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cross_attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    layer = CrossAttentionLayer(DIM, HEADS).eval()
    rows = []
    with torch.no_grad():
        for n in KEYS:
            row = {"key_tokens": n}
            for case, nq in (("cross", QUERY), ("self", n)):
                q, k = torch.randn(BATCH, nq, DIM), torch.randn(BATCH, n, DIM)
                mask = torch.ones(BATCH, n, dtype=torch.bool)
                for path, weights in (("sdpa", False), ("explicit", True)):
                    row[f"{case}_{path}_ms"] = median_ms(lambda q=q, k=k, m=mask, w=weights: layer(q, k, m, w),
                                                         args.repeats)
            rows.append(row)
            print(f"N={n:5d}  cross (Nq={QUERY}): sdpa {row['cross_sdpa_ms']:8.2f} ms, explicit "
                  f"{row['cross_explicit_ms']:8.2f} ms   self (Nq=N): sdpa {row['self_sdpa_ms']:9.2f} ms, "
                  f"explicit {row['self_explicit_ms']:9.2f} ms", flush=True)
    last, first = rows[-1], rows[0]
    growth = KEYS[-1] / KEYS[0]
    summary = {"key_growth": growth,
               "cross_sdpa_time_growth": last["cross_sdpa_ms"] / first["cross_sdpa_ms"],
               "self_sdpa_time_growth": last["self_sdpa_ms"] / first["self_sdpa_ms"],
               "self_explicit_time_growth": last["self_explicit_ms"] / first["self_explicit_ms"],
               "sdpa_saving_at_largest_self": 1 - last["self_sdpa_ms"] / last["self_explicit_ms"]}
    print(json.dumps(summary, indent=2))
    result = {"machine": {"processor": platform.processor() or platform.machine(), "threads": 2,
                          "torch": torch.__version__},
              "dim": DIM, "heads": HEADS, "batch": BATCH, "query_tokens": QUERY, "rows": rows, "summary": summary}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

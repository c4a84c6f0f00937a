"""Synthetic cohort generation speed: arrays in memory, then every file written.

Target (DESIGN.md): 10k triage patients with all modalities in <= 60 s on 2 cores.
Measures ``generate_triage`` (X-rays 128x128, notes, vitals, masks) and
``write_triage_cohort`` (PNG + DICOM + note files, manifest, masks) separately, one run
per size (generation is deterministic; timings vary by a few percent).

Usage::

    python benchmarks/synth.py [--patients 1000 10000] [--out benchmarks/results/synth.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from medfusion.data.synthetic import generate_triage
from medfusion.data.synthetic.files import write_triage_cohort
from medfusion.files import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synth.json"))
    args = parser.parse_args()
    rows = []
    for n in args.patients:
        folder = Path(tempfile.mkdtemp(prefix="medfusion-synth-"))
        try:
            start = time.perf_counter()
            cohort = generate_triage(n, seed=0)
            generated = time.perf_counter()
            write_triage_cohort(cohort, folder, image_formats=("png", "dicom"))
            written = time.perf_counter()
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row = {"patients": n, "generate_s": generated - start, "write_s": written - generated,
               "total_s": written - start, "patients_per_s": n / (written - start), "bytes_written": size}
        rows.append(row)
        print(f"{n:>7} patients  generate {row['generate_s']:6.2f} s  write {row['write_s']:6.2f} s  "
              f"total {row['total_s']:6.2f} s  ({row['patients_per_s']:.0f} patients/s, {size / 1e6:.0f} MB)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
              "scenario": "triage", "image_size": 128, "image_formats": ["png", "dicom"], "rows": rows,
              "peak_rss_mb": peak_mb}
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"peak memory {peak_mb:.0f} MB; written {args.out}")


if __name__ == "__main__":
    main()

"""Load test of the web service: N concurrent clients on loopback for a bounded time, /predict and /search.

The service (:func:`medfusion.serve.create_app` in uvicorn) runs in its own process, started
here from the given runs (or an already running one is targeted with ``--url``), so the
clients do not share its interpreter. ``--clients`` asyncio clients (one httpx
``AsyncClient`` with that many connections) send requests back to back for ``--seconds``
per phase, each with the bearer token:

- ``predict``: triage cases of the run's test split, cycled: the X-ray file's bytes, the
  vitals as JSON and the note (every modality, from raw files, contributions included);
- ``search``: text queries, top 5;
- ``mixed``: half the clients on each route at once.

Per phase and route: completed requests, throughput (requests/s), client-side latency p50 /
p99 / max (ms), and errors (transport failures or a status other than 200, by kind).
Latency includes the upload and the response; with the clients and the server on the same
2 cores, it also includes the clients' own CPU time.

    .venv/bin/python benchmarks/load_test.py --model runs/triage/early \\
        --index index/retrieval_100k --search-model runs/retrieval/clip --clients 8 --seconds 20

Writes ``benchmarks/results/load_test.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from medfusion.data.datasets.manifest import is_text_path, read_manifest
from medfusion.files import atomic_write_text
from medfusion.train.config import load_train_config

QUERIES = (
    "bilateral infiltrates with cardiomegaly", "right pleural effusion", "left lower lobe consolidation",
    "no acute cardiopulmonary abnormality", "the heart is enlarged", "small right apical pneumothorax",
    "pulmonary nodule in the right upper lobe", "moderate cardiomegaly without effusion",
)
SERVER = """
import json, sys, uvicorn
from medfusion.serve import create_app
options = json.loads(sys.argv[1])
uvicorn.run(create_app(**options["app"]), host="127.0.0.1", port=options["port"], access_log=False,
            log_level="warning")
"""


def triage_cases(run: Path, limit: int = 64) -> list[dict[str, Any]]:
    """Multipart fields of up to ``limit`` test-split patients with an X-ray (image bytes, vitals JSON, note)."""
    config = load_train_config(run / "config.yaml")
    frame, base = read_manifest(config.data.manifest)
    base = base or Path(config.data.manifest).parent
    image_column, text_column = config.data.modalities.get("image"), config.data.modalities.get("text")
    rows = frame[frame["split"] == config.data.splits["test"]] if "split" in frame else frame
    cases = []
    for _, row in rows.iterrows():
        if image_column is None or not isinstance(row[image_column], str) or not row[image_column]:
            continue
        data: dict[str, str] = {}
        vitals = {c: float(row[c]) for c in config.data.vitals_columns if pd.notna(row[c])}
        if vitals:
            data["vitals"] = json.dumps(vitals)
        note = row[text_column] if text_column else None
        if isinstance(note, str) and note.strip():
            data["note"] = (base / note).read_text(encoding="utf-8") if is_text_path(note) else note
        cases.append({"files": {"image": ("case", (base / row[image_column]).read_bytes())}, "data": data})
        if len(cases) == limit:
            break
    if not cases:
        raise ValueError(f"{run}: no test-split patient with an X-ray in {config.data.manifest}")
    return cases


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(options: dict[str, Any], token: str, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start the service in a subprocess; return it and its URL once /healthz answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps({"app": {**options, "token": token},
                                                                          "port": port})])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the service did not answer /healthz within {timeout:.0f} s")


async def client_loop(client: httpx.AsyncClient, route: str, requests: itertools.cycle, deadline: float,
                      record: dict[str, list]) -> None:
    """Send requests of one route back to back until the deadline; record latency and outcome."""
    while time.perf_counter() < deadline:
        request = next(requests)
        started = time.perf_counter()
        try:
            if route == "predict":
                response = await client.post("/predict", files=request["files"], data=request["data"])
            else:
                response = await client.get("/search", params={"q": request, "k": 5})
            outcome = str(response.status_code)
        except httpx.TransportError as error:
            outcome = type(error).__name__
        record[route].append((time.perf_counter() - started, outcome))


def summarise(samples: list[tuple[float, str]], seconds: float) -> dict[str, Any]:
    latencies = np.asarray([s for s, outcome in samples if outcome == "200"]) * 1e3
    errors = Counter(outcome for _, outcome in samples if outcome != "200")
    result: dict[str, Any] = {"requests": len(samples), "ok": int(latencies.size),
                              "throughput_per_s": latencies.size / seconds,
                              "errors": sum(errors.values()), "errors_by_kind": dict(errors)}
    if latencies.size:
        result.update(p50_ms=float(np.percentile(latencies, 50)), p99_ms=float(np.percentile(latencies, 99)),
                      max_ms=float(latencies.max()))
    return result


async def phase(url: str, token: str, routes: dict[str, int], cases: list, seconds: float) -> dict[str, Any]:
    """Run ``routes`` {route: clients} together for ``seconds``; summary per route."""
    total = sum(routes.values())
    limits = httpx.Limits(max_connections=total, max_keepalive_connections=total)
    record: dict[str, list] = {route: [] for route in routes}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0,
                                 limits=limits) as client:
        deadline = time.perf_counter() + seconds
        tasks = [client_loop(client, route, itertools.cycle(cases if route == "predict" else QUERIES),
                             deadline, record) for route, count in routes.items() for _ in range(count)]
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {route: {"clients": routes[route], **summarise(samples, elapsed)} for route, samples in record.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="classification run for /predict")
    parser.add_argument("--index", help="index folder for /search (without --url)")
    parser.add_argument("--search-model", type=Path, help="the run that built --index (without --url)")
    parser.add_argument("--url", help="a running service instead of starting one (with --token)")
    parser.add_argument("--token", default=os.environ.get("MEDFUSION_TOKEN"), help="token of the --url service")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/load_test.json"))
    args = parser.parse_args()
    if args.url is None and (args.index is None or args.search_model is None):
        parser.error("expected --index and --search-model to start the service, or --url of a running one")
    if args.clients < 2 or args.seconds <= 0:
        parser.error(f"expected --clients >= 2 and --seconds > 0, received {args.clients} and {args.seconds}")
    cases = triage_cases(args.model)
    token, process = args.token or secrets.token_urlsafe(16), None
    url, startup = args.url, None
    if url is None:
        started = time.perf_counter()
        options = {"model_run": str(args.model), "index": args.index, "search_model": str(args.search_model)}
        process, url = start_server(options, token)
        startup = time.perf_counter() - started
    try:
        warm = {"predict": 2, "search": 2}
        asyncio.run(phase(url, token, warm, cases, 2.0))
        half = args.clients // 2
        results = {name: asyncio.run(phase(url, token, routes, cases, args.seconds))
                   for name, routes in (("predict", {"predict": args.clients}), ("search", {"search": args.clients}),
                                        ("mixed", {"predict": half, "search": args.clients - half}))}
        entries = httpx.get(f"{url}/version", headers={"Authorization": f"Bearer {token}"}).json()
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    summary = {
        "settings": {"clients": args.clients, "seconds_per_phase": args.seconds, "predict_cases": len(cases),
                     "search_k": 5, "model": str(args.model), "index": args.index,
                     "index_entries": entries["models"]["search"]["entries"],
                     "fusion": entries["models"]["predict"]["fusion"], "server_startup_s": startup,
                     "server": "uvicorn, 1 process" if process is not None else args.url},
        "phases": results,
        "machine": {"processor": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    atomic_write_text(args.out, json.dumps(summary, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

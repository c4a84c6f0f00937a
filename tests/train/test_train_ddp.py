"""Distributed data parallel on CPU: two processes (gloo) through Lightning's "ddp" strategy.

"ddp" relaunches the command line in a second process, so the run goes through the
``medfusion train`` command in a subprocess of its own (relaunching pytest would rerun the
tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

SCRIPT = "from medfusion.cli import app\n\nif __name__ == '__main__':\n    app()\n"


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_and_checkpoints(make_config, tmp_path) -> None:
    out = tmp_path / "ddp"
    config = make_config(out, run={"strategy": "ddp", "accelerator": "cpu", "devices": 2})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    script = tmp_path / "medfusion_cli.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(MASTER_ADDR="127.0.0.1", COLUMNS="200")
    process = subprocess.Popen([sys.executable, str(script), "train", str(path), "--max-epochs", "1"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the run and the rank it launched
        output, _ = process.communicate()
        pytest.fail(f"2-process DDP run did not finish in 300 s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output, output[-4000:]

    summary = json.loads((out / "run.json").read_text())
    assert summary["epochs"] == 1 and summary["best_checkpoint"] == "checkpoints/best.ckpt"
    assert "test/auroc" in summary["test"] and 0.0 <= summary["test"]["test/auroc"] <= 1.0
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert checkpoint["epoch"] == 0 and checkpoint["state_dict"], name
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/auroc" in header and "train/total" in header

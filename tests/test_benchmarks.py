"""The GPU benchmark script runs end to end as a CPU dry run (CI has no GPU; the real run needs one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run_writes_every_part(tmp_path):
    """Guards `make bench-gpu` failing on a GPU machine for a reason a CPU would have shown (an import, an option
    the CLI refuses, a config accelerate refuses): every part runs small and records what it measured."""
    out = tmp_path / "gpu.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--dry-run", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["dry_run"] and r["device"] == "cpu (dry run)" for r in records)
    throughput = [r for r in records if r["part"] == "throughput"]
    assert {(r["batch_size"], r["negatives"]) for r in throughput} == {(4, 1), (4, 3), (8, 1), (8, 3)}
    assert all(r["ratio_median"] > 0 and r["ours_examples_per_s"][0] > 0 for r in throughput)
    assert [r["validated"] for r in records if r["part"] in ("zero2", "zero3")] == ["DEEPSPEED", "DEEPSPEED"]
    [default] = [r for r in records if r["part"] == "default_recipe"]
    assert default["examples_per_s"] > 0


def test_real_run_refuses_without_a_gpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "benchmarks/gpu.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "no CUDA GPU visible" in result.stderr

"""Shared setup of the benchmarks: the default recipe's triplets, students, machine description."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from hf_margin.modeling import load_student
from hf_margin.recipe import build_triplets, parse_recipe
from hf_margin.resolve import resolve_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_RECIPE = ROOT / "recipes" / "stsb-adaptive.yaml"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    }


def default_setting(overrides: list[str] | None = None):
    """(model_args, data_args, args, splits, triplets) of the default recipe, triplets from the cache."""
    model_args, data_args, args = parse_recipe(DEFAULT_RECIPE, overrides or [])
    splits, triplets, teacher = build_triplets(model_args, data_args)
    del teacher
    return model_args, data_args, args, splits, triplets


def fresh_student(model_args):
    """The default student: the teacher's checkpoint with its first 2 layers, and its tokenizer."""
    from transformers import AutoTokenizer

    path = resolve_model(model_args.student or model_args.teacher)
    return load_student(path, layers=model_args.student_layers), AutoTokenizer.from_pretrained(path)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed run: that run is redone
            continue
    return records

"""The GPU benchmark (`make bench-gpu`): one command, no network, under 6 minutes on one GPU.

1. Throughput of MarginDistillTrainer against sentence-transformers' SentenceTransformerTrainer + MarginMSELoss at
   batch 32 and 256 x 1 and 4 negatives, bf16, alternating runs, the ratio as the median over pairs.
2. The default recipe under DeepSpeed ZeRO-2 and ZeRO-3 (one process): examples/s and peak GPU memory.
3. The default recipe's wall time, as a user runs it (bf16 and loader workers from `gpu_defaults`).
4. `race` (only when asked for: `--parts race`): benchmarks/race.py's fair race, both settings (host: 2 layers, 64
   tokens; compute: 6 layers, queries 64 and documents 256 tokens) at batch 32 and 256, 4 arms (sentence-transformers
   on its defaults and tuned, ours with and without `gpu_defaults`), `--race-pairs` alternating rounds, every run in
   its own process: 2 x 2 x 4 x 5 = 80 processes at the defaults, so tens of seconds of start-up each come on top
   of the steps (estimated 15 to 20 minutes; not yet timed on a GPU). Its runs go to benchmarks/results/race.jsonl
   (`python benchmarks/race.py --report` prints them), a summary of its pair ratios to gpu.jsonl.

Results are appended to benchmarks/results/gpu.jsonl, each naming the device. `--dry-run` runs the parts small on
the CPU (fp32, batches 4 and 8, 1 and 3 negatives, the README's example data, no DeepSpeed launch: its configs are
validated instead; `--parts race` as `race.py --dry-run`, its runs beside --out as `<out>-race.jsonl`; CI runs
race.py's own dry run) so CI checks the script itself; its records go to --out and say dry_run.

    python benchmarks/gpu.py [--steps 12] [--pairs 3] [--zero-steps 50] [--parts throughput zero2 zero3 default]
    python benchmarks/gpu.py --parts race [--race-pairs 5] [--race-steps 20]
    python benchmarks/gpu.py --dry-run --out /tmp/gpu-dry.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import RESULTS, ROOT, append_jsonl, bench_args, machine

RECIPE = ROOT / "recipes" / "stsb-adaptive.yaml"
EXAMPLES = ROOT / "recipes" / "examples"
PARTS = ("throughput", "zero2", "zero3", "default", "race")
DEFAULT_PARTS = ("throughput", "zero2", "zero3", "default")  # the race is asked for by name: it takes far longer


def setting(dry_run: bool):
    """(model_args, data_args, args, splits, triplets): the default recipe's STS-B triplets, or for a dry run the
    pre-scored example rows (no teacher, no mining) with a 1-layer student."""
    from benchmarks.common import default_setting

    if not dry_run:
        return default_setting()
    from hf_margin.app.recipes import parse_recipe
    from hf_margin.data.formats import normalize_dataset
    from hf_margin.data.sources import load_data_file

    model_args, data_args, _, args = parse_recipe(RECIPE, ["--student_layers", "0"])
    triplets, _ = normalize_dataset(load_data_file(EXAMPLES / "flag-scored.jsonl"))
    return model_args, data_args, args, None, {"train": triplets}


def throughput(base, batch: int, negatives: int, steps: int, pairs: int, bf16: bool) -> dict:
    from benchmarks.speed import ours, peer, with_negatives

    model_args, data_args, args, splits, triplets = base
    run = (model_args, data_args, bench_args(args, per_device_train_batch_size=batch, bf16=bf16), splits, triplets)
    data = with_negatives(triplets["train"], negatives)
    mine, theirs = [], []
    for _ in range(pairs):  # alternating, so drift of the machine hits both alike
        mine.append(ours(run, data, steps)[0])
        theirs.append(peer(run, data, steps))
    ratios = [a / b for a, b in zip(mine, theirs)]
    return {
        "part": "throughput",
        "batch_size": batch,
        "negatives": negatives,
        "bf16": bf16,
        "steps": steps,
        "ours_examples_per_s": mine,
        "peer_examples_per_s": theirs,
        "ratio_median": statistics.median(ratios),
    }


def race_run(dry_run: bool, pairs: int, steps: int, out: Path) -> dict:
    """benchmarks/race.py (its dry run on the CPU) in its own process, its runs appended to ``out``; the pair ratios
    of each setting x batch it wrote."""
    from benchmarks.common import read_jsonl

    before = len(read_jsonl(out))
    options = ["--dry-run"] if dry_run else ["--pairs", str(pairs), "--steps", str(steps), "--batches", "32", "256"]
    command = [sys.executable, str(ROOT / "benchmarks" / "race.py"), *options, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:  # its progress prints as it goes
        raise SystemExit(f"failed: {' '.join(command)} (its output is above; its records are in {out})")
    ratios = [r for r in read_jsonl(out)[before:] if r.get("kind") == "ratios"]
    return {
        "part": "race",
        "records": str(out),
        "pairs": pairs if not dry_run else 1,
        "ratios": [{k: r[k] for k in ("setting", "batch", "race_id", "summary")} for r in ratios],
    }


def hf_margin_run(launcher: list[str], options: list[str], out: Path, env: dict[str, str]) -> dict:
    """`hf-margin train OPTIONS` under ``launcher``; its examples/s, peak GPU memory and the student's STS-B test
    Spearman x100 after training (None when the run skipped the evaluation) from metrics.json."""
    start = time.perf_counter()
    command = [*launcher, "-m", "hf_margin", "train", *options, "--output_dir", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": time.perf_counter() - start,
        "examples_per_s": metrics.get("train_examples_per_s"),
        "peak_gpu_memory_mb": metrics.get("peak_gpu_memory_mb"),
        "train_runtime_s": metrics.get("train_runtime_s"),
        "test_spearman": (metrics.get("stsb_test_spearman") or {}).get("after"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--zero-steps", type=int, default=50)
    parser.add_argument("--race-pairs", type=int, default=5, help="Alternating rounds of the race part.")
    parser.add_argument("--race-steps", type=int, default=20, help="Timed steps per run of the race part.")
    parser.add_argument(
        "--parts", nargs="+", default=None, choices=list(PARTS),
        help="Run only these parts (default: all but race).",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="Small, on the CPU: checks the script, measures nothing."
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.jsonl")
    opts = parser.parse_args()
    if not opts.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run on a GPU machine, or --dry-run to check the script on the CPU")
    dry = opts.dry_run
    if opts.parts is None:
        opts.parts = list(DEFAULT_PARTS)
    device = "cpu (dry run)" if dry else torch.cuda.get_device_name(0)
    common = {"machine": machine(), "device": device, "dry_run": dry}
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""

    base = setting(dry) if dry or "throughput" in opts.parts else None
    batches, negatives = ((4, 8), (1, 3)) if dry else ((32, 256), (1, 4))
    steps, pairs = (4, 1) if dry else (opts.steps, opts.pairs)
    for batch in batches if "throughput" in opts.parts else ():
        for n in negatives:
            record = {**throughput(base, batch, n, steps, pairs, bf16=not dry), **common}
            append_jsonl(opts.out, record)
            print(f"batch {batch} x {n} negatives: ours/peer x{record['ratio_median']:.2f}", flush=True)

    if "race" in opts.parts:
        race_out = opts.out.with_name(f"{opts.out.stem}-race.jsonl") if dry else RESULTS / "race.jsonl"
        record = {**race_run(dry, opts.race_pairs, opts.race_steps, race_out), **common}
        append_jsonl(opts.out, record)
        for r in record["ratios"]:
            medians = ", ".join(f"{k} x{v['median']:.2f}" for k, v in r["summary"].items() if v["median"])
            print(f"race {r['setting']} batch {r['batch']}: {medians}", flush=True)

    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    with tempfile.TemporaryDirectory() as tmp:
        for zero in [p for p in ("zero2", "zero3") if p in opts.parts]:
            if dry:  # the DeepSpeed launcher needs GPUs: check the config as `accelerate launch` would
                from hf_margin.app.launch import accelerate_config_path, validate_accelerate_config

                record = {"part": zero, "validated": validate_accelerate_config(accelerate_config_path(zero))}
            else:
                options = [str(RECIPE), "--max_steps", str(opts.zero_steps), "--eval_strategy", "no"]
                launcher = [*accelerate, "--config_file", str(ROOT / "recipes" / "accelerate" / f"{zero}.yaml"),
                            "--num_processes", "1"]  # fmt: skip
                record = {"part": zero, **hf_margin_run(launcher, options, Path(tmp) / zero, env)}
            append_jsonl(opts.out, {**record, **common})
            print(zero, record, flush=True)
        if "default" not in opts.parts:
            return
        if dry:
            options = ["--train_file", str(EXAMPLES / "flag-scored.jsonl"), "--student", base[0].teacher,
                       "--student_layers", "0", "--max_steps", "2", "--eval_strategy", "no"]  # fmt: skip
        else:
            options = [str(RECIPE)]  # bf16, loader workers and pinned memory come from gpu_defaults
        record = {"part": "default_recipe", **hf_margin_run([sys.executable], options, Path(tmp) / "default", env)}
        append_jsonl(opts.out, {**record, **common})
        print("default recipe", record, flush=True)


if __name__ == "__main__":
    main()

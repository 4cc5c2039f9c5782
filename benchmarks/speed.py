"""Training throughput of MarginDistillTrainer against sentence-transformers' SentenceTransformerTrainer +
MarginMSELoss: same student (2 MiniLM layers), data, batch size, sequence length and threads; the two run
alternately, and the ratio is the median over pairs. Also writes a cProfile summary of our training step.

    python benchmarks/speed.py [--steps 16] [--pairs 3] [--negatives 1 4]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from benchmarks.common import (
    RESULTS,
    ROOT,
    append_jsonl,
    bench_args,
    default_setting,
    fresh_student,
    machine,
    peer_trainer,
)
from hf_margin import MarginDistillTrainer

OUT = RESULTS / "speed.jsonl"
WARMUP = 3


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimiser steps after the first WARMUP: data loading and collation
    (where the peer tokenises) included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last = 0.0

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if state.global_step > WARMUP:
            self.times.append(now - self._last)
        self._last = now


def with_negatives(triplets: Dataset, n: int) -> Dataset:
    return triplets.map(
        lambda r: {"negatives": r["negatives"][:n], "teacher_margins": r["teacher_margins"][:n]},
        desc=f"Keeping {n} negatives",
    )


def ours(setting, data: Dataset, steps: int, profile: bool = False) -> tuple[float, str]:
    model_args, _, args, _, _ = setting
    student, tokenizer = fresh_student(model_args)
    run_args = bench_args(args, max_steps=steps)
    timer = StepTimer()
    trainer = MarginDistillTrainer(student, run_args, train_dataset=data, processing_class=tokenizer, callbacks=[timer])
    summary = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        trainer.train()
        profiler.disable()
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(18)
        summary = buffer.getvalue()
    else:
        trainer.train()
    return args.per_device_train_batch_size / statistics.median(timer.times), summary


def peer(setting, data: Dataset, steps: int) -> float:
    model_args, _, args, _, _ = setting
    timer = StepTimer()
    trainer, _ = peer_trainer(model_args, args, data, callbacks=[timer], max_steps=steps)
    trainer.train()
    return args.per_device_train_batch_size / statistics.median(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--negatives", type=int, nargs="+", default=[1, 4])
    opts = parser.parse_args()
    setting = default_setting()
    for n in opts.negatives:
        data = with_negatives(setting[4]["train"], n)
        ratios, ours_eps, peer_eps = [], [], []
        for pair in range(opts.pairs):
            a, _ = ours(setting, data, opts.steps)
            b = peer(setting, data, opts.steps)
            ours_eps.append(a)
            peer_eps.append(b)
            ratios.append(a / b)
            print(f"negatives={n} pair {pair}: ours {a:.1f} ex/s, sentence-transformers {b:.1f} ex/s, x{a / b:.2f}")
        record = {
            "negatives": n,
            "ours_examples_per_s": ours_eps,
            "peer_examples_per_s": peer_eps,
            "ratio_median": statistics.median(ratios),
            "ratios": ratios,
            "steps": opts.steps,
            "warmup": WARMUP,
            "batch_size": setting[2].per_device_train_batch_size,
            "max_length": setting[2].max_length,
            "threads": torch.get_num_threads(),
            "machine": machine(),
        }
        append_jsonl(OUT, record)
        print(f"negatives={n}: median ratio x{record['ratio_median']:.2f}")
    _, summary = ours(setting, with_negatives(setting[4]["train"], 4), opts.steps, profile=True)
    site = str(Path(torch.__file__).parents[1]) + "/"
    (RESULTS / "profile.txt").write_text(summary.replace(site, "site-packages/").replace(str(ROOT) + "/", ""))


if __name__ == "__main__":
    main()

"""Teacher scoring throughput (pairs/s) of the bi-encoder and cross-encoder scorers, the time of a second,
cached run, and peak memory (RSS) of training with cached margins against training with the teacher loaded.

    python benchmarks/teacher_cache.py [--rows 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from benchmarks.common import RESULTS, ROOT, append_jsonl, default_setting, machine, timing_cross_encoder
from hf_margin import BiEncoderTeacher, attach_teacher_margins
from hf_margin.models.resolve import resolve_model

OUT = RESULTS / "teacher_cache.jsonl"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

RSS_SCRIPT = """
import resource, sys, json
from datasets import load_from_disk
from benchmarks.common import benchmark_recipe, fresh_student
from hf_margin import BiEncoderTeacher, MarginDistillTrainer
from hf_margin.models.resolve import resolve_model
mode, data_dir, out = sys.argv[1:4]
model_args, _, _, args = benchmark_recipe()
train = load_from_disk(data_dir)  # scored triplets, saved by the parent: no teacher needed to get them
teacher = BiEncoderTeacher.from_pretrained(resolve_model(model_args.teacher)) if mode == "teacher" else None
student, tok = fresh_student(model_args)
run_args = args.__class__(**{**args.to_dict(), "max_steps": 12, "eval_strategy": "no", "disable_tqdm": True,
    "output_dir": out, "save_strategy": "no", "report_to": "none"})
MarginDistillTrainer(student, run_args, train_dataset=train, processing_class=tok).train()
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def timed_scoring(rows, teacher, cache_dir) -> float:
    start = time.perf_counter()
    attach_teacher_margins(rows, teacher, cache_dir=cache_dir)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    opts = parser.parse_args()
    _, _, _, _, triplets = default_setting()
    rows = (
        triplets["train"]
        .select(range(opts.rows))
        .remove_columns(["teacher_pos_score", "teacher_neg_scores", "teacher_margins"])
    )
    pairs = sum(1 + len(n) for n in rows["negatives"])
    path = resolve_model(MINILM)
    record = {"rows": opts.rows, "pairs": pairs, "machine": machine()}
    for kind, teacher in [
        ("bi-encoder", BiEncoderTeacher.from_pretrained(path, show_progress=False)),
        ("cross-encoder", timing_cross_encoder(path, show_progress=False)),
    ]:
        with tempfile.TemporaryDirectory() as cache:
            first = timed_scoring(rows, teacher, cache)
            second = timed_scoring(rows, teacher, cache)
        record[kind] = {
            "first_s": first,
            "pairs_per_s": pairs / first,
            "cached_s": second,
            "cached_share": second / first,
        }
        print(f"{kind}: {pairs / first:.0f} pairs/s, cached run {second:.3f} s = {100 * second / first:.2f}% of first")
    saved = tempfile.mkdtemp()
    triplets["train"].save_to_disk(saved)
    for mode in ("cached", "teacher"):
        with tempfile.TemporaryDirectory() as out:
            done = subprocess.run(
                [sys.executable, "-c", RSS_SCRIPT, mode, saved, out],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
        record[f"peak_rss_mb_{mode}"] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"training, {mode}: peak RSS {record[f'peak_rss_mb_{mode}']:.0f} MB")
    append_jsonl(OUT, record)


if __name__ == "__main__":
    main()

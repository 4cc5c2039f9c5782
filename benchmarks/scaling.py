"""How cost grows: training time per epoch and teacher scoring time at 1k, 2k, 4k, 8k and 16k examples
(STS-B triplets repeated to size, 1 negative each to keep the run short).

The bi-encoder teacher embeds each distinct text once, so repeated examples cost it almost nothing: its time
follows the number of distinct texts, not of examples. The cross-encoder scores every pair: that is the
per-pair cost.

    python benchmarks/scaling.py [--sizes 1000 2000 4000 8000 16000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from datasets import concatenate_datasets

from benchmarks.common import (
    RESULTS,
    append_jsonl,
    bench_args,
    default_setting,
    fresh_student,
    machine,
    timing_cross_encoder,
)
from hf_margin import BiEncoderTeacher, MarginDistillTrainer, attach_teacher_margins
from hf_margin.models.resolve import resolve_model

OUT = RESULTS / "scaling.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    opts = parser.parse_args()
    setting = default_setting()
    model_args, _, args, _, triplets = setting
    base = triplets["train"].map(
        lambda r: {"negatives": r["negatives"][:1], "teacher_margins": r["teacher_margins"][:1]},
        desc="Keeping 1 negative",
    )
    path = resolve_model(model_args.teacher)
    for size in opts.sizes:
        data = concatenate_datasets([base] * (size // len(base) + 1)).select(range(size)).flatten_indices()
        raw = data.remove_columns(["teacher_pos_score", "teacher_neg_scores", "teacher_margins"])
        record = {"examples": size, "machine": machine()}
        for kind, load in [("bi-encoder", BiEncoderTeacher.from_pretrained), ("cross-encoder", timing_cross_encoder)]:
            teacher = load(path, show_progress=False)
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                attach_teacher_margins(raw, teacher, cache_dir=cache)
                record[f"{kind}_scoring_s"] = time.perf_counter() - start
        student, tokenizer = fresh_student(model_args)
        run_args = bench_args(args, num_train_epochs=1)
        trainer = MarginDistillTrainer(student, run_args, train_dataset=data, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        record["epoch_s"] = time.perf_counter() - start
        append_jsonl(OUT, record)
        print(record)


if __name__ == "__main__":
    main()

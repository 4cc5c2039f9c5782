"""Encoding speed of a student against its teacher in one process, alternately: the figure the retrieval table's
speed column needs when a run skipped it (``--measure_speed false``) or when the teacher is a mean-score pair.

Both embed the same texts (the first 256 documents of the shipped SciFact corpus, the pipeline's speed texts) at the
same length, batch size and threads, through :func:`hf_margin.evaluation.throughput.encoding_throughput`, as
``hf-margin train`` times them; ``--rounds`` alternate the two and the record keeps each round and the median
speedup. A student's speed depends on its architecture, not its weights: the student is the named model cut to
``--student_layers`` (all of them when unset), untrained.

    python benchmarks/teacher_speed.py --teacher sentence-transformers/all-mpnet-base-v2 \
        --teacher_ensemble sentence-transformers/all-MiniLM-L6-v2   # the mean-score pair -> all of MiniLM
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from transformers import AutoTokenizer

from benchmarks.common import RESULTS, append_jsonl, machine, tree_is_clean
from hf_margin.app.arguments import ModelArguments
from hf_margin.app.loading import load_teacher, teacher_name
from hf_margin.app.report import speed_line, texts_for_speed
from hf_margin.app.tasks.retrieval import SHIPPED_SCIFACT
from hf_margin.evaluation.evaluators import RetrievalEvaluator
from hf_margin.evaluation.throughput import encoding_throughput, speed_summary
from hf_margin.models.kind import StudentKind
from hf_margin.models.resolve import resolve_model

OUT = RESULTS / "teacher_speed.jsonl"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=MINILM)
    parser.add_argument("--teacher_ensemble", nargs="*", default=None, help="More bi-encoders: a mean-score teacher.")
    parser.add_argument("--student", default=MINILM)
    parser.add_argument("--student_layers", nargs="*", type=int, default=None, help="Unset: all of them.")
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    model_args = ModelArguments(teacher=args.teacher, teacher_ensemble=args.teacher_ensemble)
    teacher = load_teacher(model_args)
    teacher.show_progress = False
    kind = StudentKind(max_length=args.max_length)
    student_path = resolve_model(args.student)
    student = kind.scorer(
        kind.load(student_path, layers=args.student_layers), AutoTokenizer.from_pretrained(student_path)
    )
    texts = texts_for_speed({"scifact": RetrievalEvaluator.from_beir(SHIPPED_SCIFACT, split="test")})

    rounds = []
    for i in range(args.rounds):
        rounds.append(
            speed_summary(
                encoding_throughput(student, texts, max_length=args.max_length),
                encoding_throughput(teacher, texts, max_length=args.max_length),
            )
        )
        print(f"round {i + 1}: {speed_line(rounds[-1])}", flush=True)
    speedups = [r["speedup"] for r in rounds]
    record = {
        "teacher": teacher_name(model_args, args.teacher),
        "student": args.student,
        "student_layers": args.student_layers,
        "max_length": args.max_length,
        "median_speedup": statistics.median(speedups),
        "rounds": rounds,
        "machine": machine(),
        "clean_tree": tree_is_clean(),
    }
    append_jsonl(args.out, record)
    print(f"median {record['median_speedup']:.2f}x over {len(speedups)} rounds -> {args.out}")


if __name__ == "__main__":
    main()

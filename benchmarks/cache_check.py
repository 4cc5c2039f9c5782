"""What the teacher-margin cache check costs against the scoring it saves, on the default recipe's cache.

Scores the default recipe's train triplets (STS-B, all-MiniLM-L6-v2 teacher) into a fresh cache, then times the
check a later run makes before reading it (`CacheEntry.problem`: size, SHA-256 of data.arrow, row count,
columns) and a whole cached `attach_teacher_margins` call.

    python benchmarks/cache_check.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, append_jsonl, default_setting, machine
from hf_margin import BiEncoderTeacher, attach_teacher_margins
from hf_margin.app.recipes import parse_recipe
from hf_margin.data.cache import CacheEntry
from hf_margin.data.margins import TEACHER_COLUMNS
from hf_margin.models.resolve import resolve_model

OUT = RESULTS / "cache_check.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    opts = parser.parse_args()
    model_args, _, _, _ = parse_recipe("recipes/stsb-adaptive.yaml")
    _, _, _, _, triplets = default_setting()
    rows = triplets["train"].remove_columns(list(TEACHER_COLUMNS))
    with tempfile.TemporaryDirectory() as cache:
        teacher = BiEncoderTeacher.from_pretrained(resolve_model(model_args.teacher), show_progress=False)
        start = time.perf_counter()
        attach_teacher_margins(rows, teacher, cache_dir=cache)
        scoring = time.perf_counter() - start
        [folder] = [p for p in Path(cache).iterdir() if p.is_dir()]
        entry = CacheEntry(folder)
        checks = []
        for _ in range(opts.repeats):
            start = time.perf_counter()
            assert entry.problem(len(rows), TEACHER_COLUMNS) is None
            checks.append(time.perf_counter() - start)
        cached = []
        for _ in range(5):
            start = time.perf_counter()
            attach_teacher_margins(rows, BiEncoderTeacher(teacher.model, teacher.tokenizer), cache_dir=cache)
            cached.append(time.perf_counter() - start)
        size = entry.data_file.stat().st_size
    record = {
        "rows": len(rows),
        "pairs": sum(1 + len(n) for n in rows["negatives"]),
        "cache_bytes": size,
        "scoring_s": scoring,
        "check_s_median": statistics.median(checks),
        "check_percent_of_scoring": 100 * statistics.median(checks) / scoring,
        "cached_attach_s_median": statistics.median(cached),
        "machine": machine(),
    }
    append_jsonl(OUT, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

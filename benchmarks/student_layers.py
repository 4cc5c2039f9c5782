"""Which 2 of the teacher's 6 layers make the best student to start from: STS-B dev Spearman of every pair, untrained.

The default recipe's `student_layers` is the pair with the highest dev Spearman (test is never used to choose);
BENCHMARKS.md section 9 has the table and what training from the chosen pair gives. The teacher, pooling and
max length are the default recipe's. A pair already in the results (same teacher, same size) is not rerun.

    python benchmarks/student_layers.py [--size 2]
    python benchmarks/student_layers.py --report
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DEFAULT_RECIPE, RESULTS, Results, machine, read_jsonl  # noqa: E402

OUT = RESULTS / "student_layers.jsonl"


def report(records: list[dict[str, Any]]) -> str:
    """Markdown table of dev Spearman per kept-layer set, best first (the last record of a set wins)."""
    latest = {(r["teacher"], tuple(r["layers"])): r for r in records}
    rows = sorted(latest.values(), key=lambda r: -r["dev_spearman"])
    lines = ["| teacher | layers | STS-B dev Spearman (untrained) |", "| --- | --- | --- |"]
    lines += [f"| {r['teacher']} | {', '.join(map(str, r['layers']))} | {r['dev_spearman']:.2f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    from transformers import AutoConfig, AutoTokenizer

    from hf_margin.app.recipes import parse_recipe
    from hf_margin.app.stsb import load_stsb, stsb_evaluators
    from hf_margin.models.modeling import load_student
    from hf_margin.models.resolve import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2, help="Layers the student keeps.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if opts.report:
        print(report(read_jsonl(opts.out)))
        return
    model_args, _, _, args = parse_recipe(DEFAULT_RECIPE)
    path = resolve_model(model_args.teacher)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kind = args.student_kind
    dev = stsb_evaluators(load_stsb(None)["validation"], "dev", duplicates=False)["dev"]
    done = Results(opts.out, key=lambda r: tuple(r["layers"]), keep=lambda r: r["teacher"] == model_args.teacher)
    total = AutoConfig.from_pretrained(path).num_hidden_layers
    for layers in itertools.combinations(range(total), opts.size):
        if layers in done:
            continue
        model = load_student(path, layers=list(layers)).eval()
        with torch.inference_mode():
            spearman = dev(kind.scorer(model, tokenizer))["spearman"]
        record = {"teacher": model_args.teacher, "layers": list(layers), "dev_spearman": spearman}
        done.add({**record, "machine": machine()})
        print(f"layers {list(layers)}: STS-B dev Spearman {spearman:.2f}", flush=True)
    print(report(read_jsonl(opts.out)))


if __name__ == "__main__":
    main()

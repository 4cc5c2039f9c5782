"""Which 2 of the teacher's 6 layers make the best student to start from: STS-B dev Spearman of every pair, untrained.

The default recipe's `student_layers` is the pair with the highest dev Spearman (test is never used to choose);
BENCHMARKS.md section 9 has the table and what training from the chosen pair gives.

    python benchmarks/student_layers.py [--size 2]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine  # noqa: E402

OUT = RESULTS / "student_layers.jsonl"


def main() -> None:
    from transformers import AutoTokenizer

    from hf_margin.app.stsb import load_stsb, stsb_evaluators
    from hf_margin.modeling import StudentKind, load_student
    from hf_margin.resolve import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--size", type=int, default=2, help="Layers the student keeps.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    path = resolve_model(opts.teacher)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = stsb_evaluators(load_stsb(None)["validation"], "dev", duplicates=False)["dev"]
    total = load_student(path).config.num_hidden_layers
    kind = StudentKind("bi-encoder", pooling="mean", max_length=64)
    rows = []
    for layers in itertools.combinations(range(total), opts.size):
        model = load_student(path, layers=list(layers)).eval()
        with torch.inference_mode():
            spearman = dev(kind.scorer(model, tokenizer))["spearman"]
        rows.append((spearman, list(layers)))
        append_jsonl(opts.out, {"layers": list(layers), "dev_spearman": spearman, "machine": machine()})
        print(f"layers {list(layers)}: STS-B dev Spearman {spearman:.2f}", flush=True)
    best = max(rows)
    print(f"best on dev: layers {best[1]} ({best[0]:.2f})")


if __name__ == "__main__":
    main()

"""Retrieval distillation on SciFact (the retrieval issue's goals): students from the MiniLM (and, where `make mpnet`
installed it, the mpnet) teacher, with no labels (query-corpus mode on the unlabelled claims) or with the 919
labelled train pairs added; nDCG@10 / MRR@10 / Recall@100 on the 300 test claims beside the student's and
teacher's encoding speed, from each run's own metrics.json. Each run is `hf-margin train
recipes/scifact-distil.yaml` plus the arm's options, in its own process; finished (arm, options, seed) runs are skipped.

    python benchmarks/retrieval.py --arms minilm-2l-nolabel minilm-2l-gold --seeds 42 43 44
    python benchmarks/retrieval.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine, read_jsonl, train_run, tree_is_clean  # noqa: E402

OUT = RESULTS / "retrieval.jsonl"
RECIPE = ROOT / "recipes" / "scifact-distil.yaml"
MPNET = "sentence-transformers/all-mpnet-base-v2"
ALL_LAYERS = ["--student", "sentence-transformers/all-MiniLM-L6-v2", "--student_layers", *"012345"]
ARMS: dict[str, list[str]] = {
    "minilm-2l-nolabel": [],
    "minilm-2l-gold": ["--gold_split", "train"],
    "mpnet-2l-nolabel": ["--teacher", MPNET, *ALL_LAYERS[:2], "--student_layers", "0", "5"],
    "mpnet-6l-nolabel": ["--teacher", MPNET, *ALL_LAYERS],
    "mpnet-6l-gold": ["--teacher", MPNET, *ALL_LAYERS, "--gold_split", "train"],
}


def run_arm(arm: str, seed: int, extra: list[str], cache_dir: str | None) -> dict[str, Any]:
    """One `hf-margin train` run in its own process; its metrics.json, condensed."""
    metrics, wall = train_run(RECIPE, [*ARMS[arm], "--seed", str(seed), *extra], cache_dir)
    table = metrics["evaluation"]["scifact"]
    return {
        "arm": arm,
        "variant": " ".join(extra),
        "seed": seed,
        "options": ARMS[arm] + extra,
        "figures": {m: table[m] for m in ("ndcg@10", "mrr@10", "recall@100") if m in table},
        "speed": metrics["speed"],
        "data": {k: (os.path.relpath(v, ROOT) if k == "source" else v) for k, v in metrics["data"].items()},
        "wall_s": wall,
        "machine": machine(),
        "clean_tree": tree_is_clean(),
    }


def report(records: list[dict[str, Any]]) -> str:
    """Markdown: per arm, mean ± sd over seeds of the student's figures after training, before, the teacher's,
    and the encoding speed-up."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        arms.setdefault(f"{r['arm']} {r.get('variant', '')}".strip(), []).append(r)
    lines = [
        "| arm | seeds | nDCG@10 before | nDCG@10 after | MRR@10 after | Recall@100 after | teacher nDCG@10 | "
        "student / teacher texts/s | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    for arm, runs in arms.items():
        f = [r["figures"] for r in runs]
        s = runs[-1]["speed"]
        teacher = next((x["ndcg@10"]["teacher"] for x in f if "teacher" in x["ndcg@10"]), float("nan"))
        lines.append(
            f"| {arm} | {', '.join(str(r['seed']) for r in runs)} | {f[0]['ndcg@10']['before']:.2f} | "
            f"{spread([x['ndcg@10']['after'] for x in f])} | {spread([x['mrr@10']['after'] for x in f])} | "
            f"{spread([x['recall@100']['after'] for x in f])} | {teacher:.2f} | "
            f"{s['student']['texts_per_s']:.1f} / {s['teacher']['texts_per_s']:.1f} | {s['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["minilm-2l-nolabel", "minilm-2l-gold"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--cache_dir", default=None, help="Cache of built sets and margins (kept across runs).")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More hf-margin options, last.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if opts.report:
        print(report(read_jsonl(opts.out)))
        return
    variant = " ".join(opts.extra)
    done = {(r["arm"], r.get("variant", ""), r["seed"]) for r in read_jsonl(opts.out)}
    for arm in opts.arms:
        for seed in opts.seeds:
            if (arm, variant, seed) in done:
                continue
            record = run_arm(arm, seed, opts.extra, opts.cache_dir)
            append_jsonl(opts.out, record)
            print(json.dumps({k: record[k] for k in ("arm", "seed", "figures", "wall_s")}), flush=True)


if __name__ == "__main__":
    main()

"""The README's first table: a shipped recipe run as `make train RECIPE=...` runs it (`hf-margin train RECIPE`, its own
process, offline), with its wall time and peak memory, on an empty cache (a fresh temporary `HF_DATASETS_CACHE`:
the teacher builds and scores the set, and evaluates itself) or a warm one (the user's cache: a second run).
Each record keeps the run's own metrics.json figures (before / after / teacher, the encoding speed of student and
teacher), the machine, the commit and whether the tree was clean.

    python benchmarks/recipe_runs.py --recipe recipes/scifact-distil.yaml --cache empty [--keep outputs/scifact-distil]
    python benchmarks/recipe_runs.py --recipe recipes/scifact-distil.yaml --cache warm
    python benchmarks/recipe_runs.py --report
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine, read_jsonl, train_run, tree_is_clean  # noqa: E402

OUT = RESULTS / "recipe_runs.jsonl"
MAIN_FIGURE = {"stsb_test": "spearman", "scifact": "ndcg@10"}  # the README's column of each task's evaluator


def run_recipe(recipe: Path, cache: str, extra: list[str], keep: str | None = None) -> dict[str, Any]:
    """One timed run; ``cache`` is ``empty`` (a fresh temporary datasets cache) or ``warm`` (the user's);
    ``keep``: the run's output folder (the trained student), else a temporary one."""
    with tempfile.TemporaryDirectory() as empty:
        saved = os.environ.get("HF_DATASETS_CACHE")
        if cache == "empty":
            os.environ["HF_DATASETS_CACHE"] = empty
        try:
            metrics, wall = train_run(recipe, extra, output_dir=keep)
        finally:
            if cache == "empty":
                os.environ.pop("HF_DATASETS_CACHE")
                if saved is not None:
                    os.environ["HF_DATASETS_CACHE"] = saved
    # the largest child so far: this process runs one recipe per call, so the run's own peak (Linux: KiB)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "recipe": os.path.relpath(recipe, ROOT),
        "cache": cache,
        "extra": extra,
        "evaluation": metrics["evaluation"],
        "speed": metrics["speed"],
        "wall_s": wall,
        "peak_rss_gb": peak_kib / 2**20,
        "machine": machine(),
        "clean_tree": tree_is_clean(),
    }


def report(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, the task's main figure before -> after (teacher), speed-up, wall, peak RSS."""
    lines = [
        "| recipe | cache | figure | before -> after | teacher | student / teacher texts/s | wall | peak RSS | "
        "commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        name = next(n for n in r["evaluation"] if n in MAIN_FIGURE)
        row = r["evaluation"][name][MAIN_FIGURE[name]]
        speed = r["speed"]
        texts = (
            f"{speed['student']['texts_per_s']:.1f} / {speed['teacher']['texts_per_s']:.1f} ({speed['speedup']:.2f}x)"
            if speed.get("speedup")
            else "–"
        )
        minutes, seconds = divmod(round(r["wall_s"]), 60)
        commit = r["machine"]["commit"] + ("" if r["clean_tree"] else " (dirty)")
        lines.append(
            f"| {' '.join([r['recipe'], *r['extra']])} | {r['cache']} | {name} {MAIN_FIGURE[name]} | "
            f"{row.get('before', float('nan')):.2f} -> {row['after']:.2f} | {row.get('teacher', float('nan')):.2f} | "
            f"{texts} | {minutes} min {seconds:02d} s | {r['peak_rss_gb']:.2f} GB | {commit} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "scifact-distil.yaml")
    parser.add_argument("--cache", choices=["empty", "warm"], default="empty")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More hf-margin options, last.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--keep", default=None, help="Save the run's student here (e.g. for benchmarks/export.py).")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if not opts.report:  # every call runs: a timing is a measurement, not a result to resume
        append_jsonl(opts.out, run_recipe(opts.recipe.resolve(), opts.cache, opts.extra, opts.keep))
    print(report(read_jsonl(opts.out)))


if __name__ == "__main__":
    main()

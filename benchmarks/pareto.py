"""Quality against speed: which student to pick for a latency budget.

Students of 1, 2, 3, 4 layers cut from all-MiniLM-L6-v2 (the layers spread over its depth, first and last kept:
[0], [0, 5], [0, 2, 5], [0, 2, 3, 5]), each distilled by a plain `hf-margin train` of a shipped recipe in its own
process: STS-B (`recipes/stsb-adaptive.yaml`, test Spearman) and SciFact with no labels
(`recipes/scifact-distil.yaml`, test nDCG@10). The 6-layer point is the teacher itself (its figure from the same
runs). Speed is measured apart, in one process, on the same 256 SciFact abstracts at 256 tokens (batches of 32,
sorted by length, this machine's threads) for every depth, in alternating rounds: a student's speed does not
depend on its weights, so the untrained cut is timed. Finished (task, layers, seed) runs are skipped.

    python benchmarks/pareto.py [--tasks stsb scifact] [--layers 1 2 3 4] [--seeds 42]
    python benchmarks/pareto.py --report      # the table, and results/pareto.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, Results, append_jsonl, machine, read_jsonl, train_run  # noqa: E402

OUT = RESULTS / "pareto.jsonl"
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEPTH = 6
TASKS = {  # task: (recipe, evaluator, metric, axis label)
    "stsb": ("stsb-adaptive.yaml", "stsb_test", "spearman", "STS-B test Spearman x100"),
    "scifact": ("scifact-distil.yaml", "scifact", "ndcg@10", "SciFact test nDCG@10 x100 (no labels)"),
}


def spread_layers(n: int, depth: int = DEPTH) -> list[int]:
    """``n`` layer indices spread over ``depth`` layers, first and last kept: 2 -> [0, 5], 3 -> [0, 2, 5]."""
    if n == 1:
        return [0]
    return sorted({round(i * (depth - 1) / (n - 1)) for i in range(n)})


def train_point(task: str, layers: list[int], seed: int, cache_dir: str | None) -> dict[str, Any]:
    recipe, evaluator, metric, _ = TASKS[task]
    options = ["--student_layers", *map(str, layers), "--seed", str(seed)]
    metrics, wall = train_run(ROOT / "recipes" / recipe, options, cache_dir)
    figures = metrics["evaluation"][evaluator][metric]
    return {
        "kind": "quality",
        "task": task,
        "layers": layers,
        "seed": seed,
        "before": figures["before"],
        "after": figures["after"],
        "teacher": figures.get("teacher"),
        "wall_s": wall,
        "machine": machine(),
    }


def speed_points(depths: list[int], rounds: int) -> list[dict[str, Any]]:
    """Abstracts/s of each depth's cut (the teacher at ``DEPTH``), median of ``rounds`` alternating rounds."""
    from transformers import AutoTokenizer

    from hf_margin.app.tasks.retrieval import SHIPPED_SCIFACT
    from hf_margin.evaluation.retrieval import load_beir
    from hf_margin.evaluation.throughput import encoding_throughput
    from hf_margin.models.kind import StudentKind
    from hf_margin.models.resolve import resolve_model

    path = resolve_model(TEACHER)
    texts = list(dict.fromkeys(load_beir(SHIPPED_SCIFACT).corpus.values()))[:256]
    kind = StudentKind("bi-encoder", similarity="cosine", pooling="mean", max_length=256)
    tokenizer = AutoTokenizer.from_pretrained(path)
    scorers = {n: kind.scorer(kind.load(path, layers=spread_layers(n)).eval(), tokenizer) for n in depths}
    timings: dict[int, list[dict[str, Any]]] = {n: [] for n in depths}
    for _ in range(rounds):
        for n, scorer in scorers.items():
            timings[n].append(encoding_throughput(scorer, texts, max_length=256))
    points = []
    for n, runs in timings.items():
        rates = [r["texts_per_s"] for r in runs]
        points.append(
            {
                "kind": "speed",
                "layers": spread_layers(n),
                "texts_per_s": statistics.median(rates),
                "rounds": rates,
                **{k: runs[0][k] for k in ("texts", "batch_size", "max_length", "device", "dtype", "threads")},
                "machine": machine(),
            }
        )
    return points


def report(records: list[dict[str, Any]], plot: Path | None = None) -> str:
    """Markdown: per depth, abstracts/s, speed-up over the teacher and each task's figure (mean over seeds)."""
    speed = {len(r["layers"]): r for r in records if r["kind"] == "speed"}  # the last measurement wins
    quality: dict[tuple[str, int], list[float]] = {}
    teacher: dict[str, float] = {}
    for r in records:
        if r["kind"] == "quality":
            quality.setdefault((r["task"], len(r["layers"])), []).append(r["after"])
            if r.get("teacher") is not None:
                teacher[r["task"]] = r["teacher"]
    for task, figure in teacher.items():
        quality[(task, DEPTH)] = [figure]
    depths = sorted({n for _, n in quality} | set(speed))
    base = speed.get(DEPTH, {}).get("texts_per_s")
    header = " | ".join(TASKS[t][3] for t in TASKS)
    lines = [f"| layers | abstracts/s | vs teacher | {header} |", "| --- | --- | --- |" + " --- |" * len(TASKS)]

    def cell(values: list[float] | None) -> str:
        if not values:
            return "–"
        return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    for n in depths:
        rate = speed.get(n, {}).get("texts_per_s")
        name = f"{n} (teacher)" if n == DEPTH else f"{n}: {spread_layers(n)}"
        ratio = f"{rate / base:.2f}x" if rate and base else "–"
        rate_text = f"{rate:.1f}" if rate else "–"
        lines.append(
            f"| {name} | {rate_text} | {ratio} | " + " | ".join(cell(quality.get((t, n))) for t in TASKS) + " |"
        )
    if plot is not None and speed:
        _plot(speed, quality, plot)
    return "\n".join(lines)


def _plot(speed: dict[int, dict], quality: dict[tuple[str, int], list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6))
    for ax, (task, (_, _, _, label)) in zip(axes, TASKS.items()):
        points = [
            (speed[n]["texts_per_s"], statistics.mean(quality[(task, n)]), n) for n in speed if (task, n) in quality
        ]
        if not points:
            continue
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
        for x, y, n in points:
            ax.annotate(f"{n}L" + (" teacher" if n == DEPTH else ""), (x, y), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("SciFact abstracts/s (256 tokens, CPU)")
        ax.set_ylabel(label)
    fig.suptitle("Students cut from all-MiniLM-L6-v2: quality against encoding speed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3, 4], help="Student depths to train.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--rounds", type=int, default=3, help="Alternating speed rounds (the median is kept).")
    parser.add_argument("--skip_speed", action="store_true", help="Train only; keep the last speed figures.")
    parser.add_argument("--cache_dir", default=None, help="Cache of built sets and margins (kept across runs).")
    parser.add_argument("--report", action="store_true", help="Print the table, write the plot and exit.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if not opts.report:
        if not opts.skip_speed:
            for point in speed_points([*opts.layers, DEPTH], opts.rounds):
                append_jsonl(opts.out, point)
                print(json.dumps({k: point[k] for k in ("layers", "texts_per_s", "rounds")}), flush=True)
        done = Results(
            opts.out, key=lambda r: (r["task"], tuple(r["layers"]), r["seed"]), keep=lambda r: r["kind"] == "quality"
        )
        for task in opts.tasks:
            for n in opts.layers:
                for seed in opts.seeds:
                    if (task, tuple(spread_layers(n)), seed) not in done:
                        record = done.add(train_point(task, spread_layers(n), seed, opts.cache_dir))
                        shown = {k: record[k] for k in ("task", "layers", "seed", "after", "wall_s")}
                        print(json.dumps(shown), flush=True)
    print(report(read_jsonl(opts.out), plot=opts.out.with_suffix(".png")))


if __name__ == "__main__":
    main()

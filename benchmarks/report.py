"""Every table of BENCHMARKS.md (markdown, printed) and its PNG plots, from benchmarks/results/*.jsonl: the one
report module. The early sections' tables are written here; each later benchmark keeps its table next to its
runner (`report()` of methods.py, data_volume.py, retrieval.py, pareto.py, export.py, student_layers.py), and
this module prints them all, under their section's heading.

    python benchmarks/report.py                       # every section
    python benchmarks/report.py --only retrieval pareto
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, read_jsonl  # noqa: E402


def quality() -> None:
    runs = read_jsonl(RESULTS / "quality.jsonl")
    if not runs:
        return
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_arm[r["arm"]].append(r)
    print("| arm | seed-0 dev Spearman by lr | chosen lr | test Spearman x100, mean ± sd (n) | seeds |")
    print("| --- | --- | --- | --- | --- |")
    summary = {}
    for arm, rs in by_arm.items():
        grid = {r["lr"]: r["dev_spearman"] for r in rs if r["seed"] == 0}
        seeds_at = defaultdict(list)
        for r in rs:
            seeds_at[r["lr"]].append(r)
        full = [lr for lr, runs in seeds_at.items() if len(runs) == max(len(v) for v in seeds_at.values())]
        best = max(full, key=lambda lr: grid.get(lr, float("-inf")))  # chosen on dev, among fully seeded rates
        tests = [r["test_spearman"] for r in seeds_at[best]]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        summary[arm] = (statistics.mean(tests), sd, tests)
        grid_text = ", ".join(f"{lr:g}: {v:.2f}" for lr, v in sorted(grid.items()))
        seed_text = ", ".join(f"{t:.2f}" for t in tests)
        print(
            f"| {arm} | {grid_text} | {best:g} | {statistics.mean(tests):.2f} ± {sd:.2f} ({len(tests)}) | {seed_text} |"
        )
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(summary)
    ax.bar(names, [summary[a][0] for a in names], yerr=[summary[a][1] for a in names], capsize=4, color="tab:blue")
    for i, a in enumerate(names):
        ax.scatter([i] * len(summary[a][2]), summary[a][2], color="black", s=10, zorder=3)
    low = min(min(v[2]) for v in summary.values())
    ax.set_ylim(low - 3, max(max(v[2]) for v in summary.values()) + 2)
    ax.set_ylabel("STS-B test Spearman x100")
    ax.set_title("2-layer student distilled from all-MiniLM-L6-v2")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    fig.tight_layout()
    fig.savefig(RESULTS / "quality.png", dpi=110)
    plt.close(fig)


def speed() -> None:
    runs = read_jsonl(RESULTS / "speed.jsonl")
    if not runs:
        return
    print(
        "\n| negatives | ours, examples/s (median) | sentence-transformers, examples/s (median) "
        "| ratio (median of pairs) |"
    )
    print("| --- | --- | --- | --- |")
    for r in runs:
        print(
            f"| {r['negatives']} | {statistics.median(r['ours_examples_per_s']):.1f} | "
            f"{statistics.median(r['peer_examples_per_s']):.1f} | x{r['ratio_median']:.2f} |"
        )


def teacher_cache() -> None:
    runs = read_jsonl(RESULTS / "teacher_cache.jsonl")
    if not runs:
        return
    r = runs[-1]
    print(f"\nTeacher scoring, {r['rows']} rows = {r['pairs']} pairs:")
    print("| scorer | pairs/s | first run, s | cached run, s | cached / first |")
    print("| --- | --- | --- | --- | --- |")
    for kind in ("bi-encoder", "cross-encoder"):
        k = r[kind]
        print(
            f"| {kind} | {k['pairs_per_s']:.0f} | {k['first_s']:.2f} | {k['cached_s']:.3f} "
            f"| {100 * k['cached_share']:.2f}% |"
        )
    print(
        f"\nPeak RSS of training: cached margins {r['peak_rss_mb_cached']:.0f} MB, teacher kept loaded "
        f"{r['peak_rss_mb_teacher']:.0f} MB"
    )


def scaling() -> None:
    runs = read_jsonl(RESULTS / "scaling.jsonl")
    if not runs:
        return
    runs.sort(key=lambda r: r["examples"])
    print("\n| examples | training epoch, s | s per 1k | cross-encoder scoring, s | bi-encoder scoring, s |")
    print("| --- | --- | --- | --- | --- |")
    for r in runs:
        print(
            f"| {r['examples']} | {r['epoch_s']:.1f} | {1000 * r['epoch_s'] / r['examples']:.1f} | "
            f"{r['cross-encoder_scoring_s']:.1f} | {r['bi-encoder_scoring_s']:.1f} |"
        )
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r["examples"] for r in runs]
    for key, label in [
        ("epoch_s", "training epoch"),
        ("cross-encoder_scoring_s", "cross-encoder scoring"),
        ("bi-encoder_scoring_s", "bi-encoder scoring (distinct texts only)"),
    ]:
        ax.plot(x, [r[key] for r in runs], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("examples (1 negative each)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.set_title("cost against data size")
    fig.tight_layout()
    fig.savefig(RESULTS / "scaling.png", dpi=110)
    plt.close(fig)


def cross_arch() -> None:
    """Issue 6: per family, the grid (seed 0, dev), the chosen point and rate, test mean ± sd over seeds; a plot."""
    runs = read_jsonl(RESULTS / "cross_arch.jsonl")
    if not runs:
        return
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_family[r["family"]].append(r)
    print("\nCross-encoder teacher -> 2-layer bi-encoder (seed-0 dev Spearman; test over seeds at the chosen setting)")
    print(
        "| family | grid point: dev at middle lr | chosen point | dev by lr | chosen lr | test mean ± sd (n) | seeds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for family, rs in by_family.items():
        seeded: dict[tuple[str, float], list[dict]] = defaultdict(list)
        for r in rs:
            seeded[(r["arm"], r["lr"])].append(r)
        (arm, lr), chosen = max(seeded.items(), key=lambda kv: (len(kv[1]), _seed0_dev(kv[1])))
        counts = defaultdict(list)
        for r in rs:
            if r["seed"] == 0:
                counts[r["lr"]].append(r)
        middle = max(counts, key=lambda k: len(counts[k]))  # the rate every grid point ran at
        points = ", ".join(
            f"{r['arm'].removeprefix(family + '_') or '-'}: {r['dev_spearman']:.2f}" for r in counts[middle]
        )
        by_lr = ", ".join(
            f"{r['lr']:g}: {r['dev_spearman']:.2f}"
            for r in sorted(rs, key=lambda r: r["lr"])
            if r["seed"] == 0 and r["arm"] == arm
        )
        tests = [r["test_spearman"] for r in sorted(chosen, key=lambda r: r["seed"])]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        summary[family] = (statistics.mean(tests), sd, tests)
        print(
            f"| {family} | {points} | {arm.removeprefix(family + '_') or '-'} | {by_lr} | {lr:g} | "
            f"{statistics.mean(tests):.2f} ± {sd:.2f} ({len(tests)}) | {', '.join(f'{t:.2f}' for t in tests)} |"
        )
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = sorted(summary, key=lambda f: -summary[f][0])
    colors = ["tab:orange" if n.startswith("adaptive") else "tab:blue" for n in names]
    ax.bar(names, [summary[f][0] for f in names], yerr=[summary[f][1] for f in names], capsize=4, color=colors)
    for i, f in enumerate(names):
        ax.scatter([i] * len(summary[f][2]), summary[f][2], color="black", s=10, zorder=3)
    ax.set_ylim(min(min(v[2]) for v in summary.values()) - 3, max(max(v[2]) for v in summary.values()) + 2)
    ax.set_ylabel("STS-B test Spearman x100")
    ax.set_title("cross-encoder teacher (logits) -> 2-layer bi-encoder (cosine)")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    fig.tight_layout()
    fig.savefig(RESULTS / "cross_arch.png", dpi=110)
    plt.close(fig)


def _seed0_dev(runs: list[dict]) -> float:
    return next((r["dev_spearman"] for r in runs if r["seed"] == 0), float("-inf"))


def runner_report(module_name: str) -> None:
    """The table a runner module prints with ``--report``, from its own results file."""
    module = importlib.import_module(f"benchmarks.{module_name}")
    records = read_jsonl(module.OUT)
    if not records:
        return
    if module_name == "pareto":
        print(module.report(records, plot=module.OUT.with_suffix(".png")))
    else:
        print(module.report(records))


SECTIONS = {  # name: (BENCHMARKS.md section, printer)
    "quality": ("1. Quality of transfer (superseded by 8)", quality),
    "speed": ("2. Training speed against the peer", speed),
    "teacher_cache": ("3. Teacher scoring and the cache", teacher_cache),
    "scaling": ("4. How cost grows", scaling),
    "cross_arch": ("7. Cross-architecture distillation (superseded by 8)", cross_arch),
    "methods": ("8. Method evidence, round two", lambda: runner_report("methods")),
    "data_volume": ("9. Corpus mode and the default recipe", lambda: runner_report("data_volume")),
    "student_layers": ("9. Which 2 layers to start from", lambda: runner_report("student_layers")),
    "retrieval": ("10. Retrieval distillation on SciFact", lambda: runner_report("retrieval")),
    "export": ("12. ONNX export", lambda: runner_report("export")),
    "pareto": ("12. Quality against speed", lambda: runner_report("pareto")),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="Print only these sections.")
    opts = parser.parse_args(argv)
    for name in opts.only or SECTIONS:
        title, printer = SECTIONS[name]
        print(f"\n## {title}\n")
        printer()


if __name__ == "__main__":
    main()

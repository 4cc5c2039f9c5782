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
from hf_margin.data.search import default_nlist  # noqa: E402

# ---- at a glance: the first screen of BENCHMARKS.md ----------------------------------------------------------------

# (row label, family on the same-scale teacher, family on the cross-scale one); figures at each family's dev choice
GLANCE_STSB_LOSSES = [
    ("Margin-MSE, moment-matched margins", "margin_mse_student", "margin_mse_student"),
    ("adaptive, dead zone ρ = 0, moment-matched", "deadzone_0_student", "deadzone_0_student"),
    ("listwise KL (temperature chosen on dev)", "listwise_kl", "listwise_kl"),
    ("adaptive, dead zone ρ = 0.25 (the library default; moment-matched on the cross-scale teacher)",
     "deadzone_0.25", "deadzone_0.25_student"),
    ("adaptive, one-sided hinge (the method as first shipped)", "adaptive_relu", "adaptive_relu"),
]  # fmt: skip


GLANCE_RETRIEVAL_LOSSES = {
    "listwise_kl_T0.1": "listwise KL, T = 0.1",
    "margin_mse": "Margin-MSE",
    "deadzone_0.25": "adaptive, dead zone ρ = 0.25 (the library default)",
}
GLANCE_TEACHERS = {"mpnet": "mpnet teacher", "minilm": "MiniLM teacher (the recipe's)"}


def glance() -> None:
    """Every table of BENCHMARKS.md's first screen: which loss on STS-B (``methods.py``'s records, each loss at its
    seed-0 dev choice, 2 layers) and on SciFact (``retrieval.py --grid``'s, each teacher's grid), then
    :func:`glance_data`, :func:`glance_speed` and :func:`glance_scale`."""
    from benchmarks.common import mean_sd, paired_diff
    from benchmarks.methods import OUT as METHODS
    from benchmarks.methods import chosen_runs
    from benchmarks.retrieval import GRID_OUTS, chosen_lr

    final = chosen_runs(read_jsonl(METHODS))
    cells = {
        (label, setting): final.get((setting, family, 2), [])
        for label, same, cross in GLANCE_STSB_LOSSES
        for setting, family in (("same", same), ("cross", cross))
    }
    best = {
        setting: max((statistics.mean(r["test_spearman"] for r in runs), label)
                     for (label, s), runs in cells.items() if s == setting and runs)[1]
        for setting in ("same", "cross")
    }  # fmt: skip

    def cell(label: str, setting: str) -> str:
        runs = cells[(label, setting)]
        text = (
            f"{mean_sd([r['test_spearman'] for r in runs])} (T = {runs[0]['arm'].split('_T')[1]})"
            if (runs and "_T" in runs[0]["arm"])
            else mean_sd([r["test_spearman"] for r in runs])
            if runs
            else "–"
        )
        return f"**{text}**" if runs and best[setting] == label else text

    print("STS-B test Spearman x100, 2-layer student, 3 seeds (`python benchmarks/methods.py --report`):\n")
    print("| loss | same-scale teacher (MiniLM bi-encoder) | cross-scale teacher (cross-encoder logits) |")
    print("| --- | --- | --- |")
    for label, _, _ in GLANCE_STSB_LOSSES:
        print(f"| {label} | {cell(label, 'same')} | {cell(label, 'cross')} |")
    grids = {teacher: read_jsonl(out) for teacher, out in GRID_OUTS.items()}
    print(
        "\nSciFact test nDCG@10 x100, a teacher into the 2-layer student, no labels, 3 seeds "
        "(`python benchmarks/retrieval.py --grid [--grid_teacher minilm] --report`):\n"
    )
    print(
        "| loss | "
        + " | ".join(f"{GLANCE_TEACHERS[t]}: lr, test nDCG@10 | paired Δ vs Margin-MSE (95% t)" for t in grids)
        + " |"
    )
    print("| --- |" + " --- | --- |" * len(grids))
    at_choice = {
        (t, loss): [r for r in records if r["loss"] == loss and r["lr"] == chosen_lr(records, loss)]
        for t, records in grids.items()
        for loss in GLANCE_RETRIEVAL_LOSSES
    }
    best = {
        t: max(
            GLANCE_RETRIEVAL_LOSSES, key=lambda loss: statistics.mean(r["test_ndcg@10"] for r in at_choice[(t, loss)])
        )
        for t in grids
    }
    for loss, label in GLANCE_RETRIEVAL_LOSSES.items():
        parts = []
        for t in grids:
            runs, base = at_choice[(t, loss)], at_choice[(t, "margin_mse")]
            figure = mean_sd([r["test_ndcg@10"] for r in runs])
            parts.append(f"{runs[0]['lr']:.0e}, " + (f"**{figure}**" if best[t] == loss else figure))
            parts.append("–" if loss == "margin_mse" else paired_diff(runs, base, "test_ndcg@10"))
        print(f"| {label} | " + " | ".join(parts) + " |")
    glance_data()


# (row label, no-label runs, labelled runs, teacher's figure): runs named by (results file, selector) below
GLANCE_DATA = [
    ("STS-B test Spearman (2-layer, dead zone 0.25, 3 seeds)",
     ("data_volume", "corpus_p1 deadzone_0.25"), ("data_volume", "gold deadzone_0.25"), "82.03"),
    ("SciFact test nDCG@10 (2-layer, MiniLM teacher, 1 epoch)",
     ("retrieval", "minilm-2l-nolabel --query_file /tmp/exp/claims_titles2200.txt --eval_teacher false"),
     ("retrieval", "minilm-2l-gold --per_device_train_batch_size 8 --learning_rate 1e-4 --num_train_epochs 1 "
                   "--warmup_steps 10"), "64.51"),
    ("SciFact test nDCG@10 (2-layer, MiniLM teacher, claims + 2,200 titles, the teacher's embeddings as targets too)",
     ("retrieval", "minilm-2l-nolabel --embedding_weight 1 --title_queries 2200"), None, "64.51"),
    ("SciFact test nDCG@10 (2-layer, MiniLM teacher, 3 epochs, one-sided hinge)", None,
     ("retrieval", "minilm-2l-gold --overshoot_width none --learning_rate 1e-4 --num_train_epochs 3 --eval_teacher "
                   "false --eval_before false --measure_speed false"), "64.51"),
    ("SciFact test nDCG@10 (2-layer, MiniLM teacher, 3 epochs, one-sided hinge, the teacher's embeddings as targets "
     "too: `recipes/scifact-labels.yaml`)", None,
     ("retrieval", "minilm-2l-gold --overshoot_width none --learning_rate 1e-4 --num_train_epochs 3 --embedding_weight "
                   "1 --eval_teacher false --eval_before false --measure_speed false"), "64.51"),
    ("SciFact test nDCG@10, mpnet teacher → all-MiniLM-L6-v2 whole (dead zone, 1e-4, 1 epoch)",
     ("retrieval", "mpnet-6l-nolabel --eval_teacher false"),
     ("retrieval", "mpnet-6l-gold --learning_rate 1e-4 --eval_teacher false --eval_before false --measure_speed "
                   "false"), "mpnet 64.12"),
    ("SciFact test nDCG@10, mean of mpnet and MiniLM → all-MiniLM-L6-v2 whole (one-sided hinge, 1e-4, 2 epochs, "
     "in-batch term, MiniLM's embeddings as targets: `recipes/scifact-mean-labels.yaml`)", None,
     ("retrieval", "mean-6l-gold --overshoot_width none --learning_rate 1e-4 --num_train_epochs 2 --in_batch_weight 1 "
                   "--embedding_weight 1 --embedding_teacher sentence-transformers/all-MiniLM-L6-v2 --eval_teacher "
                   "false --eval_before false --measure_speed false"), "the pair 66.26"),
]  # fmt: skip


def glance_data() -> None:
    """BENCHMARKS.md's "do I need labels?" table: each task's student trained on a teacher-built set against one
    with labels, mean ± sd over the seeds each ran (``data_volume.py``'s and ``retrieval.py``'s records)."""
    from benchmarks.common import mean_sd

    def figures(source: tuple[str, str] | None) -> str:
        if source is None:
            return "–"
        name, selector = source
        if name == "data_volume":
            runs = [
                r
                for r in read_jsonl(RESULTS / "data_volume.jsonl")
                if r.get("part") == "train" and not r.get("dry_run") and f"{r['set']} {r['arm']}" == selector
            ]
            kind = "gold" if runs and runs[0]["set"] == "gold" else "teacher-built"
            return (
                f"{mean_sd([r['test_spearman'] for r in runs])} ({runs[0]['rows']:,} {kind} triplets)" if runs else "–"
            )
        runs = [r for r in read_jsonl(RESULTS / "retrieval.jsonl")
                if f"{r['arm']} {r.get('variant', '')}".strip() == selector]  # fmt: skip
        if not runs:
            return "not run yet"
        data = runs[0]["data"]
        sets = f"{data['gold_triplets']:,} gold + " if data.get("gold_triplets") else ""
        seeds = f"; seed{'s' if len(runs) > 1 else ''} {', '.join(str(r['seed']) for r in runs)}"
        return f"{mean_sd([r['figures']['ndcg@10']['after'] for r in runs])} ({sets}{data['corpus_triplets']:,} " \
            f"teacher-built triplets{seeds})"  # fmt: skip

    print("\nDo I need labels? (`python benchmarks/data_volume.py --report`, `python benchmarks/retrieval.py "
          "--report`):\n")  # fmt: skip
    print("| task | no label (teacher-built only) | with labels | teacher |")
    print("| --- | --- | --- | --- |")
    for label, unlabelled, labelled, teacher in GLANCE_DATA:
        print(f"| {label} | {figures(unlabelled)} | {figures(labelled)} | {teacher} |")
    glance_speed()
    glance_scale()


def glance_speed() -> None:
    """BENCHMARKS.md's "how fast?" table: teacher and 2-layer student as the SciFact recipe's latest run measured
    them (``recipe_runs.py``), and the exported student's backends as ``export.py``'s latest run measured them, each
    against the PyTorch student of its own run."""
    from benchmarks import export, recipe_runs

    runs = [r for r in read_jsonl(recipe_runs.OUT) if r["recipe"] == "recipes/scifact-distil.yaml" and r["speed"]]
    exports = read_jsonl(export.OUT)
    print(
        "\nHow fast? (`python benchmarks/recipe_runs.py --report`, `python benchmarks/export.py --report`; SciFact "
        "abstracts at 256 tokens, batches of 32 sorted by length, 2 threads):\n"
    )
    print("| model | abstracts/s | vs | claims/s, one at a time | nDCG@10 | measured by |")
    print("| --- | --- | --- | --- | --- | --- |")
    if runs:
        r = runs[-1]
        speed, figures = r["speed"], r["evaluation"]["scifact"]["ndcg@10"]
        by = f"`recipe_runs.py`, {r['cache']} cache, commit {r['machine']['commit']}"
        print(f"| teacher all-MiniLM-L6-v2 (6 layers) | {speed['teacher']['texts_per_s']:.1f} | 1x | – | "
              f"{figures['teacher']:.2f} | {by} |")  # fmt: skip
        print(f"| 2-layer student, PyTorch fp32 | {speed['student']['texts_per_s']:.1f} | **{speed['speedup']:.2f}x** "
              f"the teacher | – | {figures['after']:.2f} | {by} |")  # fmt: skip
    if exports:
        r = exports[-1]
        speed, base = r["export"]["speed"], r["export"]["speed"]["pytorch"]["texts_per_s"]
        by = f"`export.py`, commit {r['machine']['commit']}"
        for backend, key, label in [
            ("torch", "pytorch", "the exported student, PyTorch fp32 (the same run's baseline)"),
            ("onnx-O2", "onnx/model_O2.onnx", "the same, ONNX fp32 fused for onnxruntime"),
            ("onnx-int8", "onnx/model_qint8.onnx", "the same, ONNX int8 (dynamic, per-channel)"),
        ]:
            one = export.one_at_a_time(r, key)
            print(f"| {label} | {speed[key]['texts_per_s']:.1f} | {speed[key]['texts_per_s'] / base:.2f}x PyTorch | "
                  f"{one} | {r['quality'][backend]['scifact']['ndcg@10']:.2f} | {by} |")  # fmt: skip


def glance_scale() -> None:
    """BENCHMARKS.md's "what scale?" table, each row from its section's records: training time per 1,000 triplets
    (``scaling.py``), streamed memory (``stream_memory.py``), corpus mode's host memory per text
    (``corpus_memory.py``, the largest stub-encoder embedding), the searches at 100k texts and the 1M build
    (``corpus_scale.py``)."""
    scaling = read_jsonl(RESULTS / "scaling.jsonl")
    stream = sorted(read_jsonl(RESULTS / "stream_memory.jsonl"), key=lambda r: r["rows"])
    stubs = [r for r in read_jsonl(RESULTS / "corpus_memory.jsonl") if r.get("stub")]
    embeds = [r for r in stubs if r.get("stage") == "embed"]
    scale = read_jsonl(RESULTS / "corpus_scale.jsonl")
    print("\nWhat scale? (`python benchmarks/report.py --only scaling stream_memory corpus_memory corpus_search "
          "corpus_build` prints the sections' tables these rows come from):\n")  # fmt: skip
    print("| what | measured |")
    print("| --- | --- |")
    if scaling:
        per_1k = [1000 * r["epoch_s"] / r["examples"] for r in scaling]
        sizes = sorted(r["examples"] for r in scaling)
        print(f"| training time | linear: {min(per_1k):.0f} to {max(per_1k):.0f} s per 1,000 triplets from "
              f"{sizes[0]:,} to {sizes[-1]:,} (2 layers, 64 tokens, section 4) |")  # fmt: skip
    if stream:
        print(f"| streamed training data | memory flat: {stream[0]['peak_rss_mb_after_scoring']:.0f} → "
              f"{stream[-1]['peak_rss_mb_after_scoring']:.0f} MiB for {stream[0]['rows']:,} → {stream[-1]['rows']:,} "
              "rows (section 5) |")  # fmt: skip
    if embeds:
        big = max(embeds, key=lambda r: r["texts"])  # the embedding's own growth; the build adds its search
        per_text = 1024 * (big["peak_rss_mb"] - big["peak_rss_mb_before_building"]) / big["texts"]
        peak = max(r["peak_rss_mb"] for r in stubs if r["texts"] == big["texts"])
        print(f"| corpus mode, embeddings in RAM | {per_text:.1f} KiB of host memory per text; peak RSS "
              f"{peak / 1024:.1f} GiB at {big['texts']:,} texts (section 9) |")  # fmt: skip
    searches = {
        r["search"]: r for r in scale if r["stage"] == "search" and not r["corpus_mode"] and r["size"] == 100_000
    }
    if searches:
        recall = ", ".join(f"{name} {searches[name]['recall@10']:.2f}" for name in ("flat", "hnsw", "ivf", "ivfpq")
                           if name in searches)  # fmt: skip
        print(f"| nearest-neighbour search | exact on a GPU where one is visible; on a CPU exact, chunked, below "
              f"200,000 documents and FAISS above (`--search faiss`), "
              f"re-scored exactly; recall@10 against exact at 100,000 texts (nprobe {searches['ivf']['nprobe']}): "
              f"{recall} (section 11) |")  # fmt: skip
    gpu = [r for r in scale if r.get("device", "cpu").startswith("cuda") and "search_s_all_queries" in r]
    if gpu:
        r = min(gpu, key=lambda r: r["search_s_all_queries"])
        print(f"| {r['size']:,} texts on one GPU | the exact search, every text a query: "
              f"{r['search_s_all_queries'] / 60:.1f} min on the {r['machine']['gpu']} (from {r['sample']:,} sampled "
              f"queries; recall@30 {r['recall@30']:.3f} against the CPU on {r['checked']}), GPU peak "
              f"{r['gpu_peak_mib'] / 1024:.1f} GiB; embedded to disk by {r['processes']} CPU processes in "
              f"{r['embed_s']:.0f} s with a stub encoder (commit {r['machine']['commit']}, section 11) |")  # fmt: skip
    for r in [r for r in scale if r["corpus_mode"]]:
        threads = r["machine"]["torch_threads"]
        print(f"| corpus mode at {r['size']:,} texts, embeddings on disk ({r['dtype']}, {r['search']}, nprobe "
              f"{r['nprobe']}; {threads} thread{'s' if threads > 1 else ''}, commit {r['machine']['commit']}) | "
              f"{r['corpus_mode_s'] / 60:.0f} min with a stub encoder, recall@30 "
              f"{r['recall@30']:.3f} on {r['sample']:,} sampled queries, peak RSS {r['peak_rss_mb'] / 1024:.2f} GiB "
              "(section 11) |")  # fmt: skip


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


def stream_memory() -> None:
    """Section 5: peak RSS of streamed scoring, then of one training epoch on the cache, by rows."""
    runs = read_jsonl(RESULTS / "stream_memory.jsonl")
    if not runs:
        return
    print("| streamed rows | peak RSS after scoring | peak RSS after scoring + 1 training epoch |")
    print("| --- | --- | --- |")
    for r in sorted(runs, key=lambda r: r["rows"]):
        print(
            f"| {r['rows']:,} | {r['peak_rss_mb_after_scoring']:,.0f} MB | {r['peak_rss_mb_after_training']:,.0f} MB |"
        )


GPU_GOALS = {(32, 1): "≥ 1.0", (32, 4): "≥ 1.0", (256, 1): "–", (256, 4): "≥ 1.3"}  # the goals (prose)


def gpu_throughput() -> None:
    """Section 6: examples/s of ours and of the peer per run, and the median ratio of pairs, by batch × negatives."""
    runs = [r for r in read_jsonl(RESULTS / "gpu.jsonl") if r["part"] == "throughput" and not r.get("dry_run")]
    if not runs:
        return
    print(
        "| batch × negatives | MarginDistillTrainer, examples/s (3 runs) "
        "| SentenceTransformerTrainer + MarginMSELoss (3 runs) | ratio (median of pairs) | goal |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in runs:
        key = (r["batch_size"], r["negatives"])
        ours, peer = (", ".join(f"{x:,.0f}" for x in r[k]) for k in ("ours_examples_per_s", "peer_examples_per_s"))
        print(f"| {key[0]} × {key[1]} | {ours} | {peer} | **×{r['ratio_median']:.2f}** | {GPU_GOALS.get(key, '')} |")


GPU_RUNS = {  # (part, commit): the row's name in BENCHMARKS.md (prose: the session each record came from)
    ("zero2", "3e94766"): "DeepSpeed ZeRO-2 (`zero2.yaml`, 50 steps), first session",
    ("zero2", "c7e365d"): "DeepSpeed ZeRO-2 (`zero2.yaml`, 50 steps), second session: the first launch on a "
    + "fresh machine",
    ("zero3", "c7e365d"): "DeepSpeed ZeRO-3 (`zero3.yaml`, 50 steps)",
    ("default_recipe", "c7e365d"): "**default recipe, plain** (`hf-margin train recipes/stsb-adaptive.yaml`, "
    + "1 epoch, 423 steps)",
    ("zero3", "da6785c"): "third session (`da6785c`, a fresh machine): DeepSpeed ZeRO-3 (50 steps)",
    ("default_recipe", "da6785c"): "third session: **default recipe, plain**, as it is now (2 epochs, 846 steps)",
}


def gpu_runs() -> None:
    """Section 6: the DeepSpeed and default-recipe runs: examples/s, peak GPU memory, wall time."""
    parts = ("zero2", "zero3", "default_recipe")  # the race's summary records are race.py's to print
    runs = [r for r in read_jsonl(RESULTS / "gpu.jsonl") if r["part"] in parts and not r.get("dry_run")]
    if not runs:
        return
    print(
        "| run (default recipe, 1 process, bf16) | examples/s | peak GPU memory "
        "| wall time (start-up, mining, evaluations included) |"
    )
    print("| --- | --- | --- | --- |")
    for r in runs:
        name = GPU_RUNS.get((r["part"], r["machine"]["commit"]), f"{r['part']} (`{r['machine']['commit']}`)")
        wall = f"{r['wall_s']:.0f} s"
        if r["part"] == "default_recipe":
            wall = f"**{wall}** ({r['train_runtime_s']:.0f} s of training)"
        if r.get("test_spearman") is not None:
            wall += f"; STS-B test Spearman {r['test_spearman']:.2f}"
        print(f"| {name} | {r['examples_per_s']:,.0f} | {r['peak_gpu_memory_mb']:.0f} MiB | {wall} |")


CORPUS_MEMORY_NOTES = {"2046f1d": ", before the fix below"}  # commit: prose beside the miner's name


def corpus_memory() -> None:
    """Section 9: peak RSS (and before building) and wall time of corpus mode, by miner, texts and stage."""
    runs = read_jsonl(RESULTS / "corpus_memory.jsonl")
    if not runs:
        return
    print("| miner | texts | stage | peak RSS (before) | wall |")
    print("| --- | --- | --- | --- | --- |")
    for r in runs:
        note = CORPUS_MEMORY_NOTES.get(r["machine"]["commit"], "")
        miner = ("0-layer stub" if r.get("stub") else "real MiniLM") + note
        queries = r.get("queries") or r["texts"]
        texts = f"{r['texts']:,}" + (f", {queries:,} of them queries" if queries < r["texts"] else "")
        stage = "embed only" if r.get("stage") == "embed" else "build"
        print(
            f"| {miner} | {texts} | {stage} | {r['peak_rss_mb']:,.0f} MB ({r['peak_rss_mb_before_building']:.0f}) "
            f"| {r['seconds']:.0f} s |"
        )


SEARCH_NAMES = {  # search: its BENCHMARKS.md name (M, PQ codes, re-scoring depth: search.py's defaults)
    "exact": "exact (chunked, PyTorch)",
    "flat": "FAISS flat",
    "ivf": "FAISS IVF (nlist {nlist:,}, nprobe {nprobe})",
    "hnsw": "FAISS HNSW (M 32, efSearch {ef_search})",
    "ivfpq": "FAISS IVF-PQ (nlist {nlist:,}, nprobe {nprobe}, 96 codes of 8 bits, 4x candidates re-scored)",
}


GPU_SEARCH_NOTES = {  # commit: how that commit's exact search ran on a GPU
    "815470f": "TF32 blocks of 8,192 x 131,072, one pass",
    "83e8d12": "float16 candidates re-scored in float32, rows settled by the error bound",
}


def _search_name(r: dict) -> str:
    """A search row's name: the index and its parameters, or where and how the exact search ran on a GPU."""
    if r.get("device", "cpu").startswith("cuda"):
        how = GPU_SEARCH_NOTES.get(r["machine"]["commit"], "")
        return (f"exact on the {r['machine']['gpu']} ({how}; commit {r['machine']['commit']}; {r['sample']:,} sampled "
                f"queries, recall checked on {r['checked']} against the CPU)")  # fmt: skip
    return SEARCH_NAMES.get(r["search"], r["search"]).format(nlist=default_nlist(r["size"]), **r)


def corpus_search() -> None:
    """Section 11: each search over N stub texts, every text a query: build and search time, recall, peak RSS (on
    a GPU: the build is the copy there, and the peak RSS includes the CPU's exact check)."""
    runs = [r for r in read_jsonl(RESULTS / "corpus_scale.jsonl") if "search_s_all_queries" in r]  # the searches
    by_size: dict[int, list[dict]] = defaultdict(list)
    for r in runs:
        by_size[r["size"]].append(r)
    for size, rs in sorted(by_size.items()):
        print(f"\n{size:,} texts, every text a query:")
        print("| search | build s | search s, all queries | recall@10 | recall@30 | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rs:
            build = f"{r['build_s']:.0f}" if r["build_s"] >= 1 else f"{round(r['build_s'], 1):g}"
            gpu = f" (GPU {r['gpu_peak_mib']:,.0f})" if r.get("gpu_peak_mib") else ""
            print(
                f"| {_search_name(r)} | {build} | {r['search_s_all_queries']:.0f} | {r['recall@10']:.3f} "
                f"| {r['recall@30']:.3f} | {r['peak_rss_mb']:,.0f}{gpu} |"
            )


def corpus_build() -> None:
    """Section 11: the whole corpus-mode build on N stub texts, one column per run (its commit and threads):
    triplets, wall time, the index's recall, peak RSS."""
    runs = [r for r in read_jsonl(RESULTS / "corpus_scale.jsonl") if r["corpus_mode"]]
    for size in sorted({r["size"] for r in runs}):
        same = [r for r in runs if r["size"] == size]
        print(f"\n{size:,} texts, the whole corpus-mode build ({same[0]['search']}, nprobe {same[0]['nprobe']}):")

        def row(label: str, cells: list[str]) -> None:
            print(f"| {label} | " + " | ".join(cells) + " |")

        heads = []
        for r in same:
            threads = r["machine"]["torch_threads"]
            heads.append(f"commit {r['machine']['commit']}, {threads} thread{'s' if threads > 1 else ''}")
        row("run", heads)
        print("| --- |" + " --- |" * len(same))
        row("triplets built", [f"{r['triplets']:,}" for r in same])
        row("wall time", [f"{r['corpus_mode_s'] / 60:.0f} min" for r in same])
        row(
            f"recall@30 against exact search, {same[0]['sample']:,} sampled queries",
            [f"{r['recall@30']:.3f}" for r in same],
        )
        row("peak RSS", [f"{r['peak_rss_mb']:,.0f} MiB" for r in same])


def retrieval_grid() -> None:
    """Section 10: the method grids of ``benchmarks/retrieval.py --grid [--grid_teacher minilm]``."""
    from benchmarks.retrieval import GRID_OUTS, grid_report

    for teacher, out in GRID_OUTS.items():
        records = read_jsonl(out)
        if records:
            print(f"\n{teacher} teacher ({out.name}):\n")
            print(grid_report(records))


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
    "glance": ("At a glance: which loss?", glance),
    "quality": ("1. Quality of transfer (superseded by 8)", quality),
    "speed": ("2. Training speed against the peer", speed),
    "teacher_cache": ("3. Teacher scoring and the cache", teacher_cache),
    "scaling": ("4. How cost grows", scaling),
    "stream_memory": ("5. Streamed data, memory", stream_memory),
    "gpu_throughput": ("6. GPU check and GPU benchmark", gpu_throughput),
    "gpu_runs": ("6. The DeepSpeed runs and the default recipe", gpu_runs),
    "race": ("6. The fair training race", lambda: runner_report("race")),
    "cross_arch": ("7. Cross-architecture distillation (superseded by 8)", cross_arch),
    "methods": ("8. Method evidence, round two", lambda: runner_report("methods")),
    "data_volume": ("9. Corpus mode and the default recipe", lambda: runner_report("data_volume")),
    "student_layers": ("9. Which 2 layers to start from", lambda: runner_report("student_layers")),
    "corpus_memory": ("9. Memory of corpus mode", corpus_memory),
    "retrieval": ("10. Retrieval distillation on SciFact", lambda: runner_report("retrieval")),
    "retrieval_methods": ("10. Which loss on SciFact (a teacher -> 2 layers)", lambda: retrieval_grid()),
    "corpus_search": ("11. Corpora of 100k to 10M texts: the searches", corpus_search),
    "corpus_build": ("11. Corpora of 100k to 10M texts: corpus mode on 1M", corpus_build),
    "export": ("12. ONNX export", lambda: runner_report("export")),
    "pareto": ("12. Quality against speed", lambda: runner_report("pareto")),
    "recipe_runs": ("The README's recipes: wall time and peak memory", lambda: runner_report("recipe_runs")),
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

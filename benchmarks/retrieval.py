"""Retrieval distillation on SciFact (the retrieval issue's goals): students from the MiniLM (and, where `make mpnet`
installed it, the mpnet) teacher, or from the mean score of both (`mean-*` arms), with no labels (query-corpus mode
on the unlabelled claims) or with the 919 labelled train pairs added; nDCG@10 / MRR@10 / Recall@100 on the 300 test
claims beside the student's and teacher's encoding speed, from each run's own metrics.json. Each run is `hf-margin train
recipes/scifact-distil.yaml` plus the arm's options, in its own process; finished (arm, options, seed) runs are skipped.

    python benchmarks/retrieval.py --arms minilm-2l-nolabel minilm-2l-gold --seeds 42 43 44
    python benchmarks/retrieval.py --report

The method grid (`--grid`): from the mpnet teacher (`--grid_teacher minilm`: the recipe's own, MiniLM) into the
2-layer student, no labels, Margin-MSE, the adaptive
loss's best arm (two-sided dead zone 0.25) and listwise KL (T 0.1). Each loss's learning rate is chosen on a dev
split carved from the judged train claims (200 of them, a fixed sample: qrels/dev.tsv of a work folder; they are
taken out of the training queries), seed 42, from 5e-5, 1e-4 and 2e-4 (`--grid_lrs`), extended (x2 or /2) while
the best rate is at the grid's edge; seeds 43 and 44 then run at the choice. Test figures are reported, never used
to choose, with paired differences to Margin-MSE (`--grid --report`).

    python benchmarks/retrieval.py --grid [--grid_losses margin_mse deadzone_0.25] [--grid_seeds 42]
    python benchmarks/retrieval.py --grid --report
    python benchmarks/retrieval.py --grid --grid_teacher minilm --grid_lrs 1e-4 2e-4  # then --report
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    RESULTS,
    Results,
    choose_rates,
    machine,
    mean_sd,
    paired_diff,
    read_jsonl,
    train_run,
    tree_is_clean,
)

OUT = RESULTS / "retrieval.jsonl"
SCIFACT = ROOT / "hf_margin" / "app" / "data" / "scifact"
RECIPE = ROOT / "recipes" / "scifact-distil.yaml"
MPNET = "sentence-transformers/all-mpnet-base-v2"
ALL_LAYERS = ["--student", "sentence-transformers/all-MiniLM-L6-v2", "--student_layers", *"012345"]
# every arm and grid run distils margins alone, as all of them did before the recipe took `embedding_weight: 1`
# (ninth round); `--extra --embedding_weight 1` turns the term on (an mpnet or mean-score teacher then also needs
# `--embedding_teacher`: its embeddings are not the student's width)
MARGINS_ONLY = ["--embedding_weight", "0"]
ARMS: dict[str, list[str]] = {
    "minilm-2l-nolabel": [],
    "minilm-2l-gold": ["--gold_split", "train"],
    "mpnet-2l-nolabel": ["--teacher", MPNET, *ALL_LAYERS[:2], "--student_layers", "0", "5"],
    "mpnet-6l-nolabel": ["--teacher", MPNET, *ALL_LAYERS],
    "mpnet-6l-gold": ["--teacher", MPNET, *ALL_LAYERS, "--gold_split", "train"],
    # both teachers at once: the mean of mpnet's and MiniLM's cosine scores ranks the corpus and gives the margins
    "mean-6l-nolabel": ["--teacher", MPNET, "--teacher_ensemble", ALL_LAYERS[1], *ALL_LAYERS],
    "mean-6l-gold": ["--teacher", MPNET, "--teacher_ensemble", ALL_LAYERS[1], *ALL_LAYERS, "--gold_split", "train"],
    "mean-2l-nolabel": [
        "--teacher",
        MPNET,
        "--teacher_ensemble",
        ALL_LAYERS[1],
        *ALL_LAYERS[:2],
        "--student_layers",
        "0",
        "5",
    ],  # fmt: skip
}


# ---- the method grid ---------------------------------------------------------------------------------------------

# the student: layers 0 and 5 of MiniLM (named: a recipe's student defaults to its teacher, here mpnet); "minilm" is
# the recipe's own setting (MiniLM teaches its layers 0 and 5), which decides the recipe's loss
GRID_TEACHERS: dict[str, list[str]] = {
    "mpnet": ["--teacher", MPNET, *ALL_LAYERS[:2], "--student_layers", "0", "5"],
    "minilm": [],
}
GRID_OUTS = {"mpnet": RESULTS / "retrieval_methods.jsonl", "minilm": RESULTS / "retrieval_methods_minilm.jsonl"}
# what cannot change from one grid run to the next is not measured again: the teacher's figures, the untrained
# student's and the encoding speeds (the arms' runs report them)
GRID_QUIET = ["--eval_teacher", "false", "--eval_before", "false", "--measure_speed", "false"]
GRID_LOSSES: dict[str, list[str]] = {  # every loss option spelled out; the rest is the recipe's
    "margin_mse": ["--loss", "margin_mse"],
    "deadzone_0.25": ["--loss", "adaptive", "--activation", "relu", "--overshoot_width", "0.25"],
    "listwise_kl_T0.1": ["--loss", "listwise_kl", "--temperature", "0.1"],
}
GRID_LRS = (5e-5, 1e-4, 2e-4)
MAX_EXTENSIONS = 2
DEV_QUERIES = 200


def dev_folder(work: Path) -> Path:
    """A copy of the shipped SciFact (files linked) with ``qrels/dev.tsv``: the judgements of a fixed sample of
    ``DEV_QUERIES`` judged train claims, none a test claim (their queries in ``queries-dev.jsonl``), and
    ``train-queries.txt``: the unlabelled claims without them. Test claims and qrels stay as shipped."""
    from hf_margin.evaluation.retrieval import load_beir

    folder = work / "scifact"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        if not (folder / name).exists():
            (folder / name).symlink_to(SCIFACT / name)
    judged = [line.split("\t") for line in (SCIFACT / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    train_queries = [json.loads(line) for line in (SCIFACT / "queries-train.jsonl").read_text().splitlines()]
    tests = {q.strip() for q in load_beir(SCIFACT, "test").queries.values()}
    repeats = {q["_id"] for q in train_queries if q["text"].strip() in tests}  # SciFact has 2: never dev claims
    ids = sorted({row[0] for row in judged} - repeats, key=int)
    dev = set(random.Random(0).sample(ids, DEV_QUERIES))
    (folder / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join("\t".join(row) + "\n" for row in judged if row[0] in dev)
    )
    dev_rows = [q for q in train_queries if q["_id"] in dev]
    (folder / "queries-dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in dev_rows))
    dev_texts = {q["text"].strip() for q in dev_rows}
    kept = [q for q in (SCIFACT / "unlabelled.txt").read_text().splitlines() if q.strip() not in dev_texts]
    (folder / "train-queries.txt").write_text("\n".join(kept) + "\n")
    return folder


def run_grid_point(
    loss: str, lr: float, seed: int, folder: Path, cache_dir: str | None, teacher: str = "mpnet"
) -> dict[str, Any]:
    """One grid run (its own process): test and dev figures of the student after training."""
    options = [*GRID_TEACHERS[teacher], *GRID_QUIET, *MARGINS_ONLY, *GRID_LOSSES[loss], "--teacher_margin_scaling",
               "none"]  # fmt: skip
    options += ["--learning_rate", str(lr)]
    options += ["--data_dir", str(folder), "--query_file", str(folder / "train-queries.txt"), "--dev_split", "dev"]
    metrics, wall = train_run(RECIPE, [*options, "--seed", str(seed)], cache_dir)
    evaluation = metrics["evaluation"]
    return {
        "loss": loss,
        "lr": lr,
        "seed": seed,
        "teacher": teacher,
        "options": options,
        **{
            f"{split}_{m}": evaluation[name][m]["after"]
            for split, name in (("test", "scifact"), ("dev", "scifact_dev"))
            for m in ("ndcg@10", "mrr@10")
        },  # fmt: skip
        "train_queries": metrics["data"]["corpus_triplets"],
        "wall_s": wall,
        "machine": machine(),
        "clean_tree": tree_is_clean(),
    }


def chosen_lr(records: list[dict[str, Any]], loss: str) -> float | None:
    """The learning rate of ``loss`` with the best seed-42 dev nDCG@10 (None before any ran)."""
    dev = {r["lr"]: r["dev_ndcg@10"] for r in records if r["loss"] == loss and r["seed"] == 42}
    return max(dev, key=dev.get) if dev else None


def run_grid(
    losses: list[str],
    seeds: list[int],
    cache_dir: str | None,
    out: Path,
    teacher: str = "mpnet",
    rates: tuple[float, ...] = GRID_LRS,
) -> None:
    """Seed 42 at every rate of each loss (:func:`benchmarks.common.choose_rates`), then the other seeds, one
    seed of every loss at a time, at each loss's dev-chosen rate; finished runs skipped. ``rates``: each loss's
    starting grid (a best rate at its edge is extended, so two rates also bracket the choice)."""
    import tempfile

    results = Results(out, key=lambda r: (r["loss"], r["lr"], r["seed"]))
    with tempfile.TemporaryDirectory() as work:
        folder = dev_folder(Path(work))

        def run(loss: str, lr: float, seed: int) -> None:
            if (loss, lr, seed) not in results:
                record = results.add(run_grid_point(loss, lr, seed, folder, cache_dir, teacher))
                print(json.dumps({k: record[k] for k in ("loss", "lr", "seed", "dev_ndcg@10", "test_ndcg@10")}))

        def run_points(points: list[tuple[Any, float]]) -> dict[tuple[Any, float], float]:
            # every loss at the recipe's rate first (a grid cut short still compares the losses), then the others
            for loss, lr in sorted(points, key=lambda point: (point[1] != 1e-4, point[1])):
                run(loss, lr, 42)
            return {(loss, lr): r["dev_ndcg@10"] for (loss, lr, seed), r in results.done.items() if seed == 42}

        earlier = {(loss, lr) for loss, lr, seed in results.done if seed == 42}
        grids = {loss: [*rates, *(lr for name, lr in earlier if name == loss)] for loss in losses}
        choose_rates(grids, run_points, MAX_EXTENSIONS)
        for seed in seeds:  # seed by seed, so a grid cut short still pairs every loss on the seeds it ran
            for loss in losses:  # at the rate the report names (ties: the earlier run)
                run(loss, chosen_lr(results.records(), loss), seed)


def grid_report(records: list[dict[str, Any]]) -> str:
    """Markdown: per loss, seed-42 dev nDCG@10 by rate, the chosen rate, test nDCG@10 / MRR@10 over the seeds at
    it, and paired differences to Margin-MSE (95% t interval)."""
    lines = [
        "| loss | seed-42 dev nDCG@10 by lr | lr (dev-chosen) | seeds | test nDCG@10 | Δ vs Margin-MSE | test MRR@10 | "
        "Δ vs Margin-MSE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    at_choice = {}
    for loss in dict.fromkeys(r["loss"] for r in records):
        lr = chosen_lr(records, loss)
        at_choice[loss] = [r for r in records if r["loss"] == loss and r["lr"] == lr]
    for loss, runs in at_choice.items():
        dev = {r["lr"]: r["dev_ndcg@10"] for r in records if r["loss"] == loss and r["seed"] == 42}
        cells = ", ".join(("**{:.0e}: {:.2f}**" if lr == runs[0]["lr"] else "{:.0e}: {:.2f}").format(lr, v)
                          for lr, v in sorted(dev.items()))  # fmt: skip
        base = at_choice.get("margin_mse", [])
        lines.append(
            f"| {loss} | {cells} | {runs[0]['lr']:.0e} | {len(runs)} | {mean_sd([r['test_ndcg@10'] for r in runs])} | "
            f"{paired_diff(runs, base, 'test_ndcg@10') if loss != 'margin_mse' else '–'} | "
            f"{mean_sd([r['test_mrr@10'] for r in runs])} | "
            f"{paired_diff(runs, base, 'test_mrr@10') if loss != 'margin_mse' else '–'} |"
        )
    return "\n".join(lines)


# ---- the goals' arms -----------------------------------------------------------------------------------------------


def run_arm(arm: str, seed: int, extra: list[str], cache_dir: str | None) -> dict[str, Any]:
    """One `hf-margin train` run in its own process; its metrics.json, condensed."""
    metrics, wall = train_run(RECIPE, [*ARMS[arm], *MARGINS_ONLY, "--seed", str(seed), *extra], cache_dir)
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

    for arm, runs in arms.items():  # a figure a run skipped (--eval_before / --eval_teacher / --measure_speed
        f = [r["figures"] for r in runs]  # false) reads "–"
        s = runs[-1]["speed"]
        before = next((f"{x['ndcg@10']['before']:.2f}" for x in f if "before" in x["ndcg@10"]), "–")
        teacher = next((f"{x['ndcg@10']['teacher']:.2f}" for x in f if "teacher" in x["ndcg@10"]), "–")
        speeds = (
            (f"{s['student']['texts_per_s']:.1f} / {s['teacher']['texts_per_s']:.1f}", f"{s['speedup']:.2f}x")
            if s.get("speedup")
            else ("–", "–")
        )
        lines.append(
            f"| {arm} | {', '.join(str(r['seed']) for r in runs)} | {before} | "
            f"{mean_sd([x['ndcg@10']['after'] for x in f])} | {mean_sd([x['mrr@10']['after'] for x in f])} | "
            f"{mean_sd([x['recall@100']['after'] for x in f])} | {teacher} | {speeds[0]} | {speeds[1]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["minilm-2l-nolabel", "minilm-2l-gold"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--cache_dir", default=None, help="Cache of built sets and margins (kept across runs).")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="More hf-margin options, last.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--grid", action="store_true", help="The method grid (a teacher -> 2 layers), not --arms.")
    parser.add_argument("--grid_teacher", default="mpnet", choices=list(GRID_TEACHERS), help="minilm: the recipe's.")
    parser.add_argument("--grid_losses", nargs="+", default=list(GRID_LOSSES), choices=list(GRID_LOSSES))
    parser.add_argument("--grid_seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--grid_lrs", nargs="+", type=float, default=list(GRID_LRS), help="Each loss's first rates.")
    parser.add_argument("--out", type=Path, default=None, help=f"Default {OUT.name}, or the teacher's with --grid.")
    opts = parser.parse_args()
    opts.out = opts.out or (GRID_OUTS[opts.grid_teacher] if opts.grid else OUT)
    if opts.report:
        print((grid_report if opts.grid else report)(read_jsonl(opts.out)))
        return
    if opts.grid:
        run_grid(opts.grid_losses, opts.grid_seeds, opts.cache_dir, opts.out, opts.grid_teacher, tuple(opts.grid_lrs))
        return
    variant = " ".join(opts.extra)
    results = Results(opts.out, key=lambda r: (r["arm"], r.get("variant", ""), r["seed"]))
    for arm in opts.arms:
        for seed in opts.seeds:
            if (arm, variant, seed) not in results:
                record = results.add(run_arm(arm, seed, opts.extra, opts.cache_dir))
                print(json.dumps({k: record[k] for k in ("arm", "seed", "figures", "wall_s")}), flush=True)


if __name__ == "__main__":
    main()

"""Data volume: how much the teacher-built training set (corpus mode) adds to the 2,994 gold STS-B triplets.

Training sets, all from STS-B *train* only (never dev or test):
  gold          the default recipe's triplets (gold >= 3 pairs, 4 teacher-mined negatives);
  corpus_pK     corpus mode on every distinct STS-B train sentence: K = 1, 2, 4 teacher nearest neighbours as
                positives, 4 negatives from the teacher's ranks [3, 30); no gold label used;
  gold+corpus_pK  both.
Losses: the Margin-MSE and the adaptive-family arm with the best mean dev over seeds in benchmarks/methods.py's
same-scale results (BENCHMARKS.md section 8), each at the learning rate chosen there; 1 epoch; seeds 0, 1, 2;
the 2-layer student. Also the time the teacher spends building each corpus set, uncached (empty cache) and
cached (rerun).

    python benchmarks/data_volume.py [--workers 8] [--positives 1 2 4]
    python benchmarks/data_volume.py --report
    python benchmarks/data_volume.py --dry-run --out /tmp/dv.jsonl     # small, CPU: checks the script

Results append to benchmarks/results/data_volume.jsonl (finished runs are skipped on a rerun).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, Results, append_jsonl, machine, mean_sd, read_jsonl  # noqa: E402
from benchmarks.methods import (  # noqa: E402
    MSE_FAMILIES,
    adaptive_families,
    chosen_runs,
    dev_best,
    families,
    init_worker,
    recipe,
    train_one,
)

OUT = RESULTS / "data_volume.jsonl"
METHODS_OUT = RESULTS / "methods.jsonl"


def pick_arms(methods: list[dict[str, Any]], dry_run: bool) -> dict[str, tuple[str, dict, str, float]]:
    """{family: (arm, options, scaling, lr)} of the better Margin-MSE and the best adaptive family by mean dev over
    seeds (methods.dev_best), 2 layers, in the same-scale methods results."""
    final = chosen_runs(methods, dry_run)
    mse, adaptive = dev_best(final, "same", MSE_FAMILIES), dev_best(final, "same", adaptive_families("same"))
    if mse is None or adaptive is None:
        raise SystemExit("no same-scale results in methods.jsonl: run benchmarks/methods.py first")
    picked = {}
    for family in (mse, adaptive):
        run = final[("same", family, 2)][0]
        options, scaling = families("same")[family][run["arm"]]
        picked[family] = (run["arm"], options, scaling, run["lr"])
    return picked


def build_sets(positives: list[int], work: Path, dry_run: bool, scalings: set[str]) -> tuple[dict, list[dict]]:
    """Save every training set (per scaling) under ``work``; returns ({(set, scaling): (path, stats)}, timings)."""
    from datasets import concatenate_datasets

    from benchmarks.common import fresh_student
    from hf_margin.app.loading import load_miner, load_teacher
    from hf_margin.app.stsb import load_stsb, unique_sentences
    from hf_margin.app.tasks.common import Unlabelled, add_teacher_built
    from hf_margin.app.tasks.stsb import build_triplets
    from hf_margin.data.margin_scaling import scale_teacher_margins

    model_args, data_args, _, args = recipe("same")  # gold triplets only; the corpus sets are built below
    splits = load_stsb(None)
    teacher = load_teacher(model_args)
    miner = load_miner(model_args, data_args, teacher)
    if dry_run:
        data_args = dataclasses.replace(data_args, max_train_examples=64)
    splits, triplets, _ = build_triplets(model_args, data_args, teacher, splits=splits, miner=miner)
    for split in ("validation", "test"):
        part = splits[split].select(range(40)) if dry_run else splits[split]
        part.save_to_disk(str(work / "splits" / split))
    texts = unique_sentences(splits["train"])
    if dry_run:
        texts = texts[:120]
    gold = triplets["train"]
    sets = {"gold": gold}
    timings = []
    for k in positives:
        built = None
        for state in ("uncached", "cached"):
            cache = work / f"cache-p{k}"  # empty for the first build, filled for the second
            run_args = dataclasses.replace(
                data_args, positives_per_query=k, cache_dir=str(cache), unlabelled_file="stsb:train"
            )
            teacher.clear_memo()  # the uncached build embeds every text itself
            start = time.perf_counter()
            unlabelled = Unlabelled(texts, source="stsb:train")
            built, _, count = add_teacher_built(None, unlabelled, run_args, lambda: miner, teacher, True)
            seconds = time.perf_counter() - start
            timings.append({"part": "build", "positives": k, "state": state, "seconds": seconds, "triplets": count})
            print(f"corpus set, {k} positive(s): {count} triplets, {state} {seconds:.1f} s", flush=True)
        columns = [c for c in gold.column_names if c in built.column_names]
        sets[f"corpus_p{k}"] = built.select_columns(columns)
        sets[f"gold+corpus_p{k}"] = concatenate_datasets([gold.select_columns(columns), built.select_columns(columns)])
    paths = {}
    for name, data in sets.items():
        for scaling in sorted(scalings):
            student, tokenizer = fresh_student(model_args)
            scaled, stats = scale_teacher_margins({"train": data}, scaling, student, tokenizer, args)
            target = work / f"{name}-{scaling}"
            scaled["train"].save_to_disk(str(target))
            paths[(name, scaling)] = (str(target), stats, len(data))
    return paths, timings


def finished_runs(path: Path, dry_run: bool) -> Results:
    """The training runs already in the results, keyed (set, arm, seed); the build-time rows are not runs."""
    return Results(
        path,
        key=lambda r: (r["set"], r["arm"], r["seed"]),
        keep=lambda r: r.get("part") == "train" and r.get("dry_run", False) == dry_run,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positives", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--methods", type=Path, default=METHODS_OUT, help="methods.py results to pick the arms from")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if opts.report:
        print(report(read_jsonl(opts.out)))
        return
    if opts.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        opts.positives, opts.seeds = [1], [0, 1]
    picked = pick_arms(read_jsonl(opts.methods), opts.dry_run)
    gpu = torch.cuda.is_available() and not opts.dry_run
    workers = opts.workers or (8 if gpu else max(1, os.cpu_count() or 1))
    threads = 2 if gpu else max(1, (os.cpu_count() or 1) // workers)
    done = finished_runs(opts.out, opts.dry_run)
    info = {"machine": machine(), "dry_run": opts.dry_run}
    with tempfile.TemporaryDirectory() as tmp:
        paths, timings = build_sets(opts.positives, Path(tmp), opts.dry_run, {p[2] for p in picked.values()})
        for t in timings:
            append_jsonl(opts.out, {**t, **info})
        jobs = []
        for (name, scaling), (path, stats, rows) in paths.items():
            for family, (arm, options, arm_scaling, lr) in picked.items():
                if arm_scaling != scaling:
                    continue
                for seed in opts.seeds:
                    if (name, arm, seed) in done:
                        continue
                    jobs.append({
                        "setting": "same", "family": family, "arm": arm, "lr": lr, "seed": seed, "layers": 2,
                        "options": options, "scaling": scaling, "train_path": path, "scaling_stats": stats,
                        "splits_path": str(Path(tmp) / "splits"), "tmp": tmp, "dry_run": opts.dry_run,
                        "set": name, "rows": rows, **({"max_steps": 3} if opts.dry_run else {}),
                    })  # fmt: skip
        jobs.sort(key=lambda j: -j["rows"])  # longest first: the pool ends together
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(threads,)) as pool:
            for job, record in zip(jobs, pool.map(train_one, jobs)):
                record = done.add({**record, "part": "train", "set": job["set"], "rows": job["rows"], **info})
                print(
                    f"{job['set']:16s} {job['arm']:24s} seed={job['seed']} test={record['test_spearman']:.2f} "
                    f"MRR@10={record['test_mrr10']:.2f} ({record['train_seconds']:.0f}s)",
                    flush=True,
                )
    print(report(read_jsonl(opts.out), opts.dry_run))


def report(records: list[dict[str, Any]], dry_run: bool = False) -> str:
    """Markdown: set x arm (test Spearman, MRR@10; mean ± sd over seeds) and the set-building times per thread
    count (the latest record of each)."""
    records = [r for r in records if r.get("dry_run", False) == dry_run]
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("part") == "train":
            runs.setdefault((r["set"], r["arm"]), []).append(r)
    arms = sorted({a for _, a in runs})
    order = ["gold", *sorted({s for s, _ in runs if s != "gold"}, key=lambda s: (s.startswith("gold"), s))]
    lines = [
        "| training set | triplets | " + " | ".join(f"{a}: Spearman / MRR@10" for a in arms) + " |",
        "| --- | --- | " + " | ".join("---" for _ in arms) + " |",
    ]
    for name in order:
        cells = []
        rows = ""
        for arm in arms:
            group = runs.get((name, arm), [])
            rows = rows or (str(group[0]["rows"]) if group else "")
            cells.append(
                f"{mean_sd([g['test_spearman'] for g in group])} / {mean_sd([g['test_mrr10'] for g in group])}"
                if group
                else "–"
            )
        lines.append(f"| {name} | {rows} | " + " | ".join(cells) + " |")
    builds = [r for r in records if r.get("part") == "build"]
    if builds:
        lines += [
            "",
            "| corpus set | triplets | torch threads | teacher build, uncached | cached |",
            "| --- | --- | --- | --- | --- |",
        ]
        latest: dict[tuple[int, int], dict[str, dict]] = {}  # (positives, threads) -> state -> the latest record
        for b in builds:
            latest.setdefault((b["positives"], b["machine"]["torch_threads"]), {})[b["state"]] = b
        for (k, threads), state in sorted(latest.items()):
            un, ca = state.get("uncached"), state.get("cached")
            head = f"| corpus_p{k} | {(un or ca)['triplets']} | {threads} |"
            lines.append(
                f"{head} {un['seconds']:.1f} s | {ca['seconds']:.2f} s |"
                if un and ca
                else f"| corpus_p{k} | – | {threads} | – | – |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Method evidence, round two: every loss arm x setting (x student capacity), one harness.

Every run uses the same triplets of its setting, student initialisation, optimiser (AdamW), schedule (linear, 30
warm-up steps), batch 32 and 1 epoch (94 steps). Choices use STS-B *dev* with seed 0 only: each family's
learning rate from a grid that is extended (x2 or /2) until dev falls on both sides of the best rate, and, for a
family with several arms (listwise KL temperatures), the arm. Seeds 0, 1, 2 then run at the choice; STS-B *test*
Spearman and duplicate retrieval (MRR@10, nDCG@10; queries = sentence 1 of test pairs with gold >= 4, relevant =
its sentence 2, corpus = every distinct test sentence) are reported, never used to choose.

Settings: `same` (the default recipe: the bi-encoder all-MiniLM-L6-v2 teacher, cosine margins) and `cross` (the
cross-encoder teacher of recipes/teacher-cross-encoder-stsb.yaml, raw logits; `make teacher` first). Capacity:
the three best adaptive-family arms and the better Margin-MSE of each setting, with students of 1, 2 and 4
layers, at the learning rate chosen for 2 layers.

Runs go to a pool of worker processes (one GPU is shared by all; on a CPU each worker gets its own cores).

    python benchmarks/methods.py [--settings same cross] [--workers 8] [--no-capacity]
    python benchmarks/methods.py --report          # the tables of BENCHMARKS.md section 8
    python benchmarks/methods.py --dry-run --out /tmp/methods.jsonl   # small, CPU: checks the script

Results append to benchmarks/results/methods.jsonl (finished runs are skipped on a rerun).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    FIRST_TWO_LAYERS,
    GOLD_ONLY,
    RESULTS,
    Results,
    choose_rates,
    machine,
    mean_sd,
    paired_diff,
    read_jsonl,
)

OUT = RESULTS / "methods.jsonl"
RECIPES = {
    "same": ROOT / "recipes" / "stsb-adaptive.yaml",
    "cross": ROOT / "recipes" / "stsb-cross-encoder-adaptive.yaml",
}
# Every setting trains on the gold triplets only (94 steps) with the first 2 layers as the student (GOLD_ONLY,
# FIRST_TWO_LAYERS), so the grid stays the one of sections 1 and 7 whatever the default recipe adds.
CAPACITY = {1: [0], 2: [0, 1], 4: [0, 1, 2, 3]}
BASE_LRS = (1e-4, 2e-4, 4e-4, 8e-4)
TANH = {"same": (0.5, 0.5), "cross": (4.0, 0.25)}  # (temperature, scale) chosen on dev in sections 1 and 7
KL_TEMPERATURES = (0.02, 0.05, 0.1)
MSE_FAMILIES = ("margin_mse_raw", "margin_mse_student")
BASELINES = (*MSE_FAMILIES, "label_hinge", "listwise_kl")


def recipe(setting: str) -> tuple:
    """(model_args, data_args, evaluation_args, training_args) of ``setting``'s recipe, gold triplets only, the
    teacher's first 2 layers as the student."""
    from hf_margin.app.recipes import parse_recipe

    return parse_recipe(RECIPES[setting], [*GOLD_ONLY, *FIRST_TWO_LAYERS])


def teacher_fingerprint(setting: str) -> str:
    """``name@sha256[:12]`` of the local teacher weights of ``setting`` (its recipe's ``teacher``), or the name
    alone when they are not a local file: a table then shows when its runs came from two trainings of the teacher
    (the cross-encoder is retrained on each machine)."""
    teacher = Path(recipe(setting)[0].teacher)
    for weights in (ROOT / teacher / "model.safetensors", teacher / "model.safetensors"):
        if weights.is_file():
            digest = hashlib.sha256()
            with weights.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return f"{teacher.name}@{digest.hexdigest()[:12]}"
    return str(teacher)


def _adaptive(**options: Any) -> dict[str, Any]:
    """Every option of the adaptive loss spelled out, so no arm inherits one from the recipe."""
    base = {"activation": "relu", "teacher_activation": "identity", "temperature": 1.0, "scale": 1.0}
    return {"loss": "adaptive", **base, "overshoot_width": None, "mse_weight": 0.0, **options}


def families(setting: str) -> dict[str, dict[str, tuple[dict[str, Any], str]]]:
    """family -> {arm: (training options, teacher margin scaling)}. A family with several arms is a grid."""
    temperature, scale = TANH[setting]
    kl_scaling = "none" if setting == "same" else "student"  # raw logits and cosines share no softmax scale
    out: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
        "margin_mse_raw": {"margin_mse_raw": ({"loss": "margin_mse"}, "none")},
        "margin_mse_student": {"margin_mse_student": ({"loss": "margin_mse"}, "student")},
        "label_hinge": {"label_hinge": ({"loss": "label_hinge"}, "none")},
        "listwise_kl": {
            f"listwise_kl_T{t:g}": ({"loss": "listwise_kl", "temperature": t}, kl_scaling) for t in KL_TEMPERATURES
        },
        "adaptive_relu": {"adaptive_relu": (_adaptive(), "none")},
        "adaptive_relu_student": {"adaptive_relu_student": (_adaptive(), "student")},
        "adaptive_tanh": {
            f"adaptive_tanh_T{temperature:g}_s{scale:g}": (
                _adaptive(teacher_activation="tanh", temperature=temperature, scale=scale),
                "none",
            )
        },
        "squared_hinge": {"squared_hinge": (_adaptive(activation="squared_relu"), "none")},
    }
    for width in (0.0, 0.25, 1.0):
        for scaling in ("none", "student"):
            name = f"deadzone_{width:g}" + ("_student" if scaling == "student" else "")
            out[name] = {name: (_adaptive(overshoot_width=width), scaling)}
    for weight in (0.1, 1.0):
        out[f"hinge_mse_{weight:g}"] = {f"hinge_mse_{weight:g}": (_adaptive(mse_weight=weight), "none")}
    return out


# ---- data: prepared once in the main process, read by every worker -----------------------------------------------


def prepare(settings: list[str], layer_counts: list[int], work: Path, dry_run: bool) -> dict[str, Any]:
    """Save each setting's (scaled) training triplets and its STS-B dev/test to ``work``; returns their paths."""
    from benchmarks.common import fresh_student
    from hf_margin.app.tasks.stsb import build_triplets
    from hf_margin.data.margin_scaling import scale_teacher_margins

    paths: dict[str, Any] = {}
    for setting in settings:
        model_args, data_args, _, args = recipe(setting)
        if dry_run:
            triplets, splits = _dry_run_data()
        else:
            splits, triplets, teacher = build_triplets(model_args, data_args)
            del teacher
        for split in ("validation", "test"):
            splits[split].save_to_disk(str(work / setting / split))
        scalings = {arm[1] for family in families(setting).values() for arm in family.values()}
        for layers in layer_counts:
            student_args = dataclasses.replace(model_args, student_layers=CAPACITY[layers])
            for scaling in sorted(scalings):
                student, tokenizer = fresh_student(student_args)
                scaled, stats = scale_teacher_margins({"train": triplets["train"]}, scaling, student, tokenizer, args)
                target = work / setting / f"train-{scaling}-{layers}"
                scaled["train"].save_to_disk(str(target))
                paths[(setting, scaling, layers)] = (str(target), stats)
                del student
        paths[setting] = str(work / setting)
    return paths


def _dry_run_data():
    """A few pre-scored example rows and 40 STS-B pairs per split: enough to run every code path on a CPU."""
    from hf_margin.app.stsb import load_stsb
    from hf_margin.data.formats import normalize_dataset
    from hf_margin.data.sources import load_data_file

    triplets, _ = normalize_dataset(load_data_file(ROOT / "recipes" / "examples" / "flag-scored.jsonl"))
    stsb = load_stsb(None)
    return {"train": triplets}, {split: stsb[split].select(range(40)) for split in ("validation", "test")}


# ---- one run, in a worker ----------------------------------------------------------------------------------------

_CACHE: dict[str, Any] = {}


def init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one arm from scratch and evaluate it; returns the result record."""
    from datasets import load_from_disk

    from benchmarks.common import bench_args, fresh_student
    from hf_margin import MarginDistillTrainer
    from hf_margin.app.stsb import stsb_evaluators
    from hf_margin.models.kind import StudentKind

    setting, layers = job["setting"], job["layers"]
    model_args, _, _, args = recipe(setting)
    model_args = dataclasses.replace(model_args, student_layers=CAPACITY[layers])
    for path in (job["train_path"], job["splits_path"]):
        if path not in _CACHE:
            _CACHE[path] = (
                load_from_disk(path)
                if path == job["train_path"]
                else {s: load_from_disk(f"{path}/{s}") for s in ("validation", "test")}
            )
    data, splits = _CACHE[job["train_path"]], _CACHE[job["splits_path"]]
    student, tokenizer = fresh_student(model_args)
    run_args = bench_args(
        args,
        **job["options"],
        learning_rate=job["lr"],
        seed=job["seed"],
        num_train_epochs=1.0,
        max_steps=job.get("max_steps", -1),
        gpu_defaults=False,  # fp32 and collation in the loop, as on the CPU: the arms, not the path, differ
        output_dir=str(Path(job["tmp"]) / f"run-{os.getpid()}"),
    )
    trainer = MarginDistillTrainer(student, run_args, train_dataset=data, processing_class=tokenizer)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    scorer = StudentKind("bi-encoder", pooling="mean", max_length=64).scorer(trainer.model, tokenizer)
    dev = stsb_evaluators(splits["validation"], "dev", duplicates=False)["dev"](scorer)
    test = {}
    for name, evaluator in stsb_evaluators(splits["test"], "test").items():
        test.update({f"{name}_{k}": v for k, v in evaluator(scorer).items()})
    record = {
        **{k: job[k] for k in ("setting", "family", "arm", "lr", "seed", "layers", "options", "scaling")},
        "dev_spearman": dev["spearman"],
        "test_spearman": test["test_spearman"],
        "test_mrr10": test["test_duplicates_mrr@10"],
        "test_ndcg10": test["test_duplicates_ndcg@10"],
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "train_seconds": seconds,
        "scaling_stats": job["scaling_stats"],
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "dry_run": job["dry_run"],
    }
    del trainer, student
    gc.collect()
    return record


# ---- the schedule ------------------------------------------------------------------------------------------------


class Runner:
    """Runs jobs on the pool, skipping those already in ``out``; results keyed by (setting, arm, lr, seed, layers)."""

    def __init__(self, pool, paths: dict[str, Any], out: Path, tmp: Path, dry_run: bool, max_steps: int) -> None:
        self.pool, self.paths, self.out, self.tmp = pool, paths, out, tmp
        self.dry_run, self.max_steps = dry_run, max_steps
        self.results = Results(out, self.key, keep=lambda r: r.get("dry_run", False) == dry_run)
        self.done = self.results.done
        self.machine = machine()
        self.teachers = {setting: teacher_fingerprint(setting) for setting in RECIPES if setting in paths}

    @staticmethod
    def key(r: dict[str, Any]) -> tuple:
        return (r["setting"], r["arm"], float(r["lr"]), r["seed"], r["layers"])

    def run(self, specs: list[tuple[str, str, str, float, int, int]]) -> list[dict[str, Any]]:
        """Run (setting, family, arm, lr, seed, layers) specs in parallel; results in the order given."""
        jobs, keys = [], []
        for setting, family, arm, lr, seed, layers in specs:
            key = (setting, arm, float(lr), seed, layers)
            keys.append(key)
            if key in self.done or any(k == key for k, _ in jobs):
                continue
            options, scaling = families(setting)[family][arm]
            train_path, stats = self.paths[(setting, scaling, layers)]
            job = {
                "setting": setting, "family": family, "arm": arm, "lr": lr, "seed": seed, "layers": layers,
                "options": options, "scaling": scaling, "train_path": train_path, "scaling_stats": stats,
                "splits_path": self.paths[setting], "tmp": str(self.tmp), "dry_run": self.dry_run,
            }  # fmt: skip
            if self.max_steps > 0:
                job["max_steps"] = self.max_steps
            jobs.append((key, job))
        futures = {self.pool.submit(train_one, job): key for key, job in jobs}
        for future in as_completed(futures):  # written as each ends: a run killed by a deadline loses only itself
            key, record = futures[future], future.result()
            record["machine"] = self.machine
            record["teacher"] = self.teachers.get(record["setting"])
            self.results.add(record)
            print(
                f"{record['setting']:5s} {record['arm']:26s} L{record['layers']} lr={record['lr']:g} "
                f"seed={record['seed']} dev={record['dev_spearman']:.2f} test={record['test_spearman']:.2f} "
                f"MRR@10={record['test_mrr10']:.2f} ({record['train_seconds']:.1f}s)",
                flush=True,
            )
        return [self.done[k] for k in keys]


def choose(
    runner: Runner, settings: list[str], names: list[str], lrs: tuple[float, ...], seed: int, extend: int
) -> dict:
    """Seed-0 dev choices: {(setting, family): (arm, lr)}, every family's lr bracketed by the grid. The grid starts
    from ``lrs`` and every rate this arm already ran at (seed ``seed``, 2 layers), so the choice is the one the
    report makes from all those runs (:func:`chosen_runs`)."""
    earlier: dict[tuple[str, str], set[float]] = {}
    for setting, arm, lr, run_seed, layers in runner.done:
        if run_seed == seed and layers == 2:
            earlier.setdefault((setting, arm), set()).add(lr)
    grids = {
        (s, f, a): [float(lr) for lr in lrs] + sorted(earlier.get((s, a), set()))
        for s in settings
        for f, arms in families(s).items()
        if f in names
        for a in arms
    }

    def run(points: list[tuple[Any, float]]) -> dict[tuple[Any, float], float]:
        runner.run([(s, f, a, lr, seed, 2) for (s, f, a), lr in points])
        return {((s, f, a), lr): runner.done[(s, a, float(lr), seed, 2)]["dev_spearman"] for (s, f, a), lr in points}

    rates = choose_rates(grids, run, extend)
    choice = {}
    for (s, f, a), lr in rates.items():  # a family with several arms (KL temperatures): its dev-best arm
        dev = runner.done[(s, a, float(lr), seed, 2)]["dev_spearman"]
        if (s, f) not in choice or dev > choice[(s, f)][2]:
            choice[(s, f)] = (a, lr, dev)
    return {key: (arm, lr) for key, (arm, lr, _) in choice.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--families", nargs="+", default=list(families("same")), choices=list(families("same")))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--lrs", nargs="+", type=float, default=list(BASE_LRS))
    parser.add_argument("--extend", type=int, default=3, help="At most this many grid extensions.")
    parser.add_argument("--workers", type=int, default=None, help="Parallel runs (default: 6 on a GPU, else cores).")
    parser.add_argument("--no-capacity", action="store_true", help="Skip the 1- and 4-layer students.")
    parser.add_argument(
        "--capacity-lrs",
        nargs="+",
        type=float,
        default=[],
        help="Also run the capacity rows at these learning rates (a control: the tables use the 2-layer choice).",
    )
    parser.add_argument("--report", action="store_true", help="Print the tables from the results and exit.")
    parser.add_argument("--dry-run", action="store_true", help="Small, on the CPU: checks the script.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if opts.report:
        print(report(read_jsonl(opts.out)))
        return
    settings = opts.settings
    if not opts.dry_run and "cross" in settings:
        teacher = Path(recipe("cross")[0].teacher)
        if not any((folder / "model.safetensors").is_file() for folder in (ROOT / teacher, teacher)):
            print(f"no cross-encoder teacher at {teacher}: run `make teacher` first; running 'same' only")
            settings = [s for s in settings if s != "cross"]
    gpu = torch.cuda.is_available() and not opts.dry_run
    workers = opts.workers or (8 if gpu else max(1, (os.cpu_count() or 1)))
    threads = 2 if gpu else max(1, (os.cpu_count() or 1) // workers)
    layer_counts = [2] if opts.no_capacity else [1, 2, 4]
    lrs = tuple(opts.lrs)
    if opts.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        settings, layer_counts, lrs = ["same"], [1, 2], (2e-4, 4e-4)
        opts.families, opts.seeds = ["margin_mse_student", "listwise_kl", "deadzone_0_student"], opts.seeds[:2]
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare(settings, layer_counts, Path(tmp), opts.dry_run)
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(threads,)) as pool:
            runner = Runner(pool, paths, opts.out, Path(tmp), opts.dry_run, max_steps=3 if opts.dry_run else -1)
            first = opts.seeds[0]
            choice = choose(runner, settings, opts.families, lrs, first, 0 if opts.dry_run else opts.extend)
            runner.run([(s, f, a, lr, seed, 2) for (s, f), (a, lr) in choice.items() for seed in opts.seeds[1:]])
            for setting in settings if len(layer_counts) > 1 else []:
                final = chosen_runs(list(runner.done.values()), opts.dry_run)
                for family in capacity_families(final, setting, opts.families):
                    arm, chosen = choice[(setting, family)]
                    runner.run(
                        [
                            (setting, family, arm, lr, seed, n)
                            for lr in (chosen, *opts.capacity_lrs)
                            for n in layer_counts
                            if n != 2
                            for seed in opts.seeds
                        ]
                    )
    print(report(read_jsonl(opts.out), dry_run=opts.dry_run))


# ---- the tables --------------------------------------------------------------------------------------------------


def chosen_runs(records: list[dict[str, Any]], dry_run: bool = False) -> dict:
    """{(setting, family, layers): [records at the chosen (arm, lr), one per seed]} from seed-0 dev choices."""
    records = [r for r in records if r.get("dry_run", False) == dry_run]
    by_family: dict[tuple, list[dict]] = {}
    for r in records:
        by_family.setdefault((r["setting"], r["family"], r["layers"]), []).append(r)
    final = {}
    for (setting, family, layers), runs in by_family.items():
        if layers != 2:
            continue
        first = min(r["seed"] for r in runs)
        best = max((r for r in runs if r["seed"] == first), key=lambda r: r["dev_spearman"])
        for n in {r["layers"] for r in records if r["setting"] == setting and r["family"] == family}:
            pool = by_family.get((setting, family, n), [])
            chosen = [r for r in pool if r["arm"] == best["arm"] and r["lr"] == best["lr"]]
            if chosen:
                final[(setting, family, n)] = sorted(chosen, key=lambda r: r["seed"])
    return final


def dev_ranked(final: dict, setting: str, names: list[str] | tuple[str, ...]) -> list[str]:
    """Of ``names``, the families with results, best first by STS-B dev Spearman, mean over their seeds at their
    seed-0 choice (2 layers): the rule that picks the default recipe's arm, the capacity arms and the arms of
    benchmarks/data_volume.py."""
    dev = {
        f: statistics.mean(r["dev_spearman"] for r in runs)
        for (s, f, n), runs in final.items()
        if s == setting and n == 2 and f in names
    }
    return sorted(dev, key=dev.get, reverse=True)


def dev_best(final: dict, setting: str, names: list[str] | tuple[str, ...]) -> str | None:
    """The first of :func:`dev_ranked`, or None without results."""
    return next(iter(dev_ranked(final, setting, names)), None)


def adaptive_families(setting: str) -> list[str]:
    return [f for f in families(setting) if f not in BASELINES]


def capacity_families(final: dict, setting: str, names: list[str]) -> list[str]:
    """The three adaptive-family arms of ``names`` with the best dev, and the better Margin-MSE (:func:`dev_ranked`)."""
    adaptive = [f for f in names if f not in BASELINES]
    return [*dev_ranked(final, setting, adaptive)[:3], *dev_ranked(final, setting, MSE_FAMILIES)[:1]]


def _dev_by_lr(records: list[dict[str, Any]], setting: str, arm: str, dry_run: bool) -> str:
    """'lr: dev' of an arm's seed-0, 2-layer runs; the best is bold and marked 'edge' when the grid has no rate
    beyond it (not bracketed yet)."""
    dev = {
        r["lr"]: r["dev_spearman"]
        for r in records
        if r["setting"] == setting and r["arm"] == arm and r["layers"] == 2 and r["seed"] == 0
        and r.get("dry_run", False) == dry_run
    }  # fmt: skip
    best = max(dev, key=dev.get)
    edge = " (edge)" if best in (min(dev), max(dev)) else ""
    return ", ".join(
        f"**{lr:g}: {v:.2f}**{edge}" if lr == best else f"{lr:g}: {v:.2f}" for lr, v in sorted(dev.items())
    )


def _teacher_counts(records: list[dict[str, Any]], setting: str, dry_run: bool) -> dict[str, int]:
    """{teacher fingerprint: runs} of a setting; records from before the field are "not recorded"."""
    counts: dict[str, int] = {}
    for r in records:
        if r["setting"] == setting and r.get("dry_run", False) == dry_run:
            name = r.get("teacher") or "not recorded"
            counts[name] = counts.get(name, 0) + 1
    return counts


def _size_table(caption: str, families: list[str], cells: dict[tuple[str, int], str]) -> list[str]:
    """Markdown lines: ``caption``, then a row per family with ``cells[(family, layers)]`` for 1, 2 and 4 layers."""
    lines = ["", caption, "", "| arm | 1 layer | 2 layers | 4 layers |", "| --- | --- | --- | --- |"]
    return lines + [f"| {f} | " + " | ".join(cells.get((f, n), "–") for n in (1, 2, 4)) + " |" for f in families]


def _capacity_controls(records: list[dict[str, Any]], final: dict, setting: str, dry_run: bool) -> list[str]:
    """Markdown rows for runs of the capacity arms at a rate other than their 2-layer choice (``--capacity-lrs``;
    at 2 layers, rates with 2 or more seeds), each with the paired Δ of every capacity arm chosen at that rate."""
    chosen = {(f, n): (runs[0]["arm"], runs[0]["lr"]) for (s, f, n), runs in final.items() if s == setting}
    capacity = {f for (f, n) in chosen if n != 2}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["setting"] != setting or r["family"] not in capacity or r.get("dry_run", False) != dry_run:
            continue
        if chosen.get((r["family"], r["layers"])) != (r["arm"], r["lr"]):
            groups.setdefault((r["arm"], r["family"], r["layers"], r["lr"]), []).append(r)
    groups = {k: runs for k, runs in groups.items() if k[2] != 2 or len(runs) >= 2}
    if not groups:
        return []
    lines = [
        "",
        f"Capacity ({setting}), runs at a rate other than the arm's 2-layer choice (controls, `--capacity-lrs`): "
        "test Spearman / MRR@10, and the paired Δ to them of each capacity arm chosen at that rate.",
        "",
        "| arm | layers | lr | seeds | test Spearman | MRR@10 | same-rate arms: paired Δ to this row |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (arm, family, layers, lr), runs in sorted(groups.items()):
        same_rate = [
            f"{f}: {paired_diff(other, runs, 'test_spearman')} / {paired_diff(other, runs, 'test_mrr10')}"
            for (s, f, n), other in sorted(final.items())
            if s == setting and n == layers and f != family and f in capacity and other[0]["lr"] == lr
        ]
        lines.append(
            f"| {arm} | {layers} | {lr:g} | {len(runs)} | {mean_sd([r['test_spearman'] for r in runs])} "
            f"| {mean_sd([r['test_mrr10'] for r in runs])} | {'; '.join(same_rate) or '–'} |"
        )
    return lines


def report(records: list[dict[str, Any]], dry_run: bool = False) -> str:
    """Markdown: per setting, every family at its choice (3 seeds), and the capacity table."""
    final = chosen_runs(records, dry_run)
    lines = []
    for setting in RECIPES:
        rows = {f: runs for (s, f, n), runs in final.items() if s == setting and n == 2}
        if not rows:
            continue
        mse = dev_best(final, setting, MSE_FAMILIES)
        best = dev_best(final, setting, adaptive_families(setting))
        lines += [
            f"### {setting}-scale teacher" if setting == "same" else "### cross-scale teacher (cross-encoder)",
            "",
            f"Paired differences are to `{mse}` (the Margin-MSE with the better mean dev), same seeds, 95% t "
            f"interval. The adaptive family's best arm by mean dev over its seeds: `{best}`.",
            "",
            "| arm | seed-0 dev by lr | lr (dev-chosen) | seeds | test Spearman | Δ Spearman vs MSE | MRR@10 "
            "| Δ MRR@10 vs MSE | nDCG@10 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        order = sorted(rows, key=lambda f: statistics.mean(r["test_spearman"] for r in rows[f]), reverse=True)
        for f in order:
            runs = rows[f]
            lines.append(
                f"| {runs[0]['arm']} | {_dev_by_lr(records, setting, runs[0]['arm'], dry_run)} | {runs[0]['lr']:g} "
                f"| {len(runs)} | {mean_sd([r['test_spearman'] for r in runs])} "
                f"| {paired_diff(runs, rows[mse], 'test_spearman') if mse and f != mse else '–'} "
                f"| {mean_sd([r['test_mrr10'] for r in runs])} "
                f"| {paired_diff(runs, rows[mse], 'test_mrr10') if mse and f != mse else '–'} "
                f"| {mean_sd([r['test_ndcg10'] for r in runs])} |"
            )
        teachers = _teacher_counts(records, setting, dry_run)
        if len(teachers) > 1:
            lines += ["", "Teacher weights (runs): " + ", ".join(f"{t} ({n})" for t, n in teachers.items()) + "."]
        capacity = sorted({f for (s, f, n) in final if s == setting and n != 2})
        if capacity:
            mean_cells = {
                (f, n): f"{mean_sd([r['test_spearman'] for r in runs])} / {mean_sd([r['test_mrr10'] for r in runs])}"
                for (s, f, n), runs in final.items()
                if s == setting
            }
            caption = f"Capacity ({setting}): test Spearman / MRR@10, mean ± sd over seeds, at the 2-layer choice."
            lines += _size_table(caption, capacity, mean_cells)
            if mse in capacity:
                delta_cells = {
                    (f, n): f"{paired_diff(runs, base, 'test_spearman')} / {paired_diff(runs, base, 'test_mrr10')}"
                    for (s, f, n), runs in final.items()
                    if s == setting and (base := final.get((setting, mse, n)))
                }
                caption = (
                    f"Capacity ({setting}): paired Δ to `{mse}` at each size, test Spearman / MRR@10, 95% t interval."
                )
                lines += _size_table(caption, [f for f in capacity if f != mse], delta_cells)
            lines += _capacity_controls(records, final, setting, dry_run)
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

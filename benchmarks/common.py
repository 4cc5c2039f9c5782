"""The benchmarks' one harness, which each script specialises with its own arms and record:

- a run: :func:`train_run` (``hf-margin train`` in its own process, the user's path) or a worker of
  ``methods.py``'s pool (:func:`bench_args`, :func:`fresh_student`);
- resume: :class:`Results`, the results file keyed by each run's identity (a finished run never reruns);
- the learning rate chosen on dev: :func:`choose_rates` (:func:`next_rate` extends a grid at its edge);
- the spread over seeds: :func:`mean_sd`, :func:`paired_diff`; the record's context: :func:`machine`,
  :func:`tree_is_clean`.

Tables come from ``benchmarks/report.py`` (or a script's ``--report``)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import torch

from hf_margin.app.recipes import parse_recipe
from hf_margin.app.tasks.stsb import build_triplets
from hf_margin.models.modeling import load_student
from hf_margin.models.resolve import resolve_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_RECIPE = ROOT / "recipes" / "stsb-adaptive.yaml"
# The benchmarks' setting, whatever the default recipe adds: the 2,994 gold triplets only (its corpus mode unset;
# benchmarks/data_volume.py measures what the corpus adds) and the teacher's first 2 layers as the student (56.10
# STS-B test before training), so reruns of every section of BENCHMARKS.md train and compare the same thing.
GOLD_ONLY = ["--unlabelled_file", "none"]
FIRST_TWO_LAYERS = ["--student_layers", "0", "1"]


# the instruction sets an int8 or bf16 kernel's speed turns on: two CPUs both named "AMD EPYC" may differ here
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """What the figures were measured on (``isa``: which of :data:`ISA_FLAGS` the CPU has, where Linux says)."""
    cpu, flags = platform.processor() or "", set()
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines())
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        cpu, flags = fields.get("model name", cpu), set(fields.get("flags", "").split())
    except (OSError, ValueError):
        pass
    return {
        "cpu": cpu,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    }


def int8_instructions(record_machine: dict[str, Any]) -> str:
    """The widest int8 multiply-add a record's CPU has (:func:`machine`'s ``isa``): what sets an int8 model's speed."""
    isa = record_machine.get("isa")
    if isa is None:
        return "not recorded"
    names = {"amx_int8": "AMX", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "avx2": "AVX2, no VNNI"}
    return next((label for flag, label in names.items() if flag in isa), "no AVX2")


def tree_is_clean() -> bool:
    """Whether the measured code is the commit that :func:`machine` names (no uncommitted change). The records the
    benchmarks write (``benchmarks/results/``) do not count: a run's second seed measures the same code as its first."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return not status.strip()


def train_run(
    recipe: Path, options: list[str], cache_dir: str | None = None, output_dir: str | None = None
) -> tuple[dict[str, Any], float]:
    """One ``hf-margin train RECIPE OPTIONS`` in its own process, offline, into a temporary folder (or
    ``output_dir``, kept: the saved student, for a later benchmark): (its metrics.json, wall seconds). The way a
    user runs it, so a benchmark measures the shipped path."""
    with tempfile.TemporaryDirectory() as temporary:
        out = output_dir or temporary
        argv = [sys.executable, "-m", "hf_margin", "train", str(recipe), *options, "--output_dir", out]
        argv += ["--cache_dir", cache_dir] if cache_dir else []
        start = time.perf_counter()
        subprocess.run(argv, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - start
        return json.loads((Path(out) / "metrics.json").read_text()), wall


def benchmark_recipe(overrides: list[str] | None = None) -> tuple:
    """(model_args, data_args, evaluation_args, training_args): the default recipe in the benchmarks' setting."""
    return parse_recipe(DEFAULT_RECIPE, [*GOLD_ONLY, *FIRST_TWO_LAYERS, *(overrides or [])])


def default_setting(overrides: list[str] | None = None):
    """(model_args, data_args, args, splits, triplets) of the default recipe in the benchmarks' setting (gold
    triplets, first 2 layers), triplets from the cache."""
    model_args, data_args, _, args = benchmark_recipe(overrides)
    splits, triplets, teacher = build_triplets(model_args, data_args)
    del teacher
    return model_args, data_args, args, splits, triplets


def fresh_student(model_args):
    """The student of ``model_args`` (in the benchmarks: the teacher's first 2 layers), and its tokenizer."""
    from transformers import AutoTokenizer

    path = resolve_model(model_args.student or model_args.teacher)
    return load_student(path, layers=model_args.student_layers), AutoTokenizer.from_pretrained(path)


def next_rate(dev: dict[float, float]) -> float | None:
    """The learning-rate grids' rule (sections 8 and 10): the rate to run next when the best dev figure is at the
    grid's edge (x2 above the top, /2 below the bottom), None once dev falls on both sides of the best."""
    best = max(dev, key=dev.get)
    if best == max(dev):
        return best * 2
    if best == min(dev):
        return best / 2
    return None


def choose_rates(
    grids: dict[Hashable, list[float]],
    run: Callable[[list[tuple[Hashable, float]]], Mapping[tuple[Hashable, float], float]],
    extend: int,
) -> dict[Hashable, float]:
    """The learning-rate choice of every grid benchmark: each arm's dev-best rate.

    ``grids``: {arm: starting rates} (the base grid and any rate the arm already ran at, so the harness and the
    report choose from the same runs). ``run(points)`` runs the (arm, rate) points not yet done (side by side or
    one by one, in any order, resuming from its results file) and returns dev figures for at least those points.
    Up to ``extend`` times, an arm whose best rate is at its grid's edge gains the next rate (:func:`next_rate`);
    returns {arm: rate with the best dev}."""
    grids = {arm: sorted(set(rates)) for arm, rates in grids.items()}
    dev: dict[tuple[Hashable, float], float] = {}
    points = [(arm, lr) for arm, grid in grids.items() for lr in grid]
    for round_ in range(extend + 1):
        dev.update(run(points))
        if round_ == extend:
            break
        points = []
        for arm, grid in grids.items():
            if (rate := next_rate({lr: dev[(arm, lr)] for lr in grid})) is not None:
                grid.append(rate)
                grid.sort()
                points.append((arm, rate))
        if not points:
            break
    return {arm: max(grid, key=lambda lr: dev[(arm, lr)]) for arm, grid in grids.items()}


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One record, one line; after a line cut short by a killed run, on a line of its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        cut = f.tell() > 0 and f.seek(-1, os.SEEK_END) is not None and f.read(1) != b"\n"
        f.write((("\n" if cut else "") + json.dumps(record) + "\n").encode())


class Results:
    """A benchmark's results file, the resume half of every harness: the records kept so far, keyed by ``key``
    (the run's identity: arm, rate, seed, ...), so a finished run is never run again and a run killed mid-way
    loses only itself. ``keep`` filters what counts (a dry run's records never stand in for a real run's)."""

    def __init__(
        self,
        path: Path,
        key: Callable[[dict[str, Any]], Hashable],
        keep: Callable[[dict[str, Any]], bool] = lambda record: True,
    ) -> None:
        self.path, self.key = path, key
        self.done: dict[Hashable, dict[str, Any]] = {key(r): r for r in read_jsonl(path) if keep(r)}

    def __contains__(self, key: Hashable) -> bool:
        return key in self.done

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` to the file (at once: each run is written as it ends) and count it as done."""
        append_jsonl(self.path, record)
        self.done[self.key(record)] = record
        return record

    def records(self) -> list[dict[str, Any]]:
        return list(self.done.values())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed run: that run is redone
            continue
    return records


def bench_args(args, **overrides):
    """The recipe's training arguments for a benchmark run: no evaluation, logging or saving, and no rescaling of
    teacher margins by the trainer (the benchmarks scale each training set once themselves, with
    ``scale_teacher_margins``, for every arm that trains on it), plus overrides."""
    quiet = {
        "eval_strategy": "no",
        "logging_steps": 10_000,
        "output_dir": str(RESULTS / "tmp"),
        "disable_tqdm": True,
        "report_to": "none",
        "save_strategy": "no",
        "teacher_margin_scaling": "none",
    }
    return args.__class__(**{**args.to_dict(), **quiet, **overrides})


def peer_trainer(model_args, args, data, *, callbacks=None, **st_overrides):
    """The peer: sentence-transformers' SentenceTransformerTrainer + MarginMSELoss (cosine, like our arm) on the
    same student (the teacher's kept layers, mean pooling) and the same triplets and teacher margins.
    Returns (trainer, SentenceTransformer model)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from sentence_transformers.util import pairwise_cos_sim

    from hf_margin.models.modeling import keep_layers

    transformer = Transformer(resolve_model(model_args.teacher), max_seq_length=args.max_length)
    keep_layers(transformer.auto_model, model_args.student_layers)
    model = SentenceTransformer(
        modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")], device="cpu"
    )
    n = len(data[0]["negatives"])
    rows = {"query": list(data["query"]), "positive": list(data["positive"])}
    for j in range(n):
        rows[f"negative_{j + 1}"] = [negs[j] for negs in data["negatives"]]
    rows["label"] = list(data["teacher_margins"])
    st_args = SentenceTransformerTrainingArguments(
        **{
            "output_dir": str(RESULTS / "tmp-st"),
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "learning_rate": args.learning_rate,
            "warmup_steps": args.warmup_steps,
            "lr_scheduler_type": args.lr_scheduler_type,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "bf16": args.bf16,
            "fp16": args.fp16,
            "report_to": "none",
            "save_strategy": "no",
            "logging_steps": 10_000,
            "disable_tqdm": True,
            **st_overrides,
        }
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=st_args,
        train_dataset=Dataset.from_dict(rows),
        loss=MarginMSELoss(model, similarity_fct=pairwise_cos_sim),
        callbacks=callbacks,
    )
    return trainer, model


def timing_cross_encoder(path: str, **kwargs):
    """A cross-encoder scorer over MiniLM with a fresh one-logit head: for timing only (its scores are random, which
    `CrossEncoderTeacher.from_pretrained` refuses for a real teacher)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_margin import CrossEncoderTeacher

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    return CrossEncoderTeacher(model, AutoTokenizer.from_pretrained(path), **kwargs)


def mean_sd(values: list[float]) -> str:
    """Mean ± sample sd to 2 decimals (the mean alone for one value, – for none)."""
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired_diff(a: list[dict], b: list[dict], key: str) -> str:
    """Mean paired difference a − b over shared seeds, with a 95% t interval."""
    from scipy import stats

    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if len(seeds) < 2:
        return "–"
    va = {r["seed"]: r[key] for r in a}
    vb = {r["seed"]: r[key] for r in b}
    diffs = [va[s] - vb[s] for s in seeds]
    mean = statistics.mean(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"

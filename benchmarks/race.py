"""A fair training-speed race: MarginDistillTrainer against sentence-transformers' SentenceTransformerTrainer, both
training the same student with Margin-MSE (issue 24, item 4; replaces the defaults-against-defaults ratios of
BENCHMARKS.md section 6).

Arms, each run in its own process (this script re-invokes itself with ``--one ARM``):

- ``st-default``: SentenceTransformerTrainer + MarginMSELoss on its defaults (0 loader workers, the Trainer's
  pinned memory and NaN filter, the tokenizers library's own parallelism: ``TOKENIZERS_PARALLELISM`` is unset);
- ``st-tuned``: the same with what ``gpu_defaults`` gives ours: 2 persistent loader workers, pinned memory, no
  per-step NaN filter; tokenizer parallelism not forced off;
- ``ours``: MarginDistillTrainer, ``loss=margin_mse``, ``gpu_defaults`` on (on a CUDA GPU it sets the loader workers,
  pinned memory, NaN filter and bf16; on a CPU, where it does nothing, the same loader settings are set explicitly);
- ``ours-plain``: MarginDistillTrainer, ``margin_mse``, ``gpu_defaults=False``: TrainingArguments' loader settings
  (0 workers, pinned memory, NaN filter on), set explicitly.

Every arm: the same student (the kept layers of all-MiniLM-L6-v2, mean pooling, cosine; the peer's unused BERT pooler
is dropped so both train the same weights), triplets, teacher margins, batch, query and document lengths, precision
(bf16 on a CUDA GPU that supports it, else fp32), seed, learning rate and schedule (the default recipe's).

Settings:

- ``host``: 2 layers, 64 tokens, the default recipe's STS-B gold triplets (``default_setting``): host-bound on a GPU;
- ``compute``: all 6 layers, queries 64 and documents 256 tokens: SciFact claims (``unlabelled.txt``) as queries,
  abstracts (``corpus.jsonl``, "title. abstract") as positive and negatives, drawn at random with a fixed seed, and
  teacher margins a fixed seeded uniform draw in [-0.1, 0.5]: speed does not depend on the margins' values or on the
  pairs being relevant, so no teacher embeds the 5,183 abstracts.

Each setting's rows are repeated to ``batch x (warmup + steps)`` so no epoch boundary falls inside a run.

Protocol: ``--pairs`` rounds; each round runs every arm once, the order reversed every other round. A run's
examples/s is ``batch x steps`` over the wall time from the end of optimiser step ``--warmup`` to the end of the last
step (CUDA synchronised at both ends: no arm is credited with queued work). Tokens/s counts the real (non-pad) tokens
of the attention masks the encoder actually received (a forward pre-hook on it: ours's length-sorted CPU chunks and
the peer's merged candidate forward included); the padded share is 1 - real / processed token slots.
MFU (on a GPU with a known peak) is ``tokens/s x F / peak``, with model FLOPs per real token
``F = 6 N + 12 L H S``: N the non-embedding parameters (the transformer layers; no embeddings, no pooler), L layers,
H hidden size, S the token-weighted mean real length of the texts trained on (sum s^2 / sum s); peak dense bf16
FLOP/s from ``PEAK_BF16`` (H100/H200 989e12, A100 312e12, L4 121e12; None elsewhere and on a CPU). Each pair gives
the ratios ours / st-tuned, ours / st-default and ours / ours-plain of examples/s; their median and min-max are
reported. Records (one per run, plus one of ratios per setting x batch) append to benchmarks/results/race.jsonl.

What still differs, by each library's design: ours tokenises once before training (``datasets.map``, outside the
timer) and only pads per batch, while the peer tokenises in its collator every step (inside the timer; on the loader
workers in st-tuned); in the host setting ours runs one forward over queries and documents, the peer two (queries,
then positives and negatives merged); on a CPU ours runs length-sorted chunks of 32 (``forward_chunk_size: auto``;
one pass on a GPU). The dry run (1 layer, batch 4, 1 + 2 steps, 1 pair, 12 rows, 1 thread) runs each arm's two
settings in one process to halve its start-up cost. ``--shared_process`` does the same in a real race (each arm's
process runs every setting x batch of its round, in the same order for every arm; records say so): a round then
covers every setting, so a race cut short by a time budget still has whole pairs of each.

    python benchmarks/race.py [--settings host compute] [--batches 32 256] [--pairs 5] [--steps 20] [--warmup 3]
    python benchmarks/race.py --batches 8 --pairs 3           (a CPU)
    python benchmarks/race.py --report [--out benchmarks/results/race.jsonl]
    python benchmarks/race.py --dry-run --out /tmp/race.jsonl  (CPU, tiny: checks the script, measures nothing)
    python benchmarks/race.py --settings compute host --batches 256 32 --shared_process   (a GPU, in a time budget)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/race.py` (and so re-invoked) without PYTHONPATH
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, read_jsonl  # noqa: E402

OUT = RESULTS / "race.jsonl"
ARMS = ("st-default", "st-tuned", "ours", "ours-plain")
RATIOS = (("ours", "st-tuned"), ("ours", "st-default"), ("ours", "ours-plain"))
SETTINGS: dict[str, dict[str, Any]] = {
    "host": {"layers": [0, 1], "query_max_length": 64, "document_max_length": 64},
    "compute": {"layers": [0, 1, 2, 3, 4, 5], "query_max_length": 64, "document_max_length": 256},
}
DRY_LAYERS = [0]
SCIFACT = ROOT / "hf_margin" / "app" / "data" / "scifact"
EXAMPLES = ROOT / "recipes" / "examples" / "flag-scored.jsonl"
# Peak dense bf16 FLOP/s (no sparsity) by device name; the first pattern that matches wins.
PEAK_BF16: tuple[tuple[str, float], ...] = (
    (r"H200", 989e12),
    (r"H100", 989e12),
    (r"A100", 312e12),
    (r"\bL4\b", 121e12),  # not the L40 / L40S
)
# The loader settings gpu_defaults gives ours on a CUDA GPU (hf_margin/training/config.py, _apply_gpu_defaults).
TUNED_LOADER = {
    "dataloader_num_workers": 2,
    "dataloader_persistent_workers": True,
    "dataloader_pin_memory": True,
    "logging_nan_inf_filter": False,
}
# TrainingArguments' own loader settings: ours-plain's (explicit, as the recipe's arguments were parsed on this
# machine and so, on a CUDA GPU, already carry what gpu_defaults set).
PLAIN_LOADER = {
    "dataloader_num_workers": 0,
    "dataloader_persistent_workers": False,
    "dataloader_pin_memory": True,
    "logging_nan_inf_filter": True,
}
RECORDED_ARGS = (
    "per_device_train_batch_size", "max_steps", "learning_rate", "warmup_steps", "lr_scheduler_type",
    "weight_decay", "seed", "optim", "max_grad_norm", "gradient_accumulation_steps", "bf16", "fp16", "tf32",
    "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_pin_memory", "dataloader_prefetch_factor",
    "logging_nan_inf_filter",
)  # fmt: skip
RESULT_TAG = "RACE_RESULT "
FORK_WARNING = "The current process just got forked, after parallelism has already been used"


# ---- FLOPs and MFU ------------------------------------------------------------------------------


def flops_per_token(params: int, layers: int, hidden: int, seq_len: float) -> float:
    """Model FLOPs of one training step per real token (forward and backward): ``6 N + 12 L H S``."""
    return 6.0 * params + 12.0 * layers * hidden * seq_len


def peak_flops(device: str | None) -> float | None:
    """The device's peak dense bf16 FLOP/s from ``PEAK_BF16``; None for a CPU or an unknown card."""
    if not device:
        return None
    for pattern, peak in PEAK_BF16:
        if re.search(pattern, device):
            return peak
    return None


def mfu(flops_per_tok: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak (None without a peak)."""
    return None if not peak else flops_per_tok * tokens_per_s / peak


def nonembedding_params(model: Any) -> int:
    """Parameters of the transformer layers: all but the embeddings and a pooler."""
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name and "pooler" not in name)


# ---- one run (the child process) ----------------------------------------------------------------


def _step_meter(warmup: int):
    """A TrainerCallback timing the steps after ``warmup`` and counting, per step, the tokens the encoder received
    (a forward pre-hook: ``attach(model)``). Counts stay on the device until the run ends: no host sync per step."""
    import torch
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = self.end = 0.0
            self.steps: list[tuple[Any, Any, int, int]] = []  # (real tokens, sum of squared lengths, slots, texts)
            self._last = 0.0
            self._reset()

        def _reset(self) -> None:
            self._real: Any = 0
            self._squares: Any = 0
            self._slots = 0
            self._texts = 0

        def attach(self, module) -> None:
            module.register_forward_pre_hook(self._count, with_kwargs=True)

        def _count(self, module, args, kwargs) -> None:
            if not module.training or not torch.is_grad_enabled():
                return
            features = args[0] if args and isinstance(args[0], dict) else kwargs  # the peer's module takes a dict
            mask = features.get("attention_mask")
            if mask is None:
                ids = features.get("input_ids")
                if not isinstance(ids, torch.Tensor):
                    return
                mask = torch.ones_like(ids)  # unpadded inputs: every slot is a real token
            lengths = mask.sum(-1) if mask.dim() > 1 else mask.sum().reshape(1)
            self._real = self._real + lengths.sum()
            self._squares = self._squares + (lengths.double() ** 2).sum()
            self._slots += mask.numel()
            self._texts += lengths.numel()

        @staticmethod
        def _now() -> float:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synced = state.global_step in (warmup, state.max_steps)
            now = self._now() if synced else time.perf_counter()
            if state.global_step == warmup:
                self.start = now
            if state.global_step > warmup:
                self.times.append(now - self._last)
                self.steps.append((self._real, self._squares, self._slots, self._texts))
            if state.global_step == state.max_steps:
                self.end = now
            self._last = now
            self._reset()

        def summary(self) -> dict[str, Any]:
            real = sum(float(r) for r, _, _, _ in self.steps)
            squares = sum(float(s) for _, s, _, _ in self.steps)
            slots = sum(n for _, _, n, _ in self.steps)
            return {
                "timed_steps": len(self.times),
                "timed_s": self.end - self.start,
                "step_s": self.times,
                "real_tokens": int(real),
                "token_slots": slots,
                "texts": sum(t for _, _, _, t in self.steps),
                "token_weighted_length": squares / real if real else 0.0,
            }

    return StepMeter()


def _args_record(args: Any) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, bool, str, type(None))) else str(v))
            for k in RECORDED_ARGS for v in [getattr(args, k, None)]}  # fmt: skip


def run_one(arm: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``arm`` for ``spec['warmup'] + spec['steps']`` steps in this process; its measurements."""
    import torch
    from datasets import load_from_disk

    from benchmarks.common import bench_args, benchmark_recipe, fresh_student, peer_trainer
    from hf_margin import MarginDistillTrainer

    cuda = torch.cuda.is_available()
    layers = spec["layers"]
    model_args, _, _, recipe_args = benchmark_recipe(["--student_layers", *map(str, layers)])
    batch, total = spec["batch"], spec["warmup"] + spec["steps"]
    data = load_from_disk(spec["data"])
    data = data.select(range(min(len(data), batch * total)))
    query_len, doc_len = spec["query_max_length"], spec["document_max_length"]
    common = {
        "per_device_train_batch_size": batch,
        "max_steps": total,
        "bf16": spec["precision"] == "bf16",
        "fp16": False,
        "loss": "margin_mse",
        "max_length": doc_len,
        "query_max_length": query_len if query_len != doc_len else None,
        "seed": spec["seed"],
        **PLAIN_LOADER,
    }
    meter = _step_meter(spec["warmup"])
    extra: dict[str, Any] = {}
    if arm.startswith("st-"):
        run_args = bench_args(recipe_args, **common, gpu_defaults=False)
        loader = dict(TUNED_LOADER) if arm == "st-tuned" else {}
        n = len(data[0]["negatives"])
        if query_len != doc_len:  # queries and documents each at their own length, as ours reads them
            loader["router_mapping"] = {"query": "query", "positive": "document"}
            loader["router_mapping"].update({f"negative_{j + 1}": "document" for j in range(n)})
        trainer, st_model = peer_trainer(model_args, run_args, data, callbacks=[meter], max_steps=total, **loader)
        transformer = st_model[0]
        transformer.query_length, transformer.document_length = query_len, doc_len
        encoder = transformer.auto_model
        encoder.pooler = None  # unused by mean pooling; our student is loaded without it
        hooked = transformer  # it calls auto_model.forward directly, which skips the encoder's hooks
        extra["router_mapping"] = loader.get("router_mapping")
        extra["pooler_dropped"] = True
    else:
        overrides = {**common}
        if arm == "ours":
            overrides["gpu_defaults"] = True
            if not cuda:  # gpu_defaults acts on CUDA only: set its loader settings here
                overrides.update(TUNED_LOADER)
                extra["set_explicitly_on_cpu"] = dict(TUNED_LOADER)
        else:
            overrides["gpu_defaults"] = False
        run_args = bench_args(recipe_args, **overrides)
        student, tokenizer = fresh_student(model_args)
        trainer = MarginDistillTrainer(
            student, run_args, train_dataset=data, processing_class=tokenizer, callbacks=[meter]
        )
        encoder = hooked = student
        extra["gpu_defaults"] = run_args.gpu_defaults
        extra["forward_chunk_size"] = run_args.chunk_size
    meter.attach(hooked)
    if cuda:  # a shared process runs several settings: each run's own peak
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - start
    measured = meter.summary()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    examples_per_s = batch * measured["timed_steps"] / measured["timed_s"]
    tokens_per_s = measured["real_tokens"] / measured["timed_s"]
    params = nonembedding_params(encoder)
    config = encoder.config
    per_token = flops_per_token(params, config.num_hidden_layers, config.hidden_size,
                                measured["token_weighted_length"])  # fmt: skip
    peak = peak_flops(device if cuda else None)
    return {
        "arm": arm,
        "examples_per_s": examples_per_s,
        "examples_per_s_median_step": batch / statistics.median(measured["step_s"]),
        "tokens_per_s": tokens_per_s,
        "padded_share": 1.0 - measured["real_tokens"] / measured["token_slots"],
        "mfu": mfu(per_token, tokens_per_s, peak),
        "flops_per_token": per_token,
        "peak_flops": peak,
        "nonembedding_params": params,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        **measured,
        "train_wall_s": train_wall,
        "rows": len(data),
        "negatives": len(data[0]["negatives"]),
        "device": device,
        "precision": spec["precision"],
        "param_dtype": str(next(encoder.parameters()).dtype),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "threads": torch.get_num_threads(),
        "tokenizers_parallelism_env": os.environ.get("TOKENIZERS_PARALLELISM"),
        "pin_memory_effective": bool(trainer.args.dataloader_pin_memory and cuda),
        "args": _args_record(trainer.args),
        **extra,
    }


# ---- the race (the parent process) --------------------------------------------------------------


def host_triplets(dry_run: bool, negatives: int, rows: int | None):
    """The host setting's triplets: the default recipe's STS-B gold triplets, or for a dry run the pre-scored
    example rows (no teacher, no cache); ``negatives`` per row."""
    if dry_run:
        from hf_margin.data.formats import normalize_dataset
        from hf_margin.data.sources import load_data_file

        data, _ = normalize_dataset(load_data_file(EXAMPLES))
    else:
        from benchmarks.common import default_setting

        data = default_setting()[4]["train"]
    if rows:
        data = data.select(range(min(rows, len(data))))
    fewest = min(len(r) for r in data["negatives"])
    if fewest < negatives:
        raise SystemExit(f"the host triplets have rows with {fewest} negatives; pass --negatives {fewest} or fewer")
    return data.map(
        lambda r: {"negatives": r["negatives"][:negatives], "teacher_margins": r["teacher_margins"][:negatives]}
    ).select_columns(["query", "positive", "negatives", "teacher_margins"])


def compute_triplets(rows: int, negatives: int, seed: int):
    """SciFact triplets for the compute setting: claims as queries in turn, a positive and ``negatives`` abstracts
    drawn at random (fixed seed), and seeded uniform teacher margins in [-0.1, 0.5] (speed does not read them)."""
    from datasets import Dataset

    claims = [c for c in (SCIFACT / "unlabelled.txt").read_text().splitlines() if c.strip()]
    docs = []
    with open(SCIFACT / "corpus.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            docs.append(f"{doc['title']}. {doc['text']}")
    rng = random.Random(seed)
    table: dict[str, list] = {"query": [], "positive": [], "negatives": [], "teacher_margins": []}
    for i in range(rows):
        picked = rng.sample(range(len(docs)), negatives + 1)
        table["query"].append(claims[i % len(claims)])
        table["positive"].append(docs[picked[0]])
        table["negatives"].append([docs[j] for j in picked[1:]])
        table["teacher_margins"].append([round(rng.uniform(-0.1, 0.5), 4) for _ in range(negatives)])
    return Dataset.from_dict(table)


def repeat_to(data, rows: int):
    """``data`` repeated (in order) to ``rows`` rows, so a run's steps never cross an epoch boundary."""
    return data.select([i % len(data) for i in range(rows)]) if len(data) < rows else data


def launch(arm: str, specs: list[dict[str, Any]], timeout: int) -> list[dict[str, Any]]:
    """Run ``arm`` on each spec in one process of its own (this script, ``--one ARM``); one record per spec, read
    back from its result lines (an ``error`` record for each spec without one)."""
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    env.pop("TOKENIZERS_PARALLELISM", None)  # not forced off (scripts/gpu_check.sh sets false): every arm alike
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, str(Path(__file__).resolve()), "--one", arm, "--spec", json.dumps(specs)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, why = result.stdout, result.stderr, f"exit {result.returncode}"
    except subprocess.TimeoutExpired as e:
        stdout, stderr, why = _text(e.stdout), _text(e.stderr), f"timed out after {timeout} s"
    wall = time.perf_counter() - start
    found = [json.loads(line[len(RESULT_TAG) :]) for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
    records = []
    for i in range(len(specs)):
        if i < len(found):
            record = {**found[i], "tokenizers_parallelism_off_in_workers": FORK_WARNING in stderr}
        else:
            record = {"arm": arm, "error": f"{why}: {stderr[-2000:]}"}
        records.append({**record, "process_wall_s": wall, "runs_in_process": len(specs)})
    return records


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def pair_ratios(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per pair (race and round), ours's examples/s over each other arm's: ``{"ours/st-tuned": [...], ...}``, in
    round order; a pair missing an arm (or with a failed run) gives no ratio for it."""
    rounds: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in runs:
        if r.get("kind", "run") == "run" and not r.get("error") and r.get("examples_per_s"):
            rounds[(r.get("race_id"), r.get("round", 0))][r["arm"]] = r["examples_per_s"]
    ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in RATIOS}
    for key in sorted(rounds, key=lambda k: (str(k[0]), k[1])):
        arms = rounds[key]
        for a, b in RATIOS:
            if a in arms and b in arms:
                ratios[f"{a}/{b}"].append(arms[a] / arms[b])
    return ratios


def summarise(ratios: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    """Median, min and max of each ratio list (None where there is no pair)."""
    return {
        name: {
            "median": statistics.median(values) if values else None,
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        }
        for name, values in ratios.items()
    }


def race(opts: argparse.Namespace) -> int:
    """Every setting x batch: ``pairs`` alternating rounds of the arms, each run in its own process; records appended
    to ``opts.out``. A dry run shares one process per arm and round among its settings (start-up is most of its
    cost; it measures nothing). Returns the number of failed runs."""
    import torch

    from benchmarks.common import machine, tree_is_clean

    dry = opts.dry_run
    cuda = torch.cuda.is_available() and not dry
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    shared = dry or opts.shared_process
    about = {"machine": machine(), "tree_clean": tree_is_clean(), "dry_run": dry, "precision": precision,
             "shared_process": shared}  # fmt: skip
    total = opts.warmup + opts.steps
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []  # (spec, what the record says about it)
        for setting in opts.settings:
            shape = dict(SETTINGS[setting])
            if dry:
                shape["layers"] = DRY_LAYERS
            rows = max(opts.batches) * total
            if setting == "host":
                data = host_triplets(dry, opts.negatives, opts.rows)
                source = "recipes/examples/flag-scored.jsonl" if dry else "default_setting() STS-B gold triplets"
            else:
                data = compute_triplets(opts.rows or rows, opts.negatives, opts.seed)
                source = "SciFact claims x random abstracts, seeded uniform margins"
            distinct = len(data)
            path = Path(tmp) / setting
            repeat_to(data, rows).save_to_disk(str(path))
            for batch in opts.batches:
                spec = {**shape, "data": str(path), "batch": batch, "steps": opts.steps, "warmup": opts.warmup,
                        "precision": precision, "seed": opts.seed}  # fmt: skip
                about_job = {"setting": setting, "batch": batch, "race_id": uuid.uuid4().hex[:12],
                             "data_source": source, "distinct_rows": distinct}  # fmt: skip
                jobs.append((spec, about_job))
        for group in [jobs] if shared else [[job] for job in jobs]:
            runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for round_ in range(opts.pairs):
                order = ARMS if round_ % 2 == 0 else ARMS[::-1]
                for position, arm in enumerate(order):
                    for (spec, job), result in zip(group, launch(arm, [s for s, _ in group], opts.timeout)):
                        record = {"kind": "run", **job, "round": round_, "position": position,
                                  **{k: v for k, v in spec.items() if k != "data"}, **result, **about}  # fmt: skip
                        append_jsonl(opts.out, record)
                        runs[job["race_id"]].append(record)
                        where = f"{job['setting']} batch {job['batch']} round {round_} {arm}"
                        if record.get("error"):
                            failures += 1
                            print(f"{where}: FAILED {record['error'][-1500:]}", flush=True)
                        else:
                            print(f"{where}: {record['examples_per_s']:.1f} ex/s, {record['tokens_per_s']:.0f} "
                                  f"tok/s, padded {record['padded_share']:.1%}", flush=True)  # fmt: skip
            for _, job in group:
                ratios = pair_ratios(runs[job["race_id"]])
                summary = summarise(ratios)
                append_jsonl(opts.out, {"kind": "ratios", **job, "pairs": opts.pairs, "ratios": ratios,
                                        "summary": summary, **about})  # fmt: skip
                for name, s in summary.items():
                    if s["median"] is not None:
                        print(f"{job['setting']} batch {job['batch']}: {name} x{s['median']:.2f} "
                              f"(x{s['min']:.2f}-x{s['max']:.2f})")  # fmt: skip
    return failures


# ---- report -------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def report(records: list[dict[str, Any]]) -> str:
    """One markdown table per device x setting x batch: each arm's median examples/s, tokens/s, padded share and
    MFU, and for each other arm the ratio ours / arm of every pair with its median and min-max."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("kind", "run") == "run" and not r.get("error"):
            groups[(r.get("device"), bool(r.get("dry_run")), r["setting"], r["batch"])].append(r)
    out = []
    for (device, dry, setting, batch), runs in groups.items():
        ratios = pair_ratios(runs)
        commits = sorted({(r.get("machine") or {}).get("commit") or "?" for r in runs})
        clean = all(r.get("tree_clean") for r in runs)
        precision = ", ".join(sorted({r.get("precision", "?") for r in runs}))
        pairs = max((len(v) for v in ratios.values()), default=0)
        title = f"### {setting}, batch {batch}: {device}{' (dry run)' if dry else ''}, {precision}"
        out += [title, "", f"Commit {', '.join(commits)} ({'clean tree' if clean else 'uncommitted changes'}); "
                f"{pairs} pair(s).", ""]  # fmt: skip
        out += ["| arm | examples/s (median) | tokens/s (median) | padded share | MFU | ours / arm, per pair | "
                "median | min–max |", "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]  # fmt: skip
        by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in runs:
            by_arm[r["arm"]].append(r)
        for arm in [a for a in ARMS if a in by_arm]:
            rs = by_arm[arm]
            mfus = [r["mfu"] for r in rs if r.get("mfu") is not None]
            cells = [
                arm,
                _num(statistics.median(r["examples_per_s"] for r in rs), 1),
                _num(statistics.median(r["tokens_per_s"] for r in rs)),
                _share(statistics.median(r["padded_share"] for r in rs)),
                _share(statistics.median(mfus) if mfus else None),
            ]
            values = ratios.get(f"ours/{arm}")
            if values:
                cells += [", ".join(f"×{v:.2f}" for v in values), f"**×{statistics.median(values):.2f}**",
                          f"×{min(values):.2f}–×{max(values):.2f}"]  # fmt: skip
            else:
                cells += ["–", "–", "–"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


# ---- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="Timed optimiser steps per run (after the warm-up).")
    parser.add_argument("--warmup", type=int, default=3, help="Optimiser steps before the timer starts.")
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--rows", type=int, default=None, help="Distinct triplets per setting (default: all).")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=int, default=1200, help="Seconds one arm's process may take.")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--shared_process", action="store_true",
        help="One process per arm and round runs every setting x batch (rounds cover all of them; less start-up).",
    )  # fmt: skip
    parser.add_argument("--report", action="store_true", help="Print the tables of --out and exit.")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="Tiny, on the CPU (1 layer, batch 4, 1 + 2 steps, 1 pair, 12 rows): checks the script.",
    )  # fmt: skip
    parser.add_argument("--one", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.one:
        specs = json.loads(opts.spec)
        for spec in specs if isinstance(specs, list) else [specs]:
            print(RESULT_TAG + json.dumps(run_one(opts.one, spec)), flush=True)
        return
    if opts.report:
        print(report(read_jsonl(opts.out)))
        return
    if opts.warmup < 1 or opts.steps < 1 or opts.pairs < 1:
        parser.error("--warmup, --steps and --pairs must be >= 1")
    if opts.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["OMP_NUM_THREADS"] = "1"  # tiny tensors: no thread pool to spin
        opts.batches, opts.pairs, opts.steps, opts.warmup, opts.negatives = [4], 1, 2, 1, 2
        opts.rows = opts.rows or 12
    failures = race(opts)
    print(report([r for r in read_jsonl(opts.out) if r.get("dry_run") == opts.dry_run]))
    if failures:
        raise SystemExit(f"{failures} run(s) failed; see the records' 'error'")


if __name__ == "__main__":
    main()

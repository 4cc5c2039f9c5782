"""Quality of transfer: STS-B test Spearman x100 of the 2-layer student after each loss, several seeds.

Every arm uses the same teacher, student initialisation, mined triplets, optimiser (AdamW), schedule (linear,
warmup), batch size and number of steps. Each arm's learning rate is chosen from a small grid by STS-B *dev*
Spearman on the first seed, then every seed runs at that rate; test figures are reported, never tuned on.

    python benchmarks/quality.py [--epochs 1] [--lrs 5e-5 1e-4 2e-4 4e-4] [--seeds 0 1 2]

Results append to benchmarks/results/quality.jsonl (finished runs are skipped on a rerun).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch
import transformers

from benchmarks.common import (
    RESULTS,
    append_jsonl,
    bench_args,
    default_setting,
    fresh_student,
    machine,
    peer_trainer,
    read_jsonl,
)
from hf_margin import MarginDistillTrainer
from hf_margin.evaluation.evaluators import StsEvaluator
from hf_margin.models.kind import StudentKind

OUT = RESULTS / "quality.jsonl"
ARMS = {
    "label_hinge": {"loss": "label_hinge"},
    "margin_mse": {"loss": "margin_mse"},
    "adaptive_relu": {"loss": "adaptive", "activation": "relu", "overshoot_width": None},
    "adaptive_softplus": {"loss": "adaptive", "activation": "softplus", "beta": 10.0, "overshoot_width": None},
    "adaptive_tanh": {
        "loss": "adaptive",
        "activation": "relu",
        "teacher_activation": "tanh",
        "temperature": 0.5,
        "scale": 0.5,
        "overshoot_width": None,
    },
    "st_margin_mse": {"loss": "margin_mse"},  # sentence-transformers' own trainer + MarginMSELoss
}


def train_ours(arm: str, lr: float, seed: int, setting, epochs: float) -> dict:
    model_args, _, args, splits, triplets = setting
    student, tokenizer = fresh_student(model_args)
    run_args = bench_args(args, **ARMS[arm], learning_rate=lr, seed=seed, num_train_epochs=epochs)
    trainer = MarginDistillTrainer(student, run_args, train_dataset=triplets["train"], processing_class=tokenizer)
    start = time.perf_counter()
    out = trainer.train()
    return finish(student, tokenizer, splits, out, time.perf_counter() - start)


def train_sentence_transformers(lr: float, seed: int, setting, epochs: float) -> dict:
    """The peer: SentenceTransformerTrainer + MarginMSELoss (cosine, to match our arm) on identical examples."""
    model_args, _, args, splits, triplets = setting
    transformers.set_seed(seed)
    trainer, model = peer_trainer(
        model_args, args, triplets["train"], learning_rate=lr, seed=seed, num_train_epochs=epochs
    )
    start = time.perf_counter()
    out = trainer.train()
    return finish(model[0].auto_model, model.tokenizer, splits, out, time.perf_counter() - start)


def finish(student, tokenizer, splits, out, seconds: float) -> dict:
    scorer = StudentKind("bi-encoder", pooling="mean", max_length=64).scorer(student, tokenizer)
    return {
        "dev_spearman": StsEvaluator.from_dataset(splits["validation"])(scorer)["spearman"],
        "test_spearman": StsEvaluator.from_dataset(splits["test"])(scorer)["spearman"],
        "train_loss": out.training_loss,
        "steps": out.global_step,
        "train_seconds": seconds,
    }


def run(arm: str, lr: float, seed: int, setting, epochs: float, out: Path = OUT) -> dict:
    done = {(r["arm"], r["lr"], r["seed"], r["epochs"]): r for r in read_jsonl(out)}
    key = (arm, lr, seed, epochs)
    if key in done:
        return done[key]
    if arm == "st_margin_mse":
        result = train_sentence_transformers(lr, seed, setting, epochs)
    else:
        result = train_ours(arm, lr, seed, setting, epochs)
    record = {"arm": arm, "lr": lr, "seed": seed, "epochs": epochs, **result, "machine": machine()}
    append_jsonl(out, record)
    print(
        f"{arm:18s} lr={lr:g} seed={seed} dev={result['dev_spearman']:.2f} test={result['test_spearman']:.2f}",
        flush=True,
    )
    gc.collect()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-5, 1e-4, 2e-4, 4e-4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--out", default=str(OUT), help="JSON-lines file of results")
    opts = parser.parse_args()
    out = Path(opts.out)
    torch.set_num_threads(torch.get_num_threads())
    setting = default_setting()
    for arm in opts.arms:
        grid = [run(arm, lr, opts.seeds[0], setting, opts.epochs, out) for lr in opts.lrs]
        best = max(grid, key=lambda r: r["dev_spearman"])["lr"]
        for seed in opts.seeds[1:]:
            run(arm, best, seed, setting, opts.epochs, out)


if __name__ == "__main__":
    main()

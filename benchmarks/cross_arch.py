"""Cross-architecture distillation: the cross-encoder teacher (raw logits, 0-5 scale) into the 2-layer bi-encoder.

Same protocol as benchmarks/quality.py: same mined triplets (the default recipe's), student initialisation,
optimiser, schedule, batch size and number of steps for every arm; choices are made on STS-B *dev* with seed 0,
then seeds 0, 1, 2 run at the chosen setting and STS-B *test* Spearman x100 is reported, never tuned on.
Arms with a (temperature, scale) grid pick their point at the middle learning rate first, then their learning
rate at that point. Needs the teacher of recipes/teacher-cross-encoder-stsb.yaml (`make teacher`).

    python benchmarks/cross_arch.py [--families ...] [--lrs 1e-4 2e-4 4e-4] [--seeds 0 1 2]

Results append to benchmarks/results/cross_arch.jsonl (finished runs are skipped on a rerun).
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, ROOT, append_jsonl, bench_args, fresh_student, machine, read_jsonl
from benchmarks.quality import finish
from hf_margin import MarginDistillTrainer
from hf_margin.app.recipes import parse_recipe
from hf_margin.app.tasks.stsb import build_triplets
from hf_margin.data.margin_scaling import scale_teacher_margins

OUT = RESULTS / "cross_arch.jsonl"
RECIPE = ROOT / "recipes" / "stsb-cross-encoder-adaptive.yaml"


def adaptive(g: str, temperature: float, scale: float, **extra: Any) -> dict[str, Any]:
    """The one-sided adaptive loss of section 7, every option spelled out (the recipe's dead zone is not inherited)."""
    return {
        "loss": "adaptive",
        "activation": "relu",
        "teacher_activation": g,
        "temperature": temperature,
        "scale": scale,
        "overshoot_width": None,
        "mse_weight": 0.0,
        **extra,
    }


# family -> {arm name: (training overrides, teacher margin scaling)}; a family with several arms has a grid.
FAMILIES: dict[str, dict[str, tuple[dict[str, Any], str]]] = {
    "margin_mse_raw": {"margin_mse_raw": ({"loss": "margin_mse"}, "none")},
    "margin_mse_zscore": {"margin_mse_zscore": ({"loss": "margin_mse"}, "zscore")},
    "margin_mse_student": {"margin_mse_student": ({"loss": "margin_mse"}, "student")},
    "label_hinge": {"label_hinge": ({"loss": "label_hinge"}, "none")},
    "adaptive_identity": {f"adaptive_identity_s{s:g}": (adaptive("identity", 1.0, s), "none") for s in (1.0, 0.2, 0.1)},
    "adaptive_sigmoid": {
        f"adaptive_sigmoid_T{t:g}_s{s:g}": (adaptive("sigmoid", t, s), "none") for t in (1.0, 2.0) for s in (0.5, 1.0)
    },
    "adaptive_tanh": {
        f"adaptive_tanh_T{t:g}_s{s:g}": (adaptive("tanh", t, s), "none") for t in (2.0, 4.0) for s in (0.25, 0.5)
    },
}


class Setting:
    """The cross recipe's arguments, splits and triplets, and the rescaled triplets each scaling needs."""

    def __init__(self) -> None:
        self.model_args, self.data_args, _, self.args = parse_recipe(RECIPE)
        self.splits, triplets, teacher = build_triplets(self.model_args, self.data_args)
        del teacher
        self.triplets = {"none": triplets}
        self.stats: dict[str, dict[str, float]] = {"none": {}}

    def train_triplets(self, scaling: str):
        if scaling not in self.triplets:
            student, tokenizer = fresh_student(self.model_args)
            self.triplets[scaling], self.stats[scaling] = scale_teacher_margins(
                self.triplets["none"], scaling, student, tokenizer, self.args
            )
        return self.triplets[scaling]["train"]


def run(setting: Setting, family: str, arm: str, lr: float, seed: int, epochs: float, out: Path) -> dict:
    done = {(r["arm"], r["lr"], r["seed"], r["epochs"]): r for r in read_jsonl(out)}
    if (arm, lr, seed, epochs) in done:
        return done[(arm, lr, seed, epochs)]
    overrides, scaling = FAMILIES[family][arm]
    data = setting.train_triplets(scaling)
    student, tokenizer = fresh_student(setting.model_args)
    run_args = bench_args(setting.args, **overrides, learning_rate=lr, seed=seed, num_train_epochs=epochs)
    trainer = MarginDistillTrainer(student, run_args, train_dataset=data, processing_class=tokenizer)
    start = time.perf_counter()
    result = finish(student, tokenizer, setting.splits, trainer.train(), time.perf_counter() - start)
    record = {
        "family": family,
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "epochs": epochs,
        "options": overrides,
        "scaling": scaling,
        "scaling_stats": setting.stats[scaling],
        **result,
        "machine": machine(),
    }
    append_jsonl(out, record)
    print(f"{arm:28s} lr={lr:g} seed={seed} dev={result['dev_spearman']:.2f} test={result['test_spearman']:.2f}")
    gc.collect()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 2e-4, 4e-4])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--out", default=str(OUT), help="JSON-lines file of results")
    opts = parser.parse_args()
    out = Path(opts.out)
    torch.set_num_threads(torch.get_num_threads())
    setting = Setting()
    first, middle = opts.seeds[0], opts.lrs[len(opts.lrs) // 2]
    for family in opts.families:
        arms = list(FAMILIES[family])
        # 1. the grid point, at the middle learning rate (a family without a grid has one point)
        points = [run(setting, family, arm, middle, first, opts.epochs, out) for arm in arms]
        arm = max(points, key=lambda r: r["dev_spearman"])["arm"]
        # 2. the learning rate, at that point
        grid = [run(setting, family, arm, lr, first, opts.epochs, out) for lr in opts.lrs]
        lr = max(grid, key=lambda r: r["dev_spearman"])["lr"]
        # 3. every seed at the chosen point and rate
        for seed in opts.seeds[1:]:
            run(setting, family, arm, lr, seed, opts.epochs, out)


if __name__ == "__main__":
    main()

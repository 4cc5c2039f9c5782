"""Benchmark scripts run end to end as CPU dry runs (CI has no GPU; the real runs need one), and their choice and
statistics logic is checked on known numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(script: str, out: Path) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``benchmarks/SCRIPT --dry-run --out OUT`` on the CPU, offline: its completed process and its records."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--dry-run", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, [json.loads(line) for line in out.read_text().splitlines()]


def test_gpu_benchmark_dry_run_writes_every_part(tmp_path):
    """Guards `make bench-gpu` failing on a GPU machine for a reason a CPU would have shown (an import, an option
    the CLI refuses, a config accelerate refuses): every part runs small and records what it measured."""
    _, records = dry_run("gpu.py", tmp_path / "gpu.jsonl")
    assert all(r["dry_run"] and r["device"] == "cpu (dry run)" for r in records)
    throughput = [r for r in records if r["part"] == "throughput"]
    assert {(r["batch_size"], r["negatives"]) for r in throughput} == {(4, 1), (4, 3), (8, 1), (8, 3)}
    assert all(r["ratio_median"] > 0 and r["ours_examples_per_s"][0] > 0 for r in throughput)
    assert [r["validated"] for r in records if r["part"] in ("zero2", "zero3")] == ["DEEPSPEED", "DEEPSPEED"]
    [default] = [r for r in records if r["part"] == "default_recipe"]
    assert default["examples_per_s"] > 0
    assert default["test_spearman"] is None  # its own train file: no STS-B evaluation to report


def test_real_run_refuses_without_a_gpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "benchmarks/gpu.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "no CUDA GPU visible" in result.stderr


def test_method_grid_dry_run_chooses_on_dev_and_reports_every_family(tmp_path):
    """Guards the method benchmark (benchmarks/methods.py) failing on the GPU machine after minutes of device time:
    its CPU dry run trains every stage small (lr grid, seeds, capacity) and prints one row per family."""
    out = tmp_path / "methods.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "benchmarks/methods.py", "--dry-run", "--out", str(out), "--workers", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["dry_run"] and r["steps"] == 3 for r in records)
    assert {r["family"] for r in records} == {"margin_mse_student", "listwise_kl", "deadzone_0_student"}
    assert {r["arm"] for r in records if r["family"] == "listwise_kl"} >= {"listwise_kl_T0.02", "listwise_kl_T0.1"}
    assert {r["layers"] for r in records} == {1, 2} and {r["seed"] for r in records} == {0, 1}
    assert {r["teacher"] for r in records} == {"sentence-transformers/all-MiniLM-L6-v2"}  # a Hub name: no digest
    for line in ("| margin_mse_student |", "| deadzone_0_student |", "Capacity (same)"):
        assert line in result.stdout


def test_learning_rate_grid_grows_until_dev_falls_on_both_sides():
    """Guards a choice at the edge of the grid (section 1 picked 2e-4 while dev still rose at 4e-4): the grid is
    extended until the best rate has a worse neighbour on each side, and the choice is the dev maximum."""
    from benchmarks import methods

    class FakeRunner:
        def __init__(self):
            self.done = {}

        def run(self, specs):
            for setting, _, arm, lr, seed, layers in specs:  # dev peaks at lr = 1.6e-3
                dev = -abs(math.log2(lr / 1.6e-3))
                self.done[(setting, arm, float(lr), seed, layers)] = {"arm": arm, "lr": lr, "dev_spearman": dev}

    runner = FakeRunner()
    choice = methods.choose(runner, ["same"], ["margin_mse_raw"], (1e-4, 2e-4, 4e-4), seed=0, extend=5)
    assert choice[("same", "margin_mse_raw")] == ("margin_mse_raw", 1.6e-3)
    tried = sorted(k[2] for k in runner.done)
    assert tried == [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3]


def test_learning_rate_choice_counts_earlier_runs_outside_the_base_grid():
    """Guards the harness and the report choosing different rates: a rerun of the base grid (1e-4 to 8e-4) beside
    earlier extension runs (5e-5) picked the base grid's best, while the report, which reads every seed-0 run,
    picked the extension; the harness then ran seeds and capacity rows at a rate the tables do not use."""
    from benchmarks import methods

    dev_at = {2.5e-5: 64.0, 5e-5: 66.0, 1e-4: 63.0, 2e-4: 64.0, 4e-4: 64.5, 8e-4: 62.0}

    class FakeRunner:
        def __init__(self):
            self.done = {("cross", "margin_mse_raw", lr, 0, 2): {"arm": "margin_mse_raw", "lr": lr, "dev_spearman": d}
                         for lr, d in dev_at.items() if lr < 1e-4}  # fmt: skip
            for other in (("cross", "margin_mse_raw", 3.2e-3, 1, 2), ("cross", "margin_mse_raw", 3.2e-3, 0, 1)):
                self.done[other] = {"arm": "margin_mse_raw", "lr": 3.2e-3, "dev_spearman": 99.0}  # not seed 0, 2 layers
            self.ran = []

        def run(self, specs):
            for setting, _, arm, lr, seed, layers in specs:
                key = (setting, arm, float(lr), seed, layers)
                if key not in self.done:
                    self.ran.append(lr)
                    self.done[key] = {"arm": arm, "lr": lr, "dev_spearman": dev_at[lr]}

    runner = FakeRunner()
    choice = methods.choose(runner, ["cross"], ["margin_mse_raw"], methods.BASE_LRS, seed=0, extend=3)
    assert choice[("cross", "margin_mse_raw")] == ("margin_mse_raw", 5e-5)
    assert sorted(runner.ran) == [1e-4, 2e-4, 4e-4, 8e-4]  # 5e-5 is bracketed by the earlier 2.5e-5: no new rate
    run = {"setting": "cross", "family": "margin_mse_raw", "arm": "margin_mse_raw", "layers": 2}
    records = [{**run, "lr": lr, "seed": 0, "dev_spearman": dev} for lr, dev in dev_at.items()]
    records.append({**run, "lr": 5e-5, "seed": 1, "dev_spearman": 65.0})
    [chosen] = {r["lr"] for r in methods.chosen_runs(records)[("cross", "margin_mse_raw", 2)]}
    assert chosen == 5e-5  # the report agrees with the harness


def test_teacher_fingerprint_tells_two_trainings_of_the_teacher_apart(tmp_path, monkeypatch):
    """Guards a table that silently mixes runs from two trainings of the cross-encoder teacher (it is retrained on
    each machine, and the weights differ by float rounding): each record names the weights' digest, and the report
    lists the teachers with their run counts when a setting has more than one."""
    import hashlib
    from types import SimpleNamespace

    from benchmarks import methods

    weights = tmp_path / "teacher-ce" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights one")
    monkeypatch.setattr(methods, "recipe", lambda setting: (SimpleNamespace(teacher=str(weights.parent)),))
    first = methods.teacher_fingerprint("cross")
    assert first == "teacher-ce@" + hashlib.sha256(b"weights one").hexdigest()[:12]
    weights.write_bytes(b"weights two")
    assert methods.teacher_fingerprint("cross") != first

    records = [
        {"setting": "cross", "family": "margin_mse_raw", "arm": "margin_mse_raw", "lr": 1e-4, "seed": 0, "layers": 2,
         "dev_spearman": 60.0, "test_spearman": 50.0, "test_mrr10": 80.0, "test_ndcg10": 82.0, **extra}
        for extra in ({}, {"teacher": first}, {"teacher": first})
    ]  # fmt: skip
    assert "Teacher weights (runs): not recorded (1), " + f"{first} (2)." in methods.report(records)
    assert "Teacher weights" not in methods.report(records[1:])


def test_paired_difference_interval_by_hand():
    """The paired difference to Margin-MSE is the mean over shared seeds with a 95% t interval (2 degrees of freedom
    for 3 seeds: t = 4.303)."""
    from benchmarks.common import paired_diff

    a = [{"seed": s, "x": v} for s, v in [(0, 70.0), (1, 71.0), (2, 72.5)]]
    b = [{"seed": s, "x": v} for s, v in [(0, 69.0), (1, 69.5), (2, 70.0), (3, 99.0)]]
    diffs = [1.0, 1.5, 2.5]
    half = 4.302653 * statistics.stdev(diffs) / math.sqrt(3)
    assert paired_diff(a, b, "x") == f"{1.6667:+.2f} [{1.6667 - half:+.2f}, {1.6667 + half:+.2f}]"


def test_method_grid_trains_on_the_gold_triplets_whatever_the_default_recipe_adds():
    """Guards the grid silently changing data when the default recipe gained corpus mode (`unlabelled_file:
    stsb:train`): a rerun would have mixed 423-step runs into a table of 94-step ones."""
    from benchmarks.methods import RECIPES, recipe
    from hf_margin.app.recipes import parse_recipe

    assert parse_recipe(RECIPES["same"])[1].unlabelled_file == "stsb:train"
    assert all(recipe(setting)[1].unlabelled_file is None for setting in RECIPES)


def test_benchmarks_keep_gold_triplets_and_the_first_two_layers_whatever_the_default_recipe_keeps():
    """Guards BENCHMARKS.md's sections silently changing student when the default recipe moved to layers [0, 5]
    (and data when it gained corpus mode): reruns would have mixed two students into one table. Covers both
    entry points: methods.recipe (grid, data volume) and common.benchmark_recipe (default_setting's scripts)."""
    from benchmarks.common import benchmark_recipe
    from benchmarks.methods import RECIPES, recipe

    for model_args, data_args, _, _ in [benchmark_recipe(), *(recipe(setting) for setting in RECIPES)]:
        assert model_args.student_layers == [0, 1]
        assert data_args.unlabelled_file is None
    assert benchmark_recipe(["--num_negatives", "2"])[1].num_negatives == 2  # the caller's options still apply


def test_dev_best_takes_the_mean_dev_over_seeds_not_seed_zero():
    """Guards the rule that picks the default recipe's arm: the family with the best dev mean over its seeds,
    even where another family has the best seed-0 dev."""
    from benchmarks.methods import dev_best

    def runs(*devs):
        return [{"seed": s, "dev_spearman": d} for s, d in enumerate(devs)]

    final = {
        ("same", "hinge_mse_1", 2): runs(80.4, 79.8, 79.8),  # best seed 0, mean 80.0
        ("same", "deadzone_0.25", 2): runs(80.2, 80.1, 80.1),  # mean 80.13
        ("same", "deadzone_0.25", 4): runs(90.0, 90.0, 90.0),  # another capacity: not compared
        ("cross", "deadzone_0", 2): runs(99.0),  # another setting
    }
    assert dev_best(final, "same", ["hinge_mse_1", "deadzone_0.25", "deadzone_0"]) == "deadzone_0.25"
    assert dev_best(final, "same", ["margin_mse_raw"]) is None


def test_corpus_memory_benchmark_runs_both_stages_with_the_stub_encoder(tmp_path):
    """Guards benchmarks/corpus_memory.py (the memory ceiling of corpus mode) failing after a long GPU start: with
    the 0-layer stub encoder both stages run in seconds and record one row per text and the peak RSS; with
    ``--queries`` only that many queries are built (the 1M-text search on a CPU), not silently all of them."""
    out = tmp_path / "memory.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    for extra in (["--stage", "build"], ["--stage", "embed"], ["--queries", "40"]):
        result = subprocess.run(
            [sys.executable, "benchmarks/corpus_memory.py", "--stub", *extra, "--texts", "120", "--out", str(out)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
    build, embed, sampled = [json.loads(line) for line in out.read_text().splitlines()]
    assert (build["stage"], build["triplets"], build["queries"], build["stub"]) == ("build", 120, 120, True)
    assert (embed["stage"], embed["triplets"]) == ("embed", None)
    assert (sampled["stage"], sampled["texts"], sampled["queries"], sampled["triplets"]) == ("build", 120, 40, 40)
    assert all(r["peak_rss_mb"] >= r["peak_rss_mb_before_building"] > 0 for r in (build, embed, sampled))


def test_student_layers_report_ranks_by_dev_and_keeps_the_latest_record_of_a_pair():
    """Guards the layer table against listing a rerun pair twice or ordering by anything but dev."""
    from benchmarks.student_layers import report

    records = [
        {"teacher": "t", "layers": [0, 1], "dev_spearman": 64.0},
        {"teacher": "t", "layers": [0, 5], "dev_spearman": 80.2},
        {"teacher": "t", "layers": [0, 1], "dev_spearman": 64.7},
    ]
    assert report(records).splitlines()[2:] == ["| t | 0, 5 | 80.20 |", "| t | 0, 1 | 64.70 |"]


def test_data_volume_rerun_skips_finished_runs_and_reads_past_build_time_rows(tmp_path):
    """Guards the resumed data-volume run crashing on its own build-time rows (they have no `set`): a second
    `data_volume.py` call raised KeyError before training anything. A run added is written and counted at once;
    a line cut short by a killed run is read past (that run is redone)."""
    from benchmarks.common import read_jsonl
    from benchmarks.data_volume import finished_runs

    out = tmp_path / "data_volume.jsonl"
    records = [
        {"part": "build", "positives": 1, "state": "uncached", "seconds": 34.2, "triplets": 10536},
        {"part": "train", "set": "gold", "arm": "deadzone_0.25", "seed": 0},
        {"part": "train", "set": "gold", "arm": "deadzone_0.25", "seed": 1, "dry_run": True},
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"part": "train", "set": "gold", "ar')
    assert set(finished_runs(out, dry_run=False).done) == {("gold", "deadzone_0.25", 0)}
    assert set(finished_runs(out, dry_run=True).done) == {("gold", "deadzone_0.25", 1)}
    runs = finished_runs(out, dry_run=False)
    runs.add({"part": "train", "set": "gold", "arm": "margin_mse", "seed": 0})
    assert ("gold", "margin_mse", 0) in runs and ("gold", "margin_mse", 0) in finished_runs(out, dry_run=False)
    assert len(read_jsonl(out)) == 4


def test_data_volume_report_keeps_build_times_apart_by_thread_count():
    """Guards a 1-thread rebuild (the script run under OMP_NUM_THREADS=1) silently replacing the 2-thread build
    time of the same set in the table: each thread count keeps its own latest pair of timings."""
    from benchmarks.data_volume import report

    def build(state: str, seconds: float, threads: int) -> dict:
        return {"part": "build", "positives": 2, "state": state, "seconds": seconds, "triplets": 21072,
                "machine": {"torch_threads": threads}}  # fmt: skip

    records = [
        build("uncached", 31.3, 2), build("cached", 0.06, 2),
        build("uncached", 60.0, 1), build("cached", 0.07, 1),
        build("uncached", 57.3, 1), build("cached", 0.05, 1),
        *({"part": "train", "set": "gold", "arm": "a", "seed": s, "rows": 2994, "test_spearman": rho, "test_mrr10": mrr}
          for s, rho, mrr in [(0, 70.0, 92.0), (1, 72.0, 94.0)]),
    ]  # fmt: skip
    lines = report(records).splitlines()
    assert lines[2] == "| gold | 2994 | 71.00 ± 1.41 / 93.00 ± 1.41 |"
    assert lines[-2:] == ["| corpus_p2 | 21072 | 1 | 57.3 s | 0.05 s |", "| corpus_p2 | 21072 | 2 | 31.3 s | 0.06 s |"]


def test_shipped_recipes_train_the_adaptive_arm_the_committed_grid_chooses():
    """Guards a recipe that drifts from BENCHMARKS.md section 8: the default recipe (same-scale teacher) and `make
    distil`'s (cross-encoder teacher) train with the loss options and margin scaling of their setting's best
    adaptive arm by mean STS-B dev in the committed results; the distil recipe, which is the grid's own setting
    (gold triplets, first two layers, 1 epoch), also at the grid's chosen learning rate."""
    from benchmarks import methods
    from benchmarks.common import read_jsonl
    from hf_margin.app.recipes import parse_recipe

    final = methods.chosen_runs(read_jsonl(methods.OUT))
    for setting, recipe in methods.RECIPES.items():
        family = methods.dev_best(final, setting, methods.adaptive_families(setting))
        [(options, scaling)] = methods.families(setting)[family].values()
        model_args, data_args, _, args = parse_recipe(recipe)
        assert {key: getattr(args, key) for key in options} == options, (setting, family)
        assert args.resolve_teacher_margin_scaling(model_args.teacher_type) == scaling, (setting, family)
        if setting == "cross":
            assert args.learning_rate == final[(setting, family, 2)][0]["lr"]
            assert (args.num_train_epochs, args.per_device_train_batch_size, args.warmup_steps) == (1, 32, 30)
            assert data_args.unlabelled_file is None and model_args.student_layers == [0, 1]


def test_capacity_controls_compare_arms_at_the_same_rate():
    """Guards a capacity claim that is the learning rate, not the loss: each arm's 1-layer row runs at its 2-layer
    choice, so two arms can differ in rate; a control run of Margin-MSE at the other arm's rate (`--capacity-lrs`)
    is reported beside the tables, with that arm's paired difference to it, and leaves the tables' rows alone."""
    from benchmarks import methods

    def runs(family, layers, lr, tests):
        run = {"setting": "cross", "family": family, "arm": family, "lr": lr, "layers": layers, "test_ndcg10": 0.0}
        dev = 80.0 if layers == 2 else 0.0
        return [
            {**run, "seed": seed, "dev_spearman": dev, "test_spearman": test, "test_mrr10": 90.0 + seed}
            for seed, test in enumerate(tests)
        ]

    records = [
        *runs("margin_mse_student", 2, 4e-4, [72.0, 72.5, 73.0]),
        *runs("margin_mse_student", 1, 4e-4, [69.0, 69.2, 69.4]),
        *runs("margin_mse_student", 1, 8e-4, [70.0, 71.0, 72.0]),  # the control
        *runs("deadzone_1_student", 2, 8e-4, [71.0, 71.5, 72.0]),
        *runs("deadzone_1_student", 1, 8e-4, [69.0, 70.0, 71.0]),
    ]
    text = methods.report(records)
    assert "| margin_mse_student | 69.20 ± 0.20 / 91.00 ± 1.00 |" in text  # the table keeps the 2-layer choice
    assert "other than the arm's 2-layer choice (controls" in text
    [control] = [line for line in text.splitlines() if line.count("|") == 8 and "| 0.000" in line]  # one row only
    assert control.startswith("| margin_mse_student | 1 | 0.0008 | 3 | 71.00 ± 1.00 |")
    assert "deadzone_1_student: -1.00 [-1.00, -1.00] / +0.00 [+0.00, +0.00]" in control


def test_pareto_spreads_layers_and_reports_the_teacher_as_the_full_depth(tmp_path):
    """The Pareto table: each depth's cut keeps the first and last layer, the teacher's figure is the 6-layer
    point, speed-ups are against the teacher's speed, and seeds are averaged."""
    from benchmarks.pareto import report, spread_layers

    assert [spread_layers(n) for n in (1, 2, 3, 4, 6)] == [[0], [0, 5], [0, 2, 5], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5]]
    records = [
        {"kind": "speed", "layers": [0, 5], "texts_per_s": 80.0},
        {"kind": "speed", "layers": [0, 1, 2, 3, 4, 5], "texts_per_s": 20.0},
        {"kind": "quality", "task": "stsb", "layers": [0, 5], "seed": 1, "after": 72.0, "teacher": 82.0},
        {"kind": "quality", "task": "stsb", "layers": [0, 5], "seed": 2, "after": 74.0, "teacher": 82.0},
        {"kind": "quality", "task": "scifact", "layers": [0, 5], "seed": 1, "after": 57.9, "teacher": 64.5},
    ]
    rows = report(records, plot=tmp_path / "pareto.png").splitlines()
    assert rows[2] == "| 2: [0, 5] | 80.0 | 4.00x | 73.00 ± 1.41 | 57.90 |"
    assert rows[3] == "| 6 (teacher) | 20.0 | 1.00x | 82.00 | 64.50 |"
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_one_report_module_prints_a_runner_table_under_its_section(capsys):
    """benchmarks/report.py prints the tables the runners keep beside them (here retrieval.py's, from its committed
    results) under their BENCHMARKS.md section, one place for every table."""
    from benchmarks import report

    report.main(["--only", "retrieval"])
    out = capsys.readouterr().out
    assert "## 10. Retrieval distillation on SciFact" in out
    assert "| mpnet-2l-nolabel --eval_teacher false | 42 | 31.99 | 58.63 |" in out


def test_the_first_screen_of_benchmarks_is_printed_from_the_committed_results(capsys):
    """BENCHMARKS.md's first screen comes from report.py (``--only glance``), not by hand: the "which loss?" rows at
    each loss's dev-chosen rate (best in bold, every grid's teacher a column), the labels, speed and scale rows."""
    from benchmarks import report

    report.main(["--only", "glance"])
    out = capsys.readouterr().out
    assert "| Margin-MSE, moment-matched margins | **72.45 ± 0.33** | 72.51 ± 0.37 |" in out
    assert "| listwise KL (temperature chosen on dev) | 71.50 ± 0.59 (T = 0.1) | **73.10 ± 0.72 (T = 0.1)** |" in out
    assert "| listwise KL, T = 0.1 | 2e-04, **59.52 ± 1.60** | +1.25 [-0.64, +3.14] | 2e-04, **58.83 ± 0.62** |" in out
    assert "| the same, ONNX int8 (dynamic, per-channel) | 91.6 | 1.85x PyTorch | 781.2 (2.98x) | 57.01 |" in out
    assert "| 64.47 (917 gold + 1,101 teacher-built triplets; seed 42) |" in out
    assert "targets too) | 62.47 ± 0.58 (3,301 teacher-built triplets; seeds 42, 43, 44) | – | 64.51 |" in out
    assert "one-sided hinge) | – | 64.76 ± 0.79 (917 gold + 1,101 teacher-built triplets; seeds 42, 43, 44) |" in out
    assert "yaml`) | – | 66.68 ± 0.38 (917 gold + 1,101 teacher-built triplets; seeds 42, 43, 44) |" in out
    assert "labels.yaml`) | – | 70.40 ± 0.54 (917 gold + 1,101 teacher-built triplets; seeds 42, 43, 44) |" in out
    assert "32; 1 thread, commit 8317caa) | 39 min with a stub encoder, recall@30 0.975 on 1,000 sampled" in out
    assert "32; 2 threads, commit 2055f77) | 15 min with a stub encoder, recall@30 0.975 on 1,000 sampled" in out
    assert "| 10,000,000 texts on one GPU | the exact search, every text a query: 9.6 min on the NVIDIA H200" in out
    glance = (ROOT / "BENCHMARKS.md").read_text().split("## 1.")[0]
    assert "72.45 ± 0.33" in glance and "58.83 ± 0.62" in glance and "--only glance" in glance


def test_retrieval_grid_dev_split_never_trains_or_tests_on_its_queries(tmp_path):
    """The grid's dev claims are judged train claims: none is a training query, none a test query, and each keeps
    every judgement of qrels/train.tsv; the learning rate is chosen on seed-42 dev alone."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.retrieval import DEV_QUERIES, SCIFACT, chosen_lr, dev_folder, grid_report
    from hf_margin.evaluation.retrieval import load_beir

    folder = dev_folder(tmp_path)
    dev, test = load_beir(folder, "dev"), load_beir(folder, "test")
    train = load_beir(SCIFACT, "train")
    training = set((folder / "train-queries.txt").read_text().splitlines())
    assert len(dev.queries) == DEV_QUERIES and not training & set(dev.queries.values())
    assert not set(test.queries.values()) & set(dev.queries.values())
    assert all(dev.qrels[q] == train.qrels[q] for q in dev.qrels)
    unlabelled = set((SCIFACT / "unlabelled.txt").read_text().splitlines())
    assert training == unlabelled - set(dev.queries.values())

    def run(loss, lr, seed, dev_ndcg, test_ndcg):
        return {"loss": loss, "lr": lr, "seed": seed, "dev_ndcg@10": dev_ndcg, "test_ndcg@10": test_ndcg,
                "test_mrr@10": test_ndcg - 3}  # fmt: skip

    records = [
        run("margin_mse", 1e-4, 42, 50, 55),
        run("margin_mse", 2e-4, 42, 52, 54),
        run("margin_mse", 2e-4, 43, 0, 56),
    ]
    records += [run("deadzone_0.25", 1e-4, 42, 51, 90), run("deadzone_0.25", 5e-5, 42, 49, 58)]
    records += [run("deadzone_0.25", 1e-4, 43, 0, 59)]
    assert chosen_lr(records, "margin_mse") == 2e-4  # the test figure (55 at 1e-4) plays no part
    table = grid_report(records)
    assert "| margin_mse | 1e-04: 50.00, **2e-04: 52.00** | 2e-04 | 2 | 55.00 ± 1.41 |" in table
    assert "| deadzone_0.25 | 5e-05: 49.00, **1e-04: 51.00** | 1e-04 | 2 | 74.50 ± 21.92 | +19.50 [" in table


def test_report_prints_the_memory_gpu_and_corpus_tables_as_benchmarks_md_shows(capsys):
    """benchmarks/report.py prints sections 5, 6, 9 (memory of corpus mode) and 11 from their committed results with
    BENCHMARKS.md's figures: a printer that drifts from the document (a column, a rounding) fails here."""
    from benchmarks import report

    names = ["stream_memory", "gpu_throughput", "gpu_runs", "corpus_memory", "corpus_search", "corpus_build"]
    report.main(["--only", *names])
    out = capsys.readouterr().out
    assert "## 5. Streamed data, memory" in out and "## 11. Corpora of 100k to 10M texts" in out
    assert "| 20,000 | 523 MB | 589 MB |" in out
    assert "| 80,000 | 531 MB | 612 MB |" in out
    assert "| 256 × 4 | 2,049, 13,036, 12,891 | 1,111, 1,017, 1,568 | **×8.22** | ≥ 1.3 |" in out
    assert "| 32 × 1 | 218, 1,918, 2,175 | 139, 943, 884 | **×2.03** | ≥ 1.0 |" in out
    assert "| DeepSpeed ZeRO-2 (`zero2.yaml`, 50 steps), first session | 297 | 733 MiB | 56 s |" in out
    assert "| 1,172 | 762 MiB | **44 s** (23 s of training); STS-B test Spearman 78.73 |" in out
    assert "| real MiniLM, before the fix below | 30,000 | build | 1,684 MB (527) | 130 s |" in out
    assert "| 0-layer stub | 1,000,000 | embed only | 3,802 MB (721) | 467 s |" in out
    assert "| exact (chunked, PyTorch) | 0 | 254 | 1.000 | 1.000 | 1,295 |" in out
    assert (
        "| FAISS IVF-PQ (nlist 1,265, nprobe 16, 96 codes of 8 bits, 4x candidates re-scored) | 77 | 58 | 0.961 " in out
    )
    assert "| FAISS flat | 0.5 | 442 | 1.000 | 1.000 | 1,461 |" in out
    assert (
        "| exact on the NVIDIA H200 (float16 candidates re-scored in float32, rows settled by the error bound; commit "
        "83e8d12; 65,536 sampled queries, recall checked on 256 against the CPU) | 2 | 578 | 1.000 | 1.000 | 9,882 "
        "(GPU 13,429) |" in out
    )
    assert "| run | commit 8317caa, 1 thread | commit 2055f77, 2 threads |" in out
    assert "| triplets built | 1,000,000 | 1,000,000 |" in out and "| wall time | 39 min | 15 min |" in out
    assert "| recall@30 against exact search, 1,000 sampled queries | 0.975 | 0.975 |" in out
    assert "| peak RSS | 2,059 MiB | 2,067 MiB | 1,774 MiB |" in out


def test_race_dry_run_records_every_arm_of_both_settings_with_their_loader_settings(tmp_path):
    """Guards benchmarks/race.py (issue 24's fair race) failing on the GPU machine after minutes of device time: its
    CPU dry run starts every arm in its own process for both settings and records examples/s, real tokens/s and the
    padded share, the per-pair ratios, and what differs between the arms (only the loader settings and gpu_defaults;
    the recipe's optimiser, schedule, seed, precision and lengths are the same for all four)."""
    from benchmarks.race import ARMS, TUNED_LOADER

    result, records = dry_run("race.py", tmp_path / "race.jsonl")
    runs = [r for r in records if r["kind"] == "run"]
    assert sorted((r["setting"], r["arm"]) for r in runs) == sorted((s, a) for s in ("host", "compute") for a in ARMS)
    for r in runs:
        assert r["dry_run"] and not r.get("error") and r["machine"]["commit"] and "tree_clean" in r
        assert r["examples_per_s"] > 0 and r["tokens_per_s"] > 0 and 0 <= r["padded_share"] < 1
        assert r["mfu"] is None and r["device"] == "cpu" and r["precision"] == "fp32" and r["batch"] == 4
        assert r["tokenizers_parallelism_env"] is None  # not forced off for any arm
    for setting in ("host", "compute"):
        arms = {r["arm"]: r for r in runs if r["setting"] == setting}
        same = ("learning_rate", "warmup_steps", "lr_scheduler_type", "weight_decay", "seed", "optim", "bf16",
                "per_device_train_batch_size", "max_steps", "max_grad_norm")  # fmt: skip
        assert len({json.dumps([r["args"][k] for k in same]) for r in arms.values()}) == 1
        assert len({(r["nonembedding_params"], r["layers"], r["negatives"]) for r in arms.values()}) == 1
        default, tuned = arms["st-default"]["args"], arms["st-tuned"]["args"]
        assert (default["dataloader_num_workers"], default["dataloader_persistent_workers"]) == (0, False)
        assert default["logging_nan_inf_filter"] is True
        assert {k: tuned[k] for k in TUNED_LOADER} == TUNED_LOADER
        assert {k: arms["ours"]["args"][k] for k in TUNED_LOADER} == TUNED_LOADER
        assert arms["ours"]["set_explicitly_on_cpu"] == TUNED_LOADER  # gpu_defaults does nothing on a CPU
        assert arms["ours-plain"]["args"]["dataloader_num_workers"] == 0 and not arms["ours-plain"]["gpu_defaults"]
    compute = next(r for r in runs if r["setting"] == "compute" and r["arm"] == "st-tuned")
    assert (compute["query_max_length"], compute["document_max_length"]) == (64, 256)
    assert compute["router_mapping"]["positive"] == "document"  # the peer reads documents at 256 tokens too
    ratios = {r["setting"]: r for r in records if r["kind"] == "ratios"}
    assert set(ratios) == {"host", "compute"}
    for r in ratios.values():
        assert set(r["ratios"]) == {"ours/st-tuned", "ours/st-default", "ours/ours-plain"}
        assert all(len(v) == 1 and v[0] > 0 for v in r["ratios"].values())
        assert r["summary"]["ours/st-tuned"]["median"] == r["ratios"]["ours/st-tuned"][0]
    assert "### host, batch 4" in result.stdout and "### compute, batch 4" in result.stdout


def test_race_flops_per_token_and_mfu_by_hand():
    """F = 6 N + 12 L H S per real token; MFU = F x tokens/s / the card's peak dense bf16 FLOP/s (none on a CPU or
    an unknown card: an L40S is not an L4)."""
    from transformers import BertConfig, BertModel

    from benchmarks.race import flops_per_token, mfu, nonembedding_params, peak_flops

    assert flops_per_token(1_000_000, 2, 384, 50) == 6_000_000 + 460_800
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA L40S") is None and peak_flops(None) is None
    assert math.isclose(mfu(6_460_800, 1e6, 989e12), 6.4608e12 / 989e12)
    assert mfu(6_460_800, 1e6, None) is None
    # one layer, hidden 8, intermediate 16: q, k, v 3 x 72, attention output 72, LayerNorm 16, intermediate 144,
    # output 136, LayerNorm 16 = 600; the embeddings and the pooler are not counted
    tiny = BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16, max_position_embeddings=16))  # fmt: skip
    assert nonembedding_params(tiny) == 600


def test_race_report_lists_every_pair_ratio_with_median_and_spread():
    """The race table: each arm's medians, and ours / arm for every pair (race and round) in round order with the
    median and min-max; a failed run and a round missing ours give no ratio."""
    from benchmarks.race import report

    def run(arm, round_, eps, **extra):
        return {"kind": "run", "setting": "compute", "batch": 32, "race_id": "r1", "round": round_, "arm": arm,
                "examples_per_s": eps, "tokens_per_s": eps * 50, "padded_share": 0.25, "mfu": None,
                "device": "NVIDIA H200", "precision": "bf16", "machine": {"commit": "abc1234"}, "tree_clean": True,
                **extra}  # fmt: skip

    records = []
    rounds = [(100, 100, 50, 125), (120, 100, 60, 100), (90, 100, 30, 90)]  # ours, st-tuned, st-default, ours-plain
    for round_, (ours, tuned, default, plain) in enumerate(rounds):
        records += [run("ours", round_, ours), run("st-tuned", round_, tuned), run("st-default", round_, default),
                    run("ours-plain", round_, plain)]  # fmt: skip
    records += [run("st-tuned", 3, 1.0), run("ours", 4, 0.0, error="exit 1"), run("st-tuned", 4, 5.0)]
    records.append({"kind": "ratios", "setting": "compute", "batch": 32})
    lines = report(records).splitlines()
    assert lines[0] == "### compute, batch 32: NVIDIA H200, bf16"
    assert lines[2] == "Commit abc1234 (clean tree); 3 pair(s)."
    assert "| st-tuned | 100.0 | 5,000 | 25.0 % | – | ×1.00, ×1.20, ×0.90 | **×1.00** | ×0.90–×1.20 |" in lines
    assert "| st-default | 50.0 | 2,500 | 25.0 % | – | ×2.00, ×2.00, ×3.00 | **×2.00** | ×2.00–×3.00 |" in lines
    assert "| ours | 100.0 | 5,000 | 25.0 % | – | – | – | – |" in lines
    assert "| ours-plain | 100.0 | 5,000 | 25.0 % | – | ×0.80, ×1.20, ×1.00 | **×1.00** | ×0.80–×1.20 |" in lines


def test_retrieval_grid_runs_every_loss_at_the_recipe_rate_first_and_extends_an_edge_choice(tmp_path, monkeypatch):
    """A grid cut short still compares the losses at one rate; a best rate at the grid's edge is extended (x2, /2)
    until dev falls on both sides, then the other seeds run at the dev-chosen rate, seed by seed (a grid cut short
    still pairs every loss)."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.retrieval as grid

    dev = {"margin_mse": {5e-5: 51, 1e-4: 50, 2e-4: 49, 2.5e-5: 50.5}, "deadzone_0.25": {5e-5: 49, 1e-4: 50, 2e-4: 51}}
    dev["deadzone_0.25"] |= {4e-4: 52, 8e-4: 51.5}
    calls = []

    def point(loss, lr, seed, folder, cache_dir, teacher):
        calls.append((loss, lr, seed))
        return {"loss": loss, "lr": lr, "seed": seed, "dev_ndcg@10": dev[loss][lr], "test_ndcg@10": 0.0}

    monkeypatch.setattr(grid, "run_grid_point", point)
    grid.run_grid(["margin_mse", "deadzone_0.25"], [42, 43, 44], None, tmp_path / "grid.jsonl")
    assert calls[:2] == [("margin_mse", 1e-4, 42), ("deadzone_0.25", 1e-4, 42)]
    assert calls[6:] == [("margin_mse", 2.5e-5, 42), ("deadzone_0.25", 4e-4, 42), ("deadzone_0.25", 8e-4, 42),
                         ("margin_mse", 5e-5, 43), ("deadzone_0.25", 4e-4, 43),
                         ("margin_mse", 5e-5, 44), ("deadzone_0.25", 4e-4, 44)]  # fmt: skip
    calls.clear()
    grid.run_grid(["margin_mse", "deadzone_0.25"], [42, 43, 44], None, tmp_path / "grid.jsonl")
    assert calls == []  # finished runs are skipped on a rerun


@pytest.mark.parametrize("teacher", ["mpnet", "minilm"])
def test_retrieval_grid_trains_the_minilm_2_layer_student_from_either_teacher(monkeypatch, tmp_path, teacher):
    """Guards the grid's first run, which trained layers 0 and 5 of mpnet itself: the recipe's student defaults to
    its teacher, so the mpnet grid must name MiniLM as the student. The minilm grid is the recipe's own setting."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.retrieval as grid
    from hf_margin.app.recipes import parse_recipe

    seen = {}

    def fake_run(recipe, options, cache_dir):
        seen["options"] = options
        raise RuntimeError("stop")

    monkeypatch.setattr(grid, "train_run", fake_run)
    with pytest.raises(RuntimeError, match="stop"):
        grid.run_grid_point("margin_mse", 1e-4, 42, grid.dev_folder(tmp_path), None, teacher)
    model_args = parse_recipe(grid.RECIPE, seen["options"])[0]
    expected = {"mpnet": grid.MPNET, "minilm": "sentence-transformers/all-MiniLM-L6-v2"}[teacher]
    assert model_args.teacher == expected
    assert (model_args.student or model_args.teacher, model_args.student_layers) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        [0, 5],
    )


def test_retrieval_grid_from_two_rates_extends_below_when_the_lower_wins(tmp_path, monkeypatch):
    """``--grid_lrs 1e-4 2e-4``: a best dev at 1e-4 (the bottom edge) runs 5e-5 next; once dev falls on both sides,
    the other seeds run at 1e-4."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.retrieval as grid

    dev = {5e-5: 50.0, 1e-4: 52.0, 2e-4: 51.0}
    calls = []

    def point(loss, lr, seed, folder, cache_dir, teacher):
        calls.append((lr, seed, teacher))
        return {"loss": loss, "lr": lr, "seed": seed, "dev_ndcg@10": dev[lr], "test_ndcg@10": 0.0}

    monkeypatch.setattr(grid, "run_grid_point", point)
    grid.run_grid(["listwise_kl_T0.1"], [42, 43], None, tmp_path / "grid.jsonl", "minilm", (1e-4, 2e-4))
    assert calls == [(1e-4, 42, "minilm"), (2e-4, 42, "minilm"), (5e-5, 42, "minilm"), (1e-4, 43, "minilm")]


def test_retrieval_report_marks_the_figures_a_quiet_run_skipped():
    """A run with --eval_before / --eval_teacher / --measure_speed false has no 'before', teacher or speed figure:
    the table says "–" there instead of failing after a 40-minute run; seeds are pooled per arm and variant."""
    from benchmarks.retrieval import report

    def record(seed: int, after: float, quiet: bool) -> dict:
        figures = {m: {"after": after, **({} if quiet else {"before": 31.99, "teacher": 64.51})}
                   for m in ("ndcg@10", "mrr@10", "recall@100")}  # fmt: skip
        speed = {"student": None, "teacher": None, "speedup": None} if quiet else {
            "student": {"texts_per_s": 75.0}, "teacher": {"texts_per_s": 25.0}, "speedup": 3.0}  # fmt: skip
        return {"arm": "a", "variant": "--quiet" if quiet else "", "seed": seed, "figures": figures, "speed": speed}

    rows = report([record(42, 60.0, True), record(43, 62.0, True), record(42, 58.0, False)]).splitlines()[2:]
    assert rows[0] == "| a --quiet | 42, 43 | – | 61.00 ± 1.41 | 61.00 ± 1.41 | 61.00 ± 1.41 | – | – | – |"
    assert rows[1] == "| a | 42 | 31.99 | 58.00 | 58.00 | 58.00 | 64.51 | 75.0 / 25.0 | 3.00x |"


def test_recipe_runs_time_a_recipe_on_an_empty_cache_and_restore_the_users(monkeypatch, tmp_path):
    """benchmarks/recipe_runs.py: an empty-cache run sees a fresh HF_DATASETS_CACHE (nothing cached in it) and the
    user's setting comes back after; the record keeps the run's own figures, and the table reads them; ``--keep``
    names the output folder."""
    from benchmarks import recipe_runs

    (tmp_path / "users").mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "users"))
    seen = []

    def fake_run(recipe, options, output_dir=None):
        cache = Path(os.environ["HF_DATASETS_CACHE"])
        seen.append((cache, list(cache.iterdir()), output_dir))
        metrics = {
            "evaluation": {"scifact": {"ndcg@10": {"before": 31.99, "after": 56.55, "teacher": 64.51}}},
            "speed": {"student": {"texts_per_s": 73.5}, "teacher": {"texts_per_s": 33.2}, "speedup": 73.5 / 33.2},
        }
        return metrics, 529.0

    monkeypatch.setattr(recipe_runs, "train_run", fake_run)
    record = recipe_runs.run_recipe(ROOT / "recipes" / "scifact-distil.yaml", "empty", [])
    assert seen[0][0] != tmp_path / "users" and seen[0][1] == []
    assert os.environ["HF_DATASETS_CACHE"] == str(tmp_path / "users")
    recipe_runs.run_recipe(ROOT / "recipes" / "scifact-distil.yaml", "warm", [], keep="outputs/kept")
    assert seen[1][0] == tmp_path / "users"
    assert (seen[0][2], seen[1][2]) == (None, "outputs/kept")  # --keep: the student is saved there, not in a temp
    assert record["recipe"] == "recipes/scifact-distil.yaml" and record["peak_rss_gb"] >= 0  # no child ran here
    row = recipe_runs.report([record]).splitlines()[2]
    assert row.startswith("| recipes/scifact-distil.yaml | empty | scifact ndcg@10 | 31.99 -> 56.55 | 64.51 | ")
    assert "73.5 / 33.2 (2.21x) | 8 min 49 s |" in row


def test_a_tree_is_clean_despite_the_records_the_benchmarks_write(monkeypatch, tmp_path):
    """A benchmark's records (benchmarks/results/) do not make the measured tree dirty, so a run's later seeds are
    recorded as clean as its first; any other change, tracked or new, does."""
    from benchmarks import common

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "runs.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    assert common.tree_is_clean()
    with (tmp_path / "benchmarks" / "results" / "runs.jsonl").open("a") as f:
        f.write("{}\n")
    (tmp_path / "benchmarks" / "results" / "new.jsonl").write_text("{}\n")
    assert common.tree_is_clean()
    (tmp_path / "code.py").write_text("x = 2\n")
    assert not common.tree_is_clean()
    git("checkout", "-q", "code.py")
    (tmp_path / "script.sh").write_text("run\n")
    assert not common.tree_is_clean()


def test_train_run_keeps_the_output_folder_it_is_given(monkeypatch, tmp_path):
    """benchmarks.common.train_run: `--output_dir` is the given folder (kept after the run, with the student) or
    a temporary one (gone after); the metrics come from the folder the run wrote."""
    from benchmarks import common

    used = []

    def fake_subprocess_run(argv, **kwargs):
        out = Path(argv[argv.index("--output_dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text('{"evaluation": {"n": 1}}')
        used.append(out)

    monkeypatch.setattr(common.subprocess, "run", fake_subprocess_run)
    metrics, _ = common.train_run(ROOT / "recipes" / "scifact-distil.yaml", [], output_dir=str(tmp_path / "kept"))
    assert metrics == {"evaluation": {"n": 1}} and used[0] == tmp_path / "kept"
    assert (tmp_path / "kept" / "metrics.json").exists()
    common.train_run(ROOT / "recipes" / "scifact-distil.yaml", [])
    assert used[1] != tmp_path / "kept" and not used[1].exists()


def test_int8_variants_report_puts_each_file_beside_its_runs_pytorch_student():
    """benchmarks/int8_variants.py: every file's speed is divided by the PyTorch student of its own record, on
    documents and on queries one at a time."""
    from benchmarks import int8_variants

    def timing(docs: float, queries: float) -> dict:
        return {"documents_per_s": docs, "queries_per_s": queries, "rounds": {}, "min_cosine": 0.99}

    record = {
        "student": "s",
        "variants": {"pytorch fp32": timing(50.0, 250.0), "shipped: fused, per channel, 7-bit": timing(92.5, 775.0)},
        "machine": {"commit": "abc1234"},
        "clean_tree": True,
    }
    rows = int8_variants.report([record]).splitlines()
    assert rows[2] == "| s | pytorch fp32 | 50.0 | 1.00x | 250.0 | 1.00x | 0.9900 | not recorded | abc1234 |"
    assert rows[3] == (
        "| s | shipped: fused, per channel, 7-bit | 92.5 | 1.85x | 775.0 | 3.10x | 0.9900 | not recorded | abc1234 |"
    )
    record["machine"]["isa"] = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert "| 0.9900 | AVX-512 VNNI | abc1234 |" in int8_variants.report([record])


def test_machine_names_the_cpus_int8_instructions(monkeypatch, tmp_path):
    """Two CPUs that both call themselves "AMD EPYC" differ in what int8 runs on: the record keeps the flags."""
    from benchmarks import common

    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 {extra}\n"
    cpuinfo.write_text(block.format(n=0, extra="avx512f avx512_vnni") + "\n" + block.format(n=1, extra="amx_int8"))
    real_path = common.Path
    monkeypatch.setattr(common, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    record = common.machine()
    assert record["cpu"] == "AMD EPYC" and record["isa"] == ["avx2", "avx512f", "avx512_vnni"]
    assert common.int8_instructions(record) == "AVX-512 VNNI"
    assert common.int8_instructions({"isa": ["avx2"]}) == "AVX2, no VNNI"
    assert common.int8_instructions({"isa": ["avx2", "avx512_vnni", "amx_int8"]}) == "AMX"


def test_the_labels_recipe_is_the_benchmarked_arm():
    """recipes/scifact-labels.yaml ships what BENCHMARKS section 10 measured: the minilm-2l-gold arm (the no-label
    recipe with the train pairs) with the one-sided hinge, 1e-4, 3 epochs and the embedding term."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.retrieval as retrieval
    from hf_margin.app.recipes import parse_recipe

    extra = ["--overshoot_width", "none", "--learning_rate", "1e-4", "--num_train_epochs", "3"]
    arm = [*retrieval.ARMS["minilm-2l-gold"], *retrieval.MARGINS_ONLY, *extra, "--embedding_weight", "1"]
    shipped = parse_recipe(ROOT / "recipes" / "scifact-labels.yaml")
    measured = parse_recipe(retrieval.RECIPE, arm)
    where = {"output_dir", "run_name", "logging_dir"}  # each recipe names its own output folder
    for ours, theirs in zip(shipped, measured):
        names = [f.name for f in dataclasses.fields(ours) if f.init and f.name not in where]
        assert {n: getattr(ours, n) for n in names if getattr(ours, n) != getattr(theirs, n)} == {}
    assert shipped[-1].embedding_weight == 1 and shipped[-1].overshoot_width is None


def test_the_mean_labels_recipe_is_the_benchmarked_arm():
    """recipes/scifact-mean-labels.yaml ships the run of BENCHMARKS section 10, thirteenth round (70.64 on seed 42):
    the mean-6l-gold arm with its options, less the flags that only skipped the report's other figures."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.retrieval as retrieval
    from benchmarks.common import read_jsonl
    from hf_margin.app.recipes import parse_recipe

    record = next(r for r in read_jsonl(retrieval.OUT) if r["arm"] == "mean-6l-gold" and r["seed"] == 42)
    skipped = ["--eval_teacher", "false", "--eval_before", "false", "--measure_speed", "false"]
    assert record["variant"].endswith(" ".join(skipped)) and record["figures"]["ndcg@10"]["after"] > 70
    extra = record["variant"].split()[: -len(skipped)]
    measured = parse_recipe(retrieval.RECIPE, [*retrieval.ARMS["mean-6l-gold"], *retrieval.MARGINS_ONLY, *extra])
    shipped = parse_recipe(ROOT / "recipes" / "scifact-mean-labels.yaml")
    where = {"output_dir", "run_name", "logging_dir"}  # each recipe names its own output folder
    for ours, theirs in zip(shipped, measured):
        names = [f.name for f in dataclasses.fields(ours) if f.init and f.name not in where]
        assert {n: getattr(ours, n) for n in names if getattr(ours, n) != getattr(theirs, n)} == {}
    assert shipped[0].teacher_ensemble == ["sentence-transformers/all-MiniLM-L6-v2"] == [shipped[0].embedding_teacher]


def test_teacher_speed_times_a_mean_score_pair_and_a_cut_student_alternately(tmp_path):
    """benchmarks/teacher_speed.py: each round times the student and the whole teacher (both members of a
    mean-score pair) on the same 256 SciFact documents at the same length; the record keeps every round and the
    median of their speedups."""
    from tests.conftest import write_tiny_teacher

    a, b = write_tiny_teacher(tmp_path / "a"), write_tiny_teacher(tmp_path / "b")
    out = tmp_path / "speed.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    options = ["--teacher", str(a), "--teacher_ensemble", str(b), "--student", str(a), "--student_layers", "0"]
    options += ["--max_length", "32", "--rounds", "2", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "benchmarks/teacher_speed.py", *options],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["teacher"] == f"{a} + {b} (mean score)" and record["student_layers"] == [0]
    assert len(record["rounds"]) == 2
    for r in record["rounds"]:
        assert r["student"]["texts"] == r["teacher"]["texts"] == 256
        assert r["student"]["max_length"] == r["teacher"]["max_length"] == 32
        assert r["speedup"] == pytest.approx(r["student"]["texts_per_s"] / r["teacher"]["texts_per_s"])
    assert record["median_speedup"] == pytest.approx(statistics.median(r["speedup"] for r in record["rounds"]))

"""Scaling out and surviving faults: several CPU processes, DeepSpeed configs, resume after SIGKILL,
killed teacher scoring, streamed data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset, IterableDataset
from safetensors.torch import load_file

from hf_margin import attach_teacher_margins
from hf_margin.app.launch import accelerate_config_path, shipped_accelerate_configs
from hf_margin.app.recipes import dump_recipe

from .conftest import TopicTeacher, make_triplets, write_tiny_stsb, write_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = ROOT / "recipes" / "accelerate"


def run_python(code: str, tmp_path: Path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / f"script_{abs(hash(code)) % 10**8}.py"
    script.write_text(code)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [*(launcher or [sys.executable]), str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def accelerate_launch(config: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_DIR / config)]


def tiny_recipe(tmp_path: Path, name: str, **overrides) -> Path:
    stsb = tmp_path / "stsb"
    if not stsb.exists():
        write_tiny_stsb(stsb)
    teacher = tmp_path / "teacher"
    if not teacher.exists():
        write_tiny_teacher(teacher)
    recipe = tmp_path / f"{name}.yaml"
    values = dict(
        teacher=str(teacher),
        student_layers=[0],
        data_dir=str(stsb),
        cache_dir=str(tmp_path / "cache"),
        num_negatives=2,
        skip_top=1,
        sample_from=6,
        output_dir=str(tmp_path / name),
        max_steps=6,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=3,
        dataloader_num_workers=0,
    )
    dump_recipe(recipe, **{**values, **overrides})
    return recipe


def losses_of(output_dir: Path) -> list[float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


def test_two_cpu_processes_give_the_one_process_loss_curve(tmp_path):
    """accelerate launch with 2 gloo processes × 4 rows per step must follow the loss curve of one process with
    8 rows per step (the same global batch, sequential order so both see the same rows): the loss is normalised
    by the negatives counted on all processes. Tolerance 1e-5 absolute (float sums in another order)."""
    same = {"use_cpu": True, "train_sampling_strategy": "sequential", "label_weight": 1.0, "max_train_examples": 24}
    one = tiny_recipe(tmp_path, "one", **same)
    two = tiny_recipe(tmp_path, "two", per_device_train_batch_size=4, **same)
    r1 = run_python("import sys; from hf_margin.app.cli import main; sys.exit(main())", tmp_path, "train", str(one))
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run(
        [*accelerate_launch("multi-cpu.yaml"), "-m", "hf_margin", "train", str(two)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    curve1, curve2 = losses_of(tmp_path / "one"), losses_of(tmp_path / "two")
    assert len(curve1) == len(curve2) == 6
    assert min(curve1) > 0.01  # a curve worth comparing
    assert curve1 == pytest.approx(curve2, abs=1e-5)
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=0)


SCORING_SCRIPT = """
import json, sys
from accelerate import PartialState
from tests.conftest import TopicTeacher, make_triplets
from hf_margin import attach_teacher_margins

out, cache, preset = sys.argv[1], sys.argv[2], sys.argv[3] == "preset"
if preset:  # as a training script does: TrainingArguments(use_cpu=True) sets up the state first
    PartialState(cpu=True)
teacher = TopicTeacher()
seen = []
original = teacher.score_pairs
def counting(queries, documents):
    seen.extend(zip(queries, documents))
    return original(queries, documents)
teacher.score_pairs = counting
scored = attach_teacher_margins(make_triplets(37, seed=5, ragged=True), teacher, cache_dir=cache, batch_size=5)
state = PartialState()
json.dump({"pairs": len(seen), "margins": list(scored["teacher_margins"]), "processes": state.num_processes},
          open(f"{out}-{state.process_index}.json", "w"))
"""


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]


@pytest.mark.parametrize(
    ("launcher", "preset"),
    [(accelerate_launch("multi-cpu.yaml"), "preset"), (TORCHRUN, "plain")],
    ids=["accelerate-launch", "torchrun-no-state"],
)
def test_two_processes_split_scoring_and_write_one_identical_cache(tmp_path, launcher, preset):
    """Two processes score disjoint halves, the main one writes one cache equal to a one-process cache, and a
    second launch finds the cache and scores nothing. Under torchrun on a CPU-only machine with no state set up
    first, hf-margin joins the two processes itself (a plain ``PartialState()`` would see each alone, so both
    would score everything and clean each other's temporary files: the CI failure of a DeepSpeed test)."""
    r = run_python(
        SCORING_SCRIPT, tmp_path, str(tmp_path / "first"), str(tmp_path / "cache2"), preset, launcher=launcher
    )
    assert r.returncode == 0, r.stderr[-3000:]
    first = [json.loads((tmp_path / f"first-{i}.json").read_text()) for i in range(2)]
    assert first[0]["processes"] == first[1]["processes"] == 2
    data = make_triplets(37, seed=5, ragged=True)
    total_pairs = sum(1 + len(n) for n in data["negatives"])
    assert first[0]["pairs"] + first[1]["pairs"] == total_pairs
    assert first[0]["pairs"] > 0 and first[1]["pairs"] > 0
    single = attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path / "cache1")
    assert first[0]["margins"] == first[1]["margins"] == list(single["teacher_margins"])
    assert [p.name for p in (tmp_path / "cache2").iterdir()] == [p.name for p in (tmp_path / "cache1").iterdir()]

    r = run_python(
        SCORING_SCRIPT, tmp_path, str(tmp_path / "again"), str(tmp_path / "cache2"), preset, launcher=launcher
    )
    assert r.returncode == 0, r.stderr[-3000:]
    again = [json.loads((tmp_path / f"again-{i}.json").read_text()) for i in range(2)]
    assert again[0]["pairs"] == again[1]["pairs"] == 0
    assert again[0]["margins"] == list(single["teacher_margins"])


@pytest.mark.parametrize("name", ["ds_zero2.json", "ds_zero3.json", "ds_zero3_offload.json"])
def test_deepspeed_configs_parse_after_the_trainer_fills_auto(name, bi_encoder):
    """Each shipped DeepSpeed JSON, its "auto" values filled as the Trainer fills them, is accepted by
    DeepSpeed's own config parser with the intended ZeRO stage and offload."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from hf_margin import MarginDistillConfig

    raw = json.loads((ACCELERATE_DIR / name).read_text())
    args = MarginDistillConfig(
        output_dir="unused",
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        learning_rate=3e-5,
        warmup_steps=10,
        report_to="none",
        use_cpu=True,
    )
    hf_config = HfTrainerDeepSpeedConfig(raw)
    hf_config.trainer_config_process(args)
    hf_config.trainer_config_finalize(args, bi_encoder, num_training_steps=100)
    assert '"auto"' not in json.dumps(hf_config.config)
    parsed = DeepSpeedConfig(hf_config.config)
    assert parsed.zero_optimization_stage == raw["zero_optimization"]["stage"]
    assert parsed.train_micro_batch_size_per_gpu == 8 and parsed.gradient_accumulation_steps == 2
    assert parsed.gradient_clipping == 1.0
    offload = parsed.zero_config.offload_optimizer is not None and parsed.zero_config.offload_optimizer.device == "cpu"
    assert offload == ("offload" in name)


@pytest.mark.parametrize("name", sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
def test_accelerate_configs_load_and_resolve_by_name(name):
    """Each shipped Accelerate config loads with Accelerate's own config classes, also by its short name."""
    from accelerate.commands.config.config_args import load_config_from_file

    assert name in shipped_accelerate_configs()
    path = accelerate_config_path(name)
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if config.deepspeed_config:
        ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
        assert ds_file.is_absolute() and ds_file.is_file()


RESUME_SCRIPT = """
import os, signal, sys
import torch
from transformers import BertModel, TrainerCallback
from tests.conftest import TopicTeacher, make_tokenizer, make_triplets, tiny_config
from hf_margin import MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins

out, mode = sys.argv[1], sys.argv[2]
tok = make_tokenizer()
data = attach_teacher_margins(make_triplets(64, seed=2), TopicTeacher(), cache_dir=out + "-cache")
torch.manual_seed(0)
model = BertModel(tiny_config(len(tok)), add_pooling_layer=False)
args = MarginDistillConfig(output_dir=out, max_steps=10, save_strategy="steps", save_steps=5,
    per_device_train_batch_size=8, learning_rate=1e-3, report_to="none", use_cpu=True, disable_tqdm=True, seed=7,
    data_seed=7, dataloader_num_workers=0)

class KillAfterCheckpoint(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if mode == "kill" and state.global_step == 7:
            os.kill(os.getpid(), signal.SIGKILL)

trainer = MarginDistillTrainer(model, args, train_dataset=data, processing_class=tok, callbacks=[KillAfterCheckpoint()])
trainer.train(resume_from_checkpoint=out + "/checkpoint-5" if mode == "resume" else None)
trainer.save_model(out + "/final")
"""


def test_resume_after_sigkill_gives_the_uninterrupted_weights(tmp_path):
    """A run SIGKILLed after its step-5 checkpoint and resumed from it ends with the weights of an
    uninterrupted run (same seed, CPU) within 1e-6."""
    straight = run_python(RESUME_SCRIPT, tmp_path, str(tmp_path / "straight"), "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run_python(RESUME_SCRIPT, tmp_path, str(tmp_path / "killed"), "kill")
    assert killed.returncode == -9
    assert (tmp_path / "killed" / "checkpoint-5").is_dir() and not (tmp_path / "killed" / "final").exists()
    resumed = run_python(RESUME_SCRIPT, tmp_path, str(tmp_path / "killed"), "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


KILLED_SCORING_SCRIPT = """
import os, signal, sys
from tests.conftest import TopicTeacher, make_triplets
from hf_margin import attach_teacher_margins

class DiesMidway(TopicTeacher):
    def score_pairs(self, queries, documents):
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().score_pairs(queries, documents)

attach_teacher_margins(make_triplets(50, seed=9), DiesMidway(), cache_dir=sys.argv[1], batch_size=8)
"""


def test_killed_scoring_leaves_no_cache_and_the_rerun_matches(tmp_path):
    """Teacher scoring SIGKILLed midway leaves no cache file to be read, only its private folder with the temporary
    file it was writing; the next run removes that orphan (its process is gone), scores everything and writes a
    cache equal to an uninterrupted run's."""
    cache = tmp_path / "cache"
    killed = run_python(KILLED_SCORING_SCRIPT, tmp_path, str(cache))
    assert killed.returncode == -9
    assert not list(cache.glob("teacher-margins-*/data.arrow"))
    orphans = list(cache.glob("teacher-margins-*/tmp-*-writing/tmp*"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 0  # what the killed run was writing
    teacher = TopicTeacher()
    rerun = attach_teacher_margins(make_triplets(50, seed=9), teacher, cache_dir=cache, batch_size=8)
    assert teacher.calls == 7  # every batch was scored again: nothing half-written was read
    clean = attach_teacher_margins(
        make_triplets(50, seed=9), TopicTeacher(), cache_dir=tmp_path / "clean", batch_size=8
    )
    assert rerun["teacher_margins"] == clean["teacher_margins"]
    # the orphan is gone (issue 11: it stayed for ever); the cache equals a clean run's, byte for byte
    assert not orphans[0].exists() and not list(cache.glob("**/tmp*"))
    [entry] = list(cache.glob("teacher-margins-*/data.arrow"))
    [clean_entry] = list((tmp_path / "clean").glob("teacher-margins-*/data.arrow"))
    assert entry.read_bytes() == clean_entry.read_bytes()


def test_streamed_dataset_is_scored_into_a_cache_equal_to_the_in_memory_one(tmp_path):
    """An IterableDataset is scored batch by batch into one Arrow cache: same columns as the in-memory
    path, and a second run reads the cache without calling the teacher."""
    data = make_triplets(45, seed=11, ragged=True)
    stream = IterableDataset.from_generator(lambda: iter(data))
    teacher = TopicTeacher()
    scored = attach_teacher_margins(stream, teacher, cache_dir=tmp_path, batch_size=8, data_fingerprint="stream-v1")
    assert isinstance(scored, Dataset) and len(scored) == 45
    expected = attach_teacher_margins(data, TopicTeacher(), cache_dir=tmp_path / "mem")
    assert scored["teacher_margins"] == expected["teacher_margins"]
    assert scored["teacher_pos_score"] == expected["teacher_pos_score"]
    calls = teacher.calls
    again = attach_teacher_margins(stream, teacher, cache_dir=tmp_path, batch_size=8, data_fingerprint="stream-v1")
    assert teacher.calls == calls and again["teacher_margins"] == expected["teacher_margins"]
    assert not list(tmp_path.glob("tmp-*"))


def test_streamed_dataset_needs_a_fingerprint_and_valid_rows(tmp_path, monkeypatch):
    """A stream without data_fingerprint is refused (its cache could not be found again); a bad row is named
    by its index in the whole stream, the half-written file's writer is closed, and no cache is left."""
    import hf_margin.data.margins as margins

    closed = []

    class SpyWriter(margins.ArrowWriter):
        def close(self):
            closed.append(True)
            super().close()

    monkeypatch.setattr(margins, "ArrowWriter", SpyWriter)
    data = make_triplets(20, seed=1).to_list()
    with pytest.raises(ValueError, match="data_fingerprint"):
        attach_teacher_margins(IterableDataset.from_generator(lambda: iter(data)), TopicTeacher(), cache_dir=tmp_path)
    data[13]["positive"] = " "
    from hf_margin import DataValidationError

    stream = IterableDataset.from_generator(lambda: iter(data))
    with pytest.raises(DataValidationError, match="row 13"):
        attach_teacher_margins(stream, TopicTeacher(), cache_dir=tmp_path, batch_size=8, data_fingerprint="bad")
    assert closed == [True]  # the first batch (rows 0-7) opened the file; row 13 failed the second
    assert [p for p in tmp_path.rglob("*") if not p.name.endswith(".lock")] == []


def test_accelerate_config_multi_cpu_is_one_distributed_run_with_one_summary(tmp_path):
    """Guards `--accelerate-config multi-cpu` running two independent 1-process trainings into one output_dir
    (each at epoch 0.0319 after 3 steps, where the real 2-process run is at 0.0638), and each process
    evaluating the teacher and printing the summary: epochs must advance at twice the 1-process rate, and the
    summary (teacher, before, after) must be printed once."""
    recipe = tiny_recipe(tmp_path, "multi", max_steps=3, per_device_train_batch_size=4, max_train_examples=24)
    r = subprocess.run(
        [sys.executable, "-m", "hf_margin", "train", str(recipe), "--accelerate-config", "multi-cpu"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    epochs = [h["epoch"] for h in json.loads((tmp_path / "multi" / "trainer_state.json").read_text())["log_history"]]
    triplets = json.loads((tmp_path / "multi" / "metrics.json").read_text())["train_triplets"]
    assert epochs[0] == pytest.approx(2 * 4 / triplets, abs=1e-3)  # 2 processes x 4 rows per step
    assert r.stdout.count("stsb_test spearman x100: before") == 1


def test_two_nodes_on_one_machine_follow_one_process(tmp_path):
    """Two `accelerate launch` invocations of the shipped multi-node config (--num_machines 2, ranks 0 and 1, gloo on
    127.0.0.1, one process each) train like one process with the same global batch: same losses and weights
    (1e-5), teacher scoring split over both nodes, one cache written."""
    same = {"use_cpu": True, "train_sampling_strategy": "sequential", "label_weight": 1.0, "max_train_examples": 24}
    one = tiny_recipe(tmp_path, "one", **same)
    r1 = run_python("import sys; from hf_margin.app.cli import main; sys.exit(main())", tmp_path, "train", str(one))
    assert r1.returncode == 0, r1.stderr[-3000:]
    two = tiny_recipe(tmp_path, "nodes", per_device_train_batch_size=4, cache_dir=str(tmp_path / "cache-nodes"), **same)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    nodes = [
        subprocess.Popen(
            [
                *accelerate_launch("multi-node.yaml"),
                "--machine_rank",
                str(rank),
                "--main_process_ip",
                "127.0.0.1",
                "--main_process_port",
                "29677",
                "-m",
                "hf_margin",
                "train",
                str(two),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert losses_of(tmp_path / "one") == pytest.approx(losses_of(tmp_path / "nodes"), abs=1e-5)
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "nodes" / "model.safetensors")
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], atol=1e-5, rtol=0)
    margins = list((tmp_path / "cache-nodes").glob("teacher-margins-*/data.arrow"))
    assert len(margins) == 2  # train and validation, one file each
    assert sum("Scoring teacher margins (process" in out[1] for out in outputs) == 2  # both nodes scored a share

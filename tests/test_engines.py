"""Real training steps through the DeepSpeed engine on the CPU (DS_ACCELERATOR=cpu): ZeRO-2 and ZeRO-3, one and
two processes, against the plain Trainer on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "hf_margin" / "app" / "accelerate_configs"

SCRIPT = """
import json, os, sys
import torch
from transformers import BertModel
from tests.conftest import TopicTeacher, make_tokenizer, make_triplets, tiny_config
from hf_margin import MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins

out, engine, batch, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tok = make_tokenizer()
torch.manual_seed(0)
model = BertModel(tiny_config(len(tok)), add_pooling_layer=False)
data = attach_teacher_margins(make_triplets(24, seed=5, ragged=True), TopicTeacher(), cache_dir=cache)
args = MarginDistillConfig(
    output_dir=out, max_steps=3, per_device_train_batch_size=batch, learning_rate=1e-3, logging_steps=1,
    report_to="none", save_strategy="no", use_cpu=True, seed=0, train_sampling_strategy="sequential",
    disable_tqdm=True, deepspeed=None if engine == "none" else engine,
)
trainer = MarginDistillTrainer(model, args, train_dataset=data, processing_class=tok)
trainer.train()
state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # every process: ZeRO-3 gathers the shards
if trainer.is_world_process_zero():
    weights = {k: v.float().flatten()[:64].tolist() for k, v in state.items()}
    with open(out + ".json", "w") as f:
        json.dump({"losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
                   "deepspeed": trainer.is_deepspeed_enabled, "weights": weights}, f)
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
# Results are written and the group is gone: leave without the interpreter's teardown, where threads DeepSpeed and
# gloo leave behind aborted a rank under CPU load ("terminate called without an active exception").
os._exit(0)
"""


def run(tmp_path: Path, name: str, engine: str, processes: int, batch: int) -> dict:
    script = tmp_path / "engine_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    args = [str(tmp_path / name), engine, str(batch), str(tmp_path / "cache")]
    if processes == 1 and engine != "none":  # DeepSpeed wants a rank and a rendezvous even for one process
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29611")
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29622"
    ]  # fmt: skip
    result = subprocess.run([*launcher, str(script), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("plain"), "plain", "none", 1, 8)


@pytest.mark.parametrize("zero", ["ds_zero2.json", "ds_zero3.json"])
@pytest.mark.parametrize("processes", [1, 2])
def test_deepspeed_on_cpu_follows_the_plain_trainer(tmp_path, plain, zero, processes):
    """Three steps through the DeepSpeed engine (ZeRO-2 / ZeRO-3, 1 process x 8 rows or 2 processes x 4 rows)
    give the plain Trainer's losses (1 process x 8 rows) and weights within 1e-5: same global batch, same
    optimiser (the JSON's AdamW with the recipe's "auto" values), loss normalised over all processes."""
    assert not plain["deepspeed"]
    got = run(tmp_path, "ds", str(CONFIGS / zero), processes, 8 // processes)
    assert got["deepspeed"]
    assert len(got["losses"]) == len(plain["losses"]) == 3 and min(plain["losses"]) > 0.01
    assert got["losses"] == pytest.approx(plain["losses"], abs=1e-5)
    for key, values in plain["weights"].items():
        assert got["weights"][key] == pytest.approx(values, abs=1e-5), key


def test_hf_margin_train_under_zero3_evaluates_and_saves_the_whole_student(tmp_path):
    """Guards the GPU failure of `accelerate launch --config_file zero3.yaml -m hf_margin train`: under a ZeRO-3
    config transformers sharded every model at load time, so the student's "before" evaluation ran on empty 1-D
    shards ("'weight' must be 2-D"). Models now load whole; the engine shards the student for training, and the
    saved student (gathered at save) scores what the run reported after training."""
    out = tmp_path / "z3"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "CUDA_VISIBLE_DEVICES": "", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29633"}  # fmt: skip
    common = ["--sts_eval_file", str(ROOT / "recipes" / "examples" / "sts-dev.csv")]
    data = str(ROOT / "recipes" / "examples" / "flag-scored.jsonl")
    train = [sys.executable, "-m", "hf_margin", "train", "--train_file", data,
             "--student", "sentence-transformers/all-MiniLM-L6-v2", "--student_layers", "0", "--max_steps", "3",
             "--learning_rate", "1e-3", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "true",
             "--deepspeed", str(CONFIGS / "ds_zero3.json"), "--output_dir", str(out), *common]  # fmt: skip
    result = subprocess.run(train, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads((out / "metrics.json").read_text())["evaluation"]["sts"]
    assert table["spearman"]["before"] != table["spearman"]["after"]  # it trained
    again = subprocess.run(
        [sys.executable, "-m", "hf_margin", "evaluate", "--student", str(out), *common],
        capture_output=True, text=True, env={**env, "WORLD_SIZE": "1"}, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{table['spearman']['after']:.2f}" in again.stdout

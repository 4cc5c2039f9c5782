"""Accelerate configs: every shipped one passes `accelerate launch`'s own launch-time checks, in the environment
its workers get; a refused one is reported once, before anything is launched."""

from __future__ import annotations

import pytest
import yaml

from hf_margin.app import launch
from hf_margin.app.cli import main
from hf_margin.app.launch import accelerate_config_path, shipped_accelerate_configs, validate_accelerate_config

EXPECTED = {
    "single": "NO",
    "multi-cpu": "MULTI_GPU",
    "multi-gpu": "MULTI_GPU",
    "fsdp2": "FSDP",
    "zero2": "DEEPSPEED",
    "zero3": "DEEPSPEED",
    "zero3-offload": "DEEPSPEED",
    "multi-node": "MULTI_GPU",
}


def test_every_config_is_checked():
    assert sorted(shipped_accelerate_configs()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_passes_accelerates_launch_time_validation(name):
    """Guards the ZeRO configs that parsed as YAML but were refused by `accelerate launch` ('When using
    deepspeed_config_file, the following accelerate config variables will be ignored: [... mixed_precision]'):
    the check builds the workers' environment as launch_command does and constructs the plugins in it."""
    assert validate_accelerate_config(accelerate_config_path(name)) == EXPECTED[name]


def test_mixed_precision_beside_a_deepspeed_file_is_refused(tmp_path):
    """The same check refuses what the shipped ZeRO configs held before the fix."""
    config = yaml.safe_load(accelerate_config_path("zero2").read_text())
    config["mixed_precision"] = "bf16"
    path = tmp_path / "bad-zero2.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="mixed_precision"):
        validate_accelerate_config(path)


def test_refused_config_is_one_line_and_launches_nothing(tmp_path, monkeypatch, capsys):
    config = yaml.safe_load(accelerate_config_path("zero2").read_text())
    config["mixed_precision"] = "bf16"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(launch.subprocess, "call", lambda *a, **k: pytest.fail("launched a refused config"))
    assert main(["train", "--accelerate-config", str(path), "--max_steps", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "refused by accelerate launch" in err[0]

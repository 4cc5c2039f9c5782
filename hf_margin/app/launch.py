"""Accelerate configs by name (``--accelerate-config zero2``) and re-launching the CLI under ``accelerate launch``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from hf_margin.app.arguments import UserError

CONFIG_DIR = Path(__file__).parent / "accelerate_configs"  # the shipped recipes/accelerate, as package data


def shipped_accelerate_configs() -> list[str]:
    """Names of the shipped Accelerate configs (``single``, ``multi-cpu``, ``zero2``, ...)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def accelerate_config_path(name_or_path: str | os.PathLike) -> Path:
    """An Accelerate config file: an existing path, or the name of a shipped one.

    A shipped DeepSpeed config names its JSON relative to the repository; the returned file (a temporary
    copy where needed) names it by absolute path, so it works from any directory.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise FileNotFoundError(
            f"no Accelerate config {str(name_or_path)!r}: give a file or one of "
            + ", ".join(shipped_accelerate_configs())
        )
    config = yaml.safe_load(shipped.read_text())
    ds = config.get("deepspeed_config") or {}
    if "deepspeed_config_file" in ds:
        ds["deepspeed_config_file"] = str((CONFIG_DIR / Path(ds["deepspeed_config_file"]).name).resolve())
        fd, tmp = tempfile.mkstemp(prefix=f"hf-margin-{name_or_path}-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(config, f)
        return Path(tmp)
    return shipped


def validate_accelerate_config(path: str | os.PathLike) -> str:
    """Run a config through ``accelerate launch``'s own launch-time checks, as its workers would see them, and
    return the distributed type; raise ``ValueError`` naming the problem.

    ``launch_command`` validates the arguments, then builds each worker's environment
    (``prepare_deepspeed_cmd_env`` / ``prepare_multi_gpu_env``), in which Accelerate constructs its
    ``DeepSpeedPlugin`` / ``FullyShardedDataParallelPlugin``: a YAML that parses can still be refused there
    (``mixed_precision`` beside ``deepspeed_config_file`` was). No process is started.
    """
    from unittest import mock

    # accelerate's launcher, imported only when a config is checked: keeps the CLI's start-up light
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "hf_margin", "train"])
    args, defaults, mp_from_config_flag = _validate_launch_command(args)
    env: dict[str, str] = {}
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config.keys()) if defaults else []
        if mp_from_config_flag:
            fields.append("mixed_precision")
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        if args.use_deepspeed:
            DeepSpeedPlugin()
            return "DEEPSPEED"
        if args.use_fsdp:
            FullyShardedDataParallelPlugin()
            return "FSDP"
    return "MULTI_GPU" if args.multi_gpu else "NO"


def relaunch(config: str, argv: list[str]) -> int:
    """Run ``accelerate launch --config_file CONFIG -m hf_margin ARGV`` and return its exit status.

    ``multi-cpu`` (several CPU processes joined by gloo) adds ``--use_cpu true`` and hides any GPU: without
    ``use_cpu`` each process would train alone, several independent runs writing into one ``output_dir``.
    """
    path = accelerate_config_path(config)
    try:
        validate_accelerate_config(path)
    except ValueError as exc:  # refused here, once, instead of by every worker after the launch
        raise UserError(f"Accelerate config {config} is refused by accelerate launch: {exc}") from exc
    env = dict(os.environ)
    if Path(config).stem == "multi-cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        if "--use_cpu" not in argv:
            argv = [*argv, "--use_cpu", "true"]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(path),
        "-m",
        "hf_margin",
        *argv,
    ]
    print("+ " + " ".join(command), flush=True)
    return subprocess.call(command, env=env)

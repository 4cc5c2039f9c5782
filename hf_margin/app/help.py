"""The grouped ``--help`` of a command: hf-margin's options first, by dataclass and by concept (loss, student),
then a few common Trainer options (all of them with ``--help-all``); ``evaluate`` lists only what it reads."""

from __future__ import annotations

import argparse

from hf_margin.app.recipes import RecipeParser
from hf_margin.training.losses import LOSS_REGISTRY

COMMON_TRAINER_OPTIONS = (
    "output_dir",
    "learning_rate",
    "per_device_train_batch_size",
    "num_train_epochs",
    "max_steps",
    "warmup_steps",
    "eval_strategy",
    "eval_steps",
    "seed",
    "bf16",
    "push_to_hub",
    "hub_model_id",
)
# Help groups of `hf-margin train --help`: the loss options (and the options of its target, the teacher-margin
# scaling) come from the loss registry.
LOSS_FIELDS = (
    "loss",
    *dict.fromkeys(o for spec in LOSS_REGISTRY.values() for o in (*spec.options, *spec.target_options)),
    "label_weight",
)
STUDENT_FIELDS = (
    "student_type",
    "similarity",
    "pooling",
    "normalize",
    "max_length",
    "query_max_length",
    "document_max_length",
    "query_prompt",
    "document_prompt",
    "forward_chunk_size",
)

# What `evaluate` reads, by help group: its --help lists these only (every option is still accepted, so that one
# recipe serves train and evaluate).
EVALUATE_OPTIONS = {
    "which model": ("student", "student_layers", "backend", "trust_remote_code", "output_dir"),
    "what to evaluate on (none: the STS-B test split)": (
        "sts_eval_file",
        "ir_eval_dir",
        "ir_split",
        "validation_file",
        "column_map",
        "data_dir",
    ),
    "teacher (compared with: its figures, speed and the share the student keeps; also scores --validation_file)": (
        "teacher",
        "teacher_type",
        "eval_teacher",
        "cache_dir",
    ),
    "how the student reads and scores (as trained; saved prompts are read)": STUDENT_FIELDS[:-1],  # not chunking
}


def _help_parser(
    dataclasses: tuple[type, ...], everything: bool, only: dict[str, tuple[str, ...]] | None = None
) -> argparse.ArgumentParser:
    """A parser for display only: hf-margin's options grouped (model, data, evaluation, loss, student), then
    the Trainer's (a few common ones, or all with ``everything``); ``only`` (group title: options) shows those
    groups alone."""
    full = RecipeParser(dataclasses)
    by_dest: dict[str, argparse.Action] = {}
    for action in full._actions:  # the first of a dest: --eval_teacher, not the --no_eval_teacher added after it
        if action.dest != "help":
            by_dest.setdefault(action.dest, action)
    shown = argparse.ArgumentParser(prog="", add_help=False, formatter_class=argparse.HelpFormatter)
    seen: set[str] = set()

    def group(title: str, names) -> None:
        g = shown.add_argument_group(title)
        for name in names:
            if name in by_dest and name not in seen:
                g._group_actions.append(by_dest[name])
                seen.add(name)

    if only is not None:
        for title, names in only.items():
            group(title, names)
        return shown
    for cls in dataclasses[:-1]:
        group(f"{cls.__name__} ({(cls.__doc__ or '').strip().splitlines()[0]})", cls.__dataclass_fields__)
    config = dataclasses[-1]
    if config.__name__ == "MarginDistillConfig":
        group("loss (MarginDistillConfig)", LOSS_FIELDS)
        group("student (MarginDistillConfig)", STUDENT_FIELDS)
    trainer_names = [d for d in by_dest if d not in seen and not d.startswith("no_")]
    if everything:
        group("Trainer options (transformers.TrainingArguments)", trainer_names)
    else:
        group(
            f"common Trainer options ({len(trainer_names) - len(COMMON_TRAINER_OPTIONS)} more: --help-all)",
            COMMON_TRAINER_OPTIONS,
        )
    return shown


def print_command_help(command: str, description: str, dataclasses: tuple[type, ...], everything: bool) -> None:
    """Print ``hf-margin COMMAND --help`` (``--help-all`` with ``everything``); ``description`` says what it does."""
    print(f"usage: hf-margin {command} [RECIPE.yaml] [--option value ...] [--debug]\n\n{description}\n")
    print("Any option may come from the recipe YAML (option: value); the command line wins.\n")
    only = EVALUATE_OPTIONS if command == "evaluate" and not everything else None
    print(_help_parser(dataclasses, everything, only).format_help().split("\n", 2)[-1])

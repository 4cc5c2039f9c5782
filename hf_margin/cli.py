"""The ``hf-margin`` command: ``train-teacher``, ``score-teacher``, ``train`` and ``evaluate`` a recipe.

hf-margin train recipes/stsb-adaptive.yaml --learning_rate 1e-4
accelerate launch -m hf_margin.cli train recipes/stsb-adaptive.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys

import datasets
import transformers
from transformers import HfArgumentParser

COMMANDS = {
    "train-teacher": "Fine-tune a cross-encoder teacher (one logit on the joined pair) on STS-B gold scores with the "
    "plain transformers.Trainer; save it with metrics.json and a model card under output_dir.",
    "score-teacher": "Mine hard negatives and attach teacher margins to the train and dev triplets (cached).",
    "train": "Distil the teacher into the student: score (cached), train, evaluate on STS-B, save model, "
    "metrics.json, training_curves.png and README.md (model card) under output_dir.",
    "evaluate": "STS-B test and dev Spearman x100 of a saved student (--student PATH, default output_dir).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-margin",
        description="Distil a similarity teacher into a smaller student with an adaptive difference (margin) loss. "
        "Each command reads a recipe YAML; any option of it can be overridden with --option value.",
        epilog="Options of a command: hf-margin COMMAND --help. Multi-process or multi-GPU: add "
        "--accelerate-config NAME (single, multi-cpu, multi-gpu, zero2, zero3, zero3-offload, fsdp2) or run "
        "accelerate launch --config_file recipes/accelerate/NAME.yaml -m hf_margin.cli train RECIPE.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        cmd = sub.add_parser(name, help=text, description=text, add_help=False)
        cmd.add_argument("recipe", nargs="?", help="recipe YAML (recipes/*.yaml); options below override it")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    known, overrides = parser.parse_known_args(argv)
    overrides = [p for o in overrides for p in (o.split("=", 1) if o.startswith("--accelerate-config=") else [o])]
    if "--accelerate-config" in overrides:  # re-run this very command under `accelerate launch`
        i = overrides.index("--accelerate-config")
        if i + 1 >= len(overrides):
            parser.error("--accelerate-config needs a name (single, multi-cpu, zero2, ...) or a file")
        config = overrides[i + 1]
        rest = overrides[:i] + overrides[i + 2 :]
        from hf_margin.launch import relaunch

        return relaunch(config, [known.command, *([known.recipe] if known.recipe else []), *rest])
    from hf_margin.recipe import RECIPE_DATACLASSES, parse_recipe, run_evaluate, run_score_teacher, run_train
    from hf_margin.teacher_training import TEACHER_DATACLASSES, run_train_teacher

    dataclasses = TEACHER_DATACLASSES if known.command == "train-teacher" else RECIPE_DATACLASSES
    if "-h" in overrides or "--help" in overrides or known.recipe in ("-h", "--help"):
        print(f"hf-margin {known.command} [RECIPE] [--option value ...]\n\n{COMMANDS[known.command]}\n")
        HfArgumentParser(dataclasses).print_help()
        return 0
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    if known.command == "train-teacher":
        run_train_teacher(*parse_recipe(known.recipe, overrides, dataclasses))
        return 0
    model_args, data_args, args = parse_recipe(known.recipe, overrides)
    run = {"score-teacher": run_score_teacher, "train": run_train, "evaluate": run_evaluate}[known.command]
    run(model_args, data_args, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

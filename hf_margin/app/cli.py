"""The ``hf-margin`` command: ``train``, ``evaluate``, ``score-teacher`` and ``train-teacher``.

    hf-margin train [RECIPE.yaml] [--option value ...]      (the recipe is optional; options in any order)
    hf-margin train --train_file my.jsonl --student_layers 0 1
    accelerate launch -m hf_margin train recipes/stsb-adaptive.yaml

User errors (a missing file or model, a bad column, an unknown option) print one line and exit 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import logging
import sys

# The application modules (arguments, recipes, help, pipeline, evaluation, teacher training, launch, export),
# datasets/transformers and the error classes are imported inside the functions that use them, to keep the
# command's start-up light (help, a refused option, a relaunch); none of them imports this module, so no import
# cycle hides behind them.

COMMANDS = {
    "train": "Distil the teacher into the student: build the training set (your data, or the STS-B task by default), "
    "score it with the teacher (cached), train, evaluate before/after/teacher, and save the model, metrics.json, "
    "training_curves.png and README.md (model card) under output_dir.",
    "evaluate": "Evaluate a saved student (--student DIR, default output_dir) on --sts_eval_file and/or --ir_eval_dir, "
    "or on STS-B test (Spearman, Pearson, duplicate retrieval) when neither is given.",
    "export": "Export a saved student to ONNX (--quantize int8 for dynamic int8) into DIR/onnx/ and compare it with "
    "the PyTorch student: cosine agreement and texts/s (hf-margin export DIR --help).",
    "score-teacher": "Only build the training set: mine negatives and attach teacher margins (cached).",
    "train-teacher": "Fine-tune a cross-encoder teacher (one logit on the joined pair) on STS-B gold scores with the "
    "plain transformers.Trainer; save it with metrics.json and a model card under output_dir.",
}


def _usage() -> str:
    lines = ["usage: hf-margin COMMAND [RECIPE.yaml] [--option value ...] [--debug]", "", "commands:"]
    lines += [f"  {name:<14} {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "Options of a command: hf-margin COMMAND --help (hf-margin's own), --help-all (with every Trainer option).",
        "Several processes or GPUs: add --accelerate-config NAME (single, multi-cpu, multi-gpu, zero2, zero3, "
        "zero3-offload, fsdp2), or: accelerate launch --config_file FILE -m hf_margin train ...",
    ]
    return "\n".join(lines)


def split_recipe(argv: list[str]) -> tuple[str | None, list[str]]:
    """The recipe (a ``.yaml``/``.yml`` token that is not an option's value) and the other tokens, in order."""
    value_options = {"--accelerate-config", "--config_file", "--deepspeed", "--recipe"}
    for i, token in enumerate(argv):
        if not token.endswith((".yaml", ".yml")) or token.startswith("-"):
            continue
        if i > 0 and argv[i - 1] in value_options:
            continue
        return token, argv[:i] + argv[i + 1 :]
    if "--recipe" in argv:
        i = argv.index("--recipe")
        if i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
    return None, argv


def check_options(command: str, options: list[str], dataclasses: tuple[type, ...]) -> None:
    """Refuse an unknown ``--option`` with "did you mean" before anything is parsed or loaded."""
    from hf_margin.app.arguments import UserError
    from hf_margin.app.recipes import RecipeParser

    known = set(RecipeParser(dataclasses)._option_string_actions)
    for token in options:
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see hf-margin {command} --help"
            raise UserError(f"unknown option {name}{hint}")


def _user_errors() -> tuple[type[BaseException], ...]:
    from hf_margin.app.arguments import UserError
    from hf_margin.data.columns import DataValidationError
    from hf_margin.evaluation.retrieval import BeirFormatError

    return (UserError, DataValidationError, BeirFormatError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"hf-margin: error: unknown command '{command}'{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    rest = [t for t in rest if t != "--debug"]
    rest = [p for t in rest for p in (t.split("=", 1) if t.startswith("--accelerate-config=") else [t])]
    if command == "export":  # a folder and two flags: its own small parser
        return _run_export(rest, debug)
    recipe, options = split_recipe(rest)
    from hf_margin.app.arguments import UserError
    from hf_margin.app.recipes import RECIPE_DATACLASSES, parse_recipe
    from hf_margin.app.teacher_training import TEACHER_DATACLASSES

    dataclasses = TEACHER_DATACLASSES if command == "train-teacher" else RECIPE_DATACLASSES
    if any(t in ("-h", "--help", "--help-all") for t in options):
        from hf_margin.app.help import print_command_help

        print_command_help(command, COMMANDS[command], dataclasses, everything="--help-all" in options)
        return 0
    config = None
    if "--accelerate-config" in options:  # re-run this very command under `accelerate launch`
        i = options.index("--accelerate-config")
        config = options[i + 1] if i + 1 < len(options) else ""
        options = options[:i] + options[i + 2 :]
    try:
        check_options(command, options, dataclasses)
        try:  # checked here, once, also before a relaunch (not by every launched process)
            parsed = parse_recipe(recipe, options, dataclasses)
        except ValueError as exc:  # a value the dataclasses refuse (e.g. temperature <= 0)
            raise UserError(str(exc).splitlines()[0]) from exc
        if config is not None:
            if not config:
                raise UserError("--accelerate-config needs a name (single, multi-cpu, zero2, ...) or a file")
            from hf_margin.app.launch import relaunch

            return relaunch(config, [command, *([recipe] if recipe else []), *options, *(["--debug"] * debug)])
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        import datasets
        import transformers

        transformers.utils.logging.set_verbosity_warning()
        datasets.utils.logging.set_verbosity_warning()
        if command == "train-teacher":
            from hf_margin.app.teacher_training import run_train_teacher

            run_train_teacher(*parsed)
            return 0
        if command == "evaluate":
            from hf_margin.app.evaluate_student import run_evaluate

            run_evaluate(*parsed)
            return 0
        from hf_margin.app.pipeline import run_score_teacher, run_train

        {"score-teacher": run_score_teacher, "train": run_train}[command](*parsed)
        return 0
    except _user_errors() as exc:
        return _user_error(command, exc, debug)


def _user_error(command: str, exc: BaseException, debug: bool) -> int:
    """One line on stderr and exit status 2 (the traceback with ``--debug``)."""
    if debug:
        raise exc
    message = str(exc).strip().splitlines()
    print(f"hf-margin {command}: error: {message[0] if message else type(exc).__name__}", file=sys.stderr)
    return 2


def _run_export(argv: list[str], debug: bool) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        from hf_margin.app.export import run_export

        run_export(argv)
        return 0
    except (*_user_errors(), ImportError) as exc:  # ImportError: onnx/onnxruntime not installed (says how)
        return _user_error("export", exc, debug)


if __name__ == "__main__":
    sys.exit(main())

"""The hf-margin command: recipes and options in any order, grouped help, "did you mean", one-line user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_margin.app import launch
from hf_margin.app.arguments import UserError
from hf_margin.app.cli import main, split_recipe
from hf_margin.app.recipes import dump_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_values_and_command_line_overrides(tmp_path):
    """A recipe fills every dataclass; flags override it; output_dir defaults to outputs/<recipe name>."""
    recipe = tmp_path / "my-recipe.yaml"
    dump_recipe(recipe, teacher="t", student_layers=[0, 2], loss="margin_mse", learning_rate=1e-4, report_to="none")
    model_args, data_args, _, args = parse_recipe(recipe, ["--learning_rate", "3e-4", "--num_negatives", "2"])
    assert model_args.teacher == "t" and model_args.student_layers == [0, 2]
    assert args.loss == "margin_mse" and args.learning_rate == 3e-4 and data_args.num_negatives == 2
    assert args.output_dir == "outputs/my-recipe" and args.run_name == "my-recipe"


def test_recipe_unknown_key_is_named_with_a_suggestion(tmp_path):
    """Guards a typo in a recipe from being ignored or ending in a traceback."""
    recipe = tmp_path / "typo.yaml"
    dump_recipe(recipe, learnin_rate=1e-4)
    with pytest.raises(UserError, match="unknown option 'learnin_rate'; did you mean 'learning_rate'"):
        parse_recipe(recipe)


@pytest.mark.parametrize(
    "recipe",
    sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("teacher-")),
    ids=lambda p: p.name,
)
def test_shipped_recipes_parse_and_read_nothing_outside_the_project(recipe):
    """Every shipped recipe is valid for HfArgumentParser and MarginDistillConfig's checks, and reads its data
    (STS-B, or SciFact for the retrieval recipes) from the copy shipped in the package: no recipe names a folder
    outside the project."""
    _, data_args, _, args = parse_recipe(recipe)
    assert args.output_dir == f"outputs/{recipe.stem}"
    assert data_args.task == ("retrieval" if recipe.stem.startswith("scifact") else "stsb")
    assert data_args.data_dir is None
    if data_args.task == "stsb":
        own = parse_recipe(recipe, ["--train_file", "my.jsonl"])[1]
        assert own.task == "data" and own.train_file == "my.jsonl"
    assert "../" not in recipe.read_text()


@pytest.mark.parametrize(
    ("argv", "recipe", "rest"),
    [
        (["r.yaml", "--max_steps", "1"], "r.yaml", ["--max_steps", "1"]),
        (["--max_steps", "1", "r.yaml"], "r.yaml", ["--max_steps", "1"]),
        (
            ["--student_layers", "0", "1", "r.yml", "--seed", "3"],
            "r.yml",
            ["--student_layers", "0", "1", "--seed", "3"],
        ),
        (["--max_steps", "1"], None, ["--max_steps", "1"]),
        (
            ["--accelerate-config", "x.yaml", "--max_steps", "1"],
            None,
            ["--accelerate-config", "x.yaml", "--max_steps", "1"],
        ),
    ],
)
def test_recipe_is_found_anywhere_and_option_values_are_never_taken_for_it(argv, recipe, rest):
    """Guards `hf-margin train --max_steps 1` reading '1' as the recipe ("recipe 1 not found")."""
    assert split_recipe(argv) == (recipe, rest)


def test_options_before_the_recipe_parse_like_after(tmp_path):
    recipe = tmp_path / "r.yaml"
    dump_recipe(recipe, loss="margin_mse")
    before = parse_recipe(*reversed(split_recipe(["--max_steps", "7", str(recipe)])[::-1]))
    after = parse_recipe(*split_recipe([str(recipe), "--max_steps", "7"]))
    assert before[3].max_steps == after[3].max_steps == 7 and before[3].loss == after[3].loss == "margin_mse"


def test_help_shows_hf_margins_options_first_grouped_and_trainer_behind_help_all(capsys):
    """Guards a 747-line --help where hf-margin's own options start after the Trainer's."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "evaluate", "score-teacher", "train-teacher"))
    assert main(["train", "--help"]) == 0
    short = capsys.readouterr().out
    order = [short.index(h) for h in ("ModelArguments", "DataArguments", "EvalArguments", "loss (", "common Trainer")]
    assert order == sorted(order)
    assert "--train_file" in short and "--ir_eval_dir" in short and "--learning_rate" in short
    assert "--adam_beta1" not in short
    assert main(["train", "--help-all"]) == 0
    full = capsys.readouterr().out
    assert "--adam_beta1" in full and full.index("--train_file") < full.index("--adam_beta1")
    assert len(short.splitlines()) < 0.5 * len(full.splitlines())  # the Trainer's ~200 options stay behind --help-all


def test_evaluate_help_lists_only_what_evaluate_reads(capsys):
    """Guards `evaluate --help` listing every loss and training option, none of which evaluate reads."""
    from hf_margin.app.help import EVALUATE_OPTIONS

    assert main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    for names in EVALUATE_OPTIONS.values():
        assert all(f"--{name}" in out for name in names)
    for training_only in ("--loss", "--overshoot_width", "--learning_rate", "--train_file", "--num_negatives"):
        assert training_only not in out
    assert main(["evaluate", "--help-all"]) == 0
    assert "--learning_rate" in capsys.readouterr().out


def one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    err = errors[0]
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_misspelt_option_gets_did_you_mean(capsys):
    one_line_error(capsys, ["train", "--lerning_rate", "1e-4"], "--lerning_rate", "did you mean --learning_rate")


def test_unknown_command_gets_did_you_mean(capsys):
    one_line_error(capsys, ["trian"], "unknown command 'trian'", "did you mean 'train'")


def test_user_errors_are_one_line_with_exit_2(capsys, tmp_path, monkeypatch):
    """Missing recipe, missing data file, bad value, model id not found offline: one line naming the thing."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    one_line_error(capsys, ["train", "nope.yaml"], "recipe nope.yaml not found")
    one_line_error(capsys, ["train", "--train_file", str(tmp_path / "missing.jsonl")], "missing.jsonl", "not found")
    one_line_error(capsys, ["train", "--temperature", "0"], "temperature must be > 0")
    one_line_error(capsys, ["train", "--loss", "hinge"], "invalid choice: 'hinge'")
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"query": "sun1", "positive": "sun2", "negatives": ["sea1"]}) + "\n")
    one_line_error(
        capsys,
        ["train", "--train_file", str(data), "--teacher", "someone/missing-model", "--output_dir", str(tmp_path / "o")],
        "teacher 'someone/missing-model' not found",
        "HF_HUB_OFFLINE",
    )


def test_bad_column_is_one_line_naming_file_row_and_column(capsys, tmp_path):
    data = tmp_path / "bad.jsonl"
    rows = [{"query": "sun1", "pos": ["sun2"], "neg": ["sea1"]}, {"query": "sun3", "pos": ["  "], "neg": ["sea2"]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one_line_error(capsys, ["train", "--train_file", str(data)], "bad.jsonl, line 2", "'pos'", "whitespace-only")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserError):
        main(["train", "nope.yaml", "--debug"])


def test_multi_cpu_relaunch_joins_one_gloo_group(monkeypatch, tmp_path):
    """Guards `--accelerate-config multi-cpu` starting two independent 1-process runs: the relaunch must add
    --use_cpu true (each process then joins the gloo group) and hide GPUs."""
    seen = {}

    def fake_call(command, env):
        seen.update(command=command, env=env)
        return 0

    monkeypatch.setattr(launch.subprocess, "call", fake_call)
    recipe = tmp_path / "r.yaml"
    dump_recipe(recipe, loss="margin_mse")
    assert main(["train", str(recipe), "--accelerate-config", "multi-cpu", "--max_steps", "3"]) == 0
    command = seen["command"]
    assert command[command.index("-m", 3) + 1] == "hf_margin"
    assert command[-2:] == ["--use_cpu", "true"] and str(recipe) in command
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""


def test_bad_option_is_refused_once_before_relaunching(monkeypatch, capsys):
    """Guards `--accelerate-config multi-cpu --lerning_rate 1`: every launched process printed the error, then a
    ChildFailedError traceback; the option is now checked before anything is launched."""
    monkeypatch.setattr(launch.subprocess, "call", lambda *a, **k: pytest.fail("launched despite a bad option"))
    one_line_error(capsys, ["train", "--accelerate-config", "multi-cpu", "--lerning_rate", "1"], "did you mean")


def test_stsb_task_with_own_data_is_refused(capsys):
    one_line_error(capsys, ["train", "--task", "stsb", "--train_file", "x.jsonl"], "task 'stsb'", "--task data")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--num_negatives", "30"], "sample_from - skip_top >= num_negatives"),
        (["--eval_strategy", "steps"], "nothing to evaluate"),
        (["--student_type", "cross-encoder", "--ir_eval_dir", "recipes/examples/ir"], "needs a bi-encoder student"),
    ],
)
def test_option_combinations_are_refused_before_any_model_loads(capsys, monkeypatch, options, fragment):
    """Each of these used to fail after the teacher had scored the data, or with a traceback."""
    import hf_margin.app.tasks.own_data as pipeline

    monkeypatch.setattr(pipeline, "load_teacher", lambda *a, **k: pytest.fail("a model was loaded first"))
    monkeypatch.chdir(ROOT)
    one_line_error(capsys, ["train", "--train_file", "recipes/examples/triplets.jsonl", *options], fragment)


def test_processes_that_would_train_alone_are_refused(capsys, monkeypatch):
    """Guards `accelerate launch --config_file multi-cpu.yaml` without --use_cpu: two independent runs."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(ROOT)
    one_line_error(capsys, ["train", "--train_file", "recipes/examples/triplets.jsonl"], "--use_cpu true")


def test_hub_id_without_owner_is_not_taken_for_a_folder(monkeypatch):
    from hf_margin.app.loading import checked_model_path

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="Hub is off"):
        checked_model_path("bert-nonexistent-uncased", "student")
    with pytest.raises(UserError, match="no such directory"):
        checked_model_path("./bert-nonexistent-uncased", "student")


def test_none_unsets_a_recipe_option_whose_default_is_none(tmp_path):
    """Guards the default recipe's `overshoot_width` being impossible to undo from the command line (argparse
    read 'none' as a bad float): `--key none` unsets options whose default is None; other options still refuse it."""
    from hf_margin.app.arguments import UserError
    from hf_margin.app.recipes import parse_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("overshoot_width: 0.0\nloss: adaptive\n")
    *_, args = parse_recipe(recipe, ["--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert args.overshoot_width == 0.0
    *_, args = parse_recipe(recipe, ["--overshoot_width", "none", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert args.overshoot_width is None
    with pytest.raises(UserError, match="learning_rate"):
        parse_recipe(recipe, ["--learning_rate", "none", "--output_dir", str(tmp_path)])


def test_own_data_beside_the_default_recipe_drops_its_stsb_corpus_with_a_warning(tmp_path, caplog):
    """Guards `hf-margin train recipes/stsb-adaptive.yaml --train_file mine.jsonl` being refused once the default
    recipe gained corpus mode on STS-B ('stsb:train'): own data replaces the task, the STS-B corpus goes with it
    (said in the log); naming task data together with 'stsb:train' is still an error."""
    from hf_margin.app.arguments import UserError
    from hf_margin.app.recipes import parse_recipe

    recipe = ROOT / "recipes" / "stsb-adaptive.yaml"
    assert parse_recipe(recipe)[1].unlabelled_file == "stsb:train"
    with caplog.at_level("WARNING"):
        data_args = parse_recipe(recipe, ["--train_file", "mine.jsonl"])[1]
    assert data_args.task == "data" and data_args.unlabelled_file is None
    assert "not used" in caplog.text
    with pytest.raises(UserError, match="use it with task stsb"):
        parse_recipe(recipe, ["--train_file", "mine.jsonl", "--task", "data"])

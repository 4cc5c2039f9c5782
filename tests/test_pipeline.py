"""`hf-margin train` / `evaluate` end to end on tiny models: the STS-B task and the user's own data in every
format and score source, mining for pairs, evaluation on an STS file and a BEIR folder."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

from hf_margin.app.cli import main
from hf_margin.app.recipes import dump_recipe

from .conftest import TOPICS, write_tiny_stsb, write_tiny_teacher

TRAIN = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none"]
TRAIN += ["--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--eval_strategy", "no"]


def text(rng: random.Random, topic: str, k: int = 3) -> str:
    return " ".join(rng.sample(TOPICS[topic], k))


def topic_rows(n: int, seed: int = 0) -> list[dict]:
    """query / positive of one topic, three negatives of others."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        topic = names[i % len(names)]
        others = [t for t in names if t != topic]
        rows.append(
            {
                "query": text(rng, topic),
                "positive": text(rng, topic, 2),
                "negatives": [text(rng, o) for o in rng.sample(others, 3)],
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return write_tiny_teacher(tmp_path_factory.mktemp("models") / "teacher")


def run(tmp_path: Path, *argv: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    code = main(["train", *TRAIN, *argv, "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def ir_folder(folder: Path, rows: list[dict]) -> Path:
    """A BEIR folder from rows: each query's positive is its one relevant document."""
    (folder / "qrels").mkdir(parents=True)
    docs = list(dict.fromkeys([r["positive"] for r in rows] + [n for r in rows for n in r["negatives"]]))
    write_jsonl(folder / "corpus.jsonl", [{"_id": f"d{i}", "title": "", "text": d} for i, d in enumerate(docs)])
    write_jsonl(folder / "queries.jsonl", [{"_id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)])
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{docs.index(r['positive'])}\t1" for i, r in enumerate(rows)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def sts_file(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentence1", "sentence2", "score"])
        for r in rows:
            w.writerow([r["query"], r["positive"], 5.0])
            w.writerow([r["query"], r["negatives"][0], 0.5])
    return path


# ---- the STS-B task ------------------------------------------------------------------------------------


def test_stsb_task_writes_model_metrics_plot_and_card(tmp_path, teacher_dir, capsys):
    """`hf-margin train RECIPE` on the STS-B task: student with the kept layers, metrics.json with before/after/
    teacher STS-B test Spearman and duplicate-retrieval MRR@10, a PNG plot, a card with model-index results."""
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
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["stsb_test_spearman"]) == {"before", "after", "teacher"}
    assert set(metrics["evaluation"]["stsb_test_duplicates"]["mrr@10"]) == {"before", "after", "teacher"}
    assert "stsb_test spearman x100: before" in printed and "stsb_test_duplicates mrr@10 x100: before" in printed
    assert metrics["train_triplets"] > 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert (out / "model.safetensors").is_file() and (out / "modules.json").is_file()
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert str(teacher_dir) in card and "adaptive difference" in card and "stsb_test spearman x100" in card
    assert f"{metrics['stsb_test_spearman']['after']:.2f}" in card
    front = yaml.safe_load(card.split("---")[1])
    results = {r["metrics"][0]["type"]: r["metrics"][0]["value"] for r in front["model-index"][0]["results"]}
    assert results["spearman"] == pytest.approx(metrics["stsb_test_spearman"]["after"] / 100)
    assert "max_seq_length" in card and "Normalize" in card

    assert main(["evaluate", str(recipe), "--student", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stsb_test"]["spearman"] == pytest.approx(metrics["stsb_test_spearman"]["after"], abs=1e-4)


# ---- the user's own data -------------------------------------------------------------------------------


def test_triplets_file_with_teacher(tmp_path, teacher_dir):
    """(a) query/positive/negatives jsonl, scored by the teacher, trains and says so."""
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(12))
    metrics = run(tmp_path, "--train_file", str(data), "--teacher", str(teacher_dir), "--student_layers", "0")
    assert metrics["data"]["format"] == "triplets" and metrics["train_triplets"] == 12
    assert metrics["data"]["score_source"] is None
    card = (tmp_path / "out" / "README.md").read_text()
    assert "triplets format" in card and str(teacher_dir) in card


def test_sentence_transformers_tuples_csv(tmp_path, teacher_dir):
    """(b) anchor/positive/negative_1..n in a csv file, recipe after the options."""
    rows = topic_rows(8)
    path = tmp_path / "st.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive", "negative_1", "negative_2"])
        for r in rows:
            w.writerow([r["query"], r["positive"], *r["negatives"][:2]])
    recipe = tmp_path / "r.yaml"
    dump_recipe(recipe, teacher=str(teacher_dir), student_layers=[0])
    metrics = run(tmp_path, "--train_file", str(path), str(recipe))
    assert metrics["data"]["format"] == "sentence-transformers" and metrics["train_triplets"] == 8


def flag_rows(n: int, scored: bool) -> list[dict]:
    rows = []
    for i, r in enumerate(topic_rows(n)):
        row = {"query": r["query"], "pos": [r["positive"]], "neg": r["negatives"]}
        if scored:
            row.update(pos_scores=[0.9], neg_scores=[0.1 * (i % 3), 0.2, 0.3])
        rows.append(row)
    return rows


def test_flagembedding_rows_with_scores_load_no_teacher(tmp_path, teacher_dir, monkeypatch):
    """(c) FlagEmbedding rows with pos_scores/neg_scores: no teacher is loaded (the default one would be the
    packaged MiniLM); the student must be named; the margins are the data's pos − neg."""
    import hf_margin.app.tasks.own_data as pipeline

    def no_teacher(*args, **kwargs):
        raise AssertionError("a teacher was loaded for pre-scored data")

    monkeypatch.setattr(pipeline, "load_teacher", no_teacher)
    data = write_jsonl(tmp_path / "flag.jsonl", flag_rows(8, scored=True))
    assert main(["train", "--train_file", str(data), *TRAIN, "--output_dir", str(tmp_path / "x")]) == 2
    metrics = run(tmp_path, "--train_file", str(data), "--student", str(teacher_dir), "--student_layers", "0")
    assert metrics["data"]["score_source"] == "pos_scores+neg_scores"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "brought its own teacher scores" in card


def test_flagembedding_scores_plus_named_teacher_is_refused_unless_rescore(tmp_path, teacher_dir, capsys):
    data = write_jsonl(tmp_path / "flag.jsonl", flag_rows(8, scored=True))
    argv = ["train", "--train_file", str(data), "--teacher", str(teacher_dir), *TRAIN]
    assert main([*argv, "--output_dir", str(tmp_path / "x")]) == 2
    assert "carries teacher scores (pos_scores+neg_scores)" in capsys.readouterr().err
    only_more = ["train", "--train_file", str(data), "--teacher_ensemble", str(teacher_dir), *TRAIN]
    assert main([*only_more, "--output_dir", str(tmp_path / "x")]) == 2  # a mean-score teacher is a teacher too
    assert f"a teacher ({teacher_dir}) was named" in capsys.readouterr().err
    metrics = run(tmp_path, "--train_file", str(data), "--teacher", str(teacher_dir), "--rescore", "true")
    assert metrics["data"]["score_source"] == "pos_scores+neg_scores"  # what the data held; then rescored
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"teacher margins of {teacher_dir}" in card


def test_pairs_mined_from_corpus_with_sts_and_ir_evaluation(tmp_path, teacher_dir, capsys):
    """(d) pairs only: negatives mined from --corpus_file; --sts_eval_file and --ir_eval_dir evaluated before,
    after and for the teacher; `hf-margin evaluate` prints the same metrics for the saved student."""
    rows = topic_rows(12)
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"query": r["query"], "positive": r["positive"]} for r in rows])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(dict.fromkeys(n for r in topic_rows(30, seed=1) for n in r["negatives"])) + "\n")
    ir = ir_folder(tmp_path / "ir", rows)
    sts = sts_file(tmp_path / "sts.csv", rows)
    metrics = run(
        tmp_path,
        "--train_file", str(data), "--corpus_file", str(corpus), "--teacher", str(teacher_dir),
        "--num_negatives", "2", "--skip_top", "1", "--sample_from", "6",
        "--sts_eval_file", str(sts), "--ir_eval_dir", str(ir), "--student_layers", "0",
    )  # fmt: skip
    assert metrics["data"]["format"] == "pairs" and metrics["data"]["mined_from"] == str(corpus)
    assert set(metrics["evaluation"]["ir"]["mrr@10"]) == {"before", "after", "teacher"}
    assert set(metrics["evaluation"]["sts"]["spearman"]) == {"before", "after", "teacher"}
    card = (tmp_path / "out" / "README.md").read_text()
    results = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {sts.name, ir.name}  # its own data, by name: no local path
    capsys.readouterr()
    out = str(tmp_path / "out")
    assert main(["evaluate", "--student", out, "--ir_eval_dir", str(ir), "--sts_eval_file", str(sts)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ir"]["mrr@10"] == pytest.approx(metrics["evaluation"]["ir"]["mrr@10"]["after"], abs=1e-4)
    assert shown["sts"]["spearman"] == pytest.approx(metrics["evaluation"]["sts"]["spearman"]["after"], abs=1e-4)
    assert set(shown["ir"]) == {"mrr@10", "ndcg@10", "recall@10", "recall@100"}


def test_pairs_mine_from_their_own_positives_by_default(tmp_path, teacher_dir):
    rows = topic_rows(12)
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"query": r["query"], "positive": r["positive"]} for r in rows])
    metrics = run(
        tmp_path, "--train_file", str(data), "--teacher", str(teacher_dir), "--num_negatives", "2",
        "--skip_top", "1", "--sample_from", "6",
    )  # fmt: skip
    assert metrics["data"]["mined_from"] == "the data's own positives"


def test_column_map_and_dataset_folder(tmp_path, teacher_dir):
    """A save_to_disk folder via --dataset_name, with the user's own column names mapped by --column_map."""
    from datasets import Dataset

    rows = topic_rows(8)
    Dataset.from_list([{"q": r["query"], "p": r["positive"], "n": r["negatives"]} for r in rows]).save_to_disk(
        tmp_path / "ds"
    )
    metrics = run(
        tmp_path, "--dataset_name", str(tmp_path / "ds"), "--column_map", "q=query,p=positive,n=negatives",
        "--teacher", str(teacher_dir),
    )  # fmt: skip
    assert metrics["data"]["format"] == "triplets" and metrics["train_triplets"] == 8


def test_default_teacher_is_the_packaged_minilm(tmp_path):
    """The real path of a new user: a triplets file, no teacher named, MiniLM's first layer as the student."""
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(6))
    metrics = run(tmp_path, "--train_file", str(data), "--student_layers", "0", "--max_steps", "1")
    assert metrics["options"]["model"]["teacher"] is None
    assert json.loads((tmp_path / "out" / "config.json").read_text())["hidden_size"] == 384


def test_evaluate_held_out_triplets_and_a_local_dataset_folder(tmp_path, teacher_dir, capsys):
    """A local folder of split files via --dataset_name with --validation_split; `evaluate --validation_file`
    reports margin agreement with the data's own teacher scores."""
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", topic_rows(8))
    write_jsonl(folder / "validation.jsonl", topic_rows(6, seed=3))
    metrics = run(
        tmp_path, "--dataset_name", str(folder), "--validation_split", "validation", "--teacher", str(teacher_dir),
        "--eval_strategy", "steps", "--eval_steps", "3",
    )  # fmt: skip
    assert metrics["train_triplets"] == 8 and "eval_margin_spearman" in metrics["eval"]
    scored = [dict(r, teacher_margins=[0.5, 0.2, 0.1]) for r in topic_rows(6, seed=3)]
    held = write_jsonl(tmp_path / "held.jsonl", scored)
    capsys.readouterr()
    assert main(["evaluate", "--student", str(tmp_path / "out"), "--validation_file", str(held)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["triplets"]) == {"margin_spearman", "pairwise_accuracy"}


def test_rescore_without_a_named_teacher_uses_the_default_one(tmp_path, teacher_dir):
    """Guards --rescore true with no --teacher: the data's scores were dropped and training then crashed
    (no teacher_margins); the default teacher must rescore them."""
    data = write_jsonl(tmp_path / "flag.jsonl", flag_rows(6, scored=True))
    metrics = run(tmp_path, "--train_file", str(data), "--rescore", "true", "--student", str(teacher_dir))
    assert metrics["options"]["model"]["rescore"] is True
    card = (tmp_path / "out" / "README.md").read_text()
    assert "teacher margins of sentence-transformers/all-MiniLM-L6-v2" in card


def test_bad_student_layers_is_one_line(tmp_path, teacher_dir, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(6))
    argv = ["train", *TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--student_layers", "0", "9"]
    assert main([*argv, "--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "student" in err[0] and "bad: [9]" in err[0]


def test_corpus_mode_alone_and_mixed_with_gold(tmp_path, teacher_dir, capsys):
    """Corpus mode: from unlabelled texts only (task data, no train file) the teacher builds the training set;
    beside a triplets file the two are mixed and the share is stated in the log line, metrics.json and the card."""
    rng = random.Random(5)
    texts = list(dict.fromkeys(text(rng, t, 3) for t in TOPICS for _ in range(8)))
    corpus = tmp_path / "texts.txt"
    corpus.write_text("\n".join(texts) + "\n")
    options = ["--teacher", str(teacher_dir), "--num_negatives", "2", "--skip_top", "2", "--sample_from", "8"]
    alone = run(tmp_path / "alone", "--task", "data", "--unlabelled_file", str(corpus), *options)
    assert alone["data"]["format"] == "corpus" and alone["train_triplets"] == len(texts)
    gold = write_jsonl(tmp_path / "gold.jsonl", topic_rows(10))
    capsys.readouterr()
    mixed = run(tmp_path / "mixed", "--train_file", str(gold), "--unlabelled_file", str(corpus), *options)
    assert (mixed["data"]["gold_triplets"], mixed["data"]["corpus_triplets"]) == (10, len(texts))
    assert mixed["train_triplets"] == 10 + len(texts)
    assert f"({10} gold + {len(texts)} teacher-built)" in capsys.readouterr().out
    card = (tmp_path / "mixed" / "out" / "README.md").read_text()
    assert f"Plus {len(texts)} triplets the teacher built" in card and "gold," in card


def test_stsb_task_with_its_train_sentences_as_corpus(tmp_path, teacher_dir):
    write_tiny_stsb(tmp_path / "stsb")
    metrics = run(
        tmp_path, "--teacher", str(teacher_dir), "--data_dir", str(tmp_path / "stsb"), "--unlabelled_file",
        "stsb:train", "--num_negatives", "2", "--skip_top", "1", "--sample_from", "6", "--student_layers", "0",
    )  # fmt: skip
    assert metrics["data"]["corpus_triplets"] > 0 and metrics["data"]["gold_triplets"] > 0


def test_teacher_margin_scaling_option_rescales_once_with_the_statistics_of_before(tmp_path, teacher_dir, caplog):
    """`--teacher_margin_scaling student` (a MarginDistillConfig option, from the command line or a recipe): the
    trainer rescales once, with the statistics the pipeline computed itself before the option moved (the train
    split's raw teacher margins, the fresh student's margins); metrics.json and the card record it. Without the
    option ('auto'), a bi-encoder teacher's margins stay raw and the log says why."""
    from transformers import AutoTokenizer

    from hf_margin.app.recipes import parse_recipe
    from hf_margin.app.tasks import build_task
    from hf_margin.data.margin_scaling import scale_teacher_margins

    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(16))
    options = ["--train_file", str(data), "--teacher", str(teacher_dir), "--student_layers", "0"]
    metrics = run(tmp_path / "student", *options, "--teacher_margin_scaling", "student")
    parsed = parse_recipe(None, [*options, "--cache_dir", str(tmp_path / "student" / "cache"), "--use_cpu", "true"])
    model_args, data_args, eval_args, args = parsed
    assert args.teacher_margin_scaling == "auto"  # parsed into the config; the CLI value came from the same option
    task = build_task(model_args, data_args, eval_args, args)  # the cached triplets the run trained on
    student = args.student_kind.load(str(teacher_dir), layers=[0])
    _, before = scale_teacher_margins({"train": task.train}, "student", student, AutoTokenizer.from_pretrained(
        teacher_dir), args)  # fmt: skip
    assert metrics["teacher_margin_scaling"] == pytest.approx(before)
    assert metrics["loss_options"]["teacher_margin_scaling"] == "student"
    assert "`teacher_margin_scaling=student`" in (tmp_path / "student" / "out" / "README.md").read_text()

    caplog.set_level("INFO", logger="hf_margin.training.config")
    metrics = run(tmp_path / "auto", *options)
    assert metrics["teacher_margin_scaling"] == {} and metrics["loss_options"]["teacher_margin_scaling"] == "none"
    assert "teacher_margin_scaling 'auto' is 'none': a bi-encoder teacher" in caplog.text
    shipped = parse_recipe(Path(__file__).resolve().parents[1] / "recipes" / "stsb-strongest.yaml")
    assert shipped[3].teacher_margin_scaling == "student"  # the recipe key, read into MarginDistillConfig

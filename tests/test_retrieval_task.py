"""The retrieval task and query–corpus mode end to end through `hf-margin train` on tiny models: a BEIR folder,
unlabelled queries ranked by the teacher, metrics before / after / teacher with encoding speed, and the refusals
that must come before any model loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from hf_margin.app.cli import main

from .conftest import TOPICS, write_tiny_teacher
from .test_pipeline import TRAIN


def write_beir(folder: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """A BEIR folder of 48 topic documents and 6 judged test queries, and 12 unlabelled training queries."""
    rng = random.Random(seed)
    names = list(TOPICS)
    docs = {f"d{i}": " ".join(rng.sample(TOPICS[names[i % 6]], 4)) for i in range(48)}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    tests = {f"q{i}": " ".join(rng.sample(TOPICS[names[i]], 2)) for i in range(6)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in tests.items()))
    qrels = [f"q{i}\td{i + 6 * j}\t1" for i in range(6) for j in range(2)]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    unlabelled = [" ".join(rng.sample(TOPICS[names[i % 6]], 3)) for i in range(12)]
    unlabelled = [q for q in dict.fromkeys(unlabelled) if q not in tests.values()]
    (folder / "unlabelled.txt").write_text("\n".join(unlabelled) + "\n")
    return folder, list(tests.values())


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    return write_tiny_teacher(tmp_path_factory.mktemp("models") / "teacher")


MINING = ["--num_negatives", "2", "--skip_top", "1", "--sample_from", "8", "--student_layers", "0"]


def test_retrieval_task_trains_on_unlabelled_queries_and_reports_quality_and_speed(tmp_path, teacher_dir):
    folder, _ = write_beir(tmp_path / "beir")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--query_max_length", "6", "--max_length", "16", "--output_dir", str(out), "--cache_dir", str(tmp_path)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    figures = metrics["evaluation"]["beir"]
    assert set(figures["ndcg@10"]) == {"before", "after", "teacher"}
    assert metrics["data"]["format"] == "retrieval" and metrics["data"]["gold_triplets"] == 0
    assert metrics["data"]["corpus_triplets"] == len((folder / "unlabelled.txt").read_text().split("\n")) - 1
    speed = metrics["speed"]
    assert speed["student"]["texts"] == speed["teacher"]["texts"] == 48 and speed["speedup"] > 0
    assert speed["student"]["max_length"] == speed["teacher"]["max_length"] == 16  # timed on the same input
    assert speed["student"]["threads"] >= 1
    kept = metrics["quality_kept"]["beir"]["ndcg@10"]
    assert kept == pytest.approx(100 * figures["ndcg@10"]["after"] / figures["ndcg@10"]["teacher"])
    card = (out / "README.md").read_text()
    assert "**Speed**" in card and "texts/s" in card and "query-corpus mode" in card
    results = yaml.safe_load(card.split("---")[1])["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {"beir"}  # the folder's name, not this machine's path


def test_own_queries_and_corpus_train_without_labels(tmp_path, teacher_dir):
    """--query_file with --corpus_file and no train file: the task is your data, every triplet teacher-built."""
    folder, _ = write_beir(tmp_path / "beir")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--query_file", str(folder / "unlabelled.txt"), "--corpus_file"]
    argv += [str(folder / "corpus.jsonl"), "--teacher", str(teacher_dir), "--ir_eval_dir", str(folder)]
    assert main([*argv, "--output_dir", str(out), "--cache_dir", str(tmp_path)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["format"] == "query-corpus" and metrics["data"]["corpus_triplets"] > 0
    assert "ndcg@10" in metrics["evaluation"]["ir"]


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--query_file", "Q"], "needs the documents to rank: add --corpus_file"),
        (["--task", "retrieval", "--data_dir", "B", "--query_file", "LEAK"], "evaluation queries of qrels/test.tsv"),
        (["--task", "retrieval", "--data_dir", "B", "--train_file", "Q"], "drop train_file"),
        (["--task", "retrieval", "--data_dir", "B", "--student_type", "cross-encoder"], "needs a bi-encoder"),
        (["--query_file", "Q", "--corpus_file", "C", "--unlabelled_file", "Q"], "not both"),
        (
            ["--task", "retrieval", "--data_dir", "B", "--teacher_type", "cross-encoder", "--teacher_ensemble", "B"],
            "teacher_ensemble averages bi-encoders",
        ),
        (
            ["--task", "retrieval", "--data_dir", "B", "--teacher_similarity", "dot", "--teacher_ensemble", "B"],
            "teacher_similarity cosine",
        ),
        (
            ["--task", "retrieval", "--data_dir", "B", "--teacher_ensemble", "no/such/teacher"],
            "'no/such/teacher': no such directory",
        ),  # fmt: skip
        (
            ["--task", "retrieval", "--data_dir", "B", "--student_attention_dropout", "1.5"],
            "student_attention_dropout must be in [0, 1); got 1.5",
        ),
    ],
)
def test_bad_retrieval_options_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, options, fragment):
    import hf_margin.app.tasks.retrieval as retrieval

    monkeypatch.setattr(retrieval, "load_teacher", lambda *a, **k: pytest.fail("a model was loaded first"))
    folder, tests = write_beir(tmp_path / "beir")
    (tmp_path / "leak.txt").write_text(f"{tests[0]}\nsun1 sun2 sun3\n")
    names = {"Q": folder / "unlabelled.txt", "C": folder / "corpus.jsonl", "B": folder, "LEAK": tmp_path / "leak.txt"}
    argv = ["train", *TRAIN, *[str(names.get(o, o)) for o in options], "--output_dir", str(tmp_path / "x")]
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def write_other_family_teacher(folder: Path) -> Path:
    """A teacher of another family than the student: its own tokenizer (another vocabulary, other ids) and width."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = [w for ws in TOPICS.values() for w in ws][::-1] + [f"extra{i}" for i in range(10)]
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", "<s>", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = BertConfig(vocab_size=len(vocab), hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=64, pad_token_id=0)  # fmt: skip
    torch.manual_seed(3)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_teacher_of_another_family_distils_into_the_student_with_gold_pairs_mixed_in(tmp_path, teacher_dir):
    """Teacher and student differ in tokenizer, vocabulary and width: only scores cross over. Gold pairs of a
    qrels split (gold_split) join the teacher-built triplets, and the shares are stated; a judged query that is
    also a test query (SciFact has 2) is left out of the gold pairs."""
    folder, tests = write_beir(tmp_path / "beir")
    train_queries = [f"{w}1 {w}2 {w}3" for w in TOPICS][:5] + [tests[0]]  # one judged train query is a test query
    (folder / "queries-train.jsonl").write_text(
        "".join(json.dumps({"_id": f"t{i}", "text": q}) + "\n" for i, q in enumerate(train_queries))
    )
    (folder / "qrels" / "train.tsv").write_text("".join(f"t{i}\td{i}\t1\n" for i in range(6)))
    teacher = write_other_family_teacher(tmp_path / "other-teacher")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--gold_split", "train"]
    argv += ["--teacher", str(teacher), "--student", str(teacher_dir), "--output_dir", str(out)]
    assert main([*argv, "--cache_dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["data"]["gold_triplets"], metrics["data"]["corpus_triplets"]) == (5, 12)  # the test query left out
    assert set(metrics["evaluation"]["beir"]["recall@100"]) == {"before", "after", "teacher"}
    assert "% gold" in (out / "README.md").read_text()


def test_a_dev_split_is_reported_at_the_end_and_its_queries_may_not_train(tmp_path, teacher_dir, capsys):
    """dev_split (carved from judged train queries, as a learning-rate choice needs) is evaluated before, after and
    for the teacher beside the test split; a dev query among the training queries is refused before any model
    loads, and a gold pair whose query is a dev query is left out."""
    folder, _ = write_beir(tmp_path / "beir")
    unlabelled = (folder / "unlabelled.txt").read_text().split("\n")[:-1]
    dev = unlabelled[:3]
    (folder / "queries-dev.jsonl").write_text(
        "".join(json.dumps({"_id": f"v{i}", "text": q}) + "\n" for i, q in enumerate(dev))
    )
    (folder / "qrels" / "dev.tsv").write_text("".join(f"v{i}\td{i + 1}\t1\n" for i in range(3)))
    (folder / "queries-train.jsonl").write_text(
        json.dumps({"_id": "v0", "text": dev[0]}) + "\n" + json.dumps({"_id": "t1", "text": "sun1 sea1"}) + "\n"
    )
    (folder / "qrels" / "train.tsv").write_text("v0\td1\t1\nt1\td2\t1\n")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--dev_split", "dev", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert "3 evaluation queries of qrels/dev.tsv are training queries" in capsys.readouterr().err
    (tmp_path / "train-queries.txt").write_text("\n".join(unlabelled[3:]) + "\n")
    assert main([*argv, "--query_file", str(tmp_path / "train-queries.txt"), "--gold_split", "train"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["evaluation"]) == {"beir", "beir_dev"}
    assert set(metrics["evaluation"]["beir_dev"]["ndcg@10"]) == {"before", "after", "teacher"}
    results = yaml.safe_load((out / "README.md").read_text().split("---")[1])["model-index"][0]["results"]
    assert results and all("beir_dev" not in r["metrics"][0]["name"] for r in results)  # dev chose; test is reported
    assert metrics["data"]["gold_triplets"] == 1 and metrics["data"]["corpus_triplets"] == len(unlabelled) - 3


def test_a_search_run_can_skip_the_before_row_and_the_timing(tmp_path, teacher_dir, capsys):
    """--eval_before false --measure_speed false (the runs of a learning-rate search, where neither changes):
    only the trained student is evaluated, nothing is timed, and the summary and card say nothing of either."""
    folder, _ = write_beir(tmp_path / "beir")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--eval_teacher", "false"]
    assert main([*argv, "--eval_before", "false", "--measure_speed", "false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["evaluation"]["beir"]["ndcg@10"]) == {"after"}
    assert metrics["speed"] == {"student": None, "teacher": None, "speedup": None}
    assert "encoding speed" not in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "student before training" not in card and "**Speed**" not in card


def test_a_mean_score_teacher_of_two_families_builds_the_set_from_the_mean_of_their_scores(tmp_path, teacher_dir):
    """--teacher_ensemble: the two teachers (another tokenizer and width each) rank the corpus by the mean of their
    cosines, so every built triplet's teacher scores are that mean; the card and metrics name both teachers."""
    import numpy as np
    from datasets import Dataset

    from hf_margin.models.scoring import BiEncoderScorer

    folder, _ = write_beir(tmp_path / "beir")
    other = write_other_family_teacher(tmp_path / "other-teacher")
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--teacher_ensemble", str(other), "--output_dir", str(out), "--cache_dir", str(cache)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["options"]["model"]["teacher_ensemble"] == [str(other)]
    assert set(metrics["evaluation"]["beir"]["ndcg@10"]) == {"before", "after", "teacher"}
    card = (out / "README.md").read_text()
    assert f"{teacher_dir} + {other} (mean score)" in card
    [entry] = [p for p in cache.glob("query-corpus-triplets-*") if p.is_dir()]
    built = Dataset.from_file(str(entry / "data.arrow"))
    [margins] = [Dataset.from_file(str(p / "data.arrow")) for p in cache.rglob("teacher-margins-*") if p.is_dir()]
    members = [BiEncoderScorer.from_pretrained(p, device="cpu", show_progress=False) for p in (teacher_dir, other)]
    queries, positives = built["query"], built["positive"]
    want = np.mean([m.score_pairs(queries, positives) for m in members], axis=0)
    np.testing.assert_allclose(margins["teacher_pos_score"], want, atol=1e-5)
    corpus = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").read_text().splitlines()]
    for query, positive in zip(queries, positives):  # the positive is the top document by the mean score
        scores = np.mean([m.score_pairs([query] * len(corpus), corpus) for m in members], axis=0)
        assert corpus[int(scores.argmax())] == positive
    alone = members[0].score_pairs(queries, positives)
    assert np.abs(want - alone).max() > 0.01  # the second teacher changed the scores


def test_a_mean_score_teacher_gives_the_in_batch_term_its_mean_scores(tmp_path, teacher_dir, capsys):
    """--in_batch_weight with --teacher_ensemble: the cached teacher embeddings are the members' joined ones, so the
    in-batch term's teacher scores (cosines of them) are the mean of the members' cosines; --embedding_weight (the
    joined vectors are no single model's) is refused with the fix."""
    import numpy as np
    from datasets import Dataset

    from hf_margin.models.scoring import BiEncoderScorer

    folder, _ = write_beir(tmp_path / "beir")
    other = write_other_family_teacher(tmp_path / "other-teacher")
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["train", *TRAIN, *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--teacher_ensemble", str(other), "--output_dir", str(out), "--cache_dir", str(cache)]
    assert main([*argv, "--embedding_weight", "1"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "embedding_weight: the teacher's embeddings are needed, and the teacher is an ensemble" in err
    assert "--embedding_teacher" in err and "--embedding_weight 0" in err and "in_batch_weight" not in err
    assert main([*argv, "--in_batch_weight", "1", "--eval_teacher", "false", "--eval_before", "false"]) == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert all(log["in_batch_loss"] > 0 for log in history if "loss" in log)
    card = (out / "README.md").read_text()
    assert "in_batch_teacher_similarity=cosine" in card
    assert f"embedding_teacher={teacher_dir} + {other} (mean score)" in card  # the pair, not its first member
    [entry] = [p for p in cache.rglob("teacher-embeddings-*") if p.is_dir()]
    rows = Dataset.from_file(str(entry / "data.arrow"))
    queries = np.asarray(rows["teacher_query_embedding"])
    documents = np.asarray(rows["teacher_document_embeddings"])  # (rows, 1 + N, H_1 + H_2)
    members = [BiEncoderScorer.from_pretrained(p, device="cpu", show_progress=False) for p in (teacher_dir, other)]
    assert queries.shape[1] == sum(m.model.config.hidden_size for m in members)
    texts = [rows["positive"][0], *rows["negatives"][0]]
    joined = documents[0] @ queries[0]  # every document of row 0 against its query
    want = np.mean([m.score_pairs([rows["query"][0]] * len(texts), texts) for m in members], axis=0)
    np.testing.assert_allclose(joined, want, atol=1e-5)


def test_title_queries_join_the_unlabelled_queries_never_an_evaluation_query(tmp_path, teacher_dir, capsys):
    """`--title_queries N` adds N document titles (of at least 4 words, a fixed sample, none an evaluation query) to
    the training queries: one more teacher-built triplet per title; a title that repeats a test query is left out."""
    from hf_margin.app.tasks.retrieval import title_queries

    folder, _ = write_beir(tmp_path / "beir")
    test_query = "a test claim of five words"
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    queries[0]["text"] = test_query
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):  # 24 titles of 4+ words, 23 of 2 words, one that repeats the test query
        row["title"] = test_query if i == 0 else (f"title {i} of a document" if i % 2 else "too short")
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    titles = title_queries(folder / "corpus.jsonl", -1, {test_query})
    assert len(titles) == 24 and test_query not in titles and all(len(t.split()) >= 4 for t in titles)
    assert title_queries(folder / "corpus.jsonl", 5, set()) == title_queries(folder / "corpus.jsonl", 5, set())
    argv = ["score-teacher", *MINING, "--task", "retrieval", "--data_dir", str(folder), "--teacher", str(teacher_dir)]
    argv += ["--cache_dir", str(tmp_path / "cache")]
    sizes = {}
    for count in ("0", "5"):
        assert main([*argv, "--title_queries", count]) == 0
        sizes[count] = json.loads(capsys.readouterr().out)["triplets"]["train"]
    assert sizes["5"] == sizes["0"] + 5
    assert main(["score-teacher", "--title_queries", "5"]) == 2  # STS-B has no corpus titles
    assert "use it with --task retrieval" in capsys.readouterr().err


def test_evaluate_prints_speed_and_honours_student_layers(tmp_path, teacher_dir, capsys):
    """`hf-margin evaluate --student_layers 0` evaluates the 1-layer cut it asks for (it used to evaluate every
    layer), and prints the student's encoding speed beside the figures."""
    folder, _ = write_beir(tmp_path / "beir")
    shown = {}
    for layers in ([], ["--student_layers", "0"]):
        capsys.readouterr()
        assert main(["evaluate", "--student", str(teacher_dir), "--ir_eval_dir", str(folder), *layers]) == 0
        shown[len(layers)] = json.loads(capsys.readouterr().out)
    whole, cut = shown[0], shown[2]
    assert whole["ir"] != cut["ir"]
    assert cut["speed"]["texts"] == 48 and cut["speed"]["texts_per_s"] > 0 and cut["speed"]["batch_size"] == 32


def test_evaluate_with_a_teacher_reports_its_figures_speed_and_the_share_kept(tmp_path, teacher_dir, capsys):
    """`evaluate --teacher T` puts the student beside its teacher: the teacher's figures on the same set, both
    speeds on the same texts, the speed-up, and the share of each figure the student keeps."""
    folder, _ = write_beir(tmp_path / "beir")
    argv = ["evaluate", "--student", str(teacher_dir), "--student_layers", "0", "--ir_eval_dir", str(folder)]
    assert main([*argv, "--teacher", str(teacher_dir), "--cache_dir", str(tmp_path / "cache")]) == 0
    shown = json.loads(capsys.readouterr().out)
    student, teacher = shown["ir"], shown["teacher"]["ir"]
    assert student != teacher  # one layer against two
    for metric in ("ndcg@10", "mrr@10"):
        assert shown["quality_kept"]["ir"][metric] == pytest.approx(100 * student[metric] / teacher[metric])
    assert shown["teacher_speed"]["texts"] == shown["speed"]["texts"] == 48
    assert shown["speedup"] == pytest.approx(shown["speed"]["texts_per_s"] / shown["teacher_speed"]["texts_per_s"])
    assert main([*argv, "--teacher", str(teacher_dir), "--eval_teacher", "false"]) == 0
    assert "teacher" not in json.loads(capsys.readouterr().out)


class CountingEvaluator:
    calls = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, scorer) -> dict[str, float]:
        CountingEvaluator.calls += 1
        return {"ndcg@10": self.value}


class FixedTeacher:
    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint


def test_teacher_figures_are_cached_by_teacher_and_evaluation(tmp_path):
    """The teacher's evaluation costs a whole corpus embedding: a rerun reads its figures from the cache, and
    another teacher or another evaluation set computes them anew."""
    from hf_margin.app.report import cached_results

    CountingEvaluator.calls = 0
    first = cached_results({"ir": CountingEvaluator(1.0)}, FixedTeacher("a"), str(tmp_path))
    again = cached_results({"ir": CountingEvaluator(1.0)}, FixedTeacher("a"), str(tmp_path))
    assert first == again == {"ir": {"ndcg@10": 1.0}} and CountingEvaluator.calls == 1
    cached_results({"ir": CountingEvaluator(1.0)}, FixedTeacher("b"), str(tmp_path))
    cached_results({"ir": CountingEvaluator(2.0)}, FixedTeacher("a"), str(tmp_path))
    assert CountingEvaluator.calls == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]
    moved = CountingEvaluator(1.0)
    moved.source = "/another/clone/hf_margin/app/data/scifact"  # where it was read from: not what it measures
    assert cached_results({"ir": moved}, FixedTeacher("a"), str(tmp_path)) == first and CountingEvaluator.calls == 3


def test_untrained_student_figures_are_cached_by_its_weights(tmp_path):
    """The student's "before" figures are cached as the teacher's are: two loads of one cut give one fingerprint
    (a rerun reads the figures), and a changed weight, another cut or another length gives another."""
    from transformers import AutoTokenizer

    from hf_margin.app.report import cached_results
    from hf_margin.models.kind import StudentKind

    folder = write_tiny_teacher(tmp_path / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    kind = StudentKind()
    first = kind.scorer(kind.load(folder, layers=[0]), tokenizer)
    same = kind.scorer(kind.load(folder, layers=[0]), tokenizer)
    assert first.fingerprint == same.fingerprint
    changed = kind.load(folder, layers=[0])
    with torch.no_grad():
        changed.embeddings.word_embeddings.weight[0, 0] += 1e-3
    others = [
        kind.scorer(changed, tokenizer),
        kind.scorer(kind.load(folder, layers=[1]), tokenizer),
        kind.scorer(kind.load(folder, layers=[0]), tokenizer, max_length=8),
    ]
    assert len({first.fingerprint, *(o.fingerprint for o in others)}) == 4

    CountingEvaluator.calls = 0
    cached_results({"ir": CountingEvaluator(1.0)}, first, str(tmp_path), who="student")
    again = cached_results({"ir": CountingEvaluator(1.0)}, same, str(tmp_path), who="student")
    assert again == {"ir": {"ndcg@10": 1.0}} and CountingEvaluator.calls == 1
    assert [p.name.split("-")[:2] for p in tmp_path.glob("*.json")] == [["student", "evaluation"]]
    for other in others:
        cached_results({"ir": CountingEvaluator(1.0)}, other, str(tmp_path), who="student")
    assert CountingEvaluator.calls == 4

"""The teacher's embeddings as targets: the cached columns, their collation, the cosine-distance loss, the trainer's
term (gradient accumulation, learning the teacher's geometry) and `hf-margin train --embedding_weight`."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertModel

from hf_margin import (
    MarginDistillCollator,
    MarginDistillTrainer,
    attach_teacher_embeddings,
    attach_teacher_margins,
    embedding_distance_loss,
    tokenize_triplets,
)
from hf_margin.app.cli import main
from hf_margin.data.columns import TEACHER_DOCUMENT_EMBEDDINGS, TEACHER_QUERY_EMBEDDING

from .conftest import TopicTeacher, make_triplets, sharpen, teacher_for, tiny_config, write_tiny_teacher
from .test_pipeline import TRAIN, topic_rows, write_jsonl
from .test_trainer import config


@pytest.fixture
def embedding_teacher(tokenizer):
    torch.manual_seed(3)
    return teacher_for(sharpen(BertModel(tiny_config(len(tokenizer)), add_pooling_layer=False), seed=3), tokenizer)


class Refusing:
    """A teacher that must not be called (the cache must answer)."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def embed(self, texts, role="document"):
        raise AssertionError("the teacher was called; the cache should have answered")


def test_columns_hold_each_texts_teacher_embedding_and_a_rerun_reads_the_cache(tmp_path, embedding_teacher):
    data = make_triplets(10, ragged=True)
    out = attach_teacher_embeddings(data, embedding_teacher, cache_dir=tmp_path)
    for row in out:
        query = embedding_teacher.embed([row["query"]], role="query")[0]
        documents = embedding_teacher.embed([row["positive"], *row["negatives"]])
        assert len(row[TEACHER_DOCUMENT_EMBEDDINGS]) == 1 + len(row["negatives"])
        torch.testing.assert_close(torch.tensor(row[TEACHER_QUERY_EMBEDDING]), query, atol=1e-6, rtol=0)
        torch.testing.assert_close(torch.tensor(row[TEACHER_DOCUMENT_EMBEDDINGS]), documents, atol=1e-6, rtol=0)
    again = attach_teacher_embeddings(data, Refusing(embedding_teacher.fingerprint), cache_dir=tmp_path)
    assert again[TEACHER_DOCUMENT_EMBEDDINGS] == out[TEACHER_DOCUMENT_EMBEDDINGS]


def test_a_teacher_that_cannot_embed_is_refused(tmp_path):
    with pytest.raises(TypeError, match="bi-encoder teacher"):
        attach_teacher_embeddings(make_triplets(4), TopicTeacher(), cache_dir=tmp_path)


def test_collated_targets_are_laid_out_as_the_students_embeddings(tmp_path, tokenizer, embedding_teacher):
    """Queries (B, H); then positives and the real negatives row-major (B + M, H), as student_scores returns them."""
    data = attach_teacher_embeddings(make_triplets(5, ragged=True), embedding_teacher, cache_dir=tmp_path)
    rows = list(tokenize_triplets(data, tokenizer))
    batch = MarginDistillCollator(tokenizer.pad_token_id, pad_queries_apart=True)(rows)
    negatives = [n for r in data for n in r["negatives"]]
    expected_documents = embedding_teacher.embed(list(data["positive"]) + negatives)
    assert batch[TEACHER_QUERY_EMBEDDING].shape == (5, 32)
    assert batch[TEACHER_DOCUMENT_EMBEDDINGS].shape == (5 + len(negatives), 32)
    torch.testing.assert_close(batch[TEACHER_DOCUMENT_EMBEDDINGS], expected_documents, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        batch[TEACHER_QUERY_EMBEDDING], embedding_teacher.embed(list(data["query"]), role="query"), atol=1e-6, rtol=0
    )


def test_embedding_distance_is_one_minus_cosine_whatever_the_norms():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    # distances 0, 1, 2 and 1 - 1/sqrt(2)
    expected = (0 + 1 + 2 + (1 - 2**-0.5)) / 4
    assert embedding_distance_loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)
    assert embedding_distance_loss(student, teacher, num_items=2).item() == pytest.approx(4 * expected / 2, abs=1e-6)
    with pytest.raises(ValueError, match="same width"):
        embedding_distance_loss(student, torch.zeros(4, 3))


@pytest.fixture
def with_targets(tmp_path, embedding_teacher):
    def make(n: int, seed: int = 0):
        data = attach_teacher_margins(make_triplets(n, seed=seed), TopicTeacher(), cache_dir=tmp_path / "c")
        return attach_teacher_embeddings(data, embedding_teacher, cache_dir=tmp_path / "c")

    return make


def test_gradient_accumulation_equals_one_large_batch_with_the_embedding_term(
    tmp_path, with_targets, tokenizer, bi_encoder
):
    data = with_targets(32)
    initial = {k: v.clone() for k, v in bi_encoder.state_dict().items()}
    results = []
    for batch_size, accumulation in [(8, 4), (32, 1)]:
        bi_encoder.load_state_dict(initial)
        args = config(tmp_path, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                      max_steps=1, optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0,
                      embedding_weight=2.0)  # fmt: skip
        MarginDistillTrainer(bi_encoder, args, train_dataset=data, processing_class=tokenizer).train()
        results.append({k: v.detach().clone() for k, v in bi_encoder.state_dict().items()})
    assert max((results[1][k] - initial[k]).abs().max().item() for k in initial) > 1e-3
    for key in initial:
        torch.testing.assert_close(results[0][key], results[1][key], atol=1e-5, rtol=0)


def test_the_student_learns_the_teachers_geometry(tmp_path, with_targets, tokenizer, bi_encoder, embedding_teacher):
    """Trained on the embedding term alone (the label hinge weighted 0 beside it is not the point), the student's
    embeddings of held-out texts turn towards the teacher's: mean cosine from near 0 to above 0.8."""
    held_out = [t for r in make_triplets(20, seed=9) for t in (r["query"], r["positive"], *r["negatives"])]
    target = embedding_teacher.embed(held_out)

    def cosine() -> float:
        student = teacher_for(bi_encoder, tokenizer).embed(held_out)
        return torch.nn.functional.cosine_similarity(student, target, dim=-1).mean().item()

    before = cosine()
    args = config(tmp_path, per_device_train_batch_size=16, num_train_epochs=15, learning_rate=3e-3, logging_steps=5,
                  loss="margin_mse", embedding_weight=10.0)  # fmt: skip
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=with_targets(128), processing_class=tokenizer)
    trainer.train()
    logged = [log["embedding_loss"] for log in trainer.state.log_history if "embedding_loss" in log]
    assert before < 0.5 and cosine() > 0.8
    assert logged[-1] < 0.5 * logged[0]


def test_the_trainer_refuses_a_train_set_without_targets(tmp_path, tokenizer, bi_encoder):
    data = attach_teacher_margins(make_triplets(8), TopicTeacher(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="attach_teacher_embeddings"):
        MarginDistillTrainer(bi_encoder, config(tmp_path, embedding_weight=1.0), train_dataset=data,
                             processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="bi-encoder student"):
        config(tmp_path, embedding_weight=1.0, student_type="cross-encoder")
    with pytest.raises(ValueError, match="embedding_weight must be >= 0"):
        config(tmp_path, embedding_weight=-1.0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return write_tiny_teacher(tmp_path_factory.mktemp("models") / "teacher")


def test_train_command_distils_the_teachers_embeddings_and_caches_them(tmp_path, teacher_dir):
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(12))
    argv = [*TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--student_layers", "0"]
    for run in ("first", "second"):
        out, cache = tmp_path / run, tmp_path / "cache"
        assert (
            main(["train", *argv, "--embedding_weight", "1", "--output_dir", str(out), "--cache_dir", str(cache)]) == 0
        )
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        assert all(log["embedding_loss"] > 0 for log in history if "loss" in log)
    assert (
        len([p for p in cache.glob("teacher-embeddings-*") if p.is_dir()]) == 1
    )  # the second run read the first run's entry
    card = (tmp_path / "second" / "README.md").read_text()
    assert "embedding_weight" in card and f"embedding_teacher={teacher_dir}" in card


def test_an_embedding_teacher_beside_a_teacher_that_gives_the_margins(tmp_path, teacher_dir, tokenizer):
    """--embedding_teacher: margins from one teacher, embeddings from another bi-encoder of the student's width;
    the targets are that model's embeddings, and the card names it."""
    other = tmp_path / "other"
    torch.manual_seed(5)
    BertModel(tiny_config(len(tokenizer)), add_pooling_layer=False).save_pretrained(other)
    tokenizer.save_pretrained(other)
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(8))
    argv = [*TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--student", str(other)]
    argv += ["--embedding_weight", "1", "--embedding_teacher", str(other), "--max_steps", "1"]
    assert main(["train", *argv, "--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]) == 0
    history = json.loads((tmp_path / "o" / "trainer_state.json").read_text())["log_history"]
    # the student starts as the embedding teacher itself: its distance to the targets is 0 at the first step
    assert history[0]["embedding_loss"] == pytest.approx(0.0, abs=1e-6)
    assert f"embedding_teacher={other}" in (tmp_path / "o" / "README.md").read_text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--teacher_type", "cross-encoder"], "--embedding_teacher"),
        (["--fresh_negatives_per_epoch", "true"], "fixed negatives"),
    ],
)
def test_train_command_refuses_what_cannot_give_targets_before_any_compute(tmp_path, teacher_dir, capsys, options,
                                                                           message):  # fmt: skip
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(6))
    argv = ["train", *TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--embedding_weight", "1"]
    assert main([*argv, *options, "--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_a_student_of_another_width_is_refused(tmp_path, teacher_dir, tokenizer, capsys):
    student = tmp_path / "wide"
    BertModel(tiny_config(len(tokenizer), hidden_size=48), add_pooling_layer=False).save_pretrained(student)
    tokenizer.save_pretrained(student)
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(6))
    argv = ["train", *TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--student", str(student)]
    assert main([*argv, "--embedding_weight", "1", "--output_dir", str(tmp_path / "o")]) == 2
    assert "32 dimensions and the student in 48" in capsys.readouterr().err.replace("\n", " ")

"""The in-batch term (`in_batch_weight`): each query's softmax over every document of the batch, the teacher's
against the student's, from the cached teacher embeddings; the loss on hand-computed values, the trainer's term
with a teacher of another width, and `hf-margin train --in_batch_weight`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import BertModel

from hf_margin import MarginDistillTrainer, attach_teacher_embeddings, attach_teacher_margins, in_batch_kl_loss
from hf_margin.app.cli import main

from .conftest import TopicTeacher, make_triplets, sharpen, teacher_for, tiny_config
from .test_pipeline import TRAIN, topic_rows, write_jsonl
from .test_teacher_embeddings import teacher_dir  # noqa: F401  (a module fixture)
from .test_trainer import config


def test_in_batch_kl_on_hand_computed_scores():
    """Two queries, three documents; the teacher of width 2, the student of width 3: the KL of the two softmaxes
    over all three documents, times τ²."""
    teacher_q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher_d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cosines: q0 (1, 0, 1/√2), q1 (0, 1, 1/√2)
    student_q = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    student_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # both queries: (1, 0, 0)
    tau = 0.5

    def kl(t: list[float], s: list[float]) -> float:
        pt = [math.exp(x / tau) for x in t]
        ps = [math.exp(x / tau) for x in s]
        pt, ps = [x / sum(pt) for x in pt], [x / sum(ps) for x in ps]
        return sum(a * math.log(a / b) for a, b in zip(pt, ps))

    r = 1 / math.sqrt(2)
    expected = (kl([1, 0, r], [1, 0, 0]) + kl([0, 1, r], [1, 0, 0])) / 2 * tau**2
    loss = in_batch_kl_loss(student_q, student_d, teacher_q, teacher_d, temperature=tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    same = in_batch_kl_loss(teacher_q, teacher_d, teacher_q * 3, teacher_d, temperature=tau)  # cosine: norms drop out
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    dot = in_batch_kl_loss(teacher_q, teacher_d, teacher_q * 3, teacher_d, temperature=tau, similarity="dot")
    assert dot.item() > 0.01  # with dot products the norms count
    # each side by its own similarity: a dot-product teacher of unit vectors is the cosine student's equal
    unit_q, unit_d = torch.nn.functional.normalize(teacher_q, dim=-1), torch.nn.functional.normalize(teacher_d, dim=-1)
    mixed = in_batch_kl_loss(teacher_q * 3, teacher_d, unit_q, unit_d, temperature=tau, teacher_similarity="dot")
    assert mixed.item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="teacher_similarity must be"):
        in_batch_kl_loss(teacher_q, teacher_d, teacher_q, teacher_d, teacher_similarity="l2")
    assert in_batch_kl_loss(student_q, student_d, teacher_q, teacher_d, num_items=4).item() == pytest.approx(
        in_batch_kl_loss(student_q, student_d, teacher_q, teacher_d).item() / 2, rel=1e-6
    )


def test_in_batch_kl_refuses_texts_that_do_not_match():
    with pytest.raises(ValueError, match="must embed the same texts"):
        in_batch_kl_loss(torch.ones(2, 3), torch.ones(4, 3), torch.ones(2, 5), torch.ones(3, 5))
    with pytest.raises(ValueError, match=r"must be \(B, H\) and \(D, H\)"):
        in_batch_kl_loss(torch.ones(2, 3), torch.ones(4, 2), torch.ones(2, 5), torch.ones(4, 5))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        in_batch_kl_loss(torch.ones(2, 3), torch.ones(4, 3), torch.ones(2, 5), torch.ones(4, 5), temperature=0)


@pytest.fixture
def wide_teacher(tokenizer):
    """A bi-encoder twice the student's width (64 against 32): its embeddings cannot be targets, its scores can."""
    torch.manual_seed(3)
    model = BertModel(tiny_config(len(tokenizer), hidden_size=64), add_pooling_layer=False)
    return teacher_for(sharpen(model, seed=3), tokenizer)


def test_the_student_learns_a_wider_teachers_in_batch_ranking(tmp_path, tokenizer, bi_encoder, wide_teacher):
    """With the wider teacher's margins and its in-batch scores, the student's softmax over the documents of a
    held-out batch turns towards the teacher's: the held-out KL falls by 40% or more (the margins alone raise it)."""
    cache = tmp_path / "c"

    def with_targets(n: int, seed: int):
        data = attach_teacher_margins(make_triplets(n, seed=seed), wide_teacher, cache_dir=cache)
        return attach_teacher_embeddings(data, wide_teacher, cache_dir=cache)

    held_out = make_triplets(16, seed=9)
    queries = [r["query"] for r in held_out]
    documents = [d for r in held_out for d in (r["positive"], *r["negatives"])]
    teacher_q, teacher_d = wide_teacher.embed(queries, role="query"), wide_teacher.embed(documents)

    def held_out_kl() -> float:
        student = teacher_for(bi_encoder, tokenizer)
        student_q, student_d = student.embed(queries, role="query"), student.embed(documents)
        return in_batch_kl_loss(student_q, student_d, teacher_q, teacher_d, temperature=0.05).item()

    before = held_out_kl()
    args = config(tmp_path, per_device_train_batch_size=16, num_train_epochs=15, learning_rate=3e-3, logging_steps=5,
                  loss="margin_mse", in_batch_weight=10.0)  # fmt: skip
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=with_targets(128, 0), processing_class=tokenizer)
    trainer.train()
    logged = [log["in_batch_loss"] for log in trainer.state.log_history if "in_batch_loss" in log]
    assert "embedding_loss" not in trainer.state.log_history[0]
    assert held_out_kl() < 0.6 * before  # 0.0015 -> 0.0006 (margins alone: 0.0020)
    assert logged[-1] < 0.5 * logged[0]


def test_the_logged_term_is_the_kl_over_the_whole_batch(tmp_path, tokenizer, bi_encoder, wide_teacher):
    """One step on one batch of ragged rows: the logged term equals in_batch_kl_loss on the student's embeddings of
    the batch's queries and documents (all positives and negatives) against the teacher's cached ones."""
    data = attach_teacher_margins(make_triplets(6, ragged=True), wide_teacher, cache_dir=tmp_path)
    data = attach_teacher_embeddings(data, wide_teacher, cache_dir=tmp_path)
    queries = [r["query"] for r in data]
    documents = [r["positive"] for r in data] + [n for r in data for n in r["negatives"]]
    teacher_d = torch.tensor([e for r in data for e in r["teacher_document_embeddings"][:1]]
                             + [e for r in data for e in r["teacher_document_embeddings"][1:]])  # fmt: skip
    student = teacher_for(bi_encoder, tokenizer)
    teacher_q = torch.tensor(data["teacher_query_embedding"])
    expected = in_batch_kl_loss(student.embed(queries, role="query"), student.embed(documents), teacher_q, teacher_d)
    args = config(tmp_path, per_device_train_batch_size=6, max_steps=1, logging_steps=1, in_batch_weight=1.0)
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert sum(len(r["negatives"]) for r in data) > 6  # ragged: 1 to 3 negatives a row
    assert expected.item() > 1e-3  # about 0.0023: the student is far from the teacher at step 1
    assert trainer.state.log_history[0]["in_batch_loss"] == pytest.approx(expected.item(), rel=1e-3)


def test_the_trainer_validates_the_in_batch_options(tmp_path, tokenizer, bi_encoder):
    data = attach_teacher_margins(make_triplets(8), TopicTeacher(), cache_dir=tmp_path)
    with pytest.raises(ValueError, match="in_batch_weight=1.0 needs"):
        MarginDistillTrainer(bi_encoder, config(tmp_path, in_batch_weight=1.0), train_dataset=data,
                             processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="bi-encoder student"):
        config(tmp_path, in_batch_weight=1.0, student_type="cross-encoder")
    with pytest.raises(ValueError, match="in_batch_weight must be >= 0"):
        config(tmp_path, in_batch_weight=-1.0)
    with pytest.raises(ValueError, match="in_batch_temperature must be > 0"):
        config(tmp_path, in_batch_weight=1.0, in_batch_temperature=0.0)


def test_train_command_takes_a_teacher_of_another_width_for_the_in_batch_term(tmp_path, teacher_dir, tokenizer, capsys):  # noqa: F811
    """A student of width 48 from a teacher of width 32: `--embedding_weight` is refused, `--in_batch_weight` runs,
    logs its term, and the card lists it."""
    student = tmp_path / "wide"
    BertModel(tiny_config(len(tokenizer), hidden_size=48), add_pooling_layer=False).save_pretrained(student)
    tokenizer.save_pretrained(student)
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(8))
    argv = ["train", *TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--student", str(student)]
    argv += ["--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]
    assert main([*argv, "--embedding_weight", "1"]) == 2
    assert main([*argv, "--in_batch_weight", "1", "--in_batch_temperature", "0.2"]) == 0
    history = json.loads((tmp_path / "o" / "trainer_state.json").read_text())["log_history"]
    assert all(log["in_batch_loss"] > 0 for log in history if "loss" in log)
    card = (tmp_path / "o" / "README.md").read_text()
    assert "in_batch_weight=1.0" in card and "in_batch_temperature=0.2" in card
    assert "in_batch_teacher_similarity=cosine" in card
    # a dot-product teacher's embeddings are scored by dot products, as its margins are
    assert main([*argv, "--in_batch_weight", "1", "--teacher_similarity", "dot", "--max_steps", "1"]) == 0
    assert "in_batch_teacher_similarity=dot" in (tmp_path / "o" / "README.md").read_text()


def test_train_command_refuses_a_cross_encoder_teacher_for_the_in_batch_term(tmp_path, teacher_dir, capsys):  # noqa: F811
    data = write_jsonl(tmp_path / "t.jsonl", topic_rows(6))
    argv = ["train", *TRAIN, "--train_file", str(data), "--teacher", str(teacher_dir), "--in_batch_weight", "1"]
    argv += ["--teacher_type", "cross-encoder", "--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "in_batch_weight: the teacher's embeddings are needed" in err and "--in_batch_weight 0" in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())

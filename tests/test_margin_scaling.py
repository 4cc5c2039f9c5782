"""Global rescaling of teacher margins: hand-computed values, train statistics on every split, student moments; the
trainer applies ``MarginDistillConfig.teacher_margin_scaling`` itself, once, and the card and metrics.json say so."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_margin import MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins
from hf_margin.data.margin_scaling import (
    scale_teacher_margins,
    standardize_teacher_margins,
    student_margin_statistics,
    teacher_margin_statistics,
)
from hf_margin.models.kind import StudentKind

from .conftest import TopicTeacher, embed_one_by_one, make_triplets


def margins_dataset(rows: list[list[float]]) -> Dataset:
    return Dataset.from_dict(
        {
            "query": ["q"] * len(rows),
            "positive": ["p"] * len(rows),
            "negatives": [["n"] * len(r) for r in rows],
            "teacher_pos_score": [4.0] * len(rows),
            "teacher_margins": rows,
        }
    )


def test_standardisation_matches_hand_computed_values_on_ragged_rows():
    """Margins [[1, 3], [5]]: mean 3 and population std sqrt(8/3) over all three entries, not per row."""
    ds = margins_dataset([[1.0, 3.0], [5.0]])
    mean, std = teacher_margin_statistics(ds)
    assert mean == pytest.approx(3.0) and std == pytest.approx(math.sqrt(8 / 3))
    out = standardize_teacher_margins(ds, mean=mean, std=std, target_mean=0.2, target_std=0.1)
    z = 2 / math.sqrt(8 / 3)
    expected = [[0.2 - 0.1 * z, 0.2], [0.2 + 0.1 * z]]
    for row, want in zip(out["teacher_margins"], expected):
        assert row == pytest.approx(want, abs=1e-6)
    assert teacher_margin_statistics(out) == pytest.approx((0.2, 0.1), abs=1e-6)
    assert out["teacher_pos_score"] == [4.0, 4.0]  # raw teacher scores are kept


def test_every_split_uses_the_train_statistics():
    """Guards against standardising dev with its own mean/std, which would make train and dev targets disagree."""
    train, dev = margins_dataset([[0.0, 2.0], [4.0, 6.0]]), margins_dataset([[10.0]])
    scaled, stats = scale_teacher_margins({"train": train, "validation": dev}, "zscore")
    assert stats["teacher_mean"] == pytest.approx(3.0) and stats["teacher_std"] == pytest.approx(math.sqrt(5))
    assert scaled["validation"]["teacher_margins"][0][0] == pytest.approx(7 / math.sqrt(5), abs=1e-6)
    assert scale_teacher_margins({"train": train}, "none") == ({"train": train}, {})


def test_constant_or_missing_margins_are_refused():
    with pytest.raises(ValueError, match="cannot be standardised"):
        standardize_teacher_margins(margins_dataset([[1.0, 1.0]]), mean=1.0, std=0.0)
    with pytest.raises(ValueError, match="attach_teacher_margins"):
        teacher_margin_statistics(Dataset.from_dict({"query": ["q"]}))
    with pytest.raises(ValueError, match="teacher_margin_scaling"):
        scale_teacher_margins({"train": margins_dataset([[1.0, 2.0]])}, "minmax")


def test_student_margin_statistics_equal_a_direct_per_triplet_computation(bi_encoder, tokenizer):
    """The student's cosine margins s(q,p) - s(q,n), over every (ragged) negative, embedded one text at a time."""
    ds = make_triplets(12, num_negatives=3, ragged=True)
    scorer = StudentKind("bi-encoder", max_length=16).scorer(bi_encoder, tokenizer)
    mean, std = student_margin_statistics(scorer, ds)

    def emb(text: str) -> torch.Tensor:
        return embed_one_by_one(bi_encoder, tokenizer, [text], max_length=16)[0]

    margins = []
    for row in ds:
        q, p = emb(row["query"]), emb(row["positive"])
        for n in row["negatives"]:
            cos = torch.nn.functional.cosine_similarity
            margins.append(float(cos(q, p, dim=0) - cos(q, emb(n), dim=0)))
    assert mean == pytest.approx(float(np.mean(margins)), abs=1e-5)
    assert std == pytest.approx(float(np.std(margins)), abs=1e-5)
    assert std > 0


# ---- the trainer applies it ------------------------------------------------------------------------------------


def trainer_config(tmp_path, **kwargs) -> MarginDistillConfig:
    return MarginDistillConfig(
        output_dir=str(tmp_path / "out"), report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
        max_steps=2, per_device_train_batch_size=4, **kwargs,
    )  # fmt: skip


def flat(rows) -> np.ndarray:
    return np.asarray([m for row in rows for m in row], dtype=np.float64)


def test_python_route_trains_on_zscored_margins_and_records_the_option(tmp_path, bi_encoder, tokenizer):
    """`MarginDistillConfig(teacher_margin_scaling="zscore")` alone: the trainer standardises the train margins (mean
    0, std 1: what its data loader hands the loss), the eval split with the train statistics, and metrics.json and
    the card record the option and the statistics."""
    teacher = TopicTeacher()
    train = attach_teacher_margins(make_triplets(16, seed=0), teacher, cache_dir=tmp_path / "cache")
    held_out = attach_teacher_margins(make_triplets(6, seed=1), teacher, cache_dir=tmp_path / "cache")
    args = trainer_config(tmp_path, teacher_margin_scaling="zscore")
    trainer = MarginDistillTrainer(
        bi_encoder, args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer
    )
    raw = flat(train["teacher_margins"])
    mean, std = raw.mean(), raw.std()
    trained_on = flat(trainer.train_dataset["teacher_margins"])
    assert trained_on.mean() == pytest.approx(0.0, abs=1e-6) and trained_on.std() == pytest.approx(1.0, abs=1e-6)
    assert trained_on == pytest.approx((raw - mean) / std, abs=1e-6)
    batch = next(iter(trainer.get_train_dataloader()))
    loaded = batch["teacher_margins"][batch["negatives_mask"]].double().numpy()
    assert all(np.isclose(trained_on, m, atol=1e-5).any() for m in loaded)  # the loss reads the scaled margins
    assert flat(trainer.eval_dataset["teacher_margins"]) == pytest.approx(
        (flat(held_out["teacher_margins"]) - mean) / std, abs=1e-6
    )
    assert trainer.margin_scaling_stats == pytest.approx(
        {"teacher_mean": mean, "teacher_std": std, "target_mean": 0.0, "target_std": 1.0}
    )
    trainer.train()
    trainer.save_model()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["loss_options"]["teacher_margin_scaling"] == "zscore"
    assert metrics["teacher_margin_scaling"] == pytest.approx(trainer.margin_scaling_stats)
    assert "`teacher_margin_scaling=zscore`" in (tmp_path / "out" / "README.md").read_text()


def test_auto_is_none_in_the_trainer_and_student_for_a_cross_encoder_teacher(tmp_path, bi_encoder, tokenizer, caplog):
    """The trainer does not know the teacher: there 'auto' is 'none' (margins as given, said in the log); told a
    cross-encoder teacher (as `hf-margin train` tells it), 'auto' is 'student', applied once by the trainer."""
    train = attach_teacher_margins(make_triplets(12), TopicTeacher(), cache_dir=tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="hf_margin.training.config")
    args = trainer_config(tmp_path)
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=train, processing_class=tokenizer)
    assert args.teacher_margin_scaling == "none" and trainer.margin_scaling_stats == {}
    assert flat(trainer.train_dataset["teacher_margins"]) == pytest.approx(flat(train["teacher_margins"]))
    assert "teacher_margin_scaling 'auto' is 'none'" in caplog.text

    args = trainer_config(tmp_path)
    assert args.resolve_teacher_margin_scaling("bi-encoder") == "none"
    args = trainer_config(tmp_path)
    assert args.resolve_teacher_margin_scaling("cross-encoder") == "student" == args.teacher_margin_scaling
    assert "teacher_margin_scaling 'auto' is 'student'" in caplog.text
    assert args.resolve_teacher_margin_scaling(None) == "student"  # resolved once: the trainer keeps it
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=train, processing_class=tokenizer)
    expected = student_margin_statistics(args.student_kind.scorer(bi_encoder, tokenizer), train)
    stats = trainer.margin_scaling_stats
    assert (stats["target_mean"], stats["target_std"]) == pytest.approx(expected)
    trained_on = flat(trainer.train_dataset["teacher_margins"])
    assert (trained_on.mean(), trained_on.std()) == pytest.approx(expected, abs=1e-5)


def test_bad_scaling_and_tokenised_data_for_student_scaling_are_refused(tmp_path, bi_encoder, tokenizer):
    with pytest.raises(ValueError, match="teacher_margin_scaling must be one of auto, none, zscore, student"):
        trainer_config(tmp_path, teacher_margin_scaling="minmax")
    from hf_margin import tokenize_triplets

    train = attach_teacher_margins(make_triplets(8), TopicTeacher(), cache_dir=tmp_path / "cache")
    tokens = tokenize_triplets(train, tokenizer)
    with pytest.raises(ValueError, match="untokenised"):
        MarginDistillTrainer(
            bi_encoder, trainer_config(tmp_path, teacher_margin_scaling="student"), train_dataset=tokens
        )
    zscored = MarginDistillTrainer(
        bi_encoder, trainer_config(tmp_path, teacher_margin_scaling="zscore"), train_dataset=tokens
    )
    assert flat(zscored.train_dataset["teacher_margins"]).std() == pytest.approx(1.0, abs=1e-6)

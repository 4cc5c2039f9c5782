"""The cross-encoder teacher recipe: `hf-margin train-teacher`, and the cross-architecture distillation after it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_margin.app.cli import main
from hf_margin.app.recipes import dump_recipe, parse_recipe
from hf_margin.app.stsb import read_sts_file
from hf_margin.app.teacher_training import TEACHER_DATACLASSES
from hf_margin.evaluation.metrics import sts_correlation
from hf_margin.models.scoring import CrossEncoderTeacher

from .conftest import write_tiny_stsb, write_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny cross-encoder teacher trained by the CLI on the tiny STS-B; returns (teacher dir, STS-B dir)."""
    tmp = tmp_path_factory.mktemp("teacher")
    base = write_tiny_teacher(tmp / "base")
    write_tiny_stsb(tmp / "stsb")
    out = tmp / "teacher"
    recipe = tmp / "teacher.yaml"
    dump_recipe(
        recipe,
        base_model=str(base),
        data_dir=str(tmp / "stsb"),
        max_length=16,
        output_dir=str(out),
        learning_rate=3e-3,
        num_train_epochs=40,
        per_device_train_batch_size=8,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    assert main(["train-teacher", str(recipe)]) == 0
    return out, tmp / "stsb"


def test_teacher_fits_the_gold_scores_and_reports_the_saved_models_test_spearman(trained_teacher):
    """The fresh one-logit head regresses the 0-5 gold score: the saved teacher ranks its 60 training pairs like
    the gold scores (a tiny random BERT memorises them; it is too small to generalise), its raw logits live on the
    0-5 scale (not squashed to 0-1), and metrics.json and the model card report the saved model's test figure."""
    out, stsb = trained_teacher
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_pairs"] == 60
    teacher = CrossEncoderTeacher.from_pretrained(out, max_length=16, show_progress=False)
    train = read_sts_file(stsb / "sts-train.csv")
    scores = teacher.score_pairs(train["sentence1"], train["sentence2"])
    gold = np.asarray(train["score"])
    assert sts_correlation(scores, gold)["spearman"] > 80
    assert abs(scores.mean() - gold.mean()) < 0.5 and scores.max() > 3.0  # the raw logit is on the 0-5 scale
    test = read_sts_file(stsb / "sts-test.csv")
    reported = sts_correlation(teacher.score_pairs(test["sentence1"], test["sentence2"]), np.asarray(test["score"]))
    assert metrics["stsb_test_spearman"] == pytest.approx(reported["spearman"], abs=1e-4)
    card = (out / "README.md").read_text()
    assert f"{metrics['stsb_test_spearman']:.2f}" in card and "CrossEncoder(" in card


def test_teacher_scores_are_the_raw_logits_in_every_loader(trained_teacher):
    """No hidden rescaling: CrossEncoderTeacher, AutoModelForSequenceClassification and sentence-transformers'
    CrossEncoder give the same number for a pair."""
    from sentence_transformers import CrossEncoder

    out, _ = trained_teacher
    pairs = [("sun1 sun2 sun3", "sun4 sun5 sun6"), ("sun1 sun2 sun3", "car1 car2 car3")]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(**tok([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt"))
    raw = logits.logits.squeeze(-1).numpy()
    teacher = CrossEncoderTeacher.from_pretrained(out, show_progress=False)
    np.testing.assert_allclose(teacher.score_pairs(*zip(*pairs)), raw, atol=1e-5)
    ce = CrossEncoder(str(out), device="cpu", activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ce.predict(pairs), raw, atol=1e-5)


def test_cross_encoder_teacher_distils_into_a_bi_encoder_with_student_scaled_margin_mse(
    trained_teacher, tmp_path, caplog
):
    """The distillation recipe's path: cross-encoder teacher margins (cached), a bi-encoder miner, the student's
    own margin statistics as the Margin-MSE target scale (`teacher_margin_scaling: auto`, the default, resolved to
    'student' for a cross-encoder teacher, said in the log); the run writes metrics with the scaling used."""
    teacher_dir, stsb = trained_teacher
    bi = write_tiny_teacher(tmp_path / "bi")
    out = tmp_path / "run"
    recipe = tmp_path / "distil.yaml"
    dump_recipe(
        recipe,
        teacher=str(teacher_dir),
        teacher_type="cross-encoder",
        student=str(bi),
        student_layers=[0],
        miner=str(bi),
        data_dir=str(stsb),
        cache_dir=str(tmp_path / "cache"),
        num_negatives=2,
        skip_top=1,
        sample_from=6,
        loss="margin_mse",
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=8,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    caplog.set_level("INFO", logger="hf_margin.training.config")
    assert main(["train", str(recipe)]) == 0
    assert "teacher_margin_scaling 'auto' is 'student': a cross-encoder teacher" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    scaling = metrics["teacher_margin_scaling"]
    assert scaling["teacher_std"] > 0 and 0 < scaling["target_std"] < scaling["teacher_std"]
    assert metrics["loss_options"]["teacher_margin_scaling"] == "student"
    teacher_metrics = json.loads((teacher_dir / "metrics.json").read_text())
    assert metrics["stsb_test_spearman"]["teacher"] == pytest.approx(teacher_metrics["stsb_test_spearman"], abs=1e-4)
    assert (out / "modules.json").is_file()


def test_shipped_cross_architecture_recipes_fit_together():
    """`make teacher` writes where `make distil` reads: the distillation recipe's teacher is the teacher recipe's
    output, scored as a cross-encoder, with a bi-encoder miner and a bi-encoder student."""
    teacher_recipe = ROOT / "recipes" / "teacher-cross-encoder-stsb.yaml"
    teacher_args, training_args = parse_recipe(teacher_recipe, dataclasses=TEACHER_DATACLASSES)
    assert teacher_args.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    model_args, data_args, _, args = parse_recipe(ROOT / "recipes" / "stsb-cross-encoder-adaptive.yaml")
    assert model_args.teacher == training_args.output_dir == "outputs/teacher-cross-encoder-stsb"
    assert model_args.teacher_type == "cross-encoder" and data_args.miner is not None
    assert args.student_type == "bi-encoder" and args.loss == "adaptive"
    assert yaml.safe_load(teacher_recipe.read_text())["base_model"] == teacher_args.base_model


def test_missing_teacher_directory_names_the_make_target(tmp_path, capsys):
    """`make distil` before `make teacher`: a clear one-line error naming the command, exit 2, before any data is
    read or scored."""
    argv = ["score-teacher", str(ROOT / "recipes" / "stsb-cross-encoder-adaptive.yaml")]
    argv += ["--teacher", "outputs/no-such-teacher", "--cache_dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert "make teacher" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()

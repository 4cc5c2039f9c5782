"""The STS-B task as a builder: gold pairs (gold score >= ``min_positive_score``, default 3) with teacher-mined
negatives, optional corpus mode on its train sentences (``unlabelled_file: stsb:train``); dev Spearman during
training, test Spearman / Pearson and duplicate retrieval before, after and for the teacher."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from hf_margin.app.arguments import DEFAULT_TEACHER, DataArguments, EvalArguments, ModelArguments
from hf_margin.app.loading import (
    check_teachers,
    checked_model_path,
    load_miner,
    load_teacher,
    require_bi_encoder_miner,
)
from hf_margin.app.stsb import load_stsb, positive_pairs, stsb_evaluators, unique_sentences
from hf_margin.app.tasks.common import (
    TaskData,
    Unlabelled,
    add_teacher_built,
    corpus_note,
    mine_split,
    score_split,
    user_evaluators,
)
from hf_margin.data.sources import load_corpus
from hf_margin.models.scoring import BiEncoderScorer
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)

STSB_MIN_POSITIVE_SCORE = 3.0  # gold score (0-5) a pair needs to be a positive, unless min_positive_score says


def stsb_min_score(data_args: DataArguments) -> float:
    """The gold score an STS-B pair needs to be a positive."""
    return STSB_MIN_POSITIVE_SCORE if data_args.min_positive_score is None else data_args.min_positive_score


def build_triplets(
    model_args: ModelArguments,
    data_args: DataArguments,
    teacher: Any = None,
    *,
    score_margins: bool = True,
    splits: Any = None,
    miner: BiEncoderScorer | None = None,
) -> tuple[dict[str, Dataset], dict[str, Dataset], Any]:
    """STS-B task: splits and triplets ``{"train", "validation"}`` (positives by gold score, negatives mined from
    the same split by the teacher or ``miner``, teacher margins attached unless ``score_margins`` is false);
    all cached. Returns (splits, triplets, teacher)."""
    splits = splits if splits is not None else load_stsb(data_args.data_dir)
    teacher = teacher if teacher is not None else load_teacher(model_args)
    miner = miner if miner is not None else load_miner(model_args, data_args, teacher)
    triplets = {}
    for split in ("train", "validation"):
        pairs = positive_pairs(splits[split], stsb_min_score(data_args))
        if split == "train" and data_args.max_train_examples is not None:
            pairs = pairs.select(range(min(data_args.max_train_examples, len(pairs))))
        fresh = data_args.fresh_negatives_per_epoch and split == "train"  # keep (and score) every candidate
        mined = mine_split(
            pairs,
            unique_sentences(splits[split]),
            miner,
            data_args,
            fresh=fresh,
            teacher=teacher if score_margins else None,
        )
        triplets[split] = score_split(mined, teacher, data_args, fresh=fresh) if score_margins else mined
        logger.info("%s: %d triplets with %d negatives each", split, len(triplets[split]), data_args.num_negatives)
    return splits, triplets, teacher


def build_stsb_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """The STS-B task: gold pairs (score >= min_positive_score) with teacher-mined negatives; dev Spearman during
    training; STS-B test Spearman/Pearson and duplicate retrieval before, after and for the teacher."""
    extra = user_evaluators(eval_args, args)
    if model_args.student:
        checked_model_path(model_args.student, "student")
    teacher_ref = model_args.teacher or DEFAULT_TEACHER
    require_bi_encoder_miner(model_args, data_args, teacher_ref)
    check_teachers(model_args, teacher_ref)
    splits = load_stsb(data_args.data_dir)  # read (and checked) before any model loads
    unlabelled = None  # corpus mode beside the gold pairs (never dev or test sentences)
    if data_args.unlabelled_file == "stsb:train":
        unlabelled = Unlabelled(unique_sentences(splits["train"]), source="stsb:train")
    elif data_args.unlabelled_file:
        unlabelled = Unlabelled(load_corpus(data_args.unlabelled_file), source=data_args.unlabelled_file)
    teacher = load_teacher(model_args, teacher_ref)
    miner = load_miner(model_args, data_args, teacher)
    splits, triplets, teacher = build_triplets(
        model_args, data_args, teacher, score_margins=args.needs_teacher, splits=splits, miner=miner
    )
    triplets["train"], gold_count, corpus_count = add_teacher_built(
        triplets["train"], unlabelled, data_args, lambda: miner, teacher, args.needs_teacher
    )
    return TaskData(
        train=triplets["train"],
        validation=triplets["validation"],
        teacher=teacher,
        teacher_ref=teacher_ref,
        train_evaluators={**stsb_evaluators(splits["validation"], "stsb_dev", duplicates=False), **extra},
        final_evaluators={
            **stsb_evaluators(splits["test"], "stsb_test", duplicates=args.student_kind.is_bi_encoder),
            **extra,
        },
        dataset="sentence-transformers/stsb",
        description=(
            f"STS Benchmark train split: {gold_count} gold triplets (query = sentence 1, positive = sentence 2 "
            f"with gold score >= {stsb_min_score(data_args)}, {data_args.num_negatives} hard negatives mined from "
            f"ranks [{data_args.skip_top}, {data_args.sample_from}))."
            + corpus_note(gold_count, corpus_count, unlabelled, data_args)
        ),
        info={
            "source": str(data_args.data_dir or "shipped STS-B"),
            "format": "stsb",
            "train_triplets": len(triplets["train"]),
            "gold_triplets": gold_count,
            "corpus_triplets": corpus_count,
        },
    )

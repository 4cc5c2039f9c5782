"""Your own data as a task: a file or dataset in any supported format (negatives mined for pairs, teacher margins
attached unless the rows carry scores), plus or instead of triplets the teacher builds from unlabelled text:
corpus mode (``unlabelled_file``) or query–corpus mode (``query_file`` ranked against ``corpus_file``)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from datasets import Dataset

from hf_margin.app.arguments import DEFAULT_TEACHER, DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.loading import (
    check_teachers,
    checked_model_path,
    load_miner,
    load_teacher,
    require_bi_encoder_miner,
)
from hf_margin.app.tasks.common import (
    TaskData,
    Unlabelled,
    add_teacher_built,
    corpus_note,
    mine_split,
    score_split,
    unlabelled_description,
    user_evaluators,
    with_generated_queries,
)
from hf_margin.data.formats import SCORE_COLUMNS, DataFormat, normalize_dataset
from hf_margin.data.sources import load_corpus, load_data_file, load_named_dataset
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)


def read_unlabelled(data_args: DataArguments) -> Unlabelled | None:
    """The unlabelled text of corpus mode (``unlabelled_file``) or query–corpus mode (``query_file`` with
    ``corpus_file``), read and checked before any model loads; None without either."""
    if data_args.query_file or data_args.query_generator:
        queries = load_corpus(data_args.query_file) if data_args.query_file else []
        unlabelled = Unlabelled(queries, load_corpus(data_args.corpus_file), source=data_args.query_file or "")
        return with_generated_queries(unlabelled, data_args)
    if data_args.unlabelled_file:
        return Unlabelled(load_corpus(data_args.unlabelled_file), source=data_args.unlabelled_file)
    return None


def _read_user_split(data_args: DataArguments, which: str) -> tuple[Dataset, str] | None:
    if which == "train":
        if data_args.train_file:
            return load_data_file(data_args.train_file), data_args.train_file
        return load_named_dataset(
            data_args.dataset_name, config=data_args.dataset_config, split=data_args.train_split
        ), f"{data_args.dataset_name}[{data_args.train_split}]"
    if data_args.validation_file:
        return load_data_file(data_args.validation_file), data_args.validation_file
    if data_args.dataset_name and data_args.validation_split:
        return load_named_dataset(
            data_args.dataset_name, config=data_args.dataset_config, split=data_args.validation_split
        ), f"{data_args.dataset_name}[{data_args.validation_split}]"
    return None


def _teacher_plan(fmt: DataFormat, model_args: ModelArguments, args: MarginDistillConfig, source: str) -> str | None:
    """Which teacher to load for data of format ``fmt`` (None: none), or refuse a teacher named for scored data."""
    named = model_args.teacher or (model_args.teacher_ensemble or [None])[0]
    if fmt.has_scores:
        if named and not model_args.rescore:
            raise UserError(
                f"{source} carries teacher scores ({fmt.score_source}) and a teacher ({named}) was named: "
                "train on the data's own scores (drop --teacher/--teacher_ensemble) or replace them (--rescore true)"
            )
        return (model_args.teacher or DEFAULT_TEACHER) if model_args.rescore else None
    if args.needs_teacher or not fmt.has_negatives or named:
        return model_args.teacher or DEFAULT_TEACHER
    return None


def build_user_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """Your data: read, recognise the format, validate (all before any model is loaded), then mine negatives
    for pairs, and attach teacher margins unless the data brought its scores; every step cached."""
    if not (data_args.train_file or data_args.dataset_name):  # no labels: the teacher builds everything
        return build_unlabelled_task(model_args, data_args, eval_args, args)
    train_raw, source = _read_user_split(data_args, "train")
    columns = data_args.columns
    train, fmt = normalize_dataset(train_raw, column_map=columns, source=source)
    logger.info("%s: %d rows in the %s format (teacher scores: %s)", source, len(train), fmt.name, fmt.score_source)
    held = _read_user_split(data_args, "validation")
    validation, vfmt = (None, None)
    if held is not None:
        validation, vfmt = normalize_dataset(held[0], column_map=columns, source=held[1])
        if vfmt.has_scores != fmt.has_scores:
            raise UserError(f"{held[1]} and {source} must both carry teacher scores or both not")
    if data_args.fresh_negatives_per_epoch and fmt.has_negatives:
        brings = f"teacher scores ({fmt.score_source}) for fixed negatives" if fmt.has_scores else "its own negatives"
        raise UserError(
            f"--fresh_negatives_per_epoch redraws negatives from the candidates mining keeps, but {source} brings "
            f"{brings}, so there are none: give pairs (query, positive) to mine from, or drop the option"
        )
    if not fmt.has_scores and not args.needs_teacher and fmt.has_negatives:
        logger.info("loss=%s reads no teacher margins: no teacher is loaded", args.loss)
    teacher_ref = _teacher_plan(fmt, model_args, args, source)
    if teacher_ref is None and args.needs_teacher and not fmt.has_scores:
        raise UserError("this loss needs teacher margins: name a teacher (--teacher) or bring scores in the data")
    if teacher_ref is None and not model_args.student:
        why = f"{source} carries its own teacher scores" if fmt.has_scores else f"loss={args.loss} reads no teacher"
        raise UserError(
            f"no teacher is loaded ({why}), so the student cannot default to the teacher's checkpoint: name it with "
            "--student MODEL (e.g. --student sentence-transformers/all-MiniLM-L6-v2)"
        )
    evaluators = user_evaluators(eval_args, args)
    needs_mining = not fmt.has_negatives or (validation is not None and not vfmt.has_negatives)
    teacher_builds = bool(data_args.unlabelled_file or data_args.query_file)
    if needs_mining or teacher_builds:
        require_bi_encoder_miner(model_args, data_args, teacher_ref)
    if teacher_builds and teacher_ref is None:
        raise UserError("corpus mode needs a teacher to build and score triplets: name --teacher (with --rescore "
                        "true for data that carries scores)")  # fmt: skip
    if teacher_ref:
        check_teachers(model_args, teacher_ref)
    checked_model_path(model_args.student or teacher_ref, "student")
    if data_args.miner:
        checked_model_path(data_args.miner, "miner")
    corpus = load_corpus(data_args.corpus_file) if data_args.corpus_file else None  # read (and checked) early
    unlabelled = read_unlabelled(data_args)
    if data_args.max_train_examples is not None:
        train = train.select(range(min(data_args.max_train_examples, len(train))))

    if fmt.has_scores and model_args.rescore:
        train = train.remove_columns([c for c in SCORE_COLUMNS if c in train.column_names])
        if validation is not None:
            validation = validation.remove_columns([c for c in SCORE_COLUMNS if c in validation.column_names])
    teacher = load_teacher(model_args, teacher_ref) if teacher_ref else None
    miner = functools.cache(lambda: load_miner(model_args, data_args, teacher))  # loaded once, when first needed
    splits = {"train": train, "validation": validation}
    mined_from = None
    for name, split in splits.items():
        if split is None:
            continue
        fresh = data_args.fresh_negatives_per_epoch and name == "train"  # keep (and score) every candidate
        if "negatives" not in split.column_names:
            texts = corpus or list(dict.fromkeys(split["positive"]))
            mined_from = data_args.corpus_file or "the data's own positives"
            logger.info(
                "%s: mining %d negatives per query from %s (%d texts)",
                name,
                data_args.num_negatives,
                mined_from,
                len(texts),
            )
            split = mine_split(
                split, texts, miner(), data_args, fresh=fresh, teacher=teacher if args.needs_teacher else None
            )
        if teacher is not None and args.needs_teacher and "teacher_margins" not in split.column_names:
            split = score_split(split, teacher, data_args, fresh=fresh, rescore=model_args.rescore)
        splits[name] = split
    splits["train"], gold_count, corpus_count = add_teacher_built(
        splits["train"], unlabelled, data_args, miner, teacher, args.needs_teacher
    )
    scores = (
        f"teacher scores from the data ({fmt.score_source})"
        if fmt.has_scores and not model_args.rescore
        else (f"teacher margins of {teacher_ref}" if teacher_ref and args.needs_teacher else "no teacher scores")
    )
    negatives = f"negatives mined from {mined_from}" if mined_from else "negatives from the data"
    description = f"{source}: {gold_count} triplets ({fmt.name} format; {negatives}; {scores})."
    description += corpus_note(gold_count, corpus_count, unlabelled, data_args)
    return TaskData(
        train=splits["train"],
        validation=splits["validation"],
        teacher=teacher,
        teacher_ref=teacher_ref,
        train_evaluators=evaluators,
        final_evaluators=evaluators,
        dataset=data_args.dataset_name or Path(source).name,
        description=description,
        info={
            "source": source,
            "format": fmt.name,
            "score_source": fmt.score_source,
            "rows": len(train),
            "train_triplets": len(splits["train"]),
            "gold_triplets": gold_count,
            "corpus_triplets": corpus_count,
            "mined_from": mined_from,
        },
    )


def build_unlabelled_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """No labelled data: the teacher builds every triplet, from ``unlabelled_file`` (corpus mode) or from
    ``query_file`` against ``corpus_file`` (query–corpus mode)."""
    unlabelled = read_unlabelled(data_args)  # read (and checked) before any model loads
    evaluators = user_evaluators(eval_args, args)
    teacher_ref = model_args.teacher or DEFAULT_TEACHER
    require_bi_encoder_miner(model_args, data_args, teacher_ref)
    check_teachers(model_args, teacher_ref)
    checked_model_path(model_args.student or teacher_ref, "student")
    teacher = load_teacher(model_args, teacher_ref)
    miner = functools.cache(lambda: load_miner(model_args, data_args, teacher))
    train, _, _ = add_teacher_built(None, unlabelled, data_args, miner, teacher, args.needs_teacher)
    documents = f" and {len(unlabelled.documents)} documents of {data_args.corpus_file}" if unlabelled.documents else ""
    return TaskData(
        train=train,
        validation=None,
        teacher=teacher,
        teacher_ref=teacher_ref,
        train_evaluators=evaluators,
        final_evaluators=evaluators,
        dataset=Path(unlabelled.source).name,
        description=(
            f"{len(train)} triplets the teacher built from the {len(unlabelled.queries)} unlabelled texts of "
            f"{unlabelled.source}{documents} ({unlabelled_description(unlabelled, data_args)}); no gold label."
        ),
        info={
            "source": unlabelled.source,
            "format": "query-corpus" if unlabelled.documents is not None else "corpus",
            "score_source": None,
            "rows": len(unlabelled.queries),
            "train_triplets": len(train),
            "gold_triplets": 0,
            "corpus_triplets": len(train),
        },
    )

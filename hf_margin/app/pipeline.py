"""The jobs behind the ``hf-margin`` command: build the training set (your data or the STS-B task), score it with
the teacher (cached), train, evaluate before / after / teacher, and save everything under ``output_dir``."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from huggingface_hub import constants
from transformers import AutoTokenizer

from hf_margin.app.arguments import DEFAULT_TEACHER, DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.stsb import load_stsb, positive_pairs, stsb_evaluators, unique_sentences
from hf_margin.config import MarginDistillConfig
from hf_margin.evaluation import RetrievalEvaluator, StsEvaluator, TripletEvaluator
from hf_margin.formats import SCORE_COLUMNS, DataFormat, normalize_dataset
from hf_margin.fresh_negatives import FreshNegatives
from hf_margin.margin_scaling import scale_teacher_margins
from hf_margin.margins import attach_band_margins, attach_teacher_margins
from hf_margin.mining import build_corpus_triplets as mine_corpus
from hf_margin.mining import mine_hard_negatives
from hf_margin.modeling import StudentKind
from hf_margin.resolve import packaged_model_path, resolve_model
from hf_margin.scoring import BiEncoderScorer, CrossEncoderScorer
from hf_margin.sources import load_corpus, load_data_file, load_named_dataset

logger = logging.getLogger(__name__)

Evaluator = Callable[[Any], dict[str, float]]


# ---- models -------------------------------------------------------------------------------------------


def checked_model_path(reference: str, role: str) -> str:
    """``resolve_model(reference)``, refusing early (one clear line) what cannot load: a missing local directory,
    or offline a Hub id that is neither packaged nor in the Hub cache."""
    path = Path(reference).expanduser()
    looks_local = path.is_absolute() or reference.startswith((".", "~", "outputs/")) or reference.count("/") > 1
    if path.is_dir():
        return str(path)
    if looks_local:
        hint = " (train it first: `make teacher`, or pass a model directory or Hub id)" if role == "teacher" else ""
        raise UserError(f"{role} {reference!r}: no such directory (relative to {Path.cwd()}){hint}")
    resolved = resolve_model(reference)
    if resolved == reference and constants.HF_HUB_OFFLINE and packaged_model_path(reference) is None:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(reference, "config.json"), str):
            raise UserError(
                f"{role} {reference!r} not found: not a local directory, not in the Hub cache, and the Hub is off "
                "(HF_HUB_OFFLINE=1). Give a local model directory, or run online once to cache it"
            )
    return resolved


def _load(role: str, reference: str, loader: Callable[[str], Any]) -> Any:
    path = checked_model_path(reference, role)
    try:
        return loader(path)
    except (OSError, ValueError) as exc:  # no such repo / no connection / no weights / bad layer indices
        raise UserError(f"{role} {reference!r} could not be loaded: {str(exc).splitlines()[0]}") from exc


def load_teacher(model_args: ModelArguments, reference: str | None = None) -> BiEncoderScorer | CrossEncoderScorer:
    """The teacher scorer named by ``model_args`` (or ``reference``), on this process's device."""
    reference = reference or model_args.teacher or DEFAULT_TEACHER
    common = {"trust_remote_code": model_args.trust_remote_code, "batch_size": model_args.teacher_batch_size}
    if model_args.teacher_type == "cross-encoder":
        return _load(
            "teacher",
            reference,
            lambda p: CrossEncoderScorer.from_pretrained(p, apply_sigmoid=model_args.teacher_sigmoid, **common),
        )
    return _load(
        "teacher",
        reference,
        lambda p: BiEncoderScorer.from_pretrained(
            p, pooling=model_args.teacher_pooling, similarity_fn=model_args.teacher_similarity, **common
        ),
    )


def require_bi_encoder_miner(model_args: ModelArguments, data_args: DataArguments, teacher_ref: str | None) -> None:
    """Refuse, before any model loads, a run that must rank texts (mining, corpus mode) with no bi-encoder to do it."""
    if not data_args.miner and (teacher_ref is None or model_args.teacher_type == "cross-encoder"):
        raise UserError("texts must be ranked by a bi-encoder (mining, corpus mode): set --miner (a cross-encoder "
                        "teacher cannot)")  # fmt: skip


def load_miner(model_args: ModelArguments, data_args: DataArguments, teacher: Any) -> BiEncoderScorer:
    """The bi-encoder that mines negatives: ``miner``, else the teacher when it is a bi-encoder."""
    if data_args.miner is not None:
        return _load(
            "miner",
            data_args.miner,
            lambda p: BiEncoderScorer.from_pretrained(p, batch_size=model_args.teacher_batch_size),
        )
    if isinstance(teacher, BiEncoderScorer):
        return teacher
    raise UserError("negatives must be mined, and a cross-encoder teacher cannot mine: set --miner to a bi-encoder")


# ---- the training set ---------------------------------------------------------------------------------


@dataclass
class TaskData:
    """What a task hands to training: triplets, the teacher (None when the data brought its scores),
    evaluators during training and at the end, and what the card and metrics.json say of the data."""

    train: Dataset
    validation: Dataset | None
    teacher: Any
    teacher_ref: str | None
    train_evaluators: dict[str, Evaluator] = field(default_factory=dict)
    final_evaluators: dict[str, Evaluator] = field(default_factory=dict)
    dataset: str | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def user_evaluators(eval_args: EvalArguments, args: MarginDistillConfig) -> dict[str, Evaluator]:
    """Evaluators of ``sts_eval_file`` (name ``sts``) and ``ir_eval_dir`` (name ``ir``), read and checked now;
    each remembers its ``source`` (for the card's results)."""
    evaluators: dict[str, Evaluator] = {}
    if eval_args.sts_eval_file:
        evaluators["sts"] = StsEvaluator.from_file(eval_args.sts_eval_file, name="sts")
        evaluators["sts"].source = eval_args.sts_eval_file
    if eval_args.ir_eval_dir:
        if not args.student_kind.is_bi_encoder:
            raise UserError("--ir_eval_dir searches a corpus by embeddings: it needs a bi-encoder student")
        evaluators["ir"] = RetrievalEvaluator.from_beir(eval_args.ir_eval_dir, split=eval_args.ir_split, name="ir")
        evaluators["ir"].source = eval_args.ir_eval_dir
    return evaluators


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
    if fmt.has_scores:
        if model_args.teacher and not model_args.rescore:
            raise UserError(
                f"{source} carries teacher scores ({fmt.score_source}) and --teacher {model_args.teacher} was named: "
                "train on the data's own scores (drop --teacher) or replace them (--rescore true)"
            )
        return (model_args.teacher or DEFAULT_TEACHER) if model_args.rescore else None
    if args.needs_teacher or not fmt.has_negatives or model_args.teacher:
        return model_args.teacher or DEFAULT_TEACHER
    return None


def build_user_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """Your data: read, recognise the format, validate (all before any model is loaded), then mine negatives
    for pairs, and attach teacher margins unless the data brought its scores; every step cached."""
    if not (data_args.train_file or data_args.dataset_name):  # corpus mode alone: the teacher builds everything
        return build_corpus_task(model_args, data_args, eval_args, args)
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
    if needs_mining or data_args.unlabelled_file:
        require_bi_encoder_miner(model_args, data_args, teacher_ref)
    if data_args.unlabelled_file and teacher_ref is None:
        raise UserError("corpus mode needs a teacher to build and score triplets: name --teacher (with --rescore "
                        "true for data that carries scores)")  # fmt: skip
    if teacher_ref:
        checked_model_path(teacher_ref, "teacher")
    checked_model_path(model_args.student or teacher_ref, "student")
    if data_args.miner:
        checked_model_path(data_args.miner, "miner")
    corpus = load_corpus(data_args.corpus_file) if data_args.corpus_file else None  # read (and checked) early
    unlabelled = load_corpus(data_args.unlabelled_file) if data_args.unlabelled_file else None
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
            split = mine_hard_negatives(
                split,
                texts,
                miner(),
                num_negatives=data_args.num_negatives,
                skip_top=data_args.skip_top,
                sample_from=data_args.sample_from,
                cache_dir=data_args.cache_dir,
                keep_band=fresh,
            )
        if teacher is not None and args.needs_teacher and "teacher_margins" not in split.column_names:
            split = score_split(split, teacher, data_args, fresh=fresh, rescore=model_args.rescore)
        splits[name] = split
    splits["train"], gold_count, corpus_count = add_corpus(
        splits["train"], unlabelled, data_args, miner, teacher, args.needs_teacher
    )
    scores = (
        f"teacher scores from the data ({fmt.score_source})"
        if fmt.has_scores and not model_args.rescore
        else (f"teacher margins of {teacher_ref}" if teacher_ref and args.needs_teacher else "no teacher scores")
    )
    negatives = f"negatives mined from {mined_from}" if mined_from else "negatives from the data"
    description = f"{source}: {gold_count} triplets ({fmt.name} format; {negatives}; {scores})."
    description += corpus_note(gold_count, corpus_count, data_args.unlabelled_file)
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


def build_corpus_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """Corpus mode alone: no labelled data; the teacher builds every triplet from ``unlabelled_file``."""
    texts = load_corpus(data_args.unlabelled_file)  # read (and checked) before any model loads
    evaluators = user_evaluators(eval_args, args)
    teacher_ref = model_args.teacher or DEFAULT_TEACHER
    require_bi_encoder_miner(model_args, data_args, teacher_ref)
    checked_model_path(model_args.student or teacher_ref, "student")
    teacher = load_teacher(model_args, teacher_ref)
    train, _, _ = add_corpus(None, texts, data_args, lambda: load_miner(model_args, data_args, teacher), teacher,
                             args.needs_teacher)  # fmt: skip
    return TaskData(
        train=train,
        validation=None,
        teacher=teacher,
        teacher_ref=teacher_ref,
        train_evaluators=evaluators,
        final_evaluators=evaluators,
        dataset=Path(data_args.unlabelled_file).name,
        description=(
            f"{len(train)} triplets the teacher built from the {len(texts)} unlabelled texts of "
            f"{data_args.unlabelled_file} (corpus mode: {data_args.positives_per_query} nearest neighbour(s) as "
            f"positives, negatives from ranks [{data_args.skip_top}, {data_args.sample_from})); no gold label."
        ),
        info={
            "source": data_args.unlabelled_file,
            "format": "corpus",
            "score_source": None,
            "rows": len(texts),
            "train_triplets": len(train),
            "gold_triplets": 0,
            "corpus_triplets": len(train),
        },  # fmt: skip
    )


def add_corpus(
    gold: Dataset | None,
    texts: list[str] | None,
    data_args: DataArguments,
    miner: Callable[[], BiEncoderScorer],
    teacher: Any,
    needs_margins: bool,
) -> tuple[Dataset, int, int]:
    """Corpus mode beside (or instead of) gold triplets: the miner builds triplets from unlabelled ``texts``, the
    teacher scores them (cached), and both sets are concatenated, gold first. Returns (train, gold, corpus counts)."""
    from datasets import concatenate_datasets

    if not texts:
        return gold, len(gold), 0
    built = mine_corpus(
        texts,
        miner(),
        positives_per_query=data_args.positives_per_query,
        num_negatives=data_args.num_negatives,
        skip_top=data_args.skip_top,
        sample_from=data_args.sample_from,
        max_queries=data_args.max_queries,
        cache_dir=data_args.cache_dir,
        keep_band=data_args.fresh_negatives_per_epoch,
    )
    if needs_margins:
        built = score_split(built, teacher, data_args, fresh=data_args.fresh_negatives_per_epoch)
    gold_count = 0 if gold is None else len(gold)
    logger.info(
        "Training set: %d gold triplets + %d built by the teacher from the %d texts of %s (duplicates dropped)",
        gold_count, len(built), len(texts), data_args.unlabelled_file,
    )  # fmt: skip
    if gold is None:
        return built, 0, len(built)
    columns = [c for c in gold.column_names if c in built.column_names]
    return concatenate_datasets([gold.select_columns(columns), built.select_columns(columns)]), gold_count, len(built)


def score_split(
    split: Dataset, teacher: Any, data_args: DataArguments, *, fresh: bool, rescore: bool = False
) -> Dataset:
    """Teacher margins of a split (cached): of its negatives, or with ``fresh`` of every candidate of its band
    (the negatives' margins read off them, in the same one teacher pass)."""
    if fresh:
        return attach_band_margins(split, teacher, cache_dir=data_args.cache_dir, rescore=rescore)
    return attach_teacher_margins(split, teacher, batch_size=256, cache_dir=data_args.cache_dir, rescore=rescore)


def corpus_note(gold: int, corpus: int, source: str | None) -> str:
    """The card's sentence on the share of teacher-built triplets ('' without corpus mode)."""
    if not corpus:
        return ""
    return (
        f" Plus {corpus} triplets the teacher built from the unlabelled texts of {source} (corpus mode): "
        f"{gold / (gold + corpus):.0%} gold, {corpus / (gold + corpus):.0%} teacher-built."
    )


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
        pairs = positive_pairs(splits[split], data_args.min_positive_score)
        if split == "train" and data_args.max_train_examples is not None:
            pairs = pairs.select(range(min(data_args.max_train_examples, len(pairs))))
        fresh = data_args.fresh_negatives_per_epoch and split == "train"  # keep (and score) every candidate
        mined = mine_hard_negatives(
            pairs,
            unique_sentences(splits[split]),
            miner,
            num_negatives=data_args.num_negatives,
            skip_top=data_args.skip_top,
            sample_from=data_args.sample_from,
            cache_dir=data_args.cache_dir,
            keep_band=fresh,
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
    splits = load_stsb(data_args.data_dir)  # read (and checked) before any model loads
    unlabelled = None  # corpus mode beside the gold pairs (never dev or test sentences)
    if data_args.unlabelled_file == "stsb:train":
        unlabelled = unique_sentences(splits["train"])
    elif data_args.unlabelled_file:
        unlabelled = load_corpus(data_args.unlabelled_file)
    teacher = load_teacher(model_args, teacher_ref)
    miner = load_miner(model_args, data_args, teacher)
    splits, triplets, teacher = build_triplets(
        model_args, data_args, teacher, score_margins=args.needs_teacher, splits=splits, miner=miner
    )
    triplets["train"], gold_count, corpus_count = add_corpus(
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
            f"with gold score >= {data_args.min_positive_score}, {data_args.num_negatives} hard negatives mined from "
            f"ranks [{data_args.skip_top}, {data_args.sample_from}))."
            + corpus_note(gold_count, corpus_count, data_args.unlabelled_file)
        ),
        info={
            "source": str(data_args.data_dir or "shipped STS-B"),
            "format": "stsb",
            "train_triplets": len(triplets["train"]),
            "gold_triplets": gold_count,
            "corpus_triplets": corpus_count,
        },
    )


def build_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    if data_args.fresh_negatives_per_epoch and args.train_sampling_strategy != "random":
        raise UserError(
            f"--fresh_negatives_per_epoch orders rows itself (a seeded shuffle per epoch): drop "
            f"--train_sampling_strategy {args.train_sampling_strategy}"
        )
    if data_args.task == "stsb":
        return build_stsb_task(model_args, data_args, eval_args, args)
    return build_user_task(model_args, data_args, eval_args, args)


# ---- evaluation and the summary -------------------------------------------------------------------------


def run_evaluators(evaluators: dict[str, Evaluator], scorer: Any) -> dict[str, dict[str, float]]:
    """``{name: {metric: value}}``; an evaluator that cannot run with this scorer (IR with a cross-encoder) is
    left out with a log line."""
    out = {}
    for name, evaluator in evaluators.items():
        try:
            out[name] = evaluator(scorer)
        except ValueError as exc:
            logger.info("%s skipped: %s", name, exc)
    return out


SUMMARY_METRICS = ("spearman", "pearson", "mrr@10", "ndcg@10", "recall@10")


def summary_lines(table: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One line per evaluator and headline metric: before -> after; teacher."""
    lines = []
    for name, metrics in table.items():
        for metric in SUMMARY_METRICS:
            if metric not in metrics:
                continue
            v = metrics[metric]
            parts = [f"{who} {v[who]:.2f}" for who in ("before", "after", "teacher") if v.get(who) is not None]
            lines.append(f"  {name} {metric} x100: " + ", ".join(parts))
    return lines


def _table(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{who: {evaluator: {metric: v}}} -> {evaluator: {metric: {who: v}}}."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for who, results in rows.items():
        for name, metrics in results.items():
            for metric, value in metrics.items():
                table.setdefault(name, {}).setdefault(metric, {})[who] = value
    return table


def _card_eval(table: dict[str, dict[str, dict[str, float]]], teacher_ref: str | None) -> dict[str, dict[str, float]]:
    names = {
        "before": "student before training",
        "after": "student after training",
        "teacher": f"teacher ({teacher_ref})",
    }
    rows: dict[str, dict[str, float]] = {}
    for name, metrics in table.items():
        for metric, values in metrics.items():
            if metric not in SUMMARY_METRICS:
                continue
            for who, value in values.items():
                rows.setdefault(names[who], {})[f"{name} {metric} x100"] = value
    return rows


def _model_index(table: dict[str, dict[str, dict[str, float]]], task: TaskData) -> list[dict[str, Any]]:
    evaluator_of = task.final_evaluators
    out = []
    for name, metrics in table.items():
        stsb = name.startswith("stsb_test")
        source = str(getattr(evaluator_of.get(name), "source", name))
        for metric, values in metrics.items():
            if metric not in SUMMARY_METRICS or values.get("after") is None:
                continue
            out.append(
                {
                    "task": "sentence-similarity" if metric in ("spearman", "pearson") else "text-retrieval",
                    "dataset": "sentence-transformers/stsb" if stsb else source,
                    "dataset_name": ("STS-B duplicate retrieval" if "duplicates" in name else "STS-B")
                    if stsb
                    else name,
                    "split": "test" if stsb else None,
                    "metric": metric,
                    "name": f"{name} {metric}",
                    "value": values["after"] / 100.0,
                }
            )
    return out


# ---- the jobs --------------------------------------------------------------------------------------------


def run_score_teacher(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, int]:
    """Mine negatives and attach teacher margins for train and validation (cached); nothing is trained."""
    task = build_task(model_args, data_args, eval_args, args)
    sizes = {"train": len(task.train), **({"validation": len(task.validation)} if task.validation is not None else {})}
    print(json.dumps({"triplets": sizes, "columns": task.train.column_names}, indent=2))
    return sizes


def run_train(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, Any]:
    """Build the task (cached), evaluate the teacher, train, evaluate before/after; write model, metrics.json,
    training_curves.png and the model card (the trainer writes them when it saves)."""
    from hf_margin.trainer import MarginDistillTrainer

    start = time.perf_counter()
    state = PartialState()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        raise UserError(
            f"launched as {launched} processes, but each would train alone (no GPU per process): add --use_cpu true "
            "to join them in one gloo group, or use --accelerate-config multi-cpu"
        )
    will_evaluate = (
        data_args.task == "stsb"
        or data_args.validation_file
        or (data_args.dataset_name and data_args.validation_split)
        or eval_args.sts_eval_file
        or eval_args.ir_eval_dir
    )
    if args.eval_strategy != "no" and not will_evaluate:
        raise UserError(
            "eval_strategy is set but there is nothing to evaluate: give --validation_file, "
            "--sts_eval_file or --ir_eval_dir, or --eval_strategy no"
        )
    task = build_task(model_args, data_args, eval_args, args)
    kind: StudentKind = args.student_kind
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if task.teacher is not None and state.is_main_process:  # once, on the main process
        rows["teacher"] = run_evaluators(task.final_evaluators, task.teacher)
    del task.teacher  # the teacher never sits in training memory
    gc.collect()

    student_ref = model_args.student or task.teacher_ref
    student = _load(
        "student",
        student_ref,
        lambda p: kind.load(p, layers=model_args.student_layers, trust_remote_code=model_args.trust_remote_code),
    )
    tokenizer = _load(
        "student",
        student_ref,
        lambda p: AutoTokenizer.from_pretrained(p, trust_remote_code=model_args.trust_remote_code),
    )
    if state.is_main_process:  # on this process's device (the student is still on the CPU)
        rows["before"] = run_evaluators(task.final_evaluators, kind.scorer(student, tokenizer, device=state.device))
    triplets = {"train": task.train, **({"validation": task.validation} if task.validation is not None else {})}
    scaling: dict[str, float] = {}
    if args.needs_teacher:
        triplets, scaling = scale_teacher_margins(triplets, data_args.teacher_margin_scaling, student, tokenizer, args)
    train = triplets["train"]
    if data_args.fresh_negatives_per_epoch:  # the band is tokenised once; each epoch picks from it
        train = FreshNegatives(train, data_args.num_negatives, seed=args.seed)
    trainer = MarginDistillTrainer(
        student,
        args,
        train_dataset=train,
        eval_dataset=triplets.get("validation"),
        processing_class=tokenizer,
        evaluators=task.train_evaluators,
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    # every process: a sharded model (ZeRO-3, FSDP) needs all of them in its forward; only the main one reports
    after = run_evaluators(task.final_evaluators, kind.scorer(trainer.model, tokenizer))
    if state.is_main_process:
        rows["after"] = after
    table = _table(rows)
    metrics = {
        "recipe": args.run_name,
        "evaluation": table,
        "data": task.info,
        "train_triplets": len(triplets["train"]),
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "wall_time_s": time.perf_counter() - start,
        "train_examples_per_s": train_output.metrics.get("train_samples_per_second"),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "options": {"model": asdict(model_args), "data": asdict(data_args), "eval": asdict(eval_args)},
        "teacher_margin_scaling": scaling,
    }
    for metric in ("spearman", "pearson"):  # the headline figures under flat names (benchmarks read them)
        if metric in table.get("stsb_test", {}):
            metrics[f"stsb_test_{metric}"] = table["stsb_test"][metric]
    trainer.results = metrics
    trainer.card_info = {
        "teacher": task.teacher_ref,
        "teacher_note": (
            f"none loaded: the training data brought its own teacher scores ({task.info.get('score_source')})."
            if task.info.get("score_source")
            else "none: the loss reads no teacher margins."
        ),
        "base_model": student_ref,
        "layers": model_args.student_layers,
        "dataset": task.dataset,
        "dataset_description": task.description
        + (
            f" Each epoch, every row's {data_args.num_negatives} negatives were drawn anew from all its mined "
            "candidates (fresh negatives per epoch; teacher margins of every candidate cached before training)."
            if data_args.fresh_negatives_per_epoch
            else ""
        ),
        "eval": _card_eval(table, task.teacher_ref),
        "model_index": _model_index(table, task),
        "eval_note": "Figures x100. Pair-score correlations use the model's "
        + (f"{args.similarity} similarity of the two texts' embeddings" if kind.is_bi_encoder else "logit")
        + "; retrieval ranks the corpus by exact search."
        + (" The teacher row scores the same way with the teacher." if "teacher" in rows else ""),
        "license": "apache-2.0",
        "language": "en",
    }
    trainer.save_state()  # trainer_state.json: the whole log history (loss curve, evaluations)
    if args.push_to_hub:  # saves the model and its files, writes the card and uploads the folder, once
        trainer.push_to_hub(commit_message="hf-margin: distilled student")
    else:
        trainer.save_model()
    if state.is_main_process:
        print_summary(metrics)
    return metrics


def run_evaluate(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, dict[str, float]]:
    """Evaluate a saved student (``--student``, default ``output_dir``): on ``--sts_eval_file``, ``--ir_eval_dir``
    and held-out triplets (``--validation_file``: margin agreement with the teacher) when given, else on the
    STS-B test split (Spearman, Pearson, duplicate retrieval)."""
    reference = model_args.student or args.output_dir
    checked_model_path(reference, "student")
    evaluators = user_evaluators(eval_args, args)
    if data_args.validation_file:
        evaluators["triplets"] = TripletEvaluator(held_out_triplets(model_args, data_args))
    if not evaluators:
        evaluators = stsb_evaluators(
            load_stsb(data_args.data_dir)["test"], "stsb_test", duplicates=args.student_kind.is_bi_encoder
        )
    kind = args.student_kind
    model = _load("student", reference, lambda p: kind.load(p, trust_remote_code=model_args.trust_remote_code))
    tokenizer = _load("student", reference, lambda p: AutoTokenizer.from_pretrained(p))
    result = run_evaluators(evaluators, kind.scorer(model, tokenizer, device=PartialState().device))
    if PartialState().is_main_process:
        print(json.dumps({"model": reference, **result}, indent=2))
    return result


def held_out_triplets(model_args: ModelArguments, data_args: DataArguments) -> Dataset:
    """``validation_file`` as triplets with teacher margins: its own scores, or the teacher's (cached)."""
    data, fmt = normalize_dataset(
        load_data_file(data_args.validation_file), column_map=data_args.columns, source=data_args.validation_file
    )
    if not fmt.has_negatives:
        raise UserError(f"{data_args.validation_file}: held-out triplets need negatives (it holds pairs only)")
    if "teacher_margins" not in data.column_names:
        data = attach_teacher_margins(data, load_teacher(model_args), cache_dir=data_args.cache_dir)
    return data


def print_summary(metrics: dict[str, Any]) -> None:
    lines = summary_lines(metrics["evaluation"])
    data = metrics.get("data", {})
    share = (
        f" ({data['gold_triplets']} gold + {data['corpus_triplets']} teacher-built)"
        if data.get("corpus_triplets")
        else ""
    )
    print(
        f"\nhf-margin ({metrics['recipe']}), {metrics['train_triplets']} training triplets{share}, "
        f"wall time {metrics['wall_time_s']:.0f} s:"
    )
    print("\n".join(lines) if lines else "  no evaluation was asked for (--sts_eval_file, --ir_eval_dir)")

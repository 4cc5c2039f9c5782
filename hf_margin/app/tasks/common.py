"""What every task builder shares: the :class:`TaskData` a builder returns, the user's evaluators, and the one
"mine → score → concatenate" step (:func:`add_teacher_built`) that adds teacher-built triplets (corpus or
query–corpus mode) to gold ones. Loading the models is :mod:`hf_margin.app.loading`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, concatenate_datasets

from hf_margin.app.arguments import DataArguments, EvalArguments, UserError
from hf_margin.app.loading import checked_model_path
from hf_margin.data.margins import attach_band_margins, attach_teacher_margins
from hf_margin.data.mining import build_corpus_triplets, build_query_corpus_triplets, mine_hard_negatives
from hf_margin.data.query_generation import generate_queries
from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator
from hf_margin.models.scoring import BiEncoderScorer
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)

Evaluator = Callable[[Any], dict[str, float]]


# ---- the task ------------------------------------------------------------------------------------------


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


# ---- mine -> score -> concatenate ------------------------------------------------------------------------


def mine_split(
    split: Dataset, texts: list[str], miner: BiEncoderScorer, data_args: DataArguments, *, fresh: bool, teacher: Any
):
    """Hard negatives for the pairs of ``split`` from ``texts`` (cached); ``fresh`` keeps every candidate. A miner
    that is the ``teacher`` keeps its embeddings of the rows' texts for scoring them next."""
    return mine_hard_negatives(
        split,
        texts,
        miner,
        num_negatives=data_args.num_negatives,
        skip_top=data_args.skip_top,
        sample_from=data_args.sample_from,
        cache_dir=data_args.cache_dir,
        keep_band=fresh,
        search=data_args.search_options(),
        disk=data_args.disk_embeddings(),
        keep_embeddings=miner is teacher,
    )


def score_split(
    split: Dataset, teacher: Any, data_args: DataArguments, *, fresh: bool, rescore: bool = False
) -> Dataset:
    """Teacher margins of a split (cached): of its negatives, or with ``fresh`` of every candidate of its band
    (the negatives' margins read off them, in the same one teacher pass)."""
    if fresh:
        return attach_band_margins(split, teacher, cache_dir=data_args.cache_dir, rescore=rescore)
    return attach_teacher_margins(split, teacher, batch_size=256, cache_dir=data_args.cache_dir, rescore=rescore)


@dataclass
class Unlabelled:
    """Unlabelled text the teacher builds triplets from: ``queries`` alone (corpus mode: each text a query, its
    neighbours among the same texts the positives) or ``queries`` with ``documents`` (query–corpus mode)."""

    queries: list[str]
    documents: list[str] | None = None
    source: str = ""

    @property
    def mode(self) -> str:
        return "corpus mode" if self.documents is None else "query-corpus mode"


def with_generated_queries(unlabelled: Unlabelled, data_args: DataArguments) -> Unlabelled:
    """``unlabelled`` plus the queries ``query_generator`` writes for its documents (cached); as it is without one."""
    if not data_args.query_generator:
        return unlabelled
    generated = generate_queries(
        unlabelled.documents,
        checked_model_path(data_args.query_generator, "query generator"),
        queries_per_document=data_args.queries_per_document,
        cache_dir=data_args.cache_dir,
    )["query"]
    source = f"{unlabelled.source} + " if unlabelled.queries else ""
    logger.info("%d queries written by %s for %d documents", len(generated), data_args.query_generator,
                len(unlabelled.documents))  # fmt: skip
    return Unlabelled(
        list(dict.fromkeys([*unlabelled.queries, *generated])),
        unlabelled.documents,
        source=f"{source}queries written by {data_args.query_generator}",
    )


def build_unlabelled(unlabelled: Unlabelled, miner: BiEncoderScorer, data_args: DataArguments, teacher: Any) -> Dataset:
    """Triplets the miner builds from ``unlabelled`` (cached), with the recipe's mining options (a miner that is the
    ``teacher`` keeps its embeddings of the rows' texts for scoring them next)."""
    common = {
        "positives_per_query": data_args.positives_per_query,
        "num_negatives": data_args.num_negatives,
        "skip_top": data_args.skip_top,
        "sample_from": data_args.sample_from,
        "max_queries": data_args.max_queries,
        "cache_dir": data_args.cache_dir,
        "keep_band": data_args.fresh_negatives_per_epoch,
        "search": data_args.search_options(),
        "disk": data_args.disk_embeddings(),
        "keep_embeddings": miner is teacher,
    }
    if unlabelled.documents is None:
        return build_corpus_triplets(unlabelled.queries, miner, **common)
    return build_query_corpus_triplets(
        unlabelled.queries,
        unlabelled.documents,
        miner,
        min_positive_score=data_args.min_positive_score,
        min_positive_margin=data_args.min_positive_margin,
        **common,
    )


def add_teacher_built(
    gold: Dataset | None,
    unlabelled: Unlabelled | None,
    data_args: DataArguments,
    miner: Callable[[], BiEncoderScorer],
    teacher: Any,
    needs_margins: bool,
) -> tuple[Dataset, int, int]:
    """Teacher-built triplets beside (or instead of) gold ones: the miner builds them from ``unlabelled``, the
    teacher scores them (cached), and both sets are concatenated, gold first. Returns (train, gold, built counts)."""
    if unlabelled is None:
        return gold, len(gold), 0
    built = build_unlabelled(unlabelled, miner(), data_args, teacher if needs_margins else None)
    if needs_margins:
        built = score_split(built, teacher, data_args, fresh=data_args.fresh_negatives_per_epoch)
    gold_count = 0 if gold is None else len(gold)
    logger.info(
        "Training set: %d gold triplets + %d built by the teacher (%s) from %s (%d queries%s)",
        gold_count, len(built), unlabelled.mode, unlabelled.source, len(unlabelled.queries),
        f", {len(unlabelled.documents)} documents" if unlabelled.documents is not None else "",
    )  # fmt: skip
    if gold is None:
        return built, 0, len(built)
    columns = [c for c in gold.column_names if c in built.column_names]
    return concatenate_datasets([gold.select_columns(columns), built.select_columns(columns)]), gold_count, len(built)


def unlabelled_description(unlabelled: Unlabelled, data_args: DataArguments) -> str:
    """How the teacher built its triplets, for the card."""
    negatives = f"negatives from ranks [{data_args.skip_top}, {data_args.sample_from})"
    if unlabelled.documents is None:
        return f"corpus mode: {data_args.positives_per_query} nearest neighbour(s) as positives, {negatives}"
    filters = [
        f"score >= {data_args.min_positive_score}" if data_args.min_positive_score is not None else "",
        f"lead over the first negative rank >= {data_args.min_positive_margin}"
        if data_args.min_positive_margin is not None
        else "",
    ]
    kept = " and ".join(f for f in filters if f)
    return (
        f"query-corpus mode: the teacher's top {data_args.positives_per_query} document(s) of "
        f"{len(unlabelled.documents)} as positives{f' (where {kept})' if kept else ''}, {negatives}"
    )


def corpus_note(gold: int, built: int, unlabelled: Unlabelled | None, data_args: DataArguments) -> str:
    """The card's sentence on the share of teacher-built triplets ('' without them)."""
    if not built or unlabelled is None:
        return ""
    return (
        f" Plus {built} triplets the teacher built from the unlabelled texts of {unlabelled.source} "
        f"({unlabelled_description(unlabelled, data_args)}; no gold label): "
        f"{gold / (gold + built):.0%} gold, {built / (gold + built):.0%} teacher-built."
    )

"""The retrieval task as a builder: distil a teacher for search over one corpus in BEIR layout (the shipped
SciFact copy by default). The teacher ranks the corpus for unlabelled queries (query–corpus mode); gold pairs of
a qrels split may be added. Retrieval on the evaluation split (MRR@10, nDCG@10, Recall@10/@100) is reported
before, after and for the teacher; no evaluation query is ever a training query."""

from __future__ import annotations

import functools
import logging
import random
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
from hf_margin.data.sources import load_corpus, load_data_file
from hf_margin.evaluation.evaluators import RetrievalEvaluator
from hf_margin.evaluation.retrieval import RetrievalData, load_beir
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)

SHIPPED_SCIFACT = Path(__file__).parents[1] / "data" / "scifact"  # SciFact in BEIR layout (licence inside)
UNLABELLED_QUERIES = "unlabelled.txt"  # the default queries of a BEIR folder: unlabelled, none an evaluation query
TITLE_SAMPLE_SEED = 0  # the titles' sample is fixed: every training seed trains on the same queries
MIN_TITLE_WORDS = 4


def title_queries(corpus_file: str | Path, count: int, evaluation: set[str]) -> list[str]:
    """``count`` document titles (``-1``: all) of at least 4 words as pseudo-queries: distinct, none an evaluation
    query, in a fixed seeded order."""
    data = load_data_file(corpus_file)
    if "title" not in data.column_names:
        raise UserError(f"title_queries: {corpus_file} has no 'title' column")
    titles = [t.strip() for t in data["title"] if isinstance(t, str) and len(t.split()) >= MIN_TITLE_WORDS]
    titles = [t for t in dict.fromkeys(titles) if t not in evaluation]
    random.Random(TITLE_SAMPLE_SEED).shuffle(titles)
    return titles if count < 0 else titles[:count]


def retrieval_folder(data_args: DataArguments) -> Path:
    """The task's BEIR folder: ``data_dir`` or the shipped SciFact."""
    folder = Path(data_args.data_dir) if data_args.data_dir else SHIPPED_SCIFACT
    if not (folder / "corpus.jsonl").is_file():
        raise UserError(f"retrieval task: {folder} has no corpus.jsonl (data_dir must be a folder in BEIR layout)")
    return folder


def gold_pairs(data: RetrievalData) -> Dataset:
    """(query, positive) rows of every relevant judgement (grade > 0), documents as the corpus spells them."""
    rows = [(data.queries[q], data.corpus[d]) for q, judged in data.qrels.items() for d, g in judged.items() if g > 0]
    return Dataset.from_dict({"query": [q for q, _ in rows], "positive": [p for _, p in rows]})


def build_retrieval_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """Triplets from unlabelled queries ranked by the teacher (plus ``gold_split``'s pairs when set), evaluated
    on ``ir_split`` (and ``dev_split`` during training); everything read and checked before a model loads."""
    if not args.student_kind.is_bi_encoder:
        raise UserError("the retrieval task searches a corpus by embeddings: it needs a bi-encoder student")
    folder = retrieval_folder(data_args)
    query_file = data_args.query_file or folder / UNLABELLED_QUERIES
    if not Path(query_file).is_file():
        raise UserError(
            f"retrieval task: no {UNLABELLED_QUERIES} in {folder}: name the training queries with --query_file"
        )
    corpus_file = data_args.corpus_file or folder / "corpus.jsonl"
    documents = load_corpus(corpus_file)
    test = load_beir(folder, split=eval_args.ir_split)
    dev = load_beir(folder, split=data_args.dev_split) if data_args.dev_split else None
    evaluation = {q.strip() for judged in (test, dev) if judged is not None for q in judged.queries.values()}
    queries, source, named = load_corpus(query_file), str(query_file), Path(query_file).name
    if data_args.title_queries:
        titles = title_queries(corpus_file, data_args.title_queries, evaluation)
        queries = list(dict.fromkeys(queries + titles))
        source, named = f"{source} and {len(titles)} document titles", f"{named} and {len(titles)} document titles"
    unlabelled = Unlabelled(queries, documents, source=source)
    gold = None
    if data_args.gold_split:  # a judged query whose text is also an evaluation query is left out (SciFact has 2)
        gold = gold_pairs(load_beir(folder, split=data_args.gold_split))
        kept = gold.filter(lambda row: row["query"].strip() not in evaluation)
        if len(kept) < len(gold):
            logger.warning(
                "qrels/%s.tsv: %d pairs left out, their queries are also evaluation queries of qrels/%s.tsv",
                data_args.gold_split, len(gold) - len(kept),
                f"{eval_args.ir_split}.tsv or qrels/{data_args.dev_split}" if dev else eval_args.ir_split,
            )  # fmt: skip
        gold = kept
    queries = set(unlabelled.queries)
    for split, judged in ((eval_args.ir_split, test), (data_args.dev_split, dev)):
        leaked = [q for q in judged.queries.values() if q.strip() in queries] if judged is not None else []
        if leaked:
            raise UserError(
                f"retrieval task: {len(leaked)} evaluation queries of qrels/{split}.tsv are training queries "
                f"(e.g. {leaked[0][:60]!r}): remove them from {query_file} or pick another split"
            )
    if data_args.query_generator:  # written queries never repeat an evaluation query either
        unlabelled = with_generated_queries(unlabelled, data_args)
        unlabelled.queries = [q for q in unlabelled.queries if q not in evaluation]
    name = folder.name
    final = {name: RetrievalEvaluator(test, name=name)}
    final[name].source = str(folder)
    during = dict(user_evaluators(eval_args, args))
    if dev is not None:  # during training (eval_strategy) and at the end, beside the test split
        during[f"{name}_dev"] = final[f"{name}_dev"] = RetrievalEvaluator(dev, name=f"{name}_dev")
        final[f"{name}_dev"].source = str(folder)
    teacher_ref = model_args.teacher or DEFAULT_TEACHER
    require_bi_encoder_miner(model_args, data_args, teacher_ref)
    check_teachers(model_args, teacher_ref)
    checked_model_path(model_args.student or teacher_ref, "student")

    teacher = load_teacher(model_args, teacher_ref)
    miner = functools.cache(lambda: load_miner(model_args, data_args, teacher))
    if gold is not None:
        gold = mine_split(
            gold,
            documents,
            miner(),
            data_args,
            fresh=data_args.fresh_negatives_per_epoch,
            teacher=teacher if args.needs_teacher else None,
        )
        if args.needs_teacher:
            gold = score_split(gold, teacher, data_args, fresh=data_args.fresh_negatives_per_epoch)
    train, gold_count, built_count = add_teacher_built(gold, unlabelled, data_args, miner, teacher, args.needs_teacher)
    labels = (
        f"{gold_count} gold triplets (the relevant documents of qrels/{data_args.gold_split}.tsv, negatives mined from "
        f"the corpus ranks [{data_args.skip_top}, {data_args.sample_from})). "
        if gold is not None
        else ""
    )
    return TaskData(
        train=train,
        validation=None,
        teacher=teacher,
        teacher_ref=teacher_ref,
        train_evaluators=during,
        final_evaluators={**final, **user_evaluators(eval_args, args)},
        dataset=str(folder) if data_args.data_dir else "BeIR/scifact",
        description=(
            f"{name} in BEIR layout, {len(documents)} documents. {labels}"
            + (
                corpus_note(gold_count, built_count, unlabelled, data_args).strip()
                if gold is not None
                else f"{built_count} triplets the teacher built from the {len(unlabelled.queries)} unlabelled queries "
                f"of {named} ({unlabelled_description(unlabelled, data_args)}); no gold label."
            )
        ),
        info={
            "source": str(folder),
            "format": "retrieval",
            "train_triplets": len(train),
            "gold_triplets": gold_count,
            "corpus_triplets": built_count,
        },
    )

"""Evaluators: score a model on the user's held-out data, during training, at the end and in ``hf-margin evaluate``.

An evaluator is called with a scorer (:mod:`hf_margin.models.scoring`; ``StudentKind.scorer(model, tokenizer)`` makes
one for a student, a teacher is one) and returns ``{metric: value}``. :class:`~hf_margin.MarginDistillTrainer`
runs its ``evaluators`` at every evaluation and logs them as ``eval_{name}_{metric}``.

- :class:`StsEvaluator`: pairs with gold scores -> Spearman and Pearson x100 (``evaluate`` module ``sts_correlation``).
- :class:`RetrievalEvaluator`: a BEIR-layout retrieval set -> MRR@10, nDCG@10, Recall@10 and @100 x100, by exact
  search in chunks (``evaluate`` module ``retrieval``); bi-encoders only.
- :class:`TripletEvaluator`: held-out triplets with teacher margins -> margin Spearman and pairwise accuracy
  (``evaluate`` module ``margin_agreement``); during training the trainer's ``eval_dataset`` does the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_margin.data.columns import DataValidationError, row_location
from hf_margin.data.sources import load_data_file
from hf_margin.evaluation.metrics import margin_agreement, sts_correlation
from hf_margin.evaluation.retrieval import RetrievalData, evaluate_retrieval, load_beir


@dataclass
class StsEvaluator:
    """Spearman and Pearson x100 of a scorer's pair scores against gold scores (any scale)."""

    sentences1: Sequence[str]
    sentences2: Sequence[str]
    scores: Sequence[float]
    name: str = "sts"

    def __post_init__(self) -> None:
        if not (len(self.sentences1) == len(self.sentences2) == len(self.scores)):
            raise ValueError("sentences1, sentences2 and scores must have the same length")
        if len(self.scores) < 2:
            raise DataValidationError(f"STS evaluation '{self.name}' needs at least 2 pairs, got {len(self.scores)}")

    @classmethod
    def from_dataset(cls, dataset: Any, name: str = "sts", source: str | None = None) -> StsEvaluator:
        """From a dataset with ``sentence1``, ``sentence2`` and ``score`` columns (rows with bad values named)."""
        where = f"{source}: " if source else ""
        missing = [c for c in ("sentence1", "sentence2", "score") if c not in dataset.column_names]
        if missing:
            raise DataValidationError(
                f"{where}STS pairs need columns sentence1, sentence2 and score; missing {missing} "
                f"(it has {dataset.column_names})"
            )
        s1, s2, gold = list(dataset["sentence1"]), list(dataset["sentence2"]), list(dataset["score"])
        for row, (a, b, g) in enumerate(zip(s1, s2, gold)):
            for column, text in (("sentence1", a), ("sentence2", b)):
                if not isinstance(text, str) or not text.strip():
                    raise DataValidationError(
                        f"{row_location(row, source)}, column '{column}': {text!r} is not a non-empty text"
                    )
            if not isinstance(g, (int, float)) or not np.isfinite(g):
                raise DataValidationError(f"{row_location(row, source)}, column 'score': {g!r} is not a finite number")
        return cls(s1, s2, [float(g) for g in gold], name=name)

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str = "sts") -> StsEvaluator:
        """From a csv/tsv/jsonl/json/parquet file with ``sentence1``, ``sentence2``, ``score``."""
        return cls.from_dataset(load_data_file(path), name=name, source=str(path))

    def __call__(self, scorer: Any) -> dict[str, float]:
        predicted = scorer.score_pairs(list(self.sentences1), list(self.sentences2))
        return sts_correlation(predicted, np.asarray(self.scores, dtype=np.float64))


@dataclass
class RetrievalEvaluator:
    """MRR@10, nDCG@10, Recall@10 and Recall@100 (x100) of a bi-encoder scorer by exact search over a corpus."""

    data: RetrievalData
    name: str = "ir"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_beir(cls, folder: str | os.PathLike, split: str = "test", name: str = "ir") -> RetrievalEvaluator:
        """From a BEIR-layout folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""
        return cls(load_beir(Path(folder), split=split), name=name)

    def __call__(self, scorer: Any) -> dict[str, float]:
        if not hasattr(scorer, "embed"):
            raise ValueError(
                f"retrieval evaluation '{self.name}' searches a corpus by embeddings: it needs a bi-encoder, "
                "a cross-encoder scores pairs only"
            )
        metrics = evaluate_retrieval(
            scorer.embed,
            self.data,
            similarity=scorer.similarity_fn,
            embed_query=getattr(scorer, "embed_queries", None),
            **self.options,
        )
        return {k: 100.0 * v for k, v in metrics.items()}


@dataclass
class TripletEvaluator:
    """Agreement of a scorer's margins ``s(q,p) − s(q,n)`` with the teacher's on held-out triplets (columns
    ``query``, ``positive``, ``negatives``, ``teacher_margins``): margin Spearman and pairwise accuracy."""

    dataset: Any
    name: str = "triplets"

    def __post_init__(self) -> None:
        missing = [
            c for c in ("query", "positive", "negatives", "teacher_margins") if c not in self.dataset.column_names
        ]
        if missing:
            raise DataValidationError(
                f"held-out triplets '{self.name}' lack {missing}: they need negatives and teacher margins (attach them "
                "with attach_teacher_margins, or bring scores in the data)"
            )

    def __call__(self, scorer: Any) -> dict[str, float]:
        queries, positives, negatives = self.dataset["query"], self.dataset["positive"], self.dataset["negatives"]
        q = [x for x, row in zip(queries, negatives) for _ in row]
        p = [x for x, row in zip(positives, negatives) for _ in row]
        n = [x for row in negatives for x in row]
        student = np.asarray(scorer.score_pairs(q, p), dtype=np.float64) - np.asarray(scorer.score_pairs(q, n))
        teacher = np.asarray([m for row in self.dataset["teacher_margins"] for m in row], dtype=np.float64)
        return margin_agreement(student, teacher)


__all__ = ["RetrievalEvaluator", "StsEvaluator", "TripletEvaluator"]

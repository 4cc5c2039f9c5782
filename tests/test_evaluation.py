"""Evaluators: STS correlation, retrieval and held-out triplets, computed from a scorer's scores."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import pearsonr, spearmanr

from hf_margin.data.columns import DataValidationError
from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator, TripletEvaluator
from hf_margin.evaluation.retrieval import RetrievalData


class TableScorer:
    """Scores pairs from a fixed table; optional embeddings make it a bi-encoder."""

    similarity_fn = "dot"

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table

    def score_pairs(self, queries, documents):
        return np.array([self.table[(q, d)] for q, d in zip(queries, documents)])


def test_sts_evaluator_equals_scipy_on_the_scores():
    table = {("a", "b"): 0.9, ("c", "d"): 0.1, ("e", "f"): 0.5, ("g", "h"): 0.4}
    gold = [5.0, 0.0, 3.0, 3.5]
    result = StsEvaluator(["a", "c", "e", "g"], ["b", "d", "f", "h"], gold)(TableScorer(table))
    scores = list(table.values())
    assert result["spearman"] == pytest.approx(100 * spearmanr(scores, gold).statistic)
    assert result["pearson"] == pytest.approx(100 * pearsonr(scores, gold).statistic)


def test_sts_rows_are_checked_with_row_and_column():
    data = Dataset.from_dict({"sentence1": ["a", " "], "sentence2": ["b", "c"], "score": [1.0, 2.0]})
    with pytest.raises(DataValidationError, match="f.csv, line 3, column 'sentence1'"):
        StsEvaluator.from_dataset(data, source="f.csv")
    with pytest.raises(DataValidationError, match="missing \\['score'\\]"):
        StsEvaluator.from_dataset(data.remove_columns("score"))


def test_triplet_evaluator_margins_by_hand():
    """Student margins (q,p) - (q,n) over ragged negatives against the teacher's: 2 of 3 positive."""
    table = {("q1", "p1"): 0.9, ("q1", "n1"): 0.2, ("q1", "n2"): 0.95, ("q2", "p2"): 0.5, ("q2", "n3"): 0.1}
    data = Dataset.from_dict(
        {"query": ["q1", "q2"], "positive": ["p1", "p2"], "negatives": [["n1", "n2"], ["n3"]],
         "teacher_margins": [[0.6, 0.1], [0.3]]}
    )  # fmt: skip
    result = TripletEvaluator(data)(TableScorer(table))
    assert result["pairwise_accuracy"] == pytest.approx(2 / 3)
    assert result["margin_spearman"] == pytest.approx(spearmanr([0.7, -0.05, 0.4], [0.6, 0.1, 0.3]).statistic)


def test_retrieval_needs_a_bi_encoder():
    data = RetrievalData(corpus={"d": "x"}, queries={"q": "y"}, qrels={"q": {"d": 1}})
    with pytest.raises(ValueError, match="needs a bi-encoder"):
        RetrievalEvaluator(data)(TableScorer({}))


def test_throughput_times_a_scorer_at_the_length_asked_and_restores_its_own(bi_encoder, tokenizer):
    """A teacher is timed at its student's length: the record says that length, the texts were cut at it, and
    the scorer keeps its own length and batch size afterwards."""
    from hf_margin.evaluation.throughput import encoding_throughput

    from .conftest import teacher_for

    teacher = teacher_for(bi_encoder, tokenizer, max_length=128, batch_size=7)
    seen = []
    original = teacher.tokenizer.__call__

    class Spy:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            seen.append(kwargs["max_length"])
            return original(*args, **kwargs)

    teacher.tokenizer = Spy()
    record = encoding_throughput(teacher, [f"text number {i}" for i in range(40)], max_length=16)
    assert record["max_length"] == 16 and set(seen) == {16} and record["batch_size"] == 32
    assert (teacher.max_length, teacher.batch_size) == (128, 7)
    assert encoding_throughput(teacher, ["a text"])["max_length"] == 128


def test_the_speed_line_counts_threads_and_says_when_cores_sit_idle(monkeypatch):
    """One thread reads "1 thread"; a CPU run on fewer threads than its cores says so in the line and in a
    warning that names the launcher's fix; all cores in use, no warning."""
    import torch

    from hf_margin.app.report import speed_line
    from hf_margin.evaluation import throughput

    def record(threads: int, cores: int) -> dict:
        return {"texts_per_s": 50.0, "device": "cpu", "dtype": "float32", "threads": threads, "cores": cores,
                "max_length": 256}  # fmt: skip

    assert "cpu, float32, 1 thread of 2 cores, 256 tokens" in speed_line({"student": record(1, 2)})
    assert "cpu, float32, 2 threads, 256 tokens" in speed_line({"student": record(2, 2)})
    monkeypatch.setattr(throughput, "available_cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    warning = throughput.fewer_threads_than_cores()
    assert "1 of this process's 4 CPU cores (OMP_NUM_THREADS=1)" in warning
    assert "--num_cpu_threads_per_process 4" in warning
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert throughput.fewer_threads_than_cores() is None

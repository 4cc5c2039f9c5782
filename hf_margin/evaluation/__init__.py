"""Evaluation: the evaluators a trainer or the CLI calls with a scorer (``evaluators``: STS, retrieval, triplets);
exact top-k search, BEIR and duplicate-retrieval data and IR metrics (``retrieval``); the metrics, as ``evaluate``
modules shipped in ``evaluate_metrics/`` and loaded by local path (``metrics``); and encoding speed
(``throughput``).

The main names are re-exported here; modules of the library import from the module that defines a name.
"""

from __future__ import annotations

from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator, TripletEvaluator
from hf_margin.evaluation.metrics import compute_margin_metrics, margin_agreement, sts_correlation
from hf_margin.evaluation.retrieval import RetrievalData, evaluate_retrieval, load_beir
from hf_margin.evaluation.throughput import encoding_throughput

__all__ = [
    "RetrievalData",
    "RetrievalEvaluator",
    "StsEvaluator",
    "TripletEvaluator",
    "compute_margin_metrics",
    "encoding_throughput",
    "evaluate_retrieval",
    "load_beir",
    "margin_agreement",
    "sts_correlation",
]

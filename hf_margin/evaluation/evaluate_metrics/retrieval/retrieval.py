"""Retrieval (IR) metrics: MRR@10, nDCG@10, Recall@10 and Recall@100 of ranked lists against graded qrels."""

from __future__ import annotations

import datasets
import evaluate
import ir_measures
from ir_measures import RR, R, nDCG

_MEASURES = {"mrr@10": RR @ 10, "ndcg@10": nDCG @ 10, "recall@10": R @ 10, "recall@100": R @ 100}

_DESCRIPTION = """
Mean over queries of MRR@10, nDCG@10, Recall@10 and Recall@100 as fractions in [0, 1], computed with ir-measures:
nDCG and Recall by trec_eval (pytrec-eval-terrier), MRR@10 by the MS MARCO evaluation (trec_eval's recip_rank has
no cutoff). nDCG@10 uses gain = grade (grades <= 0 gain nothing) and discount log2(rank + 1), with the ideal ranking
built from the qrels; a document counts as relevant for MRR and Recall when its grade is >= 1.

The order of each ranked list is what is evaluated: the documents get strictly decreasing scores from their
positions, so trec_eval's own tie-breaking on document ids never reorders them. Documents not in the qrels are
non-relevant. Queries without any document of grade > 0 are skipped (as BEIR does, they leave the mean); a query
with relevant documents and an empty ranking scores 0 on every metric.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): per query, the retrieved document ids, best first (each id at most once).
    references (list of dict): per query, ``{"ids": [doc id, ...], "grades": [int, ...]}``, the judged documents
        and their relevance grades (parallel lists; a query may have several relevant documents).
Returns:
    mrr@10, ndcg@10, recall@10, recall@100 (float): means over the queries that have a relevant document.
Raises:
    ValueError: when ``ids`` and ``grades`` differ in length, a ranking repeats a document id, or no query has a
        document of grade > 0.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Retrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("string")),
                    "references": {
                        "ids": datasets.List(datasets.Value("string")),
                        "grades": datasets.List(datasets.Value("int32")),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        qrels, run = {}, {}
        for i, (ranking, judged) in enumerate(zip(predictions, references)):
            ids, grades = list(judged["ids"]), [int(g) for g in judged["grades"]]
            if len(ids) != len(grades):
                raise ValueError(f"query {i}: references have {len(ids)} ids but {len(grades)} grades")
            if not any(g > 0 for g in grades):
                continue  # no relevant document: skipped, as BEIR does
            if len(set(ranking)) != len(ranking):
                raise ValueError(f"query {i}: the ranking repeats a document id; list each document once")
            qid = str(i)
            qrels[qid] = dict(zip(ids, grades))
            # Strictly decreasing scores carry the list order to trec_eval (which sorts by score, then doc id).
            run[qid] = {doc: float(len(ranking) - rank) for rank, doc in enumerate(ranking)}
        if not qrels:
            raise ValueError("no query has a relevant document (grade > 0); nothing to evaluate")
        per_query = {qid: dict.fromkeys(_MEASURES, 0.0) for qid in qrels}
        names = {measure: name for name, measure in _MEASURES.items()}
        run = {qid: docs for qid, docs in run.items() if docs}  # an empty ranking keeps its zeros
        if run:
            for metric in ir_measures.evaluator(list(_MEASURES.values()), qrels).iter_calc(run):
                per_query[metric.query_id][names[metric.measure]] = float(metric.value)
        return {name: sum(q[name] for q in per_query.values()) / len(per_query) for name in _MEASURES}

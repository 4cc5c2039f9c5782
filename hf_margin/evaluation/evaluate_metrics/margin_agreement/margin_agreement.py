"""Margin agreement of a student with its teacher on (query, positive, negative) triplets."""

import datasets
import evaluate
import numpy as np
from scipy.stats import spearmanr

_DESCRIPTION = """
For triplets scored by a student and a teacher: the Spearman correlation between the student's margins
s(q,p) - s(q,n) and the teacher's margins t(q,p) - t(q,n), and the pairwise accuracy, the share of triplets
whose student margin is positive (the positive ranked above the negative).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): student margins, one per (query, negative).
    references (list of float): teacher margins, in the same order.
Returns:
    margin_spearman (float): Spearman correlation of student and teacher margins (nan when either is constant).
    pairwise_accuracy (float): share of positive student margins.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MarginAgreement(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        s = np.asarray(predictions, dtype=np.float64)
        t = np.asarray(references, dtype=np.float64)
        if s.size == 0:
            return {"margin_spearman": float("nan"), "pairwise_accuracy": float("nan")}
        constant = s.size < 2 or np.ptp(s) == 0 or np.ptp(t) == 0
        rho = float("nan") if constant else float(spearmanr(s, t).statistic)
        return {"margin_spearman": rho, "pairwise_accuracy": float((s > 0).mean())}

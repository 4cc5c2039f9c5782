"""Evaluation metrics of a margin-distillation run."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr
from transformers import EvalPrediction


def margin_agreement(
    student_margins: np.ndarray, teacher_margins: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """Spearman correlation of student and teacher margins, and the share of positive student margins.

    Args:
        student_margins, teacher_margins: ``(B,)`` or ``(B, N)``.
        mask: true (or 1) where an entry is real; padded entries are dropped.
    """
    s = np.asarray(student_margins, dtype=np.float64)
    t = np.asarray(teacher_margins, dtype=np.float64)
    valid = np.ones(s.shape, dtype=bool) if mask is None else (np.asarray(mask) == 1)
    s, t = s[valid], t[valid]
    if s.size == 0:
        return {"margin_spearman": float("nan"), "pairwise_accuracy": float("nan")}
    rho = spearmanr(s, t).statistic if s.size > 1 and np.ptp(s) > 0 and np.ptp(t) > 0 else float("nan")
    return {"margin_spearman": float(rho), "pairwise_accuracy": float((s > 0).mean())}


def compute_margin_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` for :class:`~hf_margin.MarginDistillTrainer`: predictions are (student margins, mask)
    and label_ids the teacher margins, as its ``prediction_step`` returns them."""
    student, mask = eval_pred.predictions
    return margin_agreement(student, eval_pred.label_ids, mask)

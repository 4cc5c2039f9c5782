"""Evaluation metrics, as ``evaluate`` modules shipped in the package and loaded by local path (offline)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

METRICS_DIR = Path(__file__).parent / "evaluate_metrics"


@cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load a shipped metric: ``"sts_correlation"`` or ``"margin_agreement"``; no network."""
    path = METRICS_DIR / name
    if not path.is_dir():
        raise ValueError(f"no shipped metric {name!r}; choose from {sorted(p.name for p in METRICS_DIR.iterdir())}")
    return evaluate.load(str(path))


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
    return load_metric("margin_agreement").compute(predictions=s[valid], references=t[valid])


def sts_correlation(predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson (x100) of predicted similarities against gold STS scores."""
    return load_metric("sts_correlation").compute(
        predictions=np.asarray(predictions, dtype=np.float64), references=np.asarray(references, dtype=np.float64)
    )


def compute_margin_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` for :class:`~hf_margin.MarginDistillTrainer`: predictions are (student margins, mask)
    and label_ids the teacher margins, as its ``prediction_step`` returns them."""
    student, mask = eval_pred.predictions
    return margin_agreement(student, eval_pred.label_ids, mask)

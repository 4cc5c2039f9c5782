"""One global affine rescaling of cached teacher margins (for Margin-MSE against a teacher on another scale).

A cross-encoder teacher's logit margins live on their own scale; a cosine student's margins lie in [-2, 2].
``standardize_teacher_margins`` maps every margin ``m`` to ``target_mean + target_std · (m − mean) / std`` with
one ``mean`` and ``std`` for the whole training set: a z-score (target 0, 1), or the student's own margin
statistics before training (``student_margin_statistics``), so that Margin-MSE targets are reachable.
Only ``teacher_margins`` (and ``band_margins``, where fresh negatives are drawn) change; ``teacher_pos_score`` and
``teacher_neg_scores`` keep the raw scores.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from datasets import Dataset

from hf_margin.data.columns import TEACHER_MARGINS
from hf_margin.data.margins import BAND_MARGINS

logger = logging.getLogger(__name__)

SCALINGS: tuple[str, ...] = ("none", "zscore", "student")


def _flat(rows: list[list[float]]) -> np.ndarray:
    return np.asarray([m for row in rows for m in row], dtype=np.float64)


def teacher_margin_statistics(dataset: Dataset) -> tuple[float, float]:
    """Mean and standard deviation of every teacher margin of ``dataset`` (all rows, all negatives)."""
    if TEACHER_MARGINS not in dataset.column_names:
        raise ValueError(f"the dataset has no {TEACHER_MARGINS!r} column: run attach_teacher_margins first")
    values = _flat(list(dataset[TEACHER_MARGINS]))
    if values.size < 2:
        raise ValueError(f"{values.size} teacher margin(s): at least 2 are needed for a standard deviation")
    return float(values.mean()), float(values.std())


def standardize_teacher_margins(
    dataset: Dataset, *, mean: float, std: float, target_mean: float = 0.0, target_std: float = 1.0
) -> Dataset:
    """``teacher_margins`` ← ``target_mean + target_std · (margin − mean) / std`` (``datasets.map``, cached).

    Use the *training* set's ``mean`` and ``std`` for every split, so that train and dev margins stay comparable.
    A ``band_margins`` column (the candidates fresh negatives are drawn from) is rescaled the same way.
    """
    if not (math.isfinite(std) and std > 0):
        raise ValueError(
            f"teacher margin std is {std}: all margins are equal (or not finite), so they cannot be standardised; "
            "check the teacher scores, or use teacher_margin_scaling='none'"
        )
    if not (math.isfinite(target_std) and target_std > 0):
        raise ValueError(f"target_std must be a positive number, got {target_std}")

    columns = [c for c in (TEACHER_MARGINS, BAND_MARGINS) if c in dataset.column_names]

    def rescale(batch: dict[str, list]) -> dict[str, list]:
        return {c: [[target_mean + target_std * (m - mean) / std for m in row] for row in batch[c]] for c in columns}

    return dataset.map(rescale, batched=True, desc="Standardising teacher margins")


def student_margin_statistics(scorer: Any, dataset: Dataset) -> tuple[float, float]:
    """Mean and standard deviation of a scorer's margins ``s(q,p) − s(q,n)`` over every triplet of ``dataset``
    (columns ``query``, ``positive``, ``negatives``); a bi-encoder scorer embeds each distinct text once."""
    queries, positives, negatives = list(dataset["query"]), list(dataset["positive"]), list(dataset["negatives"])
    q_rows = [q for q, row in zip(queries, negatives) for _ in row]
    p_rows = [p for p, row in zip(positives, negatives) for _ in row]
    n_rows = [n for row in negatives for n in row]
    pos = np.asarray(scorer.score_pairs(q_rows, p_rows), dtype=np.float64)
    neg = np.asarray(scorer.score_pairs(q_rows, n_rows), dtype=np.float64)
    margins = pos - neg
    return float(margins.mean()), float(margins.std())


def scale_teacher_margins(
    triplets: dict[str, Dataset], how: str, student=None, tokenizer=None, args=None
) -> tuple[dict[str, Dataset], dict[str, float]]:
    """Apply a scaling (``how``: 'none', 'zscore' or 'student') to every split with the train split's statistics;
    'student' needs the ``student``, its ``tokenizer`` and its training ``args`` (its kind: pooling, similarity).
    Returns the rescaled triplets and the statistics used (empty for 'none')."""
    if how == "none":
        return triplets, {}
    if how not in SCALINGS:
        raise ValueError(f"teacher_margin_scaling must be one of {SCALINGS}, got {how!r}")
    mean, std = teacher_margin_statistics(triplets["train"])
    target_mean, target_std = 0.0, 1.0
    if how == "student":
        if student is None or tokenizer is None or args is None:
            raise ValueError("teacher_margin_scaling='student' needs the student, its tokenizer and its args")
        target_mean, target_std = student_margin_statistics(
            args.student_kind.scorer(student, tokenizer), triplets["train"]
        )
    stats = {"teacher_mean": mean, "teacher_std": std, "target_mean": target_mean, "target_std": target_std}
    logger.info("Teacher margins rescaled (%s): %s", how, ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    scaled = {
        split: standardize_teacher_margins(ds, mean=mean, std=std, target_mean=target_mean, target_std=target_std)
        for split, ds in triplets.items()
    }
    return scaled, stats

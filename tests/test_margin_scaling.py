"""Global rescaling of teacher margins: hand-computed values, train statistics on every split, student moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_margin.data.margin_scaling import (
    scale_teacher_margins,
    standardize_teacher_margins,
    student_margin_statistics,
    teacher_margin_statistics,
)
from hf_margin.models.kind import StudentKind

from .conftest import embed_one_by_one, make_triplets


def margins_dataset(rows: list[list[float]]) -> Dataset:
    return Dataset.from_dict(
        {
            "query": ["q"] * len(rows),
            "positive": ["p"] * len(rows),
            "negatives": [["n"] * len(r) for r in rows],
            "teacher_pos_score": [4.0] * len(rows),
            "teacher_margins": rows,
        }
    )


def test_standardisation_matches_hand_computed_values_on_ragged_rows():
    """Margins [[1, 3], [5]]: mean 3 and population std sqrt(8/3) over all three entries, not per row."""
    ds = margins_dataset([[1.0, 3.0], [5.0]])
    mean, std = teacher_margin_statistics(ds)
    assert mean == pytest.approx(3.0) and std == pytest.approx(math.sqrt(8 / 3))
    out = standardize_teacher_margins(ds, mean=mean, std=std, target_mean=0.2, target_std=0.1)
    z = 2 / math.sqrt(8 / 3)
    expected = [[0.2 - 0.1 * z, 0.2], [0.2 + 0.1 * z]]
    for row, want in zip(out["teacher_margins"], expected):
        assert row == pytest.approx(want, abs=1e-6)
    assert teacher_margin_statistics(out) == pytest.approx((0.2, 0.1), abs=1e-6)
    assert out["teacher_pos_score"] == [4.0, 4.0]  # raw teacher scores are kept


def test_every_split_uses_the_train_statistics():
    """Guards against standardising dev with its own mean/std, which would make train and dev targets disagree."""
    train, dev = margins_dataset([[0.0, 2.0], [4.0, 6.0]]), margins_dataset([[10.0]])
    scaled, stats = scale_teacher_margins({"train": train, "validation": dev}, "zscore")
    assert stats["teacher_mean"] == pytest.approx(3.0) and stats["teacher_std"] == pytest.approx(math.sqrt(5))
    assert scaled["validation"]["teacher_margins"][0][0] == pytest.approx(7 / math.sqrt(5), abs=1e-6)
    assert scale_teacher_margins({"train": train}, "none") == ({"train": train}, {})


def test_constant_or_missing_margins_are_refused():
    with pytest.raises(ValueError, match="cannot be standardised"):
        standardize_teacher_margins(margins_dataset([[1.0, 1.0]]), mean=1.0, std=0.0)
    with pytest.raises(ValueError, match="attach_teacher_margins"):
        teacher_margin_statistics(Dataset.from_dict({"query": ["q"]}))
    with pytest.raises(ValueError, match="teacher_margin_scaling"):
        scale_teacher_margins({"train": margins_dataset([[1.0, 2.0]])}, "minmax")


def test_student_margin_statistics_equal_a_direct_per_triplet_computation(bi_encoder, tokenizer):
    """The student's cosine margins s(q,p) - s(q,n), over every (ragged) negative, embedded one text at a time."""
    ds = make_triplets(12, num_negatives=3, ragged=True)
    scorer = StudentKind("bi-encoder", max_length=16).scorer(bi_encoder, tokenizer)
    mean, std = student_margin_statistics(scorer, ds)

    def emb(text: str) -> torch.Tensor:
        return embed_one_by_one(bi_encoder, tokenizer, [text], max_length=16)[0]

    margins = []
    for row in ds:
        q, p = emb(row["query"]), emb(row["positive"])
        for n in row["negatives"]:
            cos = torch.nn.functional.cosine_similarity
            margins.append(float(cos(q, p, dim=0) - cos(q, emb(n), dim=0)))
    assert mean == pytest.approx(float(np.mean(margins)), abs=1e-5)
    assert std == pytest.approx(float(np.std(margins)), abs=1e-5)
    assert std > 0

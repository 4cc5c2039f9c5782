"""Triplet data: validation, one-time tokenisation in ``datasets.map``, and the padding collator.

An example has a ``query``, a ``positive`` and either one ``negative`` (a string) or ``negatives`` (a list
of strings, possibly of different lengths across examples). After :func:`~hf_margin.attach_teacher_margins`
it also has ``teacher_margins``, one float per negative.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset

QUERY, POSITIVE, NEGATIVE, NEGATIVES = "query", "positive", "negative", "negatives"
TEACHER_MARGINS = "teacher_margins"
# the teacher's embeddings of a row's texts (attach_teacher_embeddings): query (H,), positive + negatives (1 + N, H)
TEACHER_QUERY_EMBEDDING, TEACHER_DOCUMENT_EMBEDDINGS = "teacher_query_embedding", "teacher_document_embeddings"

# Columns written by `tokenize_triplets`, per student type.
BI_ENCODER_COLUMNS = ("query_input_ids", "positive_input_ids", "negatives_input_ids")
CROSS_ENCODER_COLUMNS = (
    "positive_pair_input_ids",
    "positive_pair_token_type_ids",
    "negatives_pair_input_ids",
    "negatives_pair_token_type_ids",
)

_VALIDATION_BATCH = 1024


class DataValidationError(ValueError):
    """Raised for bad training data; the message names the column, the first bad row and the fix."""


LINE_FILES = {".jsonl": 1, ".ndjson": 1, ".csv": 2, ".tsv": 2}  # suffix: line of row 0 (after a CSV header)


def row_location(row: int, source: str | None = None) -> str:
    """Where row ``row`` (0-based, as ``dataset[row]``) is, as its user counts: ``"train.jsonl, line 13"`` in a
    line-based file (JSON Lines, or CSV/TSV after the header line), else ``"[source, ]row 12"``."""
    first_line = LINE_FILES.get(os.path.splitext(source)[1].lower()) if source else None
    if first_line is not None:
        return f"{source}, line {row + first_line}"
    return f"{source}, row {row}" if source else f"row {row}"


def negatives_column(column_names: Iterable[str]) -> str:
    """Name of the negatives column: ``negatives`` (list of strings) or ``negative`` (one string)."""
    names = set(column_names)
    if NEGATIVES in names:
        return NEGATIVES
    if NEGATIVE in names:
        return NEGATIVE
    raise DataValidationError(
        f"no negatives column: the data has columns {sorted(names)}. Add a column 'negative' (one string per row) "
        "or 'negatives' (a list of strings per row)."
    )


def negatives_of(batch: Mapping[str, list], column: str) -> list[list[Any]]:
    """The negatives of a batch as one list per row, whichever negatives column it uses."""
    values = batch[column]
    return [[v] for v in values] if column == NEGATIVE else [list(v) if v is not None else v for v in values]


def _bad_text(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"a {type(value).__name__} ({value!r}), not a string"
    if not value:
        return "an empty string"
    if not value.strip():
        return f"a whitespace-only string ({value!r})"
    return None


def _iter_batches(dataset: Dataset | IterableDataset, columns: Sequence[str]) -> Iterable[tuple[int, dict]]:
    offset = 0
    for batch in dataset.select_columns(list(columns)).iter(batch_size=_VALIDATION_BATCH):
        yield offset, batch
        offset += len(next(iter(batch.values())))


def validate_triplets(
    dataset: Dataset | IterableDataset, *, require_teacher_margins: bool = False, row_offset: int = 0
) -> str:
    """Check every row before any compute is spent; return the negatives column's name.

    Raises:
        DataValidationError: for a missing column, an empty or non-string text, an empty list of negatives,
            a non-finite teacher margin, or a ``teacher_margins`` row whose length differs from its negatives.
            The message names the column and the first bad row index (plus ``row_offset``, for a chunk of a
            larger stream).
    """
    names = list(dataset.column_names or [])
    if not names and isinstance(dataset, IterableDataset):  # features unknown until the first row is read
        first = next(iter(dataset), None)
        names = list(first) if first is not None else []
    missing = [c for c in (QUERY, POSITIVE) if c not in names]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing}: the data has columns {names}. Each example needs 'query', 'positive' "
            "and 'negative' or 'negatives'; rename yours with dataset.rename_column(old, new)."
        )
    neg_col = negatives_column(names)
    has_margins = TEACHER_MARGINS in names
    if require_teacher_margins and not has_margins:
        raise DataValidationError(
            f"column '{TEACHER_MARGINS}' is missing: this loss distils teacher margins. Run "
            "hf_margin.attach_teacher_margins(dataset, teacher) first (it caches them), or use loss='label_hinge'."
        )
    columns = [QUERY, POSITIVE, neg_col] + ([TEACHER_MARGINS] if has_margins else [])
    for offset, batch in _iter_batches(dataset, columns):
        negs = negatives_of(batch, neg_col)
        for i in range(len(negs)):
            row = row_offset + offset + i
            for col in (QUERY, POSITIVE):
                problem = _bad_text(batch[col][i])
                if problem:
                    raise DataValidationError(
                        f"column '{col}', row {row}: {problem}. Every text must be a non-empty string; drop or "
                        f"fix the row (e.g. dataset.filter(lambda x: bool(x['{col}'] and x['{col}'].strip())))."
                    )
            if negs[i] is None or len(negs[i]) == 0:
                raise DataValidationError(
                    f"column '{neg_col}', row {row}: no negatives. Each example needs at least one negative; "
                    "drop the row or mine negatives for it."
                )
            for j, neg in enumerate(negs[i]):
                problem = _bad_text(neg)
                if problem:
                    raise DataValidationError(
                        f"column '{neg_col}', row {row}"
                        + (f", negative {j}" if neg_col == NEGATIVES else "")
                        + f": {problem}. Every negative must be a non-empty string; drop or fix it."
                    )
            if has_margins:
                margins = batch[TEACHER_MARGINS][i]
                margins = [margins] if isinstance(margins, (int, float)) else margins
                if margins is None or len(margins) != len(negs[i]):
                    got = "none" if margins is None else len(margins)
                    raise DataValidationError(
                        f"column '{TEACHER_MARGINS}', row {row}: {got} margins for {len(negs[i])} negatives. "
                        "There must be one teacher margin per negative; recompute them with attach_teacher_margins."
                    )
                for j, m in enumerate(margins):
                    if m is None or not math.isfinite(m):
                        raise DataValidationError(
                            f"column '{TEACHER_MARGINS}', row {row}, negative {j}: teacher margin {m} is not finite. "
                            "Check the teacher's scores for this row (NaN or inf) and recompute."
                        )
    return neg_col


def tokenize_triplets(
    dataset: Dataset,
    tokenizer,
    *,
    student_type: str = "bi-encoder",
    max_length: int = 128,
    query_max_length: int | None = None,
    query_prompt: str = "",
    document_prompt: str = "",
    batch_size: int = 1000,
    num_proc: int | None = None,
) -> Dataset:
    """Tokenise every text once, in a cached ``datasets.map``, and drop the raw text columns.

    A bi-encoder gets ``query_input_ids``, ``positive_input_ids`` and ``negatives_input_ids`` (a list per row):
    queries are truncated to ``query_max_length`` (default ``max_length``) and prefixed with ``query_prompt``,
    positives and negatives truncated to ``max_length`` (the document length) and prefixed with
    ``document_prompt``. A cross-encoder gets the joined ``(query, positive)`` and ``(query, negative_i)`` pairs
    with their ``token_type_ids``, truncated to ``max_length``. Other columns (``teacher_margins`` ...) are kept.
    """
    neg_col = negatives_column(dataset.column_names)

    def encode(
        texts: list[str], pairs: list[str] | None = None, *, length: int = max_length, prompt: str = ""
    ) -> dict[str, list[list[int]]]:
        texts = [prompt + t for t in texts] if prompt else texts
        return tokenizer(texts, pairs, truncation=True, max_length=length, add_special_tokens=True)

    def regroup(flat: list[list[int]], counts: list[int]) -> list[list[list[int]]]:
        out, start = [], 0
        for c in counts:
            out.append(flat[start : start + c])
            start += c
        return out

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        negs = negatives_of(batch, neg_col)
        counts = [len(n) for n in negs]
        flat_negs = [n for row in negs for n in row]
        if student_type == "bi-encoder":
            return {
                "query_input_ids": encode(batch[QUERY], length=query_max_length or max_length, prompt=query_prompt)[
                    "input_ids"
                ],
                "positive_input_ids": encode(batch[POSITIVE], prompt=document_prompt)["input_ids"],
                "negatives_input_ids": regroup(encode(flat_negs, prompt=document_prompt)["input_ids"], counts),
            }
        queries_per_neg = [q for q, c in zip(batch[QUERY], counts) for _ in range(c)]
        pos = encode(batch[QUERY], batch[POSITIVE])
        neg = encode(queries_per_neg, flat_negs)
        return {
            "positive_pair_input_ids": pos["input_ids"],
            "positive_pair_token_type_ids": pos.get("token_type_ids", [[0] * len(x) for x in pos["input_ids"]]),
            "negatives_pair_input_ids": regroup(neg["input_ids"], counts),
            "negatives_pair_token_type_ids": regroup(
                neg.get("token_type_ids", [[0] * len(x) for x in neg["input_ids"]]), counts
            ),
        }

    return dataset.map(
        tokenize,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=[QUERY, POSITIVE, neg_col],
        desc=f"Tokenizing triplets for a {student_type}",
    )


def _pad(sequences: list[list[int]], pad_value: int, multiple_of: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(T, L)`` ids and attention mask, in one vectorised copy (no per-row tensors)."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    length = int(lengths.max())
    if multiple_of:
        length = -(-length // multiple_of) * multiple_of
    flat = np.fromiter(chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    mask = np.arange(length) < lengths[:, None]
    ids = np.full((len(sequences), length), pad_value, dtype=np.int64)
    ids[mask] = flat
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


@dataclass
class MarginDistillCollator:
    """Pad tokenised triplets into one batch that a single forward pass scores.

    Output keys: ``input_ids`` and ``attention_mask`` ``(T, L)`` (plus ``token_type_ids`` for a cross-encoder),
    ``negatives_mask`` ``(B, N)`` bool, ``teacher_margins`` ``(B, N)`` float when the rows carry them, and (a
    bi-encoder) ``teacher_query_embedding`` ``(B, H)`` and ``teacher_document_embeddings`` ``(B + M, H)`` when the
    rows carry the teacher's embeddings.
    For a bi-encoder ``T = 2B + M`` rows: queries, positives, then the ``M`` real negatives row-major; for a
    cross-encoder ``T = B + M``: (query, positive) pairs, then (query, negative) pairs.

    ``pad_queries_apart`` (bi-encoder): short queries are not padded to the documents' length. The ``B`` queries
    go to ``query_input_ids`` / ``query_attention_mask`` ``(B, Lq)``, and ``input_ids`` holds the ``B + M``
    documents ``(B + M, Ld)``.
    """

    pad_token_id: int
    student_type: str = "bi-encoder"
    pad_to_multiple_of: int | None = None
    pad_queries_apart: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        required = BI_ENCODER_COLUMNS if self.student_type == "bi-encoder" else CROSS_ENCODER_COLUMNS
        missing = [c for c in required if c not in features[0]]
        if missing:
            raise DataValidationError(
                f"the batch lacks column(s) {missing} (it has {sorted(features[0])}). Tokenise the triplets for a "
                f"{self.student_type} with hf_margin.tokenize_triplets first (MarginDistillTrainer does it for you "
                "when given a processing_class)."
            )
        if self.student_type == "bi-encoder":
            negs = [f["negatives_input_ids"] for f in features]
            seqs = (
                [f["query_input_ids"] for f in features]
                + [f["positive_input_ids"] for f in features]
                + [n for row in negs for n in row]
            )
            type_ids = None
        else:
            negs = [f["negatives_pair_input_ids"] for f in features]
            seqs = [f["positive_pair_input_ids"] for f in features] + [n for row in negs for n in row]
            type_ids = [f["positive_pair_token_type_ids"] for f in features] + [
                t for f in features for t in f["negatives_pair_token_type_ids"]
            ]
        counts = torch.tensor([len(row) for row in negs])
        width = int(counts.max())
        batch: dict[str, torch.Tensor] = {}
        if self.pad_queries_apart and type_ids is None:
            queries, seqs = seqs[: len(features)], seqs[len(features) :]
            batch["query_input_ids"], batch["query_attention_mask"] = _pad(
                queries, self.pad_token_id, self.pad_to_multiple_of
            )
        batch["input_ids"], batch["attention_mask"] = _pad(seqs, self.pad_token_id, self.pad_to_multiple_of)
        if type_ids is not None:
            batch["token_type_ids"], _ = _pad(type_ids, 0, self.pad_to_multiple_of)
        batch["negatives_mask"] = torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)
        if TEACHER_MARGINS in features[0]:
            margins = torch.zeros(len(features), width, dtype=torch.float32)
            for i, f in enumerate(features):
                row = f[TEACHER_MARGINS]
                row = [row] if isinstance(row, (int, float)) else row
                if len(row) != len(negs[i]):
                    raise DataValidationError(
                        f"position {i} of a collated batch: {len(row)} teacher margins for {len(negs[i])} negatives; "
                        "validate_triplets(dataset) names the dataset row; recompute them with attach_teacher_margins."
                    )
                margins[i, : len(row)] = torch.as_tensor(row, dtype=torch.float32)
            batch[TEACHER_MARGINS] = margins
        if TEACHER_QUERY_EMBEDDING in features[0] and type_ids is None:
            # laid out as the student's embeddings of the batch: B queries; B positives, then the M real negatives
            batch[TEACHER_QUERY_EMBEDDING] = torch.as_tensor(
                np.asarray([f[TEACHER_QUERY_EMBEDDING] for f in features], dtype=np.float32)
            )
            documents = [f[TEACHER_DOCUMENT_EMBEDDINGS] for f in features]
            flat = [row[0] for row in documents] + [e for row in documents for e in row[1:]]
            if len(flat) != len(features) + int(counts.sum()):
                raise DataValidationError(
                    f"a collated batch has {len(flat)} teacher document embeddings for {len(features)} positives and "
                    f"{int(counts.sum())} negatives; recompute them with attach_teacher_embeddings."
                )
            batch[TEACHER_DOCUMENT_EMBEDDINGS] = torch.as_tensor(np.asarray(flat, dtype=np.float32))
        return batch

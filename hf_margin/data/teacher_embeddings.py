"""The cached teacher-embedding columns: :func:`attach_teacher_embeddings`.

With ``embedding_weight > 0`` the student is also asked to embed each text of a row where the teacher does (the
cosine distance between the two embeddings, beside the margin loss). Like the margins, the teacher's embeddings
are computed once, in a ``datasets.map`` whose fingerprint names the data, the teacher and this code, so a rerun
reads them from the cache and never calls the teacher. A teacher that has just mined or scored the same texts
embeds nothing again: its memo holds them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import datasets
import numpy as np
from datasets import Dataset
from datasets.fingerprint import Hasher

from hf_margin.data.columns import (
    POSITIVE,
    QUERY,
    TEACHER_DOCUMENT_EMBEDDINGS,
    TEACHER_QUERY_EMBEDDING,
    DataValidationError,
    negatives_of,
    validate_triplets,
)
from hf_margin.data.margins import map_scores, scores_cache_entry

logger = logging.getLogger(__name__)

EMBEDDING_VERSION = "1"  # bump when what is written changes: every cache is then recomputed
EMBEDDING_COLUMNS = (TEACHER_QUERY_EMBEDDING, TEACHER_DOCUMENT_EMBEDDINGS)


def embeddings_fingerprint(dataset: Dataset, teacher) -> str:
    """Fingerprint of the embedded dataset: the data's, the teacher's and this code's version."""
    return Hasher.hash(["teacher-embeddings", EMBEDDING_VERSION, dataset._fingerprint, teacher.fingerprint])


def _embedder(teacher, neg_col: str) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
    """The batched map function: each row's query ``(H,)`` and its positive then negatives ``(1 + N, H)``."""

    def embed(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        negs = negatives_of(batch, neg_col)
        queries = teacher.embed(list(batch[QUERY]), role="query").float().cpu().numpy()
        documents = teacher.embed(list(batch[POSITIVE]) + [n for row in negs for n in row]).float().cpu().numpy()
        bad = np.flatnonzero(~np.isfinite(np.concatenate([queries, documents])).all(axis=1))
        if bad.size:
            k = int(bad[0])
            where = f"column '{QUERY}', row {indices[k]}" if k < len(queries) else "a positive or negative"
            raise DataValidationError(
                f"{where}: the teacher's embedding is not finite. Check the teacher (fp16 overflow? a broken "
                "checkpoint?) or drop the row; nothing was cached."
            )
        b = len(negs)
        positives, flat_neg = documents[:b], documents[b:]
        rows, start = [], 0
        for i, row in enumerate(negs):
            rows.append(np.concatenate([positives[i : i + 1], flat_neg[start : start + len(row)]]).tolist())
            start += len(row)
        return {TEACHER_QUERY_EMBEDDING: queries.tolist(), TEACHER_DOCUMENT_EMBEDDINGS: rows}

    return embed


def attach_teacher_embeddings(
    dataset: Dataset,
    teacher,
    *,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    load_from_cache_file: bool = True,
) -> Dataset:
    """Add ``teacher_query_embedding`` ``(H,)`` and ``teacher_document_embeddings`` ``(1 + N, H)`` (the positive,
    then each negative) columns: the teacher's embedding of every text of a row, as targets for the student.

    Cached like :func:`~hf_margin.data.margins.attach_teacher_margins` (an Arrow file named by
    :func:`embeddings_fingerprint`, written atomically; under several processes each embeds its share).

    Args:
        dataset: rows with ``query``, ``positive`` and ``negative`` or ``negatives`` (the margins may be there).
        teacher: a bi-encoder scorer (:class:`~hf_margin.models.scoring.BiEncoderScorer`): it must embed texts.
            A cross-encoder has no embedding to distil: refused.
        batch_size: rows per map batch.
        cache_dir: folder of the cache file; by default the dataset's own cache folder, else
            :func:`~hf_margin.data.margins.default_cache_dir`.
    """
    if not callable(getattr(teacher, "embed", None)) or not hasattr(teacher, "fingerprint"):
        raise TypeError(
            f"teacher embeddings need a bi-encoder teacher (with .embed(texts, role) and .fingerprint); got "
            f"{type(teacher).__name__}. A cross-encoder scores pairs and has no embedding: set embedding_weight=0."
        )
    if not isinstance(dataset, Dataset):
        raise DataValidationError(
            f"teacher embeddings are attached to a Dataset (got {type(dataset).__name__}); load a stream as a Dataset"
        )
    if len(dataset) == 0:
        raise DataValidationError("the dataset has 0 rows: there is nothing to embed")
    neg_col = validate_triplets(dataset)
    stale = [c for c in EMBEDDING_COLUMNS if c in dataset.column_names]
    if stale:
        logger.warning("replacing the data's teacher embeddings %s with %s's", stale, type(teacher).__name__)
        dataset = dataset.remove_columns(stale)
    fingerprint = embeddings_fingerprint(dataset, teacher)
    entry = scores_cache_entry(dataset, cache_dir, "teacher-embeddings", fingerprint)
    features = dataset.features.copy()
    features[TEACHER_QUERY_EMBEDDING] = datasets.List(datasets.Value("float32"))
    features[TEACHER_DOCUMENT_EMBEDDINGS] = datasets.List(datasets.List(datasets.Value("float32")))
    embedded = map_scores(
        dataset,
        _embedder(teacher, neg_col),
        entry,
        EMBEDDING_COLUMNS,
        features,
        batch_size=batch_size,
        load=load_from_cache_file,
        fingerprint=fingerprint,
        desc="Teacher embeddings",
    )
    logger.info("Teacher embeddings attached (fingerprint %s, cache %s)", fingerprint, entry.data_file)
    return embedded

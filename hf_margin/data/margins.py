"""The cached teacher-margin columns: :func:`attach_teacher_margins` and :func:`attach_band_margins`.

They score every (query, positive) and (query, negative) pair once with a teacher (any
:class:`~hf_margin.models.scoring.TeacherScorer`), in a ``datasets.map`` whose fingerprint names the data, the
teacher and the scoring code, so a second run reads the cache and never calls the teacher.
:func:`attach_band_margins` scores each row's whole candidate ``band`` (kept by mining with ``keep_band``), so
negatives redrawn every epoch (:class:`~hf_margin.data.fresh_negatives.FreshNegatives`) come with their margins.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from hf_margin.data.cache import CacheEntry, written_whole
from hf_margin.data.columns import (
    NEGATIVES,
    POSITIVE,
    QUERY,
    DataValidationError,
    negatives_column,
    negatives_of,
    validate_triplets,
)
from hf_margin.data.processes import process_state
from hf_margin.models.scoring import TeacherScorer

logger = logging.getLogger(__name__)

# Bump when the scoring code changes what it writes: every cache is then recomputed.
SCORING_VERSION = "1"
TEACHER_COLUMNS = ("teacher_pos_score", "teacher_neg_scores", "teacher_margins")
BAND = "band"  # every mining candidate of a row (list of texts): the pool of fresh negatives
BAND_MARGINS = "band_margins"  # the teacher margin of each band candidate, aligned with BAND
BAND_COLUMNS = (*TEACHER_COLUMNS, BAND_MARGINS)


def default_cache_dir() -> Path:
    """Where teacher margins of in-memory datasets are cached: ``$HF_DATASETS_CACHE/hf_margin``."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_margin"


def margins_fingerprint(dataset: Dataset, teacher: TeacherScorer) -> str:
    """Fingerprint of the scored dataset: the data's, the teacher's and the scoring code's version."""
    return Hasher.hash(["teacher-margins", SCORING_VERSION, dataset._fingerprint, teacher.fingerprint])


def scores_cache_entry(
    dataset: Dataset | IterableDataset, cache_dir: str | os.PathLike | None, kind: str, fingerprint: str
) -> CacheEntry:
    if cache_dir is None:
        files = getattr(dataset, "cache_files", None)
        cache_dir = Path(files[0]["filename"]).parent if files else default_cache_dir()
    return CacheEntry.create(cache_dir, kind, fingerprint, "teacher-margin cache")


def _margin_scorer(teacher: TeacherScorer, neg_col: str) -> Callable[[dict[str, list], list[int]], dict[str, list]]:
    """The batched map function: score (q, p) and every (q, n) of a batch in one teacher call."""

    def score(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        negs = negatives_of(batch, neg_col)
        queries = list(batch[QUERY]) + [q for q, row in zip(batch[QUERY], negs) for _ in row]
        documents = list(batch[POSITIVE]) + [n for row in negs for n in row]
        scores = np.asarray(teacher.score_pairs(queries, documents), dtype=np.float64)
        if scores.shape != (len(queries),):
            raise ValueError(f"teacher returned scores of shape {scores.shape} for {len(queries)} pairs")
        b = len(batch[QUERY])
        pos, flat_neg = scores[:b], scores[b:]
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            k = int(bad[0])
            row = k if k < b else int(np.searchsorted(np.cumsum([len(r) for r in negs]), k - b, side="right"))
            column = POSITIVE if k < b else neg_col
            raise DataValidationError(
                f"column '{column}', row {indices[row]}: the teacher's score is {scores[k]} (not finite). Check the "
                "teacher (fp16 overflow? a broken checkpoint?) or drop the row; nothing was cached."
            )
        neg_scores, margins, start = [], [], 0
        for i, row in enumerate(negs):
            ns = flat_neg[start : start + len(row)]
            start += len(row)
            neg_scores.append(ns.tolist())
            margins.append((pos[i] - ns).tolist())
        return {"teacher_pos_score": pos.tolist(), "teacher_neg_scores": neg_scores, "teacher_margins": margins}

    return score


def _scored_features(features: datasets.Features) -> datasets.Features:
    features = features.copy()
    features["teacher_pos_score"] = datasets.Value("float32")
    features["teacher_neg_scores"] = datasets.List(datasets.Value("float32"))
    features["teacher_margins"] = datasets.List(datasets.Value("float32"))
    return features


def _score_shards(
    dataset: Dataset, score: Callable, batch_size: int, state: PartialState, columns: tuple[str, ...]
) -> dict[int, tuple]:
    """Each process scores its own contiguous share of rows; every process gets all results back
    (``{row: values of columns}``).

    An error on any process (a non-finite score, say) is raised on every process, so none waits forever in
    the gather.
    """
    mine: list[tuple] = []
    error: str | None = None
    with state.split_between_processes(list(range(len(dataset)))) as rows:
        try:
            for start in tqdm(
                range(0, len(rows), batch_size), desc=f"Scoring teacher margins (process {state.process_index})"
            ):
                idx = rows[start : start + batch_size]
                out = score(dataset[idx[0] : idx[-1] + 1], idx)
                mine += zip(idx, *(out[c] for c in columns))
        except Exception as exc:  # re-raised below on every process
            error = f"process {state.process_index}: {type(exc).__name__}: {exc}"
    gathered = gather_object([(error, mine)])
    errors = [e for e, _ in gathered if e]
    if errors:
        raise DataValidationError("teacher scoring failed; nothing was cached. " + " | ".join(errors))
    logger.info("Process %d scored %d of %d rows", state.process_index, len(mine), len(dataset))
    return {i: rest for _, part in gathered for i, *rest in part}


def attach_teacher_margins(
    dataset: Dataset | IterableDataset,
    teacher: TeacherScorer,
    *,
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
    load_from_cache_file: bool = True,
    data_fingerprint: str | None = None,
    rescore: bool = False,
) -> Dataset:
    """Add ``teacher_pos_score`` ``()``, ``teacher_neg_scores`` ``(N,)`` and ``teacher_margins`` ``(N,)`` columns.

    Scores are computed once and cached in an Arrow file named by :func:`margins_fingerprint` (data, teacher
    weights and options, scoring code): the same data and teacher load it without calling the teacher; other
    data, weights or options recompute. The data is validated first, and the cache file is written atomically
    (to a temporary file, then moved), so a failed or killed run leaves no partial cache to be read.

    Under Accelerate with several processes, each process scores its share of the rows, the scores are
    gathered, and the main process writes the one cache that every process then reads; a run that finds the
    cache scores nothing. An ``IterableDataset`` (a stream) is scored batch by batch into the cache file, so
    memory does not grow with the data; name the stream's content with ``data_fingerprint``.

    Args:
        dataset: rows with ``query``, ``positive`` and ``negative`` or ``negatives``.
        teacher: a :class:`TeacherScorer`, e.g. :class:`BiEncoderTeacher` or :class:`CrossEncoderTeacher`.
        batch_size: rows per scoring batch (each holds ``rows × (1 + N)`` pairs).
        cache_dir: folder of the cache file; by default the dataset's own cache folder when it is backed
            by files, else :func:`default_cache_dir`.
        data_fingerprint: identity of a streamed dataset's content (required for an ``IterableDataset``).
        rescore: replace teacher scores the data already carries; without it such data is refused, so scores
            a user brought are never dropped silently.

    Returns:
        A ``Dataset`` backed by the cache file.
    """
    if not isinstance(teacher, TeacherScorer):
        raise TypeError(f"teacher must have .fingerprint and .score_pairs(queries, documents); got {type(teacher)}")
    if isinstance(dataset, IterableDataset):
        return _attach_streaming(
            dataset, teacher, batch_size, cache_dir, load_from_cache_file, data_fingerprint, rescore
        )
    if len(dataset) == 0:
        raise DataValidationError(
            "the dataset has 0 rows: there is nothing to score. Check the file or the filter that emptied it."
        )
    neg_col = validate_triplets(dataset)
    stale = [c for c in TEACHER_COLUMNS if c in dataset.column_names]
    if stale and not rescore:
        raise DataValidationError(
            f"the data already carries teacher scores (column(s) {stale}); attach_teacher_margins would replace "
            "them. Train on them as they are (no teacher needed), or pass rescore=True to score with this teacher."
        )
    if stale:
        logger.warning("rescore=True: replacing the data's own teacher scores %s with %s's", stale, teacher)
        dataset = dataset.remove_columns(stale)
    fingerprint = margins_fingerprint(dataset, teacher)
    entry = scores_cache_entry(dataset, cache_dir, "teacher-margins", fingerprint)
    scored = map_scores(
        dataset,
        _margin_scorer(teacher, neg_col),
        entry,
        TEACHER_COLUMNS,
        _scored_features(dataset.features),
        batch_size=batch_size,
        load=load_from_cache_file,
        fingerprint=fingerprint,
        desc="Scoring teacher margins",
    )
    logger.info("Teacher margins attached (fingerprint %s, cache %s)", fingerprint, entry.data_file)
    return scored


def map_scores(
    dataset: Dataset,
    score: Callable,
    entry: CacheEntry,
    columns: tuple[str, ...],
    features: datasets.Features,
    *,
    batch_size: int,
    load: bool,
    fingerprint: str,
    desc: str,
) -> Dataset:
    """``score`` mapped over ``dataset`` into the cache ``entry``; under several processes each scores its share
    (:func:`_score_shards`) and the main process writes the gathered ``columns``."""
    state = process_state()

    def score_in_shards() -> Callable:
        """Several processes: each scores its share of the rows; the main process maps the gathered scores."""
        precomputed = _score_shards(dataset, score, batch_size, state, columns)

        def lookup(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            rows = [precomputed[i] for i in indices]
            return {name: [r[k] for r in rows] for k, name in enumerate(columns)}

        return lookup

    return entry.map(
        dataset,
        score,
        columns=columns,
        load=load,
        on_miss=score_in_shards if state.num_processes > 1 else None,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        features=features,
        new_fingerprint=fingerprint,
        desc=desc,
    )


def list_lengths(dataset: Dataset, column: str) -> np.ndarray:
    """Length of each row's list in ``column`` ``(R,)``, read from Arrow (no Python list of the values)."""
    import pyarrow.compute as pc

    values = dataset.with_format("arrow")[column]
    return np.asarray(pc.list_value_length(values).to_numpy(zero_copy_only=False), dtype=np.int64)


def band_margins_fingerprint(dataset: Dataset, teacher: TeacherScorer) -> str:
    """Fingerprint of band scoring: the data's (its bands and negatives), the teacher's and the code's version."""
    return Hasher.hash(["band-margins", SCORING_VERSION, dataset._fingerprint, teacher.fingerprint])


def _check_bands(dataset: Dataset) -> None:
    """Every row's band: a non-empty list of non-empty strings (the message names the row and the fix)."""
    for offset in range(0, len(dataset), 1024):
        for i, band in enumerate(dataset[offset : offset + 1024][BAND]):
            bad = None if band else "no candidates"
            for j, text in enumerate(band or []):
                if bad is None and not (isinstance(text, str) and text.strip()):
                    bad = f"candidate {j} is {text!r}"
            if bad:
                raise DataValidationError(
                    f"column '{BAND}', row {offset + i}: {bad}. A band holds the candidate negatives of its row "
                    "(mine_hard_negatives(..., keep_band=True) writes it); drop or fix the row."
                )


def attach_band_margins(
    dataset: Dataset,
    teacher: TeacherScorer,
    *,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    load_from_cache_file: bool = True,
    rescore: bool = False,
) -> Dataset:
    """Score each row's whole candidate band in one teacher pass (cached): add ``band_margins`` ``(K,)``, one
    margin ``t(q,p) − t(q,c)`` per candidate of ``band`` ``(K,)``, and the usual ``teacher_pos_score`` ``()``,
    ``teacher_neg_scores`` ``(N,)`` and ``teacher_margins`` ``(N,)`` of the row's ``negatives`` (read off the band's
    scores; a negative outside the band is scored in the same pass), so the data also trains as it is.

    The cache file is named by :func:`band_margins_fingerprint` (the data with its bands, the teacher, the code):
    a rerun reads it without calling the teacher. Under several Accelerate processes each scores its share of
    the rows, as :func:`attach_teacher_margins` does. A stream (``IterableDataset``) has no band to keep: refused.

    Args:
        dataset: rows with ``query``, ``positive``, ``negative`` or ``negatives``, and ``band`` (a list of texts).
        teacher: a :class:`TeacherScorer` (bi-encoder or cross-encoder).
        batch_size: rows per scoring batch (each holds ``rows × (1 + K)`` pairs).
        rescore: replace teacher scores the data already carries (else refused).
    """
    if not isinstance(teacher, TeacherScorer):
        raise TypeError(f"teacher must have .fingerprint and .score_pairs(queries, documents); got {type(teacher)}")
    if isinstance(dataset, IterableDataset):
        raise DataValidationError(
            "a streamed (Iterable) dataset cannot keep a candidate band per row for fresh negatives: load it as a "
            "Dataset, or train on fixed negatives with attach_teacher_margins"
        )
    if len(dataset) == 0:
        raise DataValidationError("the dataset has 0 rows: there is nothing to score")
    neg_col = validate_triplets(dataset)
    if BAND not in dataset.column_names:
        raise DataValidationError(
            f"no '{BAND}' column: the data has columns {dataset.column_names}. Mine with "
            "mine_hard_negatives(..., keep_band=True) or build_corpus_triplets(..., keep_band=True) to keep each "
            "row's candidates."
        )
    _check_bands(dataset)
    stale = [c for c in BAND_COLUMNS if c in dataset.column_names]
    if stale and not rescore:
        raise DataValidationError(
            f"the data already carries teacher scores (column(s) {stale}); attach_band_margins would replace them. "
            "Pass rescore=True to score with this teacher."
        )
    if stale:
        dataset = dataset.remove_columns(stale)
    fingerprint = band_margins_fingerprint(dataset, teacher)
    entry = scores_cache_entry(dataset, cache_dir, "band-margins", fingerprint)
    score_union = _margin_scorer(teacher, NEGATIVES)

    def score(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        negs = negatives_of(batch, neg_col)
        unions = [list(dict.fromkeys([*band, *row])) for band, row in zip(batch[BAND], negs)]
        out = score_union({QUERY: batch[QUERY], POSITIVE: batch[POSITIVE], NEGATIVES: unions}, indices)
        result: dict[str, list] = {name: [] for name in BAND_COLUMNS}
        result["teacher_pos_score"] = out["teacher_pos_score"]
        for band, row, union, scores, margins in zip(
            batch[BAND], negs, unions, out["teacher_neg_scores"], out["teacher_margins"]
        ):
            where = {text: k for k, text in enumerate(union)}
            result["teacher_neg_scores"].append([scores[where[n]] for n in row])
            result["teacher_margins"].append([margins[where[n]] for n in row])
            result[BAND_MARGINS].append([margins[where[c]] for c in band])
        return result

    features = _scored_features(dataset.features)
    features[BAND_MARGINS] = datasets.List(datasets.Value("float32"))
    scored = map_scores(
        dataset,
        score,
        entry,
        BAND_COLUMNS,
        features,
        batch_size=batch_size,
        load=load_from_cache_file,
        fingerprint=fingerprint,
        desc="Scoring teacher margins of the candidate bands",
    )
    sizes = list_lengths(scored, BAND)
    logger.info(
        "Band margins attached: %.1f candidates per row cached (min %d, max %d; fingerprint %s, cache %s)",
        sizes.mean(), sizes.min(), sizes.max(), fingerprint, entry.data_file,
    )  # fmt: skip
    return scored


def _attach_streaming(
    dataset: IterableDataset,
    teacher: TeacherScorer,
    batch_size: int,
    cache_dir: str | os.PathLike | None,
    load_from_cache_file: bool,
    data_fingerprint: str | None,
    rescore: bool = False,
) -> Dataset:
    """Score a stream batch by batch into an Arrow file (written to a temporary name, then moved)."""
    if data_fingerprint is None:
        raise ValueError(
            "a streamed (Iterable) dataset has no fingerprint of its content: pass data_fingerprint=... (e.g. the "
            "hash or version of its source files) so its teacher margins can be cached and found again"
        )
    fingerprint = Hasher.hash(["teacher-margins-stream", SCORING_VERSION, data_fingerprint, teacher.fingerprint])
    entry = scores_cache_entry(dataset, cache_dir, "teacher-margins-stream", fingerprint)
    state = process_state()
    if state.is_main_process:
        with entry.locked():
            if not (load_from_cache_file and entry.usable(None, TEACHER_COLUMNS)):
                _score_stream(dataset, teacher, batch_size, entry, rescore)
    state.wait_for_everyone()
    return Dataset.from_file(str(entry.data_file))


def _score_stream(
    dataset: IterableDataset, teacher: TeacherScorer, batch_size: int, entry: CacheEntry, rescore: bool
) -> None:
    first = next(iter(dataset), None)
    if first is None:
        raise DataValidationError("the streamed dataset is empty (0 rows): there is nothing to score")
    neg_col = negatives_column(first)
    stale = [c for c in TEACHER_COLUMNS if c in first]
    if stale and not rescore:
        raise DataValidationError(
            f"the streamed data already carries teacher scores (column(s) {stale}); pass rescore=True to "
            "replace them with this teacher's, or train on them as they are"
        )
    score = _margin_scorer(teacher, neg_col)
    offset, writer = 0, None
    with written_whole(entry.data_file) as tmp:
        try:
            for batch in tqdm(dataset.iter(batch_size=batch_size), desc="Scoring teacher margins (stream)"):
                batch = {k: v for k, v in batch.items() if k not in TEACHER_COLUMNS}
                n = len(batch[QUERY])
                validate_triplets(Dataset.from_dict(batch), row_offset=offset)
                batch.update(score(batch, list(range(offset, offset + n))))
                if hasattr(teacher, "clear_memo"):  # memory must not grow with the stream
                    teacher.clear_memo()
                if writer is None:
                    inputs = datasets.Features.from_arrow_schema(
                        pa.Table.from_pydict({k: v for k, v in batch.items() if k not in TEACHER_COLUMNS}).schema
                    )
                    features = _scored_features(inputs)
                    writer = ArrowWriter(path=str(tmp), features=features)
                writer.write_table(pa.Table.from_pydict(batch, schema=features.arrow_schema))
                offset += n
            if writer is None:
                raise DataValidationError("the streamed dataset is empty (0 rows): there is nothing to score")
            writer.finalize()
        finally:  # a failed batch closes the half-written file before written_whole removes it
            if writer is not None:
                writer.close()
    entry.seal()
    logger.info("Scored %d streamed rows into %s", offset, entry.data_file)


__all__ = [
    "BAND",
    "BAND_MARGINS",
    "TEACHER_COLUMNS",
    "attach_band_margins",
    "attach_teacher_margins",
    "band_margins_fingerprint",
    "default_cache_dir",
    "margins_fingerprint",
]

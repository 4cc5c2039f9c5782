"""Teacher scoring and the cached teacher-margin columns.

A teacher is anything with ``score_pairs(queries, documents) -> np.ndarray`` and a ``fingerprint`` string
that changes whenever its scores could (weights, options). :func:`attach_teacher_margins` scores every
(query, positive) and (query, negative) pair once, in a ``datasets.map`` whose fingerprint names the data,
the teacher and the scoring code, so a second run reads the cache and never calls the teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import datasets
import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset, IterableDataset
from datasets.arrow_writer import ArrowWriter
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from hf_margin.data import (
    POSITIVE,
    QUERY,
    DataValidationError,
    negatives_column,
    negatives_of,
    validate_triplets,
)
from hf_margin.modeling import encode, similarity

logger = logging.getLogger(__name__)

# Bump when the scoring code changes what it writes: every cache is then recomputed.
SCORING_VERSION = "1"
TEACHER_COLUMNS = ("teacher_pos_score", "teacher_neg_scores", "teacher_margins")


@runtime_checkable
class TeacherScorer(Protocol):
    """What :func:`attach_teacher_margins` needs of a teacher."""

    @property
    def fingerprint(self) -> str: ...

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray: ...


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes): a content hash of the weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class _TransformersTeacher:
    """Shared parts of the ``transformers`` teachers: device, batching, fingerprint."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device | None = None,
        show_progress: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else PartialState().device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.show_progress = show_progress
        self._fingerprint: str | None = None
        self._state: tuple | None = None

    def _current_state(self) -> tuple:
        """What the scores depend on, cheaply: each tensor's identity, storage, dtype and version counter
        (bumped by every in-place write: an optimiser step, ``load_state_dict``), the tokenizer object and
        every scoring option."""
        tensors = (*self.model.parameters(), *self.model.buffers())
        weights = tuple((id(t), t.data_ptr(), t.dtype, t.device, t._version) for t in tensors)
        return weights, id(self.tokenizer), tuple(sorted(self.options().items()))

    def _refresh(self) -> None:
        """Forget the fingerprint and anything scored when the weights, tokenizer or options changed."""
        state = self._current_state()
        if state != self._state:
            self._state = state
            self._fingerprint = None
            self._on_weights_changed()

    def options(self) -> dict:
        return {"max_length": self.max_length}

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights, the model config, the tokenizer and every scoring option."""
        self._refresh()
        if self._fingerprint is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None:  # the vocabulary and pipeline, without per-call padding/truncation state
                tokenizer = {
                    k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")
                }
            else:
                tokenizer = sorted(self.tokenizer.get_vocab().items())
            self._fingerprint = Hasher.hash(
                {
                    "class": type(self).__name__,
                    "weights": weights_fingerprint(self.model),
                    "config": self.model.config.to_json_string() if hasattr(self.model, "config") else None,
                    "tokenizer": [type(self.tokenizer).__name__, Hasher.hash(tokenizer)],
                    "options": self.options(),
                }
            )
        return self._fingerprint

    def _on_weights_changed(self) -> None:
        """Drop whatever was computed with the old weights."""

    def _batches(self, n: int, desc: str):
        return tqdm(range(0, n, self.batch_size), desc=desc, unit="batch", disable=not self.show_progress, leave=False)


class BiEncoderTeacher(_TransformersTeacher):
    """Teacher scores ``sim(embed(q), embed(d))`` from pooled embeddings of an ``AutoModel``.

    Each distinct text is embedded once per teacher object, in length-sorted batches, and remembered: mining
    and margin scoring over the same sentences share the work.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        similarity_fn: str = "cosine",
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._memo: dict[str, torch.Tensor] = {}  # text -> embedding: mining and scoring embed each text once
        self.pooling = pooling
        self.normalize = normalize
        self.similarity_fn = similarity_fn

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs):
        """Load from the Hub or a local directory (``AutoModel`` + ``AutoTokenizer``)."""
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    def _on_weights_changed(self) -> None:
        self._memo.clear()

    def clear_memo(self) -> None:
        """Forget remembered embeddings (streamed scoring does this after each batch, to bound memory)."""
        self._memo.clear()

    def options(self) -> dict:
        return {**super().options(), "pooling": self.pooling, "normalize": self.normalize, "sim": self.similarity_fn}

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts ``(len(texts), H)``; texts seen before by this teacher come from its memo, the rest are
        embedded in batches sorted by length (less padding)."""
        self._refresh()
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        order = sorted(new, key=len)
        for start in self._batches(len(order), "Teacher embedding"):
            chunk = order[start : start + self.batch_size]
            enc = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            emb = (
                encode(
                    self.model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    pooling=self.pooling,
                    normalize=self.normalize,
                    token_type_ids=enc.get("token_type_ids"),
                )
                .float()
                .cpu()
            )
            self._memo.update(zip(chunk, emb))
        if not texts:
            return torch.empty(0)
        return torch.stack([self._memo[t] for t in texts])

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys([*queries, *documents]))
        index = {t: i for i, t in enumerate(unique)}
        emb = self.embed(unique)
        q = emb[[index[t] for t in queries]]
        d = emb[[index[t] for t in documents]]
        return similarity(q, d, self.similarity_fn).numpy()


class CrossEncoderTeacher(_TransformersTeacher):
    """Teacher scores the one logit of a sequence-classification model on the joined pair (optionally sigmoid)."""

    def __init__(self, model: PreTrainedModel, tokenizer, *, apply_sigmoid: bool = False, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.apply_sigmoid = apply_sigmoid

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs):
        """Load from the Hub or a local directory (``AutoModelForSequenceClassification`` with one label)."""
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    def options(self) -> dict:
        return {**super().options(), "sigmoid": self.apply_sigmoid}

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]))
        scores = np.empty(len(queries), dtype=np.float32)
        for start in self._batches(len(queries), "Teacher scoring"):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [queries[i] for i in idx],
                [documents[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**enc).logits
            if logits.shape[-1] != 1:
                raise ValueError(f"a cross-encoder teacher must give one logit per pair; got {logits.shape[-1]}")
            logits = logits.squeeze(-1).float()
            scores[idx] = (torch.sigmoid(logits) if self.apply_sigmoid else logits).cpu().numpy()
        return scores


def default_cache_dir() -> Path:
    """Where teacher margins of in-memory datasets are cached: ``$HF_DATASETS_CACHE/hf_margin``."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "hf_margin"


def margins_fingerprint(dataset: Dataset, teacher: TeacherScorer) -> str:
    """Fingerprint of the scored dataset: the data's, the teacher's and the scoring code's version."""
    return Hasher.hash(["teacher-margins", SCORING_VERSION, dataset._fingerprint, teacher.fingerprint])


def _cache_file(dataset: Dataset | IterableDataset, cache_dir: str | os.PathLike | None, fingerprint: str) -> Path:
    if cache_dir is None:
        files = getattr(dataset, "cache_files", None)
        cache_dir = Path(files[0]["filename"]).parent if files else default_cache_dir()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return Path(cache_dir) / f"teacher-margins-{fingerprint}.arrow"


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


def _score_shards(dataset: Dataset, score: Callable, batch_size: int, state: PartialState) -> dict[int, tuple]:
    """Each process scores its own contiguous share of rows; every process gets all results back.

    An error on any process (a non-finite score, say) is raised on every process, so none waits forever in
    the gather.
    """
    mine: list[tuple[int, float, list[float], list[float]]] = []
    error: str | None = None
    with state.split_between_processes(list(range(len(dataset)))) as rows:
        try:
            for start in tqdm(
                range(0, len(rows), batch_size), desc=f"Scoring teacher margins (process {state.process_index})"
            ):
                idx = rows[start : start + batch_size]
                out = score(dataset[idx[0] : idx[-1] + 1], idx)
                mine += zip(idx, out["teacher_pos_score"], out["teacher_neg_scores"], out["teacher_margins"])
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

    Returns:
        A ``Dataset`` backed by the cache file.
    """
    if not isinstance(teacher, TeacherScorer):
        raise TypeError(f"teacher must have .fingerprint and .score_pairs(queries, documents); got {type(teacher)}")
    if isinstance(dataset, IterableDataset):
        return _attach_streaming(dataset, teacher, batch_size, cache_dir, load_from_cache_file, data_fingerprint)
    neg_col = validate_triplets(dataset)
    stale = [c for c in TEACHER_COLUMNS if c in dataset.column_names]
    if stale:
        dataset = dataset.remove_columns(stale)
    fingerprint = margins_fingerprint(dataset, teacher)
    cache_file = _cache_file(dataset, cache_dir, fingerprint)
    score = _margin_scorer(teacher, neg_col)
    state = PartialState()
    if state.num_processes > 1:
        # The main process decides whether the cache is there, so every process takes the same branch.
        decision = [load_from_cache_file and cache_file.exists()]
        broadcast_object_list(decision)
        if not decision[0]:
            precomputed = _score_shards(dataset, score, batch_size, state)

            def score(batch: dict[str, list], indices: list[int]) -> dict[str, list]:  # noqa: F811
                rows = [precomputed[i] for i in indices]
                return {name: [r[k] for r in rows] for k, name in enumerate(TEACHER_COLUMNS)}

    with state.main_process_first():
        scored = dataset.map(
            score,
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            features=_scored_features(dataset.features),
            new_fingerprint=fingerprint,
            cache_file_name=str(cache_file),
            # the other processes read what the main one wrote, whatever the caller asked
            load_from_cache_file=load_from_cache_file or not state.is_main_process,
            desc="Scoring teacher margins",
        )
    logger.info("Teacher margins attached (fingerprint %s, cache %s)", fingerprint, cache_file)
    return scored


def _attach_streaming(
    dataset: IterableDataset,
    teacher: TeacherScorer,
    batch_size: int,
    cache_dir: str | os.PathLike | None,
    load_from_cache_file: bool,
    data_fingerprint: str | None,
) -> Dataset:
    """Score a stream batch by batch into an Arrow file (written to a temporary name, then moved)."""
    if data_fingerprint is None:
        raise ValueError(
            "a streamed (Iterable) dataset has no fingerprint of its content: pass data_fingerprint=... (e.g. the "
            "hash or version of its source files) so its teacher margins can be cached and found again"
        )
    fingerprint = Hasher.hash(["teacher-margins-stream", SCORING_VERSION, data_fingerprint, teacher.fingerprint])
    cache_file = _cache_file(dataset, cache_dir, fingerprint)
    state = PartialState()
    with state.main_process_first():
        if not (load_from_cache_file and cache_file.exists()) and state.is_main_process:
            first = next(iter(dataset), None)
            if first is None:
                raise DataValidationError("the streamed dataset is empty")
            neg_col = negatives_column(first)
            score = _margin_scorer(teacher, neg_col)
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix="tmp-teacher-margins-", suffix=".arrow")
            os.close(fd)
            offset, writer = 0, None
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
                        writer = ArrowWriter(path=tmp, features=features)
                    writer.write_table(pa.Table.from_pydict(batch, schema=features.arrow_schema))
                    offset += n
                if writer is None:
                    raise DataValidationError("the streamed dataset is empty")
                writer.finalize()
                writer.close()
                os.replace(tmp, cache_file)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            logger.info("Scored %d streamed rows into %s", offset, cache_file)
    return Dataset.from_file(str(cache_file))


__all__ = [
    "BiEncoderTeacher",
    "CrossEncoderTeacher",
    "TeacherScorer",
    "attach_teacher_margins",
    "margins_fingerprint",
    "weights_fingerprint",
]

"""Nearest-neighbour search for mining: exact (``retrieval.exact_search``) or a FAISS index for large corpora.

:func:`search_top_k` has the contract of ``exact_search(..., similarity="dot")``; :class:`SearchIndex` builds the
corpus side once (a FAISS index is trained and filled once) and searches many query batches. FAISS only proposes
candidates: they are re-scored exactly (dot products in PyTorch) and ordered like the exact search (score
descending, then lower corpus index), and a row whose ranking FAISS cannot settle (it came back short, or a tie
reaches the depth it searched) is searched exactly. So ``index="flat"`` returns what the exact search returns,
and the approximate indices (IVF, HNSW, IVF-PQ) differ only in which candidates they find.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hf_margin.data.embedding_store import release_pages
from hf_margin.evaluation.retrieval import _drop_excluded, exact_search

logger = logging.getLogger(__name__)

__all__ = [
    "SEARCHES",
    "SEARCH_INDEXES",
    "SearchIndex",
    "SearchOptions",
    "choose_search",
    "default_nlist",
    "recall_at_k",
    "search_device",
    "search_top_k",
]

SEARCHES = ("auto", "exact", "faiss")
SEARCH_DEVICES = ("auto", "cpu", "cuda")  # "cuda:N" names one GPU
SEARCH_INDEXES = ("flat", "ivf", "hnsw", "ivfpq")
FAISS_HINT = "pip install faiss-cpu (or pip install 'hf-margin[faiss]')"
TRAIN_POINTS_PER_LIST = 64  # IVF k-means trains on a seeded sample of min(N, 64 * nlist) points (faiss wants >= 39)
MIN_POINTS_PER_LIST = 39  # the default nlist leaves at least this many documents per list
PQ_REFINE = 4  # IVF-PQ: fetch this many times the depth from the index, then re-score exactly and keep the best
ADD_CHUNK = 65_536  # corpus rows converted to float32 and added to a FAISS index at once
GPU_QUERY_CHUNK = 8192  # exact search on a GPU: queries x corpus rows scored at once (2 GiB in float16)
GPU_CORPUS_CHUNK = 131_072
GPU_CORPUS_SHARE = 0.5  # the corpus (float32) stays on the GPU where it takes at most this share of the free memory
GPU_GROUP = 128  # the GPU's candidate pass keeps the best of each run of this many documents first
HALF_ERROR = 2.0**-8  # |float16 score - exact score| <= this x |q| x |d| (inputs and output rounded, with room)
HALF_SAFE = 1e4  # |q| x max |d| above this: no float16 candidate pass (its scores could overflow)
HALF_DTYPES = (torch.float16, torch.bfloat16)
GPU_RESCORE_FLOATS = 1 << 28  # at most this many gathered candidate floats (1 GiB) re-scored at once on a GPU
RESCORE_FLOATS = 1 << 24  # at most this many gathered corpus floats (64 MiB) at once when re-scoring candidates


@dataclass(frozen=True)
class SearchOptions:
    """How mining finds each query's nearest documents.

    Attributes:
        search: ``"exact"`` (every query against every document), ``"faiss"`` (a FAISS index; needs faiss-cpu) or
            ``"auto"``: exact on the GPU where one is visible (``device``); else FAISS when the corpus has more
            than ``auto_threshold`` documents and faiss is installed, else exact.
        index: the FAISS index: ``"flat"`` (exact inner product), ``"ivf"`` (inverted lists), ``"hnsw"`` (a graph)
            or ``"ivfpq"`` (inverted lists of product-quantised codes).
        nlist: IVF lists; None: about ``4 * sqrt(N)``, at most ``N / 39``.
        nprobe: IVF lists searched per query.
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW search breadth (raised to the depth searched when that is larger).
        pq_m: IVF-PQ sub-quantizers (must divide the embedding width); None: the largest divisor of the width
            that is at most width / 4.
        auto_threshold: corpus size above which ``"auto"`` uses FAISS.
        check_queries: when > 0, that many sampled queries are also searched exactly and the recall@k of the FAISS
            index against the exact search is logged (and kept on :attr:`SearchIndex.check_recall`).
        seed: seeds the IVF training sample, k-means and the check's query sample.
        device: where the exact search computes: ``"auto"`` (the current CUDA GPU where one is visible, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. On a GPU the corpus is copied there once (float32; streamed
            a chunk at a time when it would take over half the free memory) and scored in blocks of
            ``GPU_QUERY_CHUNK x GPU_CORPUS_CHUNK``, in TF32 where every input is a 16-bit float (TF32 holds those
            exactly: the same scores), else in float32. A FAISS index is built on the CPU and, where faiss-gpu is
            installed and the device is a GPU, moved there to search (flat, IVF, IVF-PQ; HNSW stays on the CPU).
    """

    search: str = "auto"
    index: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    pq_m: int | None = None
    auto_threshold: int = 200_000
    check_queries: int = 0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.index not in SEARCH_INDEXES:
            raise ValueError(f"index must be one of {SEARCH_INDEXES}, got {self.index!r}")
        minimum = {"nprobe": 1, "hnsw_m": 2, "ef_search": 1, "auto_threshold": 0, "check_queries": 0, "seed": 0}
        optional = {"nlist": 1, "pq_m": 1}
        for name, least in {**minimum, **optional}.items():
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                also = " or None" if name in optional else ""
                raise ValueError(f"{name} must be an integer >= {least}{also}, got {value!r}")

    def fingerprint(self) -> dict[str, Any]:
        """What decides a FAISS search's results (for cache names): the index and its own parameters."""
        params: dict[str, Any] = {"index": self.index}
        if self.index in ("ivf", "ivfpq"):
            params.update(nlist=self.nlist, nprobe=self.nprobe, seed=self.seed)
        if self.index == "ivfpq":
            params["pq_m"] = self.pq_m
        if self.index == "hnsw":
            params.update(hnsw_m=self.hnsw_m, ef_search=self.ef_search)
        return params


@contextlib.contextmanager
def _matmul_flags(**flags: bool) -> Iterator[None]:
    """``torch.backends.cuda.matmul`` flags set within the block, restored after: ``allow_tf32`` (float32 products
    in TF32) and ``allow_fp16_reduced_precision_reduction`` (float16 products reduced in float16)."""
    matmul = torch.backends.cuda.matmul
    previous = {name: getattr(matmul, name) for name in flags}
    try:
        for name, value in flags.items():
            setattr(matmul, name, value)
        yield
    finally:
        for name, value in previous.items():
            setattr(matmul, name, value)


def _import_faiss() -> Any | None:
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def search_device(options: SearchOptions) -> torch.device:
    """Where an exact search with these options computes (``options.device``; ``"auto"``: the current CUDA GPU
    where one is visible, else the CPU).

    Raises:
        ValueError: a CUDA device is asked for and none is visible.
    """
    if options.device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if options.device == "auto":
            return torch.device("cpu")
        raise ValueError(f"search device {options.device!r} asked for, but no CUDA GPU is visible: use 'auto' or 'cpu'")
    if options.device == "auto":
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(options.device)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"search device {options.device!r} asked for, but {torch.cuda.device_count()} CUDA GPU(s) are visible: "
            "use 'auto', 'cuda' or 'cpu'"
        )
    return device


def choose_search(num_documents: int, options: SearchOptions) -> tuple[str, str]:
    """Which search runs over ``num_documents`` documents: ``("exact" | "faiss", why)`` (the line that is logged).

    Raises:
        ImportError: ``search="faiss"`` and faiss is not installed.
        ValueError: a CUDA search device is asked for and none is visible.
    """
    size = f"{num_documents:,} documents"
    if options.search == "exact":
        return "exact", f"exact: search='exact' ({size})"
    if options.search == "faiss":
        if _import_faiss() is None:
            raise ImportError(f"search='faiss' needs the faiss package: {FAISS_HINT}")
        return "faiss", f"faiss {options.index}: search='faiss' ({size})"
    if num_documents > options.auto_threshold and search_device(options).type == "cuda":
        return "exact", f"exact: {size} is above auto_threshold {options.auto_threshold:,}, but a GPU searches them"
    if num_documents <= options.auto_threshold:
        return "exact", f"exact: {size} is below auto_threshold {options.auto_threshold:,}"
    if _import_faiss() is None:
        return "exact", (
            f"exact: {size} is above auto_threshold {options.auto_threshold:,} but faiss is not installed "
            f"({FAISS_HINT} for a faster approximate search)"
        )
    return "faiss", f"faiss {options.index}: {size} is above auto_threshold {options.auto_threshold:,}"


def default_nlist(num_documents: int) -> int:
    """About ``4 * sqrt(N)`` lists, at most ``N / 39`` (so each list gets enough training points), at least 1."""
    return max(1, min(round(4 * math.sqrt(num_documents)), num_documents // MIN_POINTS_PER_LIST))


def _default_pq_m(width: int) -> int:
    """The largest divisor of ``width`` that is at most ``width / 4`` (4 or more dimensions per sub-quantizer)."""
    return max(m for m in range(1, max(1, width // 4) + 1) if width % m == 0)


def _check_inputs(query_embeddings: torch.Tensor, width: int, k: int, exclude: Sequence | None) -> None:
    if query_embeddings.ndim != 2:
        raise ValueError(f"query embeddings must be 2-D (Q, H); got {tuple(query_embeddings.shape)}")
    if query_embeddings.shape[1] != width:
        raise ValueError(f"query and corpus embeddings differ in width: {query_embeddings.shape[1]} vs {width}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude is not None and len(exclude) != query_embeddings.shape[0]:
        raise ValueError(
            f"exclude has {len(exclude)} entries for {query_embeddings.shape[0]} queries; give one per query"
        )


class SearchIndex:
    """A corpus ready to be searched many times: the exact search, or a FAISS index trained and filled once.

    Args:
        corpus_embeddings: ``(N, H)``, L2-normalised for cosine rankings (the search is by dot product).
        options: which search and index (:class:`SearchOptions`).
        query_chunk_size: queries sent to FAISS (and re-scored) at once.

    Attributes:
        kind: ``"exact"`` or ``"faiss"``; ``reason``: why (logged at INFO when the index is built).
        check_recall: the mean recall@k against exact search of the queries checked so far (``check_queries``),
            None before any check.
        exact_rows: how many query rows FAISS could not settle and the exact search answered instead.
        device: where the exact search computes (:func:`search_device`; the CPU for FAISS).
    """

    def __init__(
        self, corpus_embeddings: torch.Tensor, options: SearchOptions | None = None, *, query_chunk_size: int = 1024
    ) -> None:
        if corpus_embeddings.ndim != 2:
            raise ValueError(f"corpus embeddings must be 2-D (N, H); got {tuple(corpus_embeddings.shape)}")
        if corpus_embeddings.shape[0] == 0:
            raise ValueError("the corpus is empty: nothing to search")
        if query_chunk_size < 1:
            raise ValueError(f"query_chunk_size must be >= 1, got {query_chunk_size}")
        self.options = options or SearchOptions()
        self.corpus = corpus_embeddings
        self.query_chunk_size = query_chunk_size
        self.kind, reason = choose_search(corpus_embeddings.shape[0], self.options)
        self.check_recall: float | None = None
        self.exact_rows = 0
        self._checked = 0
        self._searches = 0
        self._faiss_index: Any = None
        self.device = search_device(self.options) if self.kind == "exact" else torch.device("cpu")
        self._device_corpus: torch.Tensor | None = None
        self._device_half: torch.Tensor | None = None
        self._max_norm = 0.0
        if self.kind == "faiss":
            reason = self._build_faiss(reason)
        elif self.device.type == "cuda":
            reason = self._to_gpu(reason)
        self.reason = reason
        logger.info("Nearest-neighbour search: %s", reason)

    @property
    def num_documents(self) -> int:
        return self.corpus.shape[0]

    # ---- building ---------------------------------------------------------------------------------------------

    def _build_faiss(self, reason: str) -> str:
        """Train and fill the FAISS index of ``options.index``; returns ``reason`` with the index's parameters."""
        faiss = _import_faiss()
        opts = self.options
        n, width = self.corpus.shape
        detail = ""
        if opts.index == "flat":
            index = faiss.IndexFlatIP(width)
        elif opts.index == "hnsw":
            index = faiss.IndexHNSWFlat(width, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(index.hnsw.efConstruction, 2 * opts.hnsw_m)
            index.hnsw.efSearch = opts.ef_search
            detail = f" M={opts.hnsw_m} ef_search={opts.ef_search}"
        else:
            nlist = opts.nlist if opts.nlist is not None else default_nlist(n)
            if nlist > n:
                raise ValueError(f"nlist={nlist} IVF lists for {n:,} documents: give nlist <= {n:,} (or None)")
            quantizer = faiss.IndexFlatIP(width)
            train_size = min(n, TRAIN_POINTS_PER_LIST * nlist)
            if opts.index == "ivf":
                index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                pq_m = opts.pq_m if opts.pq_m is not None else _default_pq_m(width)
                if width % pq_m:
                    raise ValueError(f"pq_m={pq_m} must divide the embedding width {width}")
                train_size = min(n, max(train_size, MIN_POINTS_PER_LIST * 256))
                nbits = max(1, min(8, int(math.log2(max(2, train_size // MIN_POINTS_PER_LIST)))))
                index = faiss.IndexIVFPQ(quantizer, width, nlist, pq_m, nbits, faiss.METRIC_INNER_PRODUCT)
                index.pq.cp.seed = opts.seed
                detail = f" pq_m={pq_m} nbits={nbits}"
            index.cp.seed = opts.seed
            index.cp.spherical = True  # unit-length centroids: lists by inner product
            index.nprobe = min(opts.nprobe, nlist)
            sample = np.random.default_rng(opts.seed).choice(n, size=train_size, replace=False)
            rows = torch.from_numpy(np.sort(sample))
            training = np.empty((train_size, width), dtype=np.float32)
            for start in range(0, train_size, ADD_CHUNK):  # a chunk at a time, its pages released after each
                training[start : start + ADD_CHUNK] = self._float32_rows(rows[start : start + ADD_CHUNK])
                release_pages(self.corpus)  # a seeded sample touches most pages of a memory-mapped corpus
            index.train(training)
            del training
            detail = f" nlist={nlist} nprobe={index.nprobe}{detail} (trained on {train_size:,} documents)"
            self._quantizer = quantizer  # the IVF index points at it: keep it alive
        for start in range(
            0, n, ADD_CHUNK
        ):  # a chunk at a time: a float16 or memory-mapped corpus is never copied whole
            index.add(self._float32_rows(slice(start, start + ADD_CHUNK)))
            release_pages(self.corpus)  # a memory-mapped corpus is read once, never held whole
        per_vector = index.code_size if opts.index == "ivfpq" else 4 * width  # codes, or float32 vectors
        per_vector += {"ivf": 8, "ivfpq": 8, "hnsw": 8 * opts.hnsw_m}.get(opts.index, 0)  # list ids / graph links
        memory = f"; the index holds about {n * per_vector / 2**20:,.0f} MiB of RAM (ivfpq holds the least)"
        index, where = self._faiss_to_gpu(faiss, index)
        self._faiss_index = index
        head, _, why = reason.partition(": ")
        return f"{head}{detail}: {why}{memory}{where}"

    def _faiss_to_gpu(self, faiss: Any, index: Any) -> tuple[Any, str]:
        """The filled index moved to the search device's GPU where faiss-gpu is installed and sees one (flat, IVF and
        IVF-PQ; FAISS has no GPU HNSW); else the index as it is. Returns it and a note for the log line."""
        if self.options.index == "hnsw" or not hasattr(faiss, "index_cpu_to_gpu"):
            return index, ""
        device = search_device(self.options)
        if device.type != "cuda" or faiss.get_num_gpus() < 1:
            return index, ""
        self._faiss_gpu_resources = faiss.StandardGpuResources()  # kept alive with the index
        gpu = device.index if device.index is not None else torch.cuda.current_device()
        return faiss.index_cpu_to_gpu(self._faiss_gpu_resources, gpu, index), f"; searched on GPU {gpu} (faiss-gpu)"

    def _to_gpu(self, reason: str) -> str:
        """Copy the corpus to the GPU, a chunk at a time, where it fits in ``GPU_CORPUS_SHARE`` of the free memory
        (else each search streams it): as stored when that is a 16-bit float, else as float32, and a float16 copy
        for the candidate pass unless it is float16 already. Returns ``reason`` with where the search runs."""
        n, width = self.corpus.shape
        half = self.corpus.dtype in HALF_DTYPES
        kept = self.corpus.dtype if half else torch.float32
        size = n * width * (kept.itemsize + (0 if self.corpus.dtype == torch.float16 else 2))
        free, _ = torch.cuda.mem_get_info(self.device)
        if size > GPU_CORPUS_SHARE * free:
            return f"{reason}; on {self.device}, the corpus streamed from host memory ({size / 2**30:,.1f} GiB)"
        copy = torch.empty((n, width), dtype=kept, device=self.device)
        norm = torch.zeros((), device=self.device)
        for start in range(0, n, ADD_CHUNK):
            rows = self.corpus[start : start + ADD_CHUNK].to(self.device)
            copy[start : start + ADD_CHUNK] = rows.to(kept)
            norm = torch.maximum(norm, rows.float().norm(dim=1).max())
            release_pages(self.corpus)
        self._device_corpus = copy
        self._device_half = copy if kept == torch.float16 else copy.to(torch.float16)
        self._max_norm = float(norm)
        return f"{reason}; on {self.device}, the corpus held there ({size / 2**30:,.1f} GiB)"

    def _exact_on_gpu(
        self, queries: torch.Tensor, k: int, exclude: Sequence[Collection[int]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact search on ``self.device``; results on the queries' device.

        A held corpus is searched in two passes: float16 scores propose each query's best ``2 * depth + 64``
        candidates (:meth:`_half_candidates`), which are re-scored in float32 and ordered like
        :func:`exact_search`. A row is settled when its k-th exact score beats the last candidate's float16 score
        by more than the float16 error bound (``HALF_ERROR x |q| x max |d|``): no document left out can then reach
        it. Other rows (and a streamed corpus) go through :func:`exact_search` in GPU-sized blocks, in TF32 where
        every input is a 16-bit float (exact there), else in float32.
        """
        on_gpu = queries.detach().to(self.device, torch.float32)
        n = self.num_documents
        out_k = min(k, n)
        depth = min(out_k + max((len(e) for e in exclude), default=0), n) if exclude is not None else out_k
        fetch = min(n, 2 * depth + 64)
        scores = torch.empty((on_gpu.shape[0], out_k), device=self.device)
        labels = torch.empty((on_gpu.shape[0], out_k), dtype=torch.long, device=self.device)
        redo = torch.arange(on_gpu.shape[0], device=self.device)
        norms = on_gpu.norm(dim=1)
        two_pass = self._device_corpus is not None and 0 < on_gpu.shape[0] and fetch < n
        if two_pass and float(norms.max()) * self._max_norm < HALF_SAFE:
            settled_all = []
            for q0 in range(0, on_gpu.shape[0], GPU_QUERY_CHUNK):
                chunk = on_gpu[q0 : q0 + GPU_QUERY_CHUNK]
                last, candidates = self._half_candidates(chunk.to(torch.float16), fetch)
                exact = torch.empty(candidates.shape, device=self.device)
                step = max(1, GPU_RESCORE_FLOATS // (fetch * chunk.shape[1]))
                with _matmul_flags(allow_tf32=False):  # float32 products: the exact scores
                    for r0 in range(0, chunk.shape[0], step):
                        docs = self._device_corpus[candidates[r0 : r0 + step]].float()  # (rows, fetch, H)
                        exact[r0 : r0 + step] = torch.bmm(docs, chunk[r0 : r0 + step].unsqueeze(-1)).squeeze(-1)
                candidates, order = candidates.sort(dim=1, stable=True)
                exact = exact.gather(1, order)
                exact, order = exact.sort(dim=1, descending=True, stable=True)
                candidates = candidates.gather(1, order)
                top, ids = exact[:, :depth], candidates[:, :depth]
                if exclude is not None:
                    top, ids = _drop_excluded(top, ids, exclude[q0 : q0 + GPU_QUERY_CHUNK], out_k)
                else:
                    top, ids = top[:, :out_k], ids[:, :out_k]
                bound = HALF_ERROR * norms[q0 : q0 + GPU_QUERY_CHUNK] * self._max_norm + 1e-6
                settled_all.append(top[:, -1] > last + bound)
                scores[q0 : q0 + GPU_QUERY_CHUNK], labels[q0 : q0 + GPU_QUERY_CHUNK] = top, ids
            redo = (~torch.cat(settled_all)).nonzero().flatten()
            self.exact_rows += int(redo.numel())
        if redo.numel():
            corpus = self._device_corpus if self._device_corpus is not None else self.corpus
            rows = on_gpu[redo]
            half = self.corpus.dtype in HALF_DTYPES
            with _matmul_flags(allow_tf32=half and bool(rows.to(self.corpus.dtype).float().eq(rows).all())):
                redo_scores, redo_labels = exact_search(
                    rows, corpus, k=k, similarity="dot",
                    exclude=[exclude[r] for r in redo.tolist()] if exclude is not None else None,
                    query_chunk_size=GPU_QUERY_CHUNK, corpus_chunk_size=GPU_CORPUS_CHUNK,
                )  # fmt: skip
            scores[redo], labels[redo] = redo_scores, redo_labels
        return scores.to(queries.device), labels.to(queries.device)

    def _half_candidates(self, queries: torch.Tensor, fetch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``fetch`` best documents of each float16 query by float16 score: ``(last, indices)``, ``last`` ``(q,)``
        the fetch-th best float16 score (float32), which no document left out exceeds.

        Within a block, the best of every run of ``GPU_GROUP`` documents is taken first and the best documents are
        then sought only in the ``fetch`` best runs (they hold them all: a document outside them is beaten by the
        best of each of those runs), so the full selection reads the block once."""
        best_scores: torch.Tensor | None = None
        best_ids = torch.empty(0)
        corpus = self._device_half
        with _matmul_flags(allow_tf32=False, allow_fp16_reduced_precision_reduction=False):
            for c0 in range(0, self.num_documents, GPU_CORPUS_CHUNK):
                block = queries @ corpus[c0 : c0 + GPU_CORPUS_CHUNK].T  # (q, c) float16, float32 accumulation
                width = block.shape[1]
                take = min(fetch, width)
                if width % GPU_GROUP == 0 and width // GPU_GROUP > take:
                    runs = block.view(block.shape[0], width // GPU_GROUP, GPU_GROUP)
                    top_runs = runs.amax(dim=2).topk(take, dim=1).indices  # (q, take)
                    inside = runs.gather(1, top_runs.unsqueeze(-1).expand(-1, -1, GPU_GROUP)).flatten(1)
                    values, where = inside.topk(take, dim=1)
                    columns = top_runs.gather(1, where // GPU_GROUP) * GPU_GROUP + where % GPU_GROUP
                else:
                    values, columns = block.topk(take, dim=1)
                columns = columns + c0
                if best_scores is None:
                    best_scores, best_ids = values, columns
                else:
                    merged = torch.cat([best_scores, values], dim=1)
                    merged_ids = torch.cat([best_ids, columns], dim=1)
                    best_scores, order = merged.topk(min(fetch, merged.shape[1]), dim=1)
                    best_ids = merged_ids.gather(1, order)
        assert best_scores is not None
        return best_scores[:, -1].float(), best_ids

    def _float32_rows(self, rows: slice | torch.Tensor) -> np.ndarray:
        """Corpus rows as a contiguous float32 array for FAISS."""
        return np.ascontiguousarray(self.corpus[rows].detach().to("cpu", torch.float32).numpy())

    # ---- searching --------------------------------------------------------------------------------------------

    def search(
        self, query_embeddings: torch.Tensor, *, k: int, exclude: Sequence[Collection[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` documents of each query by dot product, best first (ties: the lower corpus index first).

        Args:
            query_embeddings: ``(Q, H)``.
            k: documents per query; capped at ``N``.
            exclude: optional, per query, the corpus indices never to return for it.
        Returns:
            scores ``(Q, min(k, N))`` (float32) and corpus indices ``(Q, min(k, N))`` (int64) on the queries'
            device; where exclusions leave a query fewer documents, its row is padded with ``-inf`` / ``-1``.
        """
        if self.kind == "exact":
            if self.device.type == "cuda":
                found = self._exact_on_gpu(query_embeddings, k, exclude)
            else:
                found = exact_search(query_embeddings, self.corpus, k=k, similarity="dot", exclude=exclude)
            release_pages(self.corpus)
            return found
        _check_inputs(query_embeddings, self.corpus.shape[1], k, exclude)
        all_scores, all_indices = [], []
        for q0 in range(0, query_embeddings.shape[0], self.query_chunk_size):
            chunk = query_embeddings[q0 : q0 + self.query_chunk_size]
            skip = exclude[q0 : q0 + self.query_chunk_size] if exclude is not None else None
            scores, indices = self._faiss_chunk(chunk, k, skip)
            all_scores.append(scores)
            all_indices.append(indices)
        out_k = min(k, self.num_documents)
        if not all_scores:
            return torch.empty((0, out_k), device=query_embeddings.device), torch.empty(
                (0, out_k), dtype=torch.long, device=query_embeddings.device
            )
        scores, indices = torch.cat(all_scores), torch.cat(all_indices)
        self._searches += 1
        if self._checked < self.options.check_queries and query_embeddings.shape[0]:
            self._check(query_embeddings, indices, k, exclude)
        release_pages(self.corpus)  # the pages re-scoring and exact checks read: host memory holds the index
        return scores, indices

    def _faiss_chunk(
        self, queries: torch.Tensor, k: int, exclude: Sequence[Collection[int]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of queries: FAISS candidates, re-scored exactly, ordered, exclusions dropped, unsettled rows
        redone exactly."""
        n = self.num_documents
        out_k = min(k, n)
        depth = min(out_k + max((len(e) for e in exclude), default=0), n) if exclude is not None else out_k
        # one more than kept: a tie across the cut shows as the last candidate scoring as much as the last kept
        fetch = min(n, depth * PQ_REFINE if self.options.index == "ivfpq" else depth + 1)
        if self.options.index == "hnsw":
            self._faiss_index.hnsw.efSearch = max(self.options.ef_search, fetch)
        device = queries.device
        queries32 = queries.detach().to("cpu", torch.float32)
        _, labels = self._faiss_index.search(np.ascontiguousarray(queries32.numpy()), fetch)
        labels = torch.from_numpy(labels)
        scores = self._rescore(queries32, labels)
        # order by score descending, then corpus index ascending (-1 and its -inf last)
        labels, order = labels.sort(dim=1, stable=True)
        scores = scores.gather(1, order)
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        labels = labels.gather(1, order)
        last_score, found = scores[:, -1], (labels >= 0).sum(dim=1)
        scores, labels = scores[:, :depth], labels[:, :depth]
        if exclude is not None:
            scores, labels = _drop_excluded(scores, labels, exclude, out_k)
        else:
            scores, labels = scores[:, :out_k], labels[:, :out_k]
        # FAISS came back short of a full row though documents remain, or a tie reaches the depth fetched (a
        # document left out may score as much and have a lower index): search those rows exactly
        short = (labels[:, -1] < 0) & (found < n)
        tied = (found == fetch) & (fetch < n) & (last_score >= scores[:, -1])
        redo = (short | tied).nonzero().flatten()
        if redo.numel():
            self.exact_rows += redo.numel()
            rows = redo.tolist()
            exact_scores, exact_labels = exact_search(
                queries32[redo],
                self.corpus,
                k=k,
                similarity="dot",
                exclude=[exclude[r] for r in rows] if exclude is not None else None,
            )
            scores[redo], labels[redo] = exact_scores.to(scores.dtype).cpu(), exact_labels.cpu()
        return scores.to(device), labels.to(device)

    def _rescore(self, queries: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Exact dot products ``(q, fetch)`` of each query with its candidates; ``-inf`` where the label is -1."""
        corpus = self.corpus.detach()
        rows_at_once = max(1, RESCORE_FLOATS // max(1, labels.shape[1] * corpus.shape[1]))
        out = []
        for r0 in range(0, labels.shape[0], rows_at_once):
            part = labels[r0 : r0 + rows_at_once]
            docs = corpus[part.clamp_min(0).to(corpus.device)].to("cpu", torch.float32)  # (r, fetch, H)
            out.append(torch.bmm(docs, queries[r0 : r0 + rows_at_once].unsqueeze(-1)).squeeze(-1))
        scores = torch.cat(out) if out else torch.empty(labels.shape)
        return scores.masked_fill(labels < 0, float("-inf"))

    def _check(
        self,
        queries: torch.Tensor,
        indices: torch.Tensor,
        k: int,
        exclude: Sequence[Collection[int]] | None,
    ) -> None:
        """Search a seeded sample of the queries exactly too; log (and keep) the recall@k of the FAISS index."""
        take = min(self.options.check_queries - self._checked, queries.shape[0])
        generator = torch.Generator().manual_seed(self.options.seed * 1_000_003 + self._searches)
        rows = torch.randperm(queries.shape[0], generator=generator)[:take].sort().values
        _, exact = exact_search(
            queries[rows.to(queries.device)],
            self.corpus,
            k=k,
            similarity="dot",
            exclude=[exclude[r] for r in rows.tolist()] if exclude is not None else None,
        )
        recall = recall_at_k(indices[rows.to(indices.device)], exact, k)
        previous = self.check_recall if self.check_recall is not None else 0.0
        self.check_recall = (previous * self._checked + recall * take) / (self._checked + take)
        self._checked += take
        logger.info(
            "faiss %s recall@%d against exact search on %d sampled queries: %.4f (%d checked so far: %.4f)",
            self.options.index, min(k, self.num_documents), take, recall, self._checked, self.check_recall,
        )  # fmt: skip


def search_top_k(
    query_embeddings: torch.Tensor,
    corpus_embeddings: torch.Tensor,
    *,
    k: int,
    exclude: Sequence[Collection[int]] | None = None,
    options: SearchOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` corpus documents of each query by dot product, exactly or with FAISS (``options``).

    The contract of ``retrieval.exact_search(..., similarity="dot")``: ``query_embeddings`` ``(Q, H)``,
    ``corpus_embeddings`` ``(N, H)``; returns scores ``(Q, min(k, N))`` (float32) and indices ``(Q, min(k, N))``
    (int64), best first, padded with ``-inf`` / ``-1`` where ``exclude`` (per query, corpus indices never to return)
    leaves fewer. Builds the index for this one call: to search many batches, build a :class:`SearchIndex` once.
    """
    return SearchIndex(corpus_embeddings, options).search(query_embeddings, k=k, exclude=exclude)


def recall_at_k(
    approx_indices: torch.Tensor | np.ndarray | Sequence[Sequence[int]],
    exact_indices: torch.Tensor | np.ndarray | Sequence[Sequence[int]],
    k: int,
) -> float:
    """Mean over queries of ``|top-k approx ∩ top-k exact| / k`` for ``(Q, >= k)`` index rows; ``-1`` (padding)
    never counts, and a row whose exact top-k holds fewer than ``k`` documents is divided by that count (rows with
    none are skipped). 1.0 when no row counts."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    approx = torch.as_tensor(np.asarray(approx_indices), dtype=torch.long)
    exact = torch.as_tensor(np.asarray(exact_indices), dtype=torch.long)
    if approx.ndim != 2 or exact.ndim != 2 or approx.shape[0] != exact.shape[0]:
        raise ValueError(
            f"need two (Q, k) index arrays with the same Q; got {tuple(approx.shape)} and {tuple(exact.shape)}"
        )
    total, rows = 0.0, 0
    for a, e in zip(approx[:, :k].tolist(), exact[:, :k].tolist()):
        truth = {j for j in e if j >= 0}
        if not truth:
            continue
        total += len(truth & {j for j in a if j >= 0}) / len(truth)
        rows += 1
    return total / rows if rows else 1.0

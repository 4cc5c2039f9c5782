"""Hard-negative mining with a bi-encoder teacher, cached like teacher margins."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from datasets.fingerprint import Hasher

from hf_margin.data.cache import CacheEntry
from hf_margin.data.columns import DataValidationError
from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk, memmap_tensor, release_pages, stored_norms
from hf_margin.data.margins import BAND, default_cache_dir
from hf_margin.data.search import SearchIndex, SearchOptions, choose_search
from hf_margin.evaluation.retrieval import exact_search
from hf_margin.models.scoring import BiEncoderScorer

logger = logging.getLogger(__name__)

MINING_VERSION = "1"


def mine_hard_negatives(
    pairs: Dataset,
    corpus: list[str],
    miner: BiEncoderScorer,
    *,
    num_negatives: int = 4,
    skip_top: int = 3,
    sample_from: int = 30,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    keep_band: bool = False,
    search: SearchOptions | None = None,
    disk: DiskEmbeddings | None = None,
    keep_embeddings: bool = False,
) -> Dataset:
    """Add a ``negatives`` column: for each query, ``num_negatives`` corpus texts sampled from the miner's
    ranks ``[skip_top, sample_from)`` (the very top are skipped: they are often unlabelled positives).

    Texts equal to the query or to any of its positives are never negatives. The result is cached in a file
    named by the pairs', corpus', miner's and options' fingerprint: a second run does not embed anything.
    ``keep_band`` also keeps a ``band`` column: every candidate of those ranks (exact duplicates once), the pool
    that :class:`~hf_margin.data.fresh_negatives.FreshNegatives` redraws negatives from each epoch; ``negatives`` is
    the same sample as without it. ``search`` picks the nearest-neighbour search (:class:`~hf_margin.data.search.
    SearchOptions`; default ``"auto"``: exact below 200,000 corpus texts, FAISS above when it is installed).
    ``disk`` keeps the corpus embeddings on disk, embedded in shards over every process
    (:class:`~hf_margin.data.embedding_store.DiskEmbeddings`); with ``keep_embeddings`` (a miner that is also the
    teacher scoring the result next) the miner is given back its embeddings of the texts the rows hold, so that it
    embeds none of them again (a float32 store; in memory it keeps them anyway).
    """
    if not 0 <= skip_top < sample_from:
        raise ValueError(f"need 0 <= skip_top < sample_from; got skip_top={skip_top}, sample_from={sample_from}")
    if sample_from - skip_top < num_negatives:
        raise ValueError(
            f"ranks [{skip_top}, {sample_from}) hold {sample_from - skip_top} candidates, fewer than "
            f"num_negatives={num_negatives}: raise sample_from"
        )
    options = {"n": num_negatives, "skip": skip_top, "from": sample_from, "seed": seed}
    if keep_band:  # only then: the caches of runs without a band keep their names
        options["band"] = True
    search = search or SearchOptions()
    searcher, reason = choose_search(len(corpus), search)
    if searcher == "faiss":  # only then: exact searches keep their caches' names
        options["search"] = search.fingerprint()
    if disk is not None:  # only then: in-memory runs keep their caches' names
        options["disk"] = disk.fingerprint()
    corpus_hash = Hasher.hash(corpus)
    fingerprint = Hasher.hash(
        ["hard-negatives", MINING_VERSION, pairs._fingerprint, corpus_hash, miner.fingerprint, options]
    )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    positives_of: dict[str, set[str]] = {}
    for q, p in zip(pairs["query"], pairs["positive"]):
        positives_of.setdefault(q, set()).add(p)
    corpus_embeddings: list[tuple[torch.Tensor, np.ndarray | None]] = []  # (rows, norms); a cached run never embeds
    index: list[SearchIndex] = []  # FAISS only, built once on first call

    def embed_corpus() -> None:
        logger.info("Embedding %d corpus texts to mine hard negatives", len(corpus))
        if disk is None:  # the miner's plain embed(texts): any object with that method mines
            corpus_embeddings.append((torch.nn.functional.normalize(miner.embed(corpus), dim=-1), None))
        else:
            corpus_embeddings.append(
                _normalized_embeddings(
                    miner, corpus, "document", disk=disk, cache_dir=cache, texts_hash=corpus_hash, norms=keep_embeddings
                )
            )
        if searcher != "faiss":
            logger.info("Nearest-neighbour search: %s", reason)

    def mine(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if not corpus_embeddings:
            embed_corpus()
        if searcher == "faiss" and not index:
            index.append(SearchIndex(corpus_embeddings[0][0], search))
        corpus_emb, corpus_norms = corpus_embeddings[0]
        queries = torch.nn.functional.normalize(miner.embed(batch["query"]), dim=-1)  # memoised by the miner
        depth = min(sample_from + 8, len(corpus))
        if index:
            ranked = [[j for j in row if j >= 0] for row in index[0].search(queries, k=depth)[1].tolist()]
        elif disk is not None:  # the corpus on disk: searched in chunks, float32 scores
            ranked = exact_search(queries, corpus_emb, k=depth, similarity="dot")[1].tolist()
            release_pages(corpus_emb)
        else:  # torch.topk as ever: its choice among tied scores decides which negatives are drawn
            ranked = (queries @ corpus_emb.T).topk(depth, dim=-1).indices.tolist()
        out: dict[str, list] = {"negatives": [], **({BAND: []} if keep_band else {})}
        picked: list[int] = []
        for q, row, idx in zip(batch["query"], ranked, indices):
            banned = positives_of.get(q, set()) | {q}
            rows = [i for i in row if corpus[i] not in banned][skip_top:sample_from]
            candidates = [corpus[i] for i in rows]
            if not candidates:
                raise DataValidationError(
                    f"row {idx} (query {q[:60]!r}): the corpus of {len(corpus)} texts leaves no negative in ranks "
                    f"[{skip_top}, {sample_from}) once the query and its positives are removed; give a larger corpus "
                    "(corpus_file) or a smaller skip_top"
                )
            rng = random.Random(seed * 1_000_003 + idx)
            pick = rng.sample(rows, min(num_negatives, len(rows)))  # by position: as sampling the texts would
            picked += pick
            out["negatives"].append([corpus[i] for i in pick])
            if keep_band:
                out[BAND].append(list(dict.fromkeys(candidates)))
        _adopt(miner, corpus_emb, corpus_norms, corpus, picked, "document")
        return out

    entry = CacheEntry.create(cache, "hard-negatives", fingerprint, "mined-negatives cache")
    return entry.map(
        pairs,
        mine,
        columns=["negatives", BAND] if keep_band else ["negatives"],
        batched=True,
        batch_size=512,
        with_indices=True,
        new_fingerprint=fingerprint,
        desc="Mining hard negatives",
        on_miss=_embedding_first(embed_corpus, mine) if disk is not None else None,
    )


def build_corpus_triplets(
    texts: list[str],
    miner: BiEncoderScorer,
    *,
    positives_per_query: int = 1,
    num_negatives: int = 4,
    skip_top: int = 3,
    sample_from: int = 30,
    max_queries: int | None = None,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    keep_band: bool = False,
    search: SearchOptions | None = None,
    disk: DiskEmbeddings | None = None,
    keep_embeddings: bool = False,
) -> Dataset:
    """Corpus mode: a training set built from unlabelled texts by the miner (usually the teacher).

    Each distinct text (or a seeded sample of ``max_queries``) is a query. Its ranking is the miner's exact
    nearest neighbours among the other distinct texts (the query itself and its exact duplicates removed).
    Positives are ranks ``[0, positives_per_query)``; negatives are ``num_negatives`` texts sampled from ranks
    ``[skip_top, sample_from)``, never a positive. One row per (query, positive), columns ``query``, ``positive``,
    ``negatives``. The exact search runs in chunks (``retrieval.exact_search``): memory holds the ``(N, H)``
    embeddings and one block of scores, never ``N × N``; ``search`` (:class:`~hf_margin.data.search.SearchOptions`,
    default ``"auto"``) switches large corpora to a FAISS index. Cached by the texts', miner's and options'
    fingerprint.
    ``keep_band`` also keeps a ``band`` column: every candidate of those ranks that is not a positive (the pool
    the negatives are sampled from), for :class:`~hf_margin.data.fresh_negatives.FreshNegatives`.
    """
    corpus = _distinct(texts)
    return _triplets_from_rankings(
        corpus,
        corpus,
        miner,
        kind="corpus-triplets",
        what="corpus mode",
        positives_per_query=positives_per_query,
        num_negatives=num_negatives,
        skip_top=skip_top,
        sample_from=sample_from,
        max_queries=max_queries,
        seed=seed,
        cache_dir=cache_dir,
        keep_band=keep_band,
        search=search,
        disk=disk,
        keep_embeddings=keep_embeddings,
    )


def build_query_corpus_triplets(
    queries: list[str],
    documents: list[str],
    miner: BiEncoderScorer,
    *,
    positives_per_query: int = 1,
    num_negatives: int = 4,
    skip_top: int = 3,
    sample_from: int = 30,
    min_positive_score: float | None = None,
    min_positive_margin: float | None = None,
    max_queries: int | None = None,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
    keep_band: bool = False,
    search: SearchOptions | None = None,
    disk: DiskEmbeddings | None = None,
    keep_embeddings: bool = False,
) -> Dataset:
    """Query–corpus mode: pseudo-labelled triplets from unlabelled queries and a corpus of documents.

    The miner (usually the teacher) ranks the distinct ``documents`` for each distinct query (embedding queries
    with its query prompt and length, documents with the document ones; a document whose text equals the query's
    is never ranked for it). Positives are ranks ``[0, positives_per_query)``; negatives are ``num_negatives``
    documents sampled from ranks ``[skip_top, sample_from)``, never a positive. Ambiguous queries are dropped,
    not trained on: with ``min_positive_score`` a positive must score at least that, with ``min_positive_margin``
    it must lead the document at rank ``max(skip_top, positives_per_query)`` (the first negative candidate) by at
    least that; a query left with no positive is dropped. Columns ``query``, ``positive``, ``negatives`` (and
    ``band`` with ``keep_band``), one row per (query, positive); cached by the texts', miner's and options'
    fingerprint, so a second run embeds nothing. ``search`` picks the nearest-neighbour search
    (:class:`~hf_margin.data.search.SearchOptions`; default ``"auto"``: exact below 200,000 documents); ``disk`` and
    ``keep_embeddings`` as in :func:`mine_hard_negatives`.
    """
    return _triplets_from_rankings(
        _distinct(queries),
        _distinct(documents),
        miner,
        kind="query-corpus-triplets",
        what="query-corpus mode",
        positives_per_query=positives_per_query,
        num_negatives=num_negatives,
        skip_top=skip_top,
        sample_from=sample_from,
        min_positive_score=min_positive_score,
        min_positive_margin=min_positive_margin,
        max_queries=max_queries,
        seed=seed,
        cache_dir=cache_dir,
        keep_band=keep_band,
        search=search,
        disk=disk,
        keep_embeddings=keep_embeddings,
    )


def _distinct(texts: list[str]) -> list[str]:
    """Stripped, non-empty texts, each once, in first-seen order."""
    return list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))


def _normalized_embeddings(
    miner: BiEncoderScorer,
    texts: list[str],
    role: str,
    *,
    disk: DiskEmbeddings | None = None,
    cache_dir: str | os.PathLike | None = None,
    texts_hash: str | None = None,
    norms: bool = False,
) -> tuple[torch.Tensor, np.ndarray | None]:
    """``(N, H)`` unit-length embeddings: in memory (a copy, normalised in place: one more ``(N, H)`` is never
    held), or with ``disk`` embedded in shards over every process and memory-mapped from the cache (the
    collective step of :func:`~hf_margin.data.embedding_store.embed_to_disk`: every process must call it). With
    ``norms``, also the ``(N,)`` norms the miner's rows had, for :func:`_adopt` to give them back to it (a float32
    store on disk; else None, and in memory, where the miner remembers its own)."""
    if disk is None:
        emb = miner.embed(texts, role=role)
        with torch.inference_mode():
            emb /= emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb, None
    array = embed_to_disk(
        texts,
        lambda part: miner.embed(part, role=role, remember=False),
        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
        fingerprint=Hasher.hash([texts_hash or Hasher.hash(texts), miner.fingerprint, miner.role_settings(role)]),
        options=disk,
        normalize=True,
        description=f"{role} embeddings",
    )
    return memmap_tensor(array), stored_norms(array) if norms and disk.dtype == "float32" else None


def _adopt(
    miner: BiEncoderScorer,
    stored: torch.Tensor,
    norms: np.ndarray | None,
    texts: list[str],
    rows: Sequence[int],
    role: str,
) -> None:
    """Give the miner back its own embeddings of ``texts[rows]`` (the stored unit rows times their norms), which
    it embedded to disk without keeping them, so that scoring the training set it built embeds none of them again
    (float32 stores only: a float16 row would change the scores)."""
    if norms is None or not hasattr(miner, "adopt"):
        return
    rows = sorted(set(rows))
    if rows:
        own = stored[rows].float() * torch.from_numpy(np.asarray(norms[rows], dtype=np.float32))[:, None]
        miner.adopt([texts[j] for j in rows], own, role=role)


def _embedding_first(embed_all: Callable[[], None], function: Callable) -> Callable[[], Callable]:
    """``on_miss`` of a cache entry: every process embeds its shards (a collective step), then maps ``function``."""

    def on_miss() -> Callable:
        embed_all()
        return function

    return on_miss


def _triplets_from_rankings(
    queries: list[str],
    documents: list[str],
    miner: BiEncoderScorer,
    *,
    kind: str,
    what: str,
    positives_per_query: int,
    num_negatives: int,
    skip_top: int,
    sample_from: int,
    min_positive_score: float | None = None,
    min_positive_margin: float | None = None,
    max_queries: int | None,
    seed: int,
    cache_dir: str | os.PathLike | None,
    keep_band: bool,
    search: SearchOptions | None = None,
    disk: DiskEmbeddings | None = None,
    keep_embeddings: bool = False,
) -> Dataset:
    """The shared builder of corpus and query–corpus modes (``queries is documents``: corpus mode, where a text
    is never its own neighbour)."""
    symmetric = queries is documents
    if positives_per_query < 1 or num_negatives < 1:
        raise ValueError("positives_per_query and num_negatives must be >= 1")
    if not 0 <= skip_top < sample_from or sample_from - max(skip_top, positives_per_query) < num_negatives:
        raise ValueError(
            f"ranks [{skip_top}, {sample_from}) minus {positives_per_query} positive(s) hold fewer than "
            f"num_negatives={num_negatives} candidates: raise sample_from"
        )
    needed = sample_from + 1 if symmetric else sample_from
    if len(documents) < needed:
        raise DataValidationError(
            f"{what} needs at least {needed} distinct {'texts' if symmetric else 'documents'} "
            f"(sample_from={sample_from}); got {len(documents)}"
        )
    if not queries:
        raise DataValidationError(f"{what}: no query (every text was empty)")
    rng = random.Random(seed)
    chosen = list(range(len(queries)))
    if max_queries is not None and max_queries < len(chosen):
        chosen = sorted(rng.sample(chosen, max_queries))
    options: dict = {"p": positives_per_query, "n": num_negatives, "skip": skip_top, "from": sample_from, "seed": seed}
    if keep_band:
        options["band"] = True
    if min_positive_score is not None:
        options["min_score"] = min_positive_score
    if min_positive_margin is not None:
        options["min_margin"] = min_positive_margin
    search = search or SearchOptions()
    if choose_search(len(documents), search)[0] == "faiss":  # only then: exact searches keep their caches' names
        options["search"] = search.fingerprint()
    if disk is not None:  # only then: in-memory runs keep their caches' names
        options["disk"] = disk.fingerprint()
    hashed = [Hasher.hash(queries)] if symmetric else [Hasher.hash(queries), Hasher.hash(documents)]
    fingerprint = Hasher.hash([kind, MINING_VERSION, *hashed, chosen, miner.fingerprint, options])
    doc_index = {} if symmetric else {t: j for j, t in enumerate(documents)}  # N entries: only where used
    embeddings: dict[str, torch.Tensor] = {}  # filled on first call (or by embed_all): a cached run never embeds
    norms: dict[str, np.ndarray | None] = {}
    index: list[SearchIndex] = []
    dropped = [0]
    margin_rank = max(skip_top, positives_per_query)

    def embed_all() -> None:
        logger.info("Embedding %d documents to build the training set (%s)", len(documents), what)
        on_disk = {"disk": disk, "cache_dir": cache_dir, "norms": keep_embeddings}
        embeddings["documents"], norms["documents"] = _normalized_embeddings(
            miner, documents, "document", texts_hash=hashed[-1], **on_disk
        )
        if not symmetric:
            logger.info("Embedding %d queries", len(queries))
            embeddings["queries"], norms["queries"] = _normalized_embeddings(
                miner, queries, "query", texts_hash=hashed[0], **on_disk
            )

    def build(batch: dict[str, list]) -> dict[str, list]:
        if not embeddings:
            embed_all()
        if not index:
            index.append(SearchIndex(embeddings["documents"], search))
        docs = embeddings["documents"]
        idx = batch["index"]
        if symmetric:
            query_emb = docs[idx]
            exclude = [[i] for i in idx]
        else:
            query_emb = embeddings["queries"][idx]
            release_pages(embeddings["queries"])  # this batch's rows are copied out
            exclude = [[doc_index[queries[i]]] if queries[i] in doc_index else [] for i in idx]  # never itself
        scores, ranked = index[0].search(query_emb, k=sample_from, exclude=exclude)
        rows: dict[str, list] = {"query": [], "positive": [], "negatives": [], **({BAND: []} if keep_band else {})}
        used: list[int] = []  # the documents (and in corpus mode queries) of the rows built
        for i, row, row_scores in zip(idx, ranked.tolist(), scores.tolist()):
            kept = [(j, s) for j, s in zip(row, row_scores) if j >= 0]
            row = [j for j, _ in kept]
            positives = row[:positives_per_query]
            if min_positive_score is not None or min_positive_margin is not None:
                floor = kept[margin_rank][1] if len(kept) > margin_rank else float("-inf")
                positives = [
                    j
                    for j, s in kept[:positives_per_query]
                    if (min_positive_score is None or s >= min_positive_score)
                    and (min_positive_margin is None or s - floor >= min_positive_margin)
                ]
                if not positives:
                    dropped[0] += 1
                    continue
            band = [j for j in row[skip_top:sample_from] if j not in positives]
            for k, p in enumerate(positives):
                pick = random.Random(seed * 1_000_003 + i * 97 + k).sample(band, min(num_negatives, len(band)))
                used += [p, *pick, *([i] if symmetric else [])]
                rows["query"].append(queries[i])
                rows["positive"].append(documents[p])
                rows["negatives"].append([documents[j] for j in pick])
                if keep_band:
                    rows[BAND].append([documents[j] for j in band])
        _adopt(miner, docs, norms["documents"], documents, used, "document")
        if not symmetric:
            built = set(rows["query"])
            kept = [i for i in idx if queries[i] in built]
            _adopt(miner, embeddings["queries"], norms["queries"], queries, kept, "query")
        return rows

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = CacheEntry.create(cache, kind, fingerprint, f"{what} cache")
    filtered = min_positive_score is not None or min_positive_margin is not None
    built = entry.map(
        Dataset.from_dict({"index": chosen}),
        build,
        columns=["query", "positive", "negatives", *([BAND] if keep_band else [])],
        rows=len(chosen) * positives_per_query,
        any_rows=filtered,
        batched=True,
        batch_size=256,
        remove_columns=["index"],
        new_fingerprint=fingerprint,
        desc=f"Building {what} triplets",
        on_miss=_embedding_first(embed_all, build) if disk is not None else None,
    )
    if len(built) == 0:
        raise DataValidationError(
            f"{what}: every query was dropped as ambiguous (min_positive_score={min_positive_score}, "
            f"min_positive_margin={min_positive_margin}): lower the thresholds"
        )
    if filtered:
        logger.info(
            "%s: %d of %d queries kept (positive score >= %s, lead over rank %d >= %s)%s",
            what, len(set(built["query"])), len(chosen), min_positive_score, margin_rank, min_positive_margin,
            f"; {dropped[0]} dropped as ambiguous" if dropped[0] else "",
        )  # fmt: skip
    return built

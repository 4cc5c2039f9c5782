"""Hard-negative mining with a bi-encoder teacher, cached like teacher margins."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import torch
from datasets import Dataset
from datasets.fingerprint import Hasher

from hf_margin.cache import CacheEntry
from hf_margin.data import DataValidationError
from hf_margin.margins import BAND, default_cache_dir
from hf_margin.scoring import BiEncoderScorer

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
) -> Dataset:
    """Add a ``negatives`` column: for each query, ``num_negatives`` corpus texts sampled from the miner's
    ranks ``[skip_top, sample_from)`` (the very top are skipped: they are often unlabelled positives).

    Texts equal to the query or to any of its positives are never negatives. The result is cached in a file
    named by the pairs', corpus', miner's and options' fingerprint: a second run does not embed anything.
    ``keep_band`` also keeps a ``band`` column: every candidate of those ranks (exact duplicates once), the pool
    that :class:`~hf_margin.fresh_negatives.FreshNegatives` redraws negatives from each epoch; ``negatives`` is
    the same sample as without it.
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
    fingerprint = Hasher.hash(
        ["hard-negatives", MINING_VERSION, pairs._fingerprint, Hasher.hash(corpus), miner.fingerprint, options]
    )
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    positives_of: dict[str, set[str]] = {}
    for q, p in zip(pairs["query"], pairs["positive"]):
        positives_of.setdefault(q, set()).add(p)
    corpus_embeddings: list[torch.Tensor] = []  # filled on first call: a cached run never embeds

    def mine(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if not corpus_embeddings:
            logger.info("Embedding %d corpus texts to mine hard negatives", len(corpus))
            corpus_embeddings.append(torch.nn.functional.normalize(miner.embed(corpus), dim=-1))
        corpus_emb = corpus_embeddings[0]
        queries = torch.nn.functional.normalize(miner.embed(batch["query"]), dim=-1)  # memoised by the miner
        ranked = (queries @ corpus_emb.T).topk(min(sample_from + 8, len(corpus)), dim=-1).indices.tolist()
        out: dict[str, list] = {"negatives": [], **({BAND: []} if keep_band else {})}
        for q, row, idx in zip(batch["query"], ranked, indices):
            banned = positives_of.get(q, set()) | {q}
            candidates = [corpus[i] for i in row if corpus[i] not in banned][skip_top:sample_from]
            if not candidates:
                raise DataValidationError(
                    f"row {idx} (query {q[:60]!r}): the corpus of {len(corpus)} texts leaves no negative in ranks "
                    f"[{skip_top}, {sample_from}) once the query and its positives are removed; give a larger corpus "
                    "(corpus_file) or a smaller skip_top"
                )
            rng = random.Random(seed * 1_000_003 + idx)
            out["negatives"].append(rng.sample(candidates, min(num_negatives, len(candidates))))
            if keep_band:
                out[BAND].append(list(dict.fromkeys(candidates)))
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
) -> Dataset:
    """Corpus mode: a training set built from unlabelled texts by the miner (usually the teacher).

    Each distinct text (or a seeded sample of ``max_queries``) is a query. Its ranking is the miner's exact
    nearest neighbours among the other distinct texts (the query itself and its exact duplicates removed).
    Positives are ranks ``[0, positives_per_query)``; negatives are ``num_negatives`` texts sampled from ranks
    ``[skip_top, sample_from)``, never a positive. One row per (query, positive), columns ``query``, ``positive``,
    ``negatives``. The search runs in chunks (``retrieval.exact_search``): memory holds the ``(N, H)`` embeddings
    and one block of scores, never ``N × N``. Cached by the texts', miner's and options' fingerprint.
    ``keep_band`` also keeps a ``band`` column: every candidate of those ranks that is not a positive (the pool
    the negatives are sampled from), for :class:`~hf_margin.fresh_negatives.FreshNegatives`.
    """
    from hf_margin.retrieval import exact_search

    corpus = list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))
    if positives_per_query < 1 or num_negatives < 1:
        raise ValueError("positives_per_query and num_negatives must be >= 1")
    if not 0 <= skip_top < sample_from or sample_from - max(skip_top, positives_per_query) < num_negatives:
        raise ValueError(
            f"ranks [{skip_top}, {sample_from}) minus {positives_per_query} positive(s) hold fewer than "
            f"num_negatives={num_negatives} candidates: raise sample_from"
        )
    if len(corpus) < sample_from + 1:
        raise DataValidationError(
            f"corpus mode needs at least {sample_from + 1} distinct texts (sample_from={sample_from}); "
            f"got {len(corpus)}"
        )
    rng = random.Random(seed)
    queries = list(range(len(corpus)))
    if max_queries is not None and max_queries < len(queries):
        queries = sorted(rng.sample(queries, max_queries))
    options = {"p": positives_per_query, "n": num_negatives, "skip": skip_top, "from": sample_from, "seed": seed}
    if keep_band:
        options["band"] = True
    fingerprint = Hasher.hash(
        ["corpus-triplets", MINING_VERSION, Hasher.hash(corpus), queries, miner.fingerprint, options]
    )
    embeddings: list[torch.Tensor] = []  # filled on first call: a cached run never embeds

    def build(batch: dict[str, list]) -> dict[str, list]:
        if not embeddings:
            logger.info("Embedding %d corpus texts to build the training set", len(corpus))
            emb = miner.embed(corpus)  # a copy, (N, H): normalised in place, so one more (N, H) is never held
            with torch.inference_mode():
                emb /= emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            embeddings.append(emb)
        emb = embeddings[0]
        idx = batch["index"]
        _, ranked = exact_search(emb[idx], emb, k=sample_from, similarity="dot", exclude=[[i] for i in idx])
        rows: dict[str, list] = {"query": [], "positive": [], "negatives": [], **({BAND: []} if keep_band else {})}
        for i, row in zip(idx, ranked.tolist()):
            row = [j for j in row if j >= 0]
            positives = row[:positives_per_query]
            band = [j for j in row[skip_top:sample_from] if j not in positives]
            for k, p in enumerate(positives):
                pick = random.Random(seed * 1_000_003 + i * 97 + k).sample(band, min(num_negatives, len(band)))
                rows["query"].append(corpus[i])
                rows["positive"].append(corpus[p])
                rows["negatives"].append([corpus[j] for j in pick])
                if keep_band:
                    rows[BAND].append([corpus[j] for j in band])
        return rows

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = CacheEntry.create(cache, "corpus-triplets", fingerprint, "corpus-mode cache")
    return entry.map(
        Dataset.from_dict({"index": queries}),
        build,
        columns=["query", "positive", "negatives", *([BAND] if keep_band else [])],
        rows=len(queries) * positives_per_query,
        batched=True,
        batch_size=256,
        remove_columns=["index"],
        new_fingerprint=fingerprint,
        desc="Building corpus triplets",
    )

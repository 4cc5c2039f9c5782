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
from hf_margin.margins import default_cache_dir
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
) -> Dataset:
    """Add a ``negatives`` column: for each query, ``num_negatives`` corpus texts sampled from the miner's
    ranks ``[skip_top, sample_from)`` (the very top are skipped: they are often unlabelled positives).

    Texts equal to the query or to any of its positives are never negatives. The result is cached in a file
    named by the pairs', corpus', miner's and options' fingerprint: a second run does not embed anything.
    """
    if not 0 <= skip_top < sample_from:
        raise ValueError(f"need 0 <= skip_top < sample_from; got skip_top={skip_top}, sample_from={sample_from}")
    if sample_from - skip_top < num_negatives:
        raise ValueError(
            f"ranks [{skip_top}, {sample_from}) hold {sample_from - skip_top} candidates, fewer than "
            f"num_negatives={num_negatives}: raise sample_from"
        )
    options = {"n": num_negatives, "skip": skip_top, "from": sample_from, "seed": seed}
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
        out = []
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
            out.append(rng.sample(candidates, min(num_negatives, len(candidates))))
        return {"negatives": out}

    entry = CacheEntry.create(cache, "hard-negatives", fingerprint, "mined-negatives cache")
    return entry.map(
        pairs,
        mine,
        columns=["negatives"],
        batched=True,
        batch_size=512,
        with_indices=True,
        new_fingerprint=fingerprint,
        desc="Mining hard negatives",
    )

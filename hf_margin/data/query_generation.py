"""Pseudo-queries written from documents by a seq2seq generator (doc2query / GPL style), cached: for a corpus
with no query log, the generated queries then go through query–corpus mode like any unlabelled queries."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from datasets import Dataset
from datasets.fingerprint import Hasher

from hf_margin.data.cache import CacheEntry
from hf_margin.data.margins import default_cache_dir
from hf_margin.models.scoring import weights_fingerprint

logger = logging.getLogger(__name__)

GENERATION_VERSION = "1"


def generate_queries(
    documents: list[str],
    generator: str | os.PathLike,
    *,
    queries_per_document: int = 3,
    max_new_tokens: int = 32,
    document_max_length: int = 256,
    top_p: float = 0.95,
    batch_size: int = 16,
    seed: int = 42,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """``queries_per_document`` sampled queries (nucleus sampling, ``top_p``) for each distinct document, written by
    a seq2seq checkpoint (``AutoModelForSeq2SeqLM.generate``; a Hub id or a local folder). Columns ``document``
    and ``query``, one row per generated query; cached by the documents', generator's and options' fingerprint
    (weights and config included), seeded per batch, so a rerun loads the generator for its fingerprint only."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    if queries_per_document < 1:
        raise ValueError(f"queries_per_document must be >= 1; got {queries_per_document}")
    documents = list(dict.fromkeys(d for d in documents if isinstance(d, str) and d.strip()))
    tokenizer = AutoTokenizer.from_pretrained(generator)
    model = AutoModelForSeq2SeqLM.from_pretrained(generator).eval()
    options = {
        "n": queries_per_document,
        "new": max_new_tokens,
        "len": document_max_length,
        "top_p": top_p,
        "seed": seed,
        "batch": batch_size,
    }
    fingerprint = Hasher.hash(
        [
            "generated-queries",
            GENERATION_VERSION,
            Hasher.hash(documents),
            weights_fingerprint(model),
            model.config.to_json_string(),
            Hasher.hash(sorted(tokenizer.get_vocab().items())),
            options,
        ]
    )

    @torch.inference_mode()
    def write(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        torch.manual_seed(seed * 1_000_003 + indices[0])  # the same queries whatever ran before
        enc = tokenizer(
            batch["document"], padding=True, truncation=True, max_length=document_max_length, return_tensors="pt"
        )
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            do_sample=True,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            num_return_sequences=queries_per_document,
        )
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        rows: dict[str, list] = {"document": [], "query": []}
        for i, text in enumerate(texts):
            if text.strip():
                rows["document"].append(batch["document"][i // queries_per_document])
                rows["query"].append(text.strip())
        return rows

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = CacheEntry.create(cache, "generated-queries", fingerprint, "generated-queries cache")
    logger.info("Queries for %d documents, %d each, by %s (cached)", len(documents), queries_per_document, generator)
    return entry.map(
        Dataset.from_dict({"document": documents}),
        write,
        columns=["document", "query"],
        any_rows=True,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        remove_columns=["document"],
        new_fingerprint=fingerprint,
        desc="Generating queries",
    )


__all__ = ["generate_queries"]

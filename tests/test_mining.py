"""Hard-negative mining: never the query or its positives, sampled from the right ranks, cached."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import BertModel

from hf_margin.data.mining import mine_hard_negatives
from hf_margin.models.scoring import BiEncoderTeacher

from .conftest import TOPICS, make_tokenizer, sharpen, tiny_config


@pytest.fixture
def tiny_miner(tmp_path) -> BiEncoderTeacher:
    torch.manual_seed(0)
    tok = make_tokenizer()
    return BiEncoderTeacher(BertModel(tiny_config(len(tok)), add_pooling_layer=False), tok, show_progress=False)


def test_mined_negatives_exclude_query_and_positives_and_are_cached(tmp_path, tiny_miner):
    """Negatives come from the corpus, never the query or its positives; a second run embeds nothing."""
    corpus = [" ".join(ws[i : i + 2]) for ws in TOPICS.values() for i in range(0, 8, 2)]
    pairs = Dataset.from_dict({"query": corpus[:6], "positive": corpus[1:7]})
    mined = mine_hard_negatives(
        pairs, corpus, tiny_miner, num_negatives=3, skip_top=1, sample_from=8, cache_dir=tmp_path
    )
    for row in mined:
        assert len(row["negatives"]) == 3
        assert row["query"] not in row["negatives"] and row["positive"] not in row["negatives"]
        assert set(row["negatives"]) <= set(corpus)
    calls = []
    tiny_miner.embed = lambda texts: calls.append(texts)  # type: ignore[method-assign]
    again = mine_hard_negatives(
        pairs, corpus, tiny_miner, num_negatives=3, skip_top=1, sample_from=8, cache_dir=tmp_path
    )
    assert calls == [] and again["negatives"] == mined["negatives"]


def test_mining_rejects_too_few_candidates(tmp_path, tiny_miner):
    pairs = Dataset.from_dict({"query": ["sun0"], "positive": ["sun1"]})
    with pytest.raises(ValueError, match="sample_from"):
        mine_hard_negatives(pairs, ["sun2"], tiny_miner, num_negatives=4, skip_top=3, sample_from=5, cache_dir=tmp_path)


def test_corpus_mode_positives_are_the_miners_nearest_neighbours_and_the_cache_hits(tmp_path, tiny_miner):
    """Corpus mode on a 50-text toy corpus: each query's positive is its nearest neighbour by the miner (checked
    against a full similarity matrix), no text is its own positive or negative, negatives come from ranks
    [skip_top, sample_from) and never repeat the positive, and a rerun reads the cache without embedding."""
    import torch.nn.functional as F

    from hf_margin.data.mining import build_corpus_triplets

    sharpen(tiny_miner.model)  # similarities well apart: no near-tie between a chunked and a full matmul
    words = [w for ws in TOPICS.values() for w in ws]
    texts = [" ".join(words[(7 * i + j) % len(words)] for j in range(3)) for i in range(50)]
    texts += texts[:5]  # exact duplicates are dropped
    built = build_corpus_triplets(
        texts, tiny_miner, positives_per_query=2, num_negatives=3, skip_top=4, sample_from=12, cache_dir=tmp_path
    )
    corpus = list(dict.fromkeys(texts))
    assert len(built) == 2 * len(corpus)
    emb = F.normalize(tiny_miner.embed(corpus), dim=-1)
    sims = emb @ emb.T
    sims.fill_diagonal_(-float("inf"))
    ranking = sims.argsort(dim=1, descending=True, stable=True)
    tol = 1e-5  # a chunked and a full matmul may order two near-equal similarities differently
    for row_index, row in enumerate(built):
        i = corpus.index(row["query"])
        order = ranking[i].tolist()
        sim = sims[i]
        rank = row_index % 2  # the 1st and 2nd neighbours, in order
        assert abs(sim[corpus.index(row["positive"])] - sim[order[rank]]) < tol
        assert row["query"] != row["positive"] and row["query"] not in row["negatives"]
        assert row["positive"] not in row["negatives"] and len(row["negatives"]) == 3
        for negative in row["negatives"]:  # from ranks [4, 12)
            assert sim[order[11]] - tol <= sim[corpus.index(negative)] <= sim[order[4]] + tol
    embeds = []
    original = tiny_miner.embed
    tiny_miner.embed = lambda texts: embeds.append(len(texts)) or original(texts)
    again = build_corpus_triplets(
        texts, tiny_miner, positives_per_query=2, num_negatives=3, skip_top=4, sample_from=12, cache_dir=tmp_path
    )
    assert embeds == [] and again.to_list() == built.to_list()

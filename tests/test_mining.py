"""Hard-negative mining: never the query or its positives, sampled from the right ranks, cached."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import BertModel

from hf_margin.mining import mine_hard_negatives
from hf_margin.scoring import BiEncoderTeacher

from .conftest import TOPICS, make_tokenizer, tiny_config


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

"""Query–corpus mode: the teacher ranks a corpus of documents for unlabelled queries; its top documents are the
positives, negatives come from the right ranks, ambiguous queries are dropped when asked, and it is cached."""

from __future__ import annotations

import pytest
import torch

from hf_margin.data.columns import DataValidationError
from hf_margin.data.mining import build_query_corpus_triplets

from .conftest import topic_histogram

DOCUMENTS = [
    "sun0 sun1 sun2 sun3",  # 0
    "sun4 sun5 sea0",  # 1
    "sea1 sea2 sea3 sea4",  # 2
    "sea5 sea6 car0",  # 3
    "car1 car2 car3 car4",  # 4
    "car5 car6 dog0",  # 5
    "dog1 dog2 dog3 dog4",  # 6
    "dog5 dog6 tea0",  # 7
    "tea1 tea2 tea3 tea4",  # 8
    "tea5 tea6 map0",  # 9
    "map1 map2 map3 map4",  # 10
    "map5 map6 sun6",  # 11
]
OPTIONS = {"num_negatives": 2, "skip_top": 2, "sample_from": 6}


class TopicMiner:
    """A known bi-encoder: embeddings are topic histograms, so every ranking can be worked out by hand."""

    fingerprint = "topic-miner"

    def __init__(self) -> None:
        self.embedded: list[tuple[str, list[str]]] = []

    def embed(self, texts, role: str = "document") -> torch.Tensor:
        self.embedded.append((role, list(texts)))
        return torch.tensor([topic_histogram(t) for t in texts], dtype=torch.float32)


def build(queries, tmp_path, miner=None, **options):
    return build_query_corpus_triplets(
        queries, DOCUMENTS, miner or TopicMiner(), cache_dir=tmp_path, **OPTIONS, **options
    )


def test_positives_are_the_teachers_top_documents_and_negatives_come_from_the_band(tmp_path):
    """'sun7' ranks doc 0 (cos 1), doc 1 (0.89), doc 11 (0.45), then the rest (0) in corpus order; the query
    that *is* doc 0 never gets itself: its positive is doc 1."""
    miner = TopicMiner()
    built = build(["sun7", "sun0 sun1 sun2 sun3"], tmp_path, miner, positives_per_query=1)
    rows = {r["query"]: r for r in built}
    assert rows["sun7"]["positive"] == DOCUMENTS[0]
    assert set(rows["sun7"]["negatives"]) <= {DOCUMENTS[i] for i in (11, 2, 3, 4)}  # ranks [2, 6)
    assert rows["sun0 sun1 sun2 sun3"]["positive"] == DOCUMENTS[1]
    assert DOCUMENTS[0] not in rows["sun0 sun1 sun2 sun3"]["negatives"]
    for row in built:
        assert len(row["negatives"]) == 2 and row["positive"] not in row["negatives"]
    assert {role for role, _ in miner.embedded} == {"query", "document"}  # each side in its own role


def test_two_positives_per_query_give_two_rows(tmp_path):
    built = build(["sun7"], tmp_path, positives_per_query=2)
    assert built["positive"] == [DOCUMENTS[0], DOCUMENTS[1]]
    assert all(DOCUMENTS[0] not in n and DOCUMENTS[1] not in n for n in built["negatives"])


def test_ambiguous_queries_are_dropped_by_score_or_by_margin(tmp_path):
    """'sun7 sea7 car7 dog7' ranks three mixed documents level (0.67 each): no lead over rank 2, dropped with a
    margin threshold; 'sun7 sea7' tops at 0.95 < 0.99, dropped by a score threshold, 'sun7' (1.0) kept."""
    queries = ["sun7", "sun7 sea7", "sun7 sea7 car7 dog7"]
    assert len(set(build(queries, tmp_path)["query"])) == 3  # no threshold: every query trains
    by_margin = build(queries, tmp_path, min_positive_margin=0.1)
    assert set(by_margin["query"]) == {"sun7", "sun7 sea7"}
    by_score = build(queries, tmp_path, min_positive_score=0.99)
    assert by_score["query"] == ["sun7"]
    with pytest.raises(DataValidationError, match="every query was dropped"):
        build(["sun7 sea7 car7 dog7"], tmp_path, min_positive_margin=0.1)


def test_a_second_run_hits_the_cache_and_embeds_nothing(tmp_path):
    first = build(["sun7", "sea7"], tmp_path, min_positive_margin=0.1)
    miner = TopicMiner()
    again = build(["sun7", "sea7"], tmp_path, miner, min_positive_margin=0.1)
    assert miner.embedded == [] and again.to_dict() == first.to_dict()
    other = TopicMiner()
    build(["sun7", "sea7"], tmp_path, other, min_positive_margin=0.2)  # another threshold: another entry
    assert other.embedded


def test_too_small_a_corpus_is_refused_before_embedding(tmp_path):
    miner = TopicMiner()
    with pytest.raises(DataValidationError, match="at least 6 distinct documents"):
        build_query_corpus_triplets(["sun7"], DOCUMENTS[:5], miner, cache_dir=tmp_path, **OPTIONS)
    assert miner.embedded == []

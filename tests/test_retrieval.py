"""Retrieval evaluation: IR metrics against hand-computed values, exact search against a full sort, BEIR loading."""

from __future__ import annotations

import json
import re
from math import log2
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_margin.evaluation.retrieval import (
    BeirFormatError,
    RetrievalData,
    duplicate_retrieval_data,
    evaluate_retrieval,
    exact_search,
    load_beir,
    retrieval_metrics,
)

# ------------------------------------------------------------------------------------------------ IR metrics

# Five documents d1..d5; four judged queries (q4 has no relevant document and must be skipped).
TOY_QRELS = {
    "q1": {"d1": 2, "d3": 1, "d5": 0},
    "q2": {"d4": 1},
    "q3": {"d2": 3, "d5": 1},
    "q4": {"d3": 0},
}
TOY_RUN = {
    "q1": ["d2", "d1", "d5", "d3", "d4"],
    "q2": ["d4", "d1", "d2"],
    "q3": ["d1", "d3", "d4", "d5"],
    "q4": ["d3", "d1"],
}
# By hand (trec_eval: gain = grade, discount log2(rank + 1), ideal DCG from the qrels sorted by grade;
# relevant for MRR/recall means grade >= 1):
#   q1: first relevant d1 at rank 2 -> RR 1/2.
#       DCG@10 = 2/log2(3) [d1, rank 2] + 1/log2(5) [d3, rank 4] = 1.261860 + 0.430677 = 1.692536
#       IDCG@10 = 2/log2(2) + 1/log2(3) = 2.630930 -> nDCG 0.643322; recall@10 = recall@100 = 2/2 = 1
#   q2: d4 at rank 1 -> RR 1, nDCG 1, recall 1
#   q3: d2 never retrieved, d5 at rank 4 -> RR 1/4
#       DCG@10 = 1/log2(5) = 0.430677, IDCG@10 = 3/log2(2) + 1/log2(3) = 3.630930 -> nDCG 0.118613
#       recall@10 = recall@100 = 1/2
#   q4: no grade > 0 -> skipped (not a zero in the mean)
#   means over 3 queries: MRR (0.5 + 1 + 0.25) / 3 = 0.583333; nDCG (0.643322 + 1 + 0.118613) / 3 = 0.587312;
#   recall@10 = recall@100 = (1 + 1 + 0.5) / 3 = 0.833333
NDCG_Q1 = (2 / log2(3) + 1 / log2(5)) / (2 + 1 / log2(3))
NDCG_Q3 = (1 / log2(5)) / (3 + 1 / log2(3))


def test_metrics_match_hand_computation():
    """Guards the metric definitions: graded nDCG (gain = grade, log2(rank + 1)), MRR, recall, skipped queries."""
    assert NDCG_Q1 == pytest.approx(0.643322, abs=1e-6) and NDCG_Q3 == pytest.approx(0.118613, abs=1e-6)
    got = retrieval_metrics(TOY_RUN, TOY_QRELS)
    assert set(got) == {"mrr@10", "ndcg@10", "recall@10", "recall@100"}
    assert got["mrr@10"] == pytest.approx(0.583333, abs=1e-6)
    assert got["ndcg@10"] == pytest.approx((NDCG_Q1 + 1 + NDCG_Q3) / 3, abs=1e-9)
    assert got["ndcg@10"] == pytest.approx(0.587312, abs=1e-6)
    assert got["recall@10"] == pytest.approx(2.5 / 3, abs=1e-9)
    assert got["recall@100"] == pytest.approx(2.5 / 3, abs=1e-9)


def test_metrics_follow_list_order_not_doc_ids():
    """Guards against trec_eval re-sorting a ranking (it sorts by score, then doc id) instead of keeping its order."""
    qrels = {"q": {"a": 1}}
    # "a" sorts before "z" by id: if the list order were lost, "a" could come first.
    assert retrieval_metrics({"q": ["z", "a"]}, qrels)["mrr@10"] == pytest.approx(0.5)
    assert retrieval_metrics({"q": ["a", "z"]}, qrels)["mrr@10"] == pytest.approx(1.0)


def test_metric_cutoffs_at_10_and_100():
    """Guards the cutoffs: a relevant document at rank 11 counts for recall@100 only (trec_eval's recip_rank has no
    cutoff, so an MRR without @10 would give 1/11)."""
    ranking = [f"n{i:02d}" for i in range(10)] + ["rel"] + [f"m{i:02d}" for i in range(50)]
    got = retrieval_metrics({"q": ranking}, {"q": {"rel": 1}})
    assert got == pytest.approx({"mrr@10": 0.0, "ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 1.0})
    # Rank 10 is inside every cutoff: RR 1/10, nDCG 1/log2(11) (ideal 1), recall 1.
    got = retrieval_metrics({"q": ranking[1:]}, {"q": {"rel": 1}})
    assert got == pytest.approx({"mrr@10": 0.1, "ndcg@10": 1 / log2(11), "recall@10": 1.0, "recall@100": 1.0})


def test_judged_query_missing_from_run_scores_zero():
    """Guards the mean: a judged query the run never answered counts as 0, not dropped (trec_eval without -c)."""
    got = retrieval_metrics({"q2": ["d4"]}, {"q2": {"d4": 1}, "q3": {"d2": 1}})
    assert got == pytest.approx({"mrr@10": 0.5, "ndcg@10": 0.5, "recall@10": 0.5, "recall@100": 0.5})


def test_metrics_refuse_bad_input():
    """Guards silent nonsense: no relevant query at all, and a ranking listing a document twice."""
    with pytest.raises(ValueError, match="no query"):
        retrieval_metrics({"q": ["a"]}, {"q": {"a": 0}})
    with pytest.raises(ValueError, match="repeats a document"):
        retrieval_metrics({"q": ["a", "b", "a"]}, {"q": {"a": 1}})


# ------------------------------------------------------------------------------------------------ exact search


def reference_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full sort of every row: score descending, then corpus index ascending."""
    cols = np.arange(scores.shape[1])
    order = np.stack([np.lexsort((cols, -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, axis=1), order


CHUNKS = [(1024, 50_000), (37, 53), (5, 7), (3, 2), (8, 1), (1, 10)]


@pytest.mark.parametrize("query_chunk, corpus_chunk", CHUNKS)
@pytest.mark.parametrize("k", [1, 10, 53, 60])
def test_exact_search_equals_full_sort_with_ties(query_chunk, corpus_chunk, k):
    """Guards the chunked merge: same top-k as sorting the whole score matrix, for chunks smaller than k, a corpus
    that is not a multiple of the chunk, k beyond the corpus, and many exact ties (small integer vectors, so dot
    products are exact) that must rank the lower corpus index first."""
    gen = torch.Generator().manual_seed(0)
    queries = torch.randint(-2, 3, (37, 4), generator=gen).float()
    corpus = torch.randint(-2, 3, (53, 4), generator=gen).float()
    scores, indices = exact_search(
        queries, corpus, k=k, similarity="dot", query_chunk_size=query_chunk, corpus_chunk_size=corpus_chunk
    )
    want_scores, want_indices = reference_topk((queries @ corpus.T).numpy().astype(np.float64), min(k, 53))
    assert indices.shape == (37, min(k, 53)) and indices.dtype == torch.long
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_array_equal(scores.numpy(), want_scores)


@pytest.mark.parametrize("query_chunk, corpus_chunk", CHUNKS)
def test_exact_search_cosine(query_chunk, corpus_chunk):
    """Guards cosine similarity: embeddings normalised (lengths ignored), same ranking as a full float64 sort."""
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(29, 6, generator=gen, dtype=torch.float64)
    corpus = torch.randn(41, 6, generator=gen, dtype=torch.float64) * torch.rand(41, 1, generator=gen).add(0.1) * 10
    scores, indices = exact_search(queries, corpus, k=12, query_chunk_size=query_chunk, corpus_chunk_size=corpus_chunk)
    qn, cn = queries.numpy(), corpus.numpy()
    cos = (qn / np.linalg.norm(qn, axis=1, keepdims=True)) @ (cn / np.linalg.norm(cn, axis=1, keepdims=True)).T
    want_scores, want_indices = reference_topk(cos, 12)
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=0, atol=1e-12)


def test_exact_search_ties_take_lower_index():
    """Guards deterministic tie-breaking: equal scores rank the lower corpus index first, across chunk boundaries."""
    corpus = torch.tensor([[1.0], [3.0], [3.0], [2.0], [3.0], [3.0]])
    query = torch.ones(1, 1)
    for chunk in (1, 2, 4, 6):
        _, indices = exact_search(query, corpus, k=3, similarity="dot", corpus_chunk_size=chunk)
        assert indices.tolist() == [[1, 2, 4]], chunk
    _, indices = exact_search(query, torch.ones(9, 1), k=5, similarity="dot", corpus_chunk_size=4)
    assert indices.tolist() == [[0, 1, 2, 3, 4]]


def test_exact_search_exclusion():
    """Guards exclusion: excluded documents never appear, the next ones move up, and a row short of k is padded."""
    gen = torch.Generator().manual_seed(2)
    queries = torch.randint(-2, 3, (6, 3), generator=gen).float()
    corpus = torch.randint(-2, 3, (20, 3), generator=gen).float()
    full = (queries @ corpus.T).numpy().astype(np.float64)
    exclude = [{0, 5, 7}, set(), {19}, set(range(10)), {3}, set()]
    scores, indices = exact_search(queries, corpus, k=4, similarity="dot", corpus_chunk_size=3, exclude=exclude)
    for row, skip in enumerate(exclude):
        masked = full[row : row + 1].copy()
        keep = [c for c in range(20) if c not in skip]
        want_s, want_i = reference_topk(masked[:, keep], 4)
        assert indices[row].tolist() == [keep[i] for i in want_i[0]], row
        assert scores[row].tolist() == want_s[0].tolist()
    # Excluding 2 of 3 documents leaves one: the other k - 1 slots are padded.
    scores, indices = exact_search(torch.ones(1, 2), torch.eye(3, 2), k=3, exclude=[{0, 2}])
    assert indices.tolist() == [[1, -1, -1]]
    assert scores[0, 0].item() == pytest.approx(2**-0.5) and torch.isinf(scores[0, 1:]).all()


def test_exact_search_refuses_bad_shapes():
    """Guards against silently broadcasting mismatched embeddings."""
    with pytest.raises(ValueError, match="width"):
        exact_search(torch.ones(2, 3), torch.ones(4, 5), k=1)
    with pytest.raises(ValueError, match="similarity"):
        exact_search(torch.ones(2, 3), torch.ones(4, 3), k=1, similarity="l2")
    with pytest.raises(ValueError, match="one per query"):
        exact_search(torch.ones(2, 3), torch.ones(4, 3), k=1, exclude=[{0}])


# ------------------------------------------------------------------------------------------------ BEIR folders

CORPUS = [
    {"_id": "d1", "title": "Sun", "text": "the sun is hot"},
    {"_id": "d2", "title": "", "text": "the sea is wet"},
    {"_id": 3, "text": "cars drive"},
    {"_id": "d4", "title": None, "text": "dogs bark"},
]
QUERIES = [
    {"_id": "q1", "text": "hot star"},
    {"_id": "q2", "text": "salt water"},
    {"_id": "q3", "text": "only non-relevant judgements"},
    {"_id": "q4", "text": "never judged"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t0\nq2\td2\t1\nq3\td4\t0\n"


def write_beir(folder: Path, *, corpus=None, queries=None, qrels: str = QRELS) -> Path:
    """A BEIR folder; ``corpus``/``queries`` given as raw text replace the JSON lines."""
    folder.mkdir(exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    for name, rows, raw in (("corpus.jsonl", CORPUS, corpus), ("queries.jsonl", QUERIES, queries)):
        (folder / name).write_text(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_load_beir(tmp_path):
    """Guards the BEIR reading: title + " " + text, int ids as strings, optional header, queries without a
    relevant document (only grade 0, or not judged) dropped while their grade-0 judgements of kept queries stay."""
    want = RetrievalData(
        corpus={"d1": "Sun the sun is hot", "d2": "the sea is wet", "3": "cars drive", "d4": "dogs bark"},
        queries={"q1": "hot star", "q2": "salt water"},
        qrels={"q1": {"d1": 2, "3": 0}, "q2": {"d2": 1}},
    )
    assert load_beir(write_beir(tmp_path / "a")) == want
    no_header = QRELS.split("\n", 1)[1].replace("\n", "\r\n") + "\n"  # CRLF and a blank line, no header
    assert load_beir(write_beir(tmp_path / "b", qrels=no_header)) == want


def test_load_beir_missing_files(tmp_path):
    """Guards the missing-file message: which file, what the BEIR layout needs, and the splits that exist."""
    folder = write_beir(tmp_path / "beir")
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv not found.*qrels/<split>\.tsv.*\['test'\]"):
        load_beir(folder, split="dev")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"queries\.jsonl not found.*corpus\.jsonl, queries\.jsonl and qrels"):
        load_beir(folder)


BAD_FILES = [
    ("corpus.jsonl", {"corpus": '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n'}, 2, "not valid JSON"),
    ("corpus.jsonl", {"corpus": '{"_id": "d1", "title": "t"}\n'}, 1, "no 'text' field"),
    ("corpus.jsonl", {"corpus": '{"_id": "d1", "text": "a", "title": 7}\n'}, 1, "'title' is 7"),
    ("corpus.jsonl", {"corpus": '["d1", "a"]\n'}, 1, "not an object"),
    ("corpus.jsonl", {"corpus": '{"_id": "d1", "text": "a"}\n\n{"_id": "d1", "text": "b"}\n'}, 3, "repeats line 1"),
    ("queries.jsonl", {"queries": '{"_id": "q1", "text": "a"}\n\n{"text": "b"}\n'}, 3, "no '_id' field"),
    ("test.tsv", {"qrels": "query-id\tcorpus-id\tscore\nq1\td1\n"}, 2, "2 tab-separated fields, expected 3"),
    ("test.tsv", {"qrels": "q1\td1\t1\nq1 d2 1\n"}, 2, "1 tab-separated fields, expected 3"),
    ("test.tsv", {"qrels": "query-id\tcorpus-id\tscore\nq1\td1\t1.5\n"}, 2, "score '1.5' is not an integer"),
    (
        "test.tsv",
        {"qrels": "q1\td1\t1\nq2\td9\t1\nq2\td8\t1\n"},
        2,
        "corpus-id 'd9' is not in corpus.jsonl .and 1 more",
    ),
    ("test.tsv", {"qrels": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq9\td1\t1\n"}, 4, "query-id 'q9'"),
]


@pytest.mark.parametrize("name, override, line, problem", BAD_FILES)
def test_load_beir_errors_name_file_and_line(tmp_path, name, override, line, problem):
    """Guards the error messages: each bad line is reported with its file and line number and what is wrong."""
    folder = write_beir(tmp_path / "beir", **override)
    path = folder / ("qrels/" + name if name.endswith(".tsv") else name)
    with pytest.raises(BeirFormatError, match=re.escape(f"{path}, line {line}: ") + f".*{problem}"):
        load_beir(folder)


def test_load_beir_needs_a_relevant_query(tmp_path):
    """Guards against an empty evaluation: a qrels split without any score > 0 is refused."""
    with pytest.raises(BeirFormatError, match="no query has a score > 0"):
        load_beir(write_beir(tmp_path / "beir", qrels="q1\td1\t0\n"))


# ------------------------------------------------------------------------------------------------ STS-B duplicates

PAIRS = [
    ("sun sea", "sun sea sun", 4.5),
    ("sun sea", "sea sun", 4.2),  # same sentence 1: merged into one query
    ("car dog", "dog car dog", 4.8),
    ("car dog", "tea map", 1.0),  # below min_score: in the corpus, not relevant
    ("tea", "tea tea", 3.0),  # below min_score: not a query
    ("map", "map", 5.0),  # identical sentences: unusable (the query's own text is excluded)
]
VOCAB = ["sun", "sea", "car", "dog", "tea", "map"]


def count_embed(texts: list[str]) -> torch.Tensor:
    """Word counts over VOCAB: (n, 6)."""
    return torch.tensor([[t.split().count(w) for w in VOCAB] for t in texts], dtype=torch.float32)


def test_duplicate_retrieval_data():
    """Guards the duplicate task: distinct sentences as corpus in first-seen order, merged queries, self-exclusion."""
    s1, s2, scores = zip(*PAIRS)
    data = duplicate_retrieval_data(list(s1), list(s2), list(scores), min_score=4.0)
    assert data.corpus == {
        "d0": "sun sea",
        "d1": "sun sea sun",
        "d2": "sea sun",
        "d3": "car dog",
        "d4": "dog car dog",
        "d5": "tea map",
        "d6": "tea",
        "d7": "tea tea",
        "d8": "map",
    }
    assert data.queries == {"q0": "sun sea", "q1": "car dog"}
    assert data.qrels == {"q0": {"d1": 1, "d2": 1}, "q1": {"d4": 1}}
    assert data.exclude == {"q0": {"d0"}, "q1": {"d3"}}
    with pytest.raises(ValueError, match="no pair"):
        duplicate_retrieval_data(["a"], ["b"], [1.0])


def test_evaluate_retrieval_end_to_end_with_self_exclusion():
    """Guards evaluate_retrieval (embed, search, exclusion, metrics): with the query's own text excluded, cosine of
    word counts ranks the duplicates first; without exclusion the query finds itself at rank 1."""
    s1, s2, scores = zip(*PAIRS)
    data = duplicate_retrieval_data(list(s1), list(s2), list(scores))
    # q0 "sun sea": d0 (itself, cos 1) excluded, d2 "sea sun" cos 1, d1 "sun sea sun" cos 3/sqrt(10) = 0.949.
    # q1 "car dog": d3 (itself) excluded, d4 "dog car dog" cos 0.949 first.
    got = evaluate_retrieval(count_embed, data, batch_size=3, corpus_chunk_size=4)
    assert got == pytest.approx({"mrr@10": 1.0, "ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0})
    # Without exclusion: q0 ranks d0, d2 (tie at 1, lower index first), d1 -> RR 1/2,
    #   nDCG (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3)) = 0.693426; q1 ranks d3, d4 -> RR 1/2, nDCG 1/log2(3).
    data.exclude = {}
    got = evaluate_retrieval(count_embed, data, batch_size=3, corpus_chunk_size=4)
    ndcg = ((1 / log2(3) + 1 / log2(4)) / (1 + 1 / log2(3)) + 1 / log2(3)) / 2
    assert got == pytest.approx({"mrr@10": 0.5, "ndcg@10": ndcg, "recall@10": 1.0, "recall@100": 1.0})
    with pytest.raises(ValueError, match="recall@100"):
        evaluate_retrieval(count_embed, data, k=10)

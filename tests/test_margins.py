"""Teacher scores against hand computation, the margin cache (hits, misses, invalidation) and failure safety."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_margin.data.columns import DataValidationError
from hf_margin.data.margins import TEACHER_COLUMNS, attach_teacher_margins, margins_fingerprint
from hf_margin.models.scoring import CrossEncoderTeacher

from .conftest import TopicTeacher, make_triplets, perturbed, teacher_for, topic_histogram

QUERIES = ["sun1", "sea1 sea2 sea3", "car1 car2", "sun1", "dog1 dog2 dog3 dog4 dog5"]
DOCUMENTS = ["sun2 sun3", "sea4", "car3 car4 car5 car6", "map1 map2 map3", "sun1"]


def topic_cosine(q: str, d: str) -> float:
    a, b = topic_histogram(q), topic_histogram(d)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def negatives_lists(data: dict[str, list]) -> list[list[str]]:
    return data["negatives"] if "negatives" in data else [[n] for n in data["negative"]]


def teacher_columns(dataset: Dataset) -> dict[str, list]:
    return {c: dataset[c] for c in TEACHER_COLUMNS}


def cache_listing(path) -> dict[str, bytes]:
    """Every cache file below ``path`` (entries are folders: data.arrow + checksum.json), lock files aside."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def cache_entries(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("teacher-margins-"))


def count_calls(teacher, monkeypatch) -> list[int]:
    """Wrap ``teacher.score_pairs``; the returned list gets one entry (the number of pairs) per call."""
    calls: list[int] = []
    original = teacher.score_pairs

    def counted(queries, documents):
        calls.append(len(queries))
        return original(queries, documents)

    monkeypatch.setattr(teacher, "score_pairs", counted)
    return calls


class NaNTeacher(TopicTeacher):
    """TopicTeacher (same fingerprint) that scores one given (query, document) pair as NaN."""

    def __init__(self, bad_pair: tuple[str, str]) -> None:
        super().__init__()
        self.bad_pair = bad_pair

    def score_pairs(self, queries, documents):
        scores = super().score_pairs(queries, documents)
        for k, pair in enumerate(zip(queries, documents)):
            if pair == self.bad_pair:
                scores[k] = math.nan
        return scores


class CrashingTeacher(TopicTeacher):
    """TopicTeacher (same fingerprint) that raises on its second call, like an OOM midway through scoring."""

    def score_pairs(self, queries, documents):
        if self.calls == 1:
            self.calls += 1
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().score_pairs(queries, documents)


# --------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("layout", ["fixed", "ragged", "single"])
def test_margins_equal_hand_computed_teacher_scores(tmp_path, layout):
    """Guards that pos score, neg scores and margin = pos − neg land on the right row and negative."""
    dataset = make_triplets(9, num_negatives=4, ragged=layout == "ragged", seed=4)
    if layout == "single":
        dataset = Dataset.from_dict(
            {
                "query": dataset["query"],
                "positive": dataset["positive"],
                "negative": [negs[-1] for negs in dataset["negatives"]],
            }
        )
    data = dataset.to_dict()
    negs = negatives_lists(data)
    if layout == "ragged":
        assert len({len(n) for n in negs}) > 1
    teacher = TopicTeacher(offset=0.25)
    scored = attach_teacher_margins(dataset, teacher, batch_size=4, cache_dir=tmp_path)

    assert teacher.calls == 3  # ceil(9 / 4) map batches
    assert teacher.pairs == 9 + sum(len(n) for n in negs)
    for name in ("query", "positive", "negatives" if layout != "single" else "negative"):
        assert scored[name] == data[name]
    for i, q in enumerate(data["query"]):
        pos = topic_cosine(q, data["positive"][i]) + 0.25
        neg = [topic_cosine(q, n) + 0.25 for n in negs[i]]
        assert scored[i]["teacher_pos_score"] == pytest.approx(pos, abs=1e-6)
        assert scored[i]["teacher_neg_scores"] == pytest.approx(neg, abs=1e-6)
        assert scored[i]["teacher_margins"] == pytest.approx([pos - n for n in neg], abs=1e-6)
    margins = [m for row in scored["teacher_margins"] for m in row]
    assert min(margins) < 0.5 < max(margins)  # real spread, not a constant


def test_teacher_columns_are_float32_lists(tmp_path):
    """Guards the column types: a scalar positive score and one float per negative for scores and margins."""
    scored = attach_teacher_margins(make_triplets(4), TopicTeacher(), cache_dir=tmp_path)
    assert str(scored.features["teacher_pos_score"].dtype) == "float32"
    assert str(scored.features["teacher_neg_scores"].feature.dtype) == "float32"
    assert str(scored.features["teacher_margins"].feature.dtype) == "float32"
    assert all(len(m) == 3 for m in scored["teacher_margins"])


def test_scored_data_is_refused_unless_rescore(tmp_path):
    """Guards a user's own teacher scores from being dropped silently: without rescore=True, scoring data that
    already carries them is refused, naming the columns; the teacher is never called."""
    first = attach_teacher_margins(make_triplets(6), TopicTeacher(), cache_dir=tmp_path)
    teacher = TopicTeacher(offset=0.5)
    with pytest.raises(DataValidationError, match=r"already carries teacher scores.*teacher_margins.*rescore=True"):
        attach_teacher_margins(first, teacher, cache_dir=tmp_path)
    assert teacher.calls == 0


def test_rescoring_replaces_stale_teacher_columns(tmp_path):
    """Guards that rescore=True overwrites the old teacher's columns with the new teacher's scores."""
    dataset = make_triplets(6)
    first = attach_teacher_margins(dataset, TopicTeacher(), cache_dir=tmp_path)
    second = attach_teacher_margins(first, TopicTeacher(offset=0.5), cache_dir=tmp_path, rescore=True)
    assert second.column_names == first.column_names
    assert np.allclose(np.array(second["teacher_pos_score"]), np.array(first["teacher_pos_score"]) + 0.5, atol=1e-6)
    for a, b in zip(first["teacher_margins"], second["teacher_margins"]):
        assert b == pytest.approx(a, abs=1e-6)  # the offset cancels in pos − neg


def test_object_without_score_pairs_is_refused(tmp_path):
    """Guards that a non-teacher fails with a TypeError naming what is needed, before touching the cache."""
    with pytest.raises(TypeError, match="score_pairs"):
        attach_teacher_margins(make_triplets(2), object(), cache_dir=tmp_path)
    assert cache_listing(tmp_path) == {}


# --------------------------------------------------------------------------------------------- cache


def test_second_run_reads_the_cache_without_calling_the_teacher(tmp_path):
    """Guards the cache hit: same data and teacher fingerprint → no teacher call, identical columns."""
    first_teacher = TopicTeacher()
    first = attach_teacher_margins(make_triplets(8), first_teacher, batch_size=3, cache_dir=tmp_path)
    assert first_teacher.calls == 3
    files = cache_listing(tmp_path)
    assert len(cache_entries(tmp_path)) == 1 and cache_entries(tmp_path)[0].startswith("teacher-margins-")
    assert sorted(Path(f).name for f in files) == ["checksum.json", "data.arrow"]

    fresh = TopicTeacher()
    again = attach_teacher_margins(make_triplets(8), fresh, batch_size=3, cache_dir=tmp_path)
    assert fresh.calls == 0 and fresh.pairs == 0
    assert teacher_columns(again) == teacher_columns(first)
    assert cache_listing(tmp_path) == files


def test_other_teacher_fingerprint_recomputes(tmp_path):
    """Guards that a teacher with another fingerprint never reads the first teacher's cached margins."""
    dataset = make_triplets(8)
    first = attach_teacher_margins(dataset, TopicTeacher(), cache_dir=tmp_path)
    other = TopicTeacher(offset=0.1)
    second = attach_teacher_margins(dataset, other, cache_dir=tmp_path)
    assert other.calls > 0
    assert len(cache_entries(tmp_path)) == 2
    assert np.allclose(np.array(second["teacher_pos_score"]), np.array(first["teacher_pos_score"]) + 0.1, atol=1e-6)
    assert margins_fingerprint(dataset, TopicTeacher()) != margins_fingerprint(dataset, other)


def test_other_data_recomputes(tmp_path):
    """Guards that other data never reads margins cached for different rows."""
    attach_teacher_margins(make_triplets(8, seed=0), TopicTeacher(), cache_dir=tmp_path)
    teacher = TopicTeacher()
    other = make_triplets(8, seed=1)
    scored = attach_teacher_margins(other, teacher, cache_dir=tmp_path)
    assert teacher.calls > 0
    assert len(cache_entries(tmp_path)) == 2
    assert scored[0]["teacher_pos_score"] == pytest.approx(topic_cosine(other[0]["query"], other[0]["positive"]))


def test_load_from_cache_file_false_recomputes(tmp_path):
    """Guards that load_from_cache_file=False forces the teacher to score again."""
    dataset = make_triplets(5)
    first = attach_teacher_margins(dataset, TopicTeacher(), cache_dir=tmp_path)
    teacher = TopicTeacher()
    again = attach_teacher_margins(dataset, teacher, cache_dir=tmp_path, load_from_cache_file=False)
    assert teacher.calls > 0
    assert teacher_columns(again) == teacher_columns(first)


def test_bi_encoder_teacher_cache_hit_and_weight_change(tmp_path, tokenizer, sharp_bi_encoder, monkeypatch):
    """Guards the cache with a real teacher: same weights → no call; changed weights → rescored, new values."""
    bi_encoder = sharp_bi_encoder
    dataset = make_triplets(6, ragged=True, seed=1)
    first_teacher = teacher_for(bi_encoder, tokenizer)
    first_calls = count_calls(first_teacher, monkeypatch)
    first = attach_teacher_margins(dataset, first_teacher, batch_size=4, cache_dir=tmp_path)
    assert len(first_calls) == 2

    same = teacher_for(copy.deepcopy(bi_encoder), tokenizer)
    same_calls = count_calls(same, monkeypatch)
    again = attach_teacher_margins(make_triplets(6, ragged=True, seed=1), same, batch_size=4, cache_dir=tmp_path)
    assert same_calls == []
    assert teacher_columns(again) == teacher_columns(first)

    changed_model = perturbed(bi_encoder, delta=0.5, name="embeddings.word_embeddings.weight", noise=True)
    changed = teacher_for(changed_model, tokenizer)
    changed_calls = count_calls(changed, monkeypatch)
    rescored = attach_teacher_margins(dataset, changed, batch_size=4, cache_dir=tmp_path)
    assert len(changed_calls) == 2
    assert len(cache_entries(tmp_path)) == 2
    want = changed.score_pairs(dataset["query"], dataset["positive"])
    np.testing.assert_allclose(rescored["teacher_pos_score"], want, atol=1e-5)
    assert not np.allclose(rescored["teacher_pos_score"], first["teacher_pos_score"], atol=1e-3)


def test_bi_encoder_teacher_rescores_after_in_place_weight_update(tmp_path, tokenizer, sharp_bi_encoder, monkeypatch):
    """Guards against serving stale cached margins when the same teacher object's weights were updated in place."""
    bi_encoder = sharp_bi_encoder
    dataset = make_triplets(6, seed=1)
    teacher = teacher_for(bi_encoder, tokenizer)
    calls = count_calls(teacher, monkeypatch)
    first = attach_teacher_margins(dataset, teacher, cache_dir=tmp_path)
    assert len(calls) == 1
    embeddings = bi_encoder.get_parameter("embeddings.word_embeddings.weight")
    with torch.no_grad():
        embeddings.add_(0.5 * torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(7)))
    want = teacher_for(copy.deepcopy(bi_encoder), tokenizer).score_pairs(dataset["query"], dataset["positive"])
    assert not np.allclose(want, first["teacher_pos_score"], atol=1e-3)  # the update really changes the scores
    rescored = attach_teacher_margins(dataset, teacher, cache_dir=tmp_path)
    assert len(calls) == 2, "the teacher's weights changed but its cached margins were reused"
    np.testing.assert_allclose(rescored["teacher_pos_score"], want, atol=1e-5)


# --------------------------------------------------------------------------------------------- cross-encoder teacher


def test_cross_encoder_teacher_attaches_margins(tmp_path, tokenizer, sharp_cross_encoder):
    """Guards the end-to-end cross-encoder margins: pos logit − neg logit for each (row, negative)."""
    cross_encoder = sharp_cross_encoder
    dataset = make_triplets(4, ragged=True, seed=2)
    teacher = CrossEncoderTeacher(cross_encoder, tokenizer, batch_size=3, device="cpu", show_progress=False)
    scored = attach_teacher_margins(dataset, teacher, cache_dir=tmp_path)
    with torch.no_grad():
        for row in scored:
            pos = cross_encoder(**tokenizer(row["query"], row["positive"], return_tensors="pt")).logits[0, 0].item()
            for n, m in zip(row["negatives"], row["teacher_margins"]):
                neg = cross_encoder(**tokenizer(row["query"], n, return_tensors="pt")).logits[0, 0].item()
                assert m == pytest.approx(pos - neg, abs=1e-5)
    assert np.ptp([m for row in scored["teacher_margins"] for m in row]) > 0.05


# --------------------------------------------------------------------------------------------- failure safety


@pytest.mark.parametrize(("target", "negative"), [("positive", None), ("negatives", 0), ("negatives", -1)])
def test_nan_teacher_score_fails_without_touching_the_cache(tmp_path, target, negative):
    """Guards that a NaN teacher score names column and row and neither writes nor alters any cache file."""
    dataset = make_triplets(8, num_negatives=3, seed=5)
    row = dataset[5]
    bad_doc = row["positive"] if target == "positive" else row["negatives"][negative]
    pairs = [(r["query"], d) for r in dataset for d in [r["positive"], *r["negatives"]]]
    assert pairs.count((row["query"], bad_doc)) == 1

    attach_teacher_margins(dataset, TopicTeacher(offset=0.1), batch_size=3, cache_dir=tmp_path)
    before = cache_listing(tmp_path)
    assert len(cache_entries(tmp_path)) == 1

    bad = NaNTeacher((row["query"], bad_doc))
    with pytest.raises(DataValidationError, match=rf"column '{target}', row 5: .*not finite"):
        attach_teacher_margins(dataset, bad, batch_size=3, cache_dir=tmp_path)
    assert bad.calls == 2  # rows 0-2 scored fine, the batch holding row 5 failed
    assert cache_listing(tmp_path) == before

    good = TopicTeacher()
    recovered = attach_teacher_margins(dataset, good, batch_size=3, cache_dir=tmp_path)
    assert good.calls == 3  # nothing partial was cached under the failed run's fingerprint
    clean = attach_teacher_margins(dataset, TopicTeacher(), batch_size=3, cache_dir=tmp_path / "clean")
    assert teacher_columns(recovered) == teacher_columns(clean)


def test_crash_midway_leaves_no_partial_cache(tmp_path):
    """Guards that a teacher raising in the second map batch leaves no new (partial or temporary) cache file."""
    dataset = make_triplets(8, ragged=True, seed=6)
    attach_teacher_margins(dataset, TopicTeacher(offset=0.1), batch_size=3, cache_dir=tmp_path)
    before = cache_listing(tmp_path)

    crashing = CrashingTeacher()
    with pytest.raises(RuntimeError, match="simulated"):
        attach_teacher_margins(dataset, crashing, batch_size=3, cache_dir=tmp_path)
    assert crashing.calls == 2
    assert cache_listing(tmp_path) == before

    good = TopicTeacher()
    recovered = attach_teacher_margins(dataset, good, batch_size=3, cache_dir=tmp_path)
    assert good.calls == 3
    clean = attach_teacher_margins(dataset, TopicTeacher(), batch_size=3, cache_dir=tmp_path / "clean")
    assert teacher_columns(recovered) == teacher_columns(clean)
    assert len(cache_entries(tmp_path)) == 2


@pytest.mark.parametrize("value", ["", "   ", None])
def test_bad_data_fails_before_the_teacher_runs(tmp_path, value):
    """Guards that invalid rows are caught before any teacher compute and before the cache folder is created."""
    data = make_triplets(8).to_dict()
    data["query"][5] = value
    teacher = TopicTeacher()
    cache = tmp_path / "cache"
    with pytest.raises(DataValidationError, match=r"column 'query', row 5:"):
        attach_teacher_margins(Dataset.from_dict(data), teacher, cache_dir=cache)
    assert teacher.calls == 0
    assert not cache.exists() or cache_listing(cache) == {}


def test_bad_data_with_real_teacher_makes_no_call(tmp_path, tokenizer, bi_encoder, monkeypatch):
    """Guards that an empty negative stops a real teacher before it embeds anything."""
    data = make_triplets(8).to_dict()
    data["negatives"][5][1] = ""
    teacher = teacher_for(bi_encoder, tokenizer)
    calls = count_calls(teacher, monkeypatch)
    with pytest.raises(DataValidationError, match=r"column 'negatives', row 5, negative 1:"):
        attach_teacher_margins(Dataset.from_dict(data), teacher, cache_dir=tmp_path)
    assert calls == []
    assert cache_listing(tmp_path) == {}

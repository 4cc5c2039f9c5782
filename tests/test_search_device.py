"""The exact search's device: the GPU path (held or streamed corpus, TF32 only where exact) run on the CPU as a
stand-in, ``search_device`` / ``choose_search`` with and without a (patched) GPU, ``_drop_excluded``'s vectorised
and looped paths against a reference, and the ``search_device`` argument."""

from __future__ import annotations

import random

import pytest
import torch

import hf_margin.data.search as search_module
from hf_margin.app.arguments import DataArguments, UserError
from hf_margin.data.search import SearchIndex, SearchOptions, choose_search, search_device
from hf_margin.evaluation.retrieval import _drop_excluded, exact_search

K = 10


@pytest.fixture
def tf32_flag():
    """Restores ``torch.backends.cuda.matmul.allow_tf32`` (monkeypatch cannot: it is no plain attribute)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def corpus_of(dtype):
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(3000, 32, generator=g), dim=-1).to(dtype)


def exclusions(corpus, queries):
    """Row i excludes its i % 4 best documents and two random ones; row 5 excludes 70 (the looped path)."""
    top = exact_search(queries, corpus, k=4, similarity="dot")[1]
    rng = random.Random(1)
    exclude = [set(top[i, : i % 4].tolist()) | {rng.randrange(3000) for _ in range(2)} for i in range(len(queries))]
    exclude[5] = set(exact_search(queries[5:6], corpus, k=70, similarity="dot")[1][0].tolist())
    return exclude


def gpu_stand_in(corpus, free, monkeypatch, *, group=128, corpus_chunk=700):
    """A SearchIndex whose exact search takes the GPU path, on the CPU (small blocks: several of each)."""
    index = SearchIndex(corpus, SearchOptions(search="exact", device="cpu"))
    assert index.kind == "exact" and index._device_corpus is None
    index.device = torch.device("cpu")  # stands in for the GPU
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, free))
    monkeypatch.setattr(search_module, "ADD_CHUNK", 1000)
    monkeypatch.setattr(search_module, "GPU_QUERY_CHUNK", 100)
    monkeypatch.setattr(search_module, "GPU_CORPUS_CHUNK", corpus_chunk)
    monkeypatch.setattr(search_module, "GPU_GROUP", group)
    return index, index._to_gpu("why")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("free", [1 << 40, 1 << 10], ids=["held", "streamed"])
@pytest.mark.parametrize("group", [8, 128], ids=["best-runs", "plain-topk"])
def test_the_gpu_path_returns_the_exact_search_on_a_cpu_stand_in(dtype, free, group, monkeypatch, tf32_flag):
    corpus = corpus_of(dtype)
    index, reason = gpu_stand_in(corpus, free, monkeypatch, group=group, corpus_chunk=1024)
    if free == 1 << 40:
        assert reason == "why; on cpu, the corpus held there (0.0 GiB)"
        held = index._device_corpus
        assert held.dtype == dtype and torch.equal(held, corpus)
        assert index._device_half.dtype == torch.float16 and torch.equal(index._device_half, corpus.half())
        assert index._max_norm == pytest.approx(float(corpus.float().norm(dim=1).max()))
    else:
        assert reason == "why; on cpu, the corpus streamed from host memory (0.0 GiB)"
        assert index._device_corpus is None

    calls = []

    def recording_search(*args, **kwargs):
        calls.append((len(args[0]), torch.backends.cuda.matmul.allow_tf32, kwargs["query_chunk_size"]))
        return exact_search(*args, **kwargs)

    monkeypatch.setattr(search_module, "exact_search", recording_search)
    g = torch.Generator().manual_seed(2)
    random_queries = torch.nn.functional.normalize(torch.randn(250, 32, generator=g), dim=-1)
    half_queries = random_queries.half().float()  # exactly representable in float16
    for queries, exact_in_half in ((random_queries, False), (half_queries, True)):
        for exclude in (None, exclusions(corpus, queries)):
            expected_scores, expected_indices = exact_search(queries, corpus, k=K, similarity="dot", exclude=exclude)
            for previous in (False, True):
                torch.backends.cuda.matmul.allow_tf32 = previous
                calls.clear()
                index.exact_rows = 0
                scores, indices = index._exact_on_gpu(queries, K, exclude)
                assert torch.backends.cuda.matmul.allow_tf32 is previous
                if free == 1 << 10:  # streamed: every row through the exact search, TF32 only where exact
                    assert calls == [(250, dtype == torch.float16 and exact_in_half, 100)]
                else:  # held: the float16 candidates settle every row of this spread-out corpus
                    assert calls == [] and index.exact_rows == 0
                assert scores.shape == indices.shape == (250, K) and scores.dtype == torch.float32
                assert torch.equal(indices, expected_indices)
                assert torch.allclose(scores, expected_scores, atol=1e-6, rtol=0)
                if exclude is not None:
                    assert all(not set(row) & skip for row, skip in zip(indices.tolist(), exclude))
                    unexcluded = exact_search(queries[3:4], corpus, k=K, similarity="dot")[1][0].tolist()
                    assert indices[3].tolist() != unexcluded


def test_the_gpu_path_rescores_in_parts_and_takes_no_query(monkeypatch):
    corpus = corpus_of(torch.float16)
    index, _ = gpu_stand_in(corpus, 1 << 40, monkeypatch, group=8, corpus_chunk=1024)
    monkeypatch.setattr(search_module, "GPU_RESCORE_FLOATS", 3 * 84 * 32)  # 3 rows of 84 candidates at once
    queries = torch.nn.functional.normalize(torch.randn(40, 32, generator=torch.Generator().manual_seed(5)), dim=-1)
    scores, indices = index._exact_on_gpu(queries, K, None)
    expected_scores, expected_indices = exact_search(queries, corpus, k=K, similarity="dot")
    assert torch.equal(indices, expected_indices) and torch.allclose(scores, expected_scores, atol=1e-6, rtol=0)
    none_scores, none_indices = index._exact_on_gpu(queries[:0], K, [])
    assert none_scores.shape == none_indices.shape == (0, K)


def test_rows_the_float16_pass_cannot_settle_are_searched_exactly(monkeypatch, tf32_flag):
    """Near-duplicates closer than float16 can tell apart (and exact ties): the candidates cannot prove the k-th
    score, so those rows are redone by the exact search, and the result is still exact_search's (ties: lower index
    first)."""
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1)
    corpus = base.repeat_interleave(200, dim=0) + 1e-5 * torch.randn(2400, 16, generator=g)  # more than fetched
    corpus[::7] = corpus[0]  # and exact ties
    index, _ = gpu_stand_in(corpus, 1 << 40, monkeypatch, group=8, corpus_chunk=512)
    queries = base[:10]
    expected_scores, expected_indices = exact_search(queries, corpus, k=K, similarity="dot")
    scores, indices = index._exact_on_gpu(queries, K, None)
    assert index.exact_rows == 10  # the near-copies' rows could not be settled from float16 scores
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-6, rtol=0)


def test_half_candidates_hold_the_float16_top_and_bound_the_rest(monkeypatch):
    corpus = corpus_of(torch.float16)
    index, _ = gpu_stand_in(corpus, 1 << 40, monkeypatch, group=8, corpus_chunk=1024)
    queries = torch.nn.functional.normalize(torch.randn(20, 32, generator=torch.Generator().manual_seed(4)), dim=-1)
    last, ids = index._half_candidates(queries.half(), 50)
    scores16 = queries.half() @ corpus.T
    assert ids.shape == (20, 50) and last.dtype == torch.float32
    for row in range(20):
        fetched = set(ids[row].tolist())
        assert len(fetched) == 50
        assert torch.equal(scores16[row, ids[row]].sort(descending=True).values, scores16[row].topk(50).values)
        rest = torch.tensor([j for j in range(3000) if j not in fetched])
        assert float(scores16[row, rest].max()) <= float(last[row])


@pytest.mark.parametrize("device", ["gpu", "cuda:", "CUDA", "cuda:x", "cpu:0", "", 0, None])
def test_search_options_refuse_an_unknown_device(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        SearchOptions(device=device)


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert search_device(SearchOptions()) == torch.device("cpu")
    assert search_device(SearchOptions(device="cpu")) == torch.device("cpu")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"search device '{device}' asked for, but no CUDA GPU is visible"):
            search_device(SearchOptions(device=device))
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            choose_search(500_000, SearchOptions(device=device))
    assert choose_search(500_000, SearchOptions()) == (
        "faiss", "faiss flat: 500,000 documents is above auto_threshold 200,000"
    )  # fmt: skip
    assert choose_search(500_000, SearchOptions(search="exact", device="cuda")) == (
        "exact", "exact: search='exact' (500,000 documents)"
    )  # fmt: skip
    index = SearchIndex(corpus_of(torch.float32)[:50], SearchOptions(device="auto"))
    assert index.device == torch.device("cpu") and index._device_corpus is None
    assert index.reason == "exact: 50 documents is below auto_threshold 200,000"


def test_with_a_gpu_auto_searches_exactly_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert search_device(SearchOptions()) == torch.device("cuda", 0)
    assert search_device(SearchOptions(device="cuda:1")) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="search device 'cuda:2' asked for, but 2 CUDA GPU"):
        search_device(SearchOptions(device="cuda:2"))
    assert search_device(SearchOptions(device="cpu")) == torch.device("cpu")
    kind, reason = choose_search(500_000, SearchOptions())
    assert kind == "exact" and "500,000 documents is above auto_threshold 200,000" in reason and "GPU" in reason
    assert choose_search(500_000, SearchOptions(device="cpu"))[0] == "faiss"
    assert choose_search(500_000, SearchOptions(search="faiss"))[0] == "faiss"
    assert choose_search(100, SearchOptions()) == ("exact", "exact: 100 documents is below auto_threshold 200,000")


def reference_drop(scores, indices, exclude, k):
    out_scores, out_indices = [], []
    for s_row, i_row, skip in zip(scores.tolist(), indices.tolist(), exclude):
        kept = [(s, i) for s, i in zip(s_row, i_row) if i not in set(skip)][:k]
        kept += [(float("-inf"), -1)] * (k - len(kept))
        out_scores.append([s for s, _ in kept])
        out_indices.append([i for _, i in kept])
    return torch.tensor(out_scores), torch.tensor(out_indices)


@pytest.mark.parametrize("widest", [64, 65, 120], ids=["vectorised", "looped", "looped-wide"])
def test_drop_excluded_matches_a_reference(widest):
    g = torch.Generator().manual_seed(3)
    rows, depth, k = 24, 80, 30
    indices = torch.stack([torch.randperm(200, generator=g)[:depth] for _ in range(rows)])
    scores = torch.randn(rows, depth, generator=g).sort(dim=1, descending=True).values
    rng = random.Random(widest)
    exclude = []
    for r in range(rows):
        if r % 5 == 0:
            exclude.append([] if r % 10 else set())  # no exclusions
        elif r % 5 == 1:  # most of the row's own documents: fewer than k remain, padded
            exclude.append(indices[r, : min(widest, 60)].tolist())
        else:
            exclude.append(set(rng.sample(range(200), rng.randrange(1, widest + 1))))
    exclude[2] = list(rng.sample(range(200), widest))  # the widest row decides the path
    assert max(len(e) for e in exclude) == widest
    got_scores, got_indices = _drop_excluded(scores, indices, exclude, k)
    want_scores, want_indices = reference_drop(scores, indices, exclude, k)
    assert torch.equal(got_indices, want_indices) and torch.equal(got_scores, want_scores)
    assert (got_indices[1] == -1).sum() == k - (depth - min(widest, 60))  # padded where too few remain
    assert torch.equal(got_indices[0], indices[0, :k])  # untouched without exclusions


def test_the_search_device_argument_is_validated_and_carried(monkeypatch):
    assert DataArguments().search_options().device == "auto"
    for device in ("gpu", "cuda:", "cpu0"):
        with pytest.raises(
            UserError, match=f"search_device: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{device}'"
        ):
            DataArguments(search_device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):  # refused when the arguments are read, before anything is embedded
        with pytest.raises(UserError, match=f"search_device: search device '{device}' asked for, but no CUDA GPU is"):
            DataArguments(search_device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for device in ("cpu", "cuda", "cuda:1", "auto"):
        assert DataArguments(search_device=device).search_options() == SearchOptions(device=device)
    with pytest.raises(UserError, match="search_device: search device 'cuda:2' asked for, but 2 CUDA GPU"):
        DataArguments(search_device="cuda:2")


class FakeGpuFaiss:
    """faiss with a GPU stand-in: ``index_cpu_to_gpu`` records its call and returns the CPU index."""

    def __init__(self, real, gpus: int):
        self.real, self.gpus, self.moved = real, gpus, []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_num_gpus(self):
        return self.gpus

    def StandardGpuResources(self):  # noqa: N802 (faiss's name)
        return "resources"

    def index_cpu_to_gpu(self, resources, device, index):
        self.moved.append((resources, device, index.ntotal))
        return index


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
@pytest.mark.parametrize("gpus", [0, 1])
def test_a_faiss_index_moves_to_the_gpu_where_faiss_gpu_sees_one(kind, gpus, monkeypatch):
    faiss = pytest.importorskip("faiss")
    fake = FakeGpuFaiss(faiss, gpus)
    monkeypatch.setattr(search_module, "_import_faiss", lambda: fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    corpus = corpus_of(torch.float32)
    index = SearchIndex(corpus, SearchOptions(search="faiss", index=kind, nlist=8, pq_m=8, device="cuda:1"))
    moved = gpus == 1 and kind != "hnsw"
    assert fake.moved == ([("resources", 1, 3000)] if moved else [])
    assert index.reason.endswith("; searched on GPU 1 (faiss-gpu)") is moved
    queries = corpus[:5]
    assert torch.equal(index.search(queries, k=3)[1][:, 0], torch.arange(5))  # each finds itself first

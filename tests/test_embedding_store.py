"""Corpus embeddings on disk: sharded over processes, resumable after a kill, byte-equal to an uninterrupted run,
memory-mapped, and the same triplets as the in-memory path."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk, stored_norms
from hf_margin.data.mining import build_query_corpus_triplets

from .conftest import topic_histogram
from .test_query_corpus import DOCUMENTS, OPTIONS
from .test_scale import accelerate_launch, run_python

TEXTS = [f"text {i} " + "word " * (i % 7) for i in range(23)]


def stub_embed(texts: list[str]) -> torch.Tensor:
    """A deterministic (n, 8) embedding of each text by itself (its bytes' histogram)."""
    rows = []
    for t in texts:
        counts = np.bincount(np.frombuffer(t.encode(), dtype=np.uint8) % 8, minlength=8).astype(np.float32)
        rows.append(counts + len(t))
    return torch.tensor(np.stack(rows))


class Counting:
    """``stub_embed`` that records the texts it embedded and can fail after ``fail_after`` calls (a killed run)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("killed mid-way")
        self.calls.append(list(texts))
        return stub_embed(texts)


def expected(texts: list[str], dtype: str = "float32") -> np.ndarray:
    return torch.nn.functional.normalize(stub_embed(texts), dim=-1).numpy().astype(dtype)


def test_embeddings_are_written_memory_mapped_and_read_back_without_embedding(tmp_path):
    embed = Counting()
    options = DiskEmbeddings(shard_size=5)
    out = embed_to_disk(TEXTS, embed, cache_dir=tmp_path, fingerprint="stub", options=options, normalize=True)
    assert isinstance(out, np.memmap) and not out.flags.writeable
    np.testing.assert_allclose(out, expected(TEXTS), atol=1e-7)
    assert [len(c) for c in embed.calls] == [5, 5, 5, 5, 3]  # 5 shards, the last one short
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    # shards joined, deleted; beside the rows, each row's norm before normalising
    assert sorted(p.name for p in entry.iterdir()) == ["checksum.json", "embeddings.npy", "norms.npy"]
    assert json.loads((entry / "checksum.json").read_text())["rows"] == len(TEXTS)
    np.testing.assert_allclose(stored_norms(out), stub_embed(TEXTS).norm(dim=-1).numpy(), rtol=1e-6)
    assert stored_norms(np.asarray(out)) is None  # an array that is not a store's

    again = Counting()
    out2 = embed_to_disk(TEXTS, again, cache_dir=tmp_path, fingerprint="stub", options=options, normalize=True)
    assert again.calls == [] and np.array_equal(out, out2)


def test_float16_halves_the_file_and_keeps_the_values(tmp_path):
    out = embed_to_disk(
        TEXTS, stub_embed, cache_dir=tmp_path, fingerprint="stub", options=DiskEmbeddings(4, "float16"), normalize=True
    )
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), expected(TEXTS), atol=1e-3)


def test_a_killed_run_resumes_from_its_finished_shards_and_ends_byte_equal(tmp_path):
    options = DiskEmbeddings(shard_size=4)  # 6 shards
    whole = embed_to_disk(TEXTS, stub_embed, cache_dir=tmp_path / "whole", fingerprint="f", options=options)

    killed = Counting(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        embed_to_disk(TEXTS, killed, cache_dir=tmp_path / "resumed", fingerprint="f", options=options)
    (entry,) = [p for p in (tmp_path / "resumed").iterdir() if p.is_dir()]
    assert sorted(p.name for p in entry.iterdir() if p.suffix == ".npy") == [f"shard-0000{i}.npy" for i in range(3)]
    killed_pid = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )
    orphan = entry / f"tmp-{killed_pid}-shard-00003.npy"
    orphan.write_bytes(b"half a shard")  # what a kill during a write leaves
    np.save(entry / "shard-00002.npy", np.zeros((4, 8), np.float32))  # a shard changed on disk: redone

    resumed = Counting()
    out = embed_to_disk(TEXTS, resumed, cache_dir=tmp_path / "resumed", fingerprint="f", options=options)
    assert [c[0] for c in resumed.calls] == [TEXTS[8], TEXTS[12], TEXTS[16], TEXTS[20]]  # shards 2..5 only
    assert not orphan.exists()
    (whole_entry,) = [p for p in (tmp_path / "whole").iterdir() if p.is_dir()]
    assert (entry / "embeddings.npy").read_bytes() == (whole_entry / "embeddings.npy").read_bytes()
    assert np.array_equal(out, whole)


def test_a_damaged_result_is_deleted_and_rebuilt(tmp_path):
    options = DiskEmbeddings(shard_size=8)
    embed_to_disk(TEXTS, stub_embed, cache_dir=tmp_path, fingerprint="f", options=options)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    data = bytearray((entry / "embeddings.npy").read_bytes())
    data[-1] ^= 0xFF
    (entry / "embeddings.npy").write_bytes(bytes(data))
    again = Counting()
    out = embed_to_disk(TEXTS, again, cache_dir=tmp_path, fingerprint="f", options=options)
    assert len(again.calls) == 3
    np.testing.assert_allclose(out, stub_embed(TEXTS).numpy())


@pytest.mark.parametrize("bad", [{"shard_size": 0}, {"dtype": "int8"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DiskEmbeddings(**bad)


SHARDED_SCRIPT = """
import json, sys
import numpy as np
from accelerate import PartialState
from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk, stored_norms
from tests.test_embedding_store import TEXTS, stub_embed

out, cache = sys.argv[1], sys.argv[2]
state = PartialState(cpu=True)
seen = []
def embed(texts):
    seen.extend(texts)
    return stub_embed(texts)
emb = embed_to_disk(TEXTS, embed, cache_dir=cache, fingerprint="f", options=DiskEmbeddings(3), normalize=True)
json.dump({"seen": seen, "emb": np.asarray(emb).tolist()}, open(f"{out}-{state.process_index}.json", "w"))
"""


def test_two_processes_embed_disjoint_halves_and_join_what_one_process_writes(tmp_path):
    launcher = accelerate_launch("multi-cpu.yaml")
    r = run_python(SHARDED_SCRIPT, tmp_path, str(tmp_path / "two"), str(tmp_path / "cache2"), launcher=launcher)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads((tmp_path / f"two-{i}.json").read_text()) for i in range(2)]
    seen0, seen1 = runs[0]["seen"], runs[1]["seen"]
    assert not set(seen0) & set(seen1) and sorted(seen0 + seen1) == sorted(TEXTS)
    assert seen0[:3] == TEXTS[0:3] and seen1[:3] == TEXTS[3:6]  # shards 0, 2, 4, ... and 1, 3, 5, ...
    one = embed_to_disk(
        TEXTS, stub_embed, cache_dir=tmp_path / "cache1", fingerprint="f", options=DiskEmbeddings(3), normalize=True
    )
    for run in runs:
        np.testing.assert_allclose(np.array(run["emb"], dtype=np.float32), one, atol=1e-6, rtol=0)
    files = {p.parent.name: p.read_bytes() for p in (tmp_path / "cache1").glob("*/embeddings.npy")}
    assert files == {p.parent.name: p.read_bytes() for p in (tmp_path / "cache2").glob("*/embeddings.npy")}


class DiskTopicMiner:
    """The query–corpus tests' topic-histogram miner, with the scorer interface the on-disk path uses."""

    fingerprint = "topic-miner"

    def role_settings(self, role: str) -> tuple[str, int]:
        return "", 64

    def embed(self, texts, role: str = "document", *, remember: bool = True) -> torch.Tensor:
        return torch.tensor(np.array([topic_histogram(t) for t in texts]), dtype=torch.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_query_corpus_triplets_from_disk_equal_the_in_memory_ones(tmp_path, dtype):
    queries = ["sun7", "sea7 sea8", "dog7 tea7", "map7"]
    common = {**OPTIONS, "positives_per_query": 1}
    in_memory = build_query_corpus_triplets(queries, DOCUMENTS, DiskTopicMiner(), cache_dir=tmp_path / "m", **common)
    disk = DiskEmbeddings(shard_size=5, dtype=dtype)
    on_disk = build_query_corpus_triplets(
        queries, DOCUMENTS, DiskTopicMiner(), cache_dir=tmp_path / "d", disk=disk, **common
    )
    assert on_disk.to_dict() == in_memory.to_dict()
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "d").iterdir() if p.is_dir()) == [
        "embeddings", "embeddings", "query",
    ]  # fmt: skip


class RandomMiner(DiskTopicMiner):
    """Embeddings seeded by each text: no two scores tie, so both searches must agree exactly."""

    fingerprint = "random-miner"

    def embed(self, texts, role: str = "document", *, remember: bool = True) -> torch.Tensor:
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:12], 16) for t in texts]
        return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(s)) for s in seeds])


def test_mined_negatives_from_a_corpus_on_disk_equal_the_in_memory_ones(tmp_path):
    from datasets import Dataset

    from hf_margin.data.mining import mine_hard_negatives

    corpus = [f"passage {i} about {w}" for i, w in enumerate(["sun", "sea", "car", "dog", "tea", "map"] * 8)]
    pairs = Dataset.from_dict({"query": [f"question {i}" for i in range(6)], "positive": corpus[:6]})
    options = {"num_negatives": 2, "skip_top": 1, "sample_from": 10}
    in_memory = mine_hard_negatives(pairs, corpus, RandomMiner(), cache_dir=tmp_path / "m", **options)
    on_disk = mine_hard_negatives(
        pairs, corpus, RandomMiner(), cache_dir=tmp_path / "d", disk=DiskEmbeddings(shard_size=7), **options
    )
    assert on_disk["negatives"] == in_memory["negatives"]
    assert len(list((tmp_path / "d").glob("embeddings-*/embeddings.npy"))) == 1


def test_data_arguments_carry_the_disk_options():
    from hf_margin.app.arguments import DataArguments, UserError

    assert DataArguments().disk_embeddings() is None
    args = DataArguments(embeddings_on_disk=True, embedding_dtype="float16", embedding_shard_size=1000)
    assert args.disk_embeddings() == DiskEmbeddings(shard_size=1000, dtype="float16")
    with pytest.raises(UserError, match="embedding_shard_size must be >= 1; got 0"):
        DataArguments(embeddings_on_disk=True, embedding_shard_size=0)


def test_train_keeps_the_corpus_embeddings_on_disk(tmp_path):
    from hf_margin.app.cli import main

    from .conftest import write_tiny_teacher
    from .test_pipeline import TRAIN
    from .test_retrieval_task import MINING, write_beir

    folder, _ = write_beir(tmp_path / "beir")
    teacher = write_tiny_teacher(tmp_path / "teacher")
    argv = ["train", *TRAIN, *MINING, "--query_file", str(folder / "unlabelled.txt"), "--corpus_file"]
    argv += [str(folder / "corpus.jsonl"), "--teacher", str(teacher), "--embeddings_on_disk", "true"]
    argv += ["--embedding_dtype", "float16", "--embedding_shard_size", "16", "--cache_dir", str(tmp_path / "cache")]
    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["data"]["format"] == "query-corpus" and metrics["data"]["corpus_triplets"] > 0
    stored = sorted((tmp_path / "cache").glob("embeddings-*/embeddings.npy"))
    assert [np.load(p, mmap_mode="r").shape[0] for p in stored] in ([48, 11], [11, 48], [48, 12], [12, 48])
    assert all(np.load(p, mmap_mode="r").dtype == np.float16 for p in stored)


KILLED_SCRIPT = """
import sys, time
from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk, stored_norms
from tests.test_embedding_store import TEXTS, stub_embed

def slow(texts):
    time.sleep(0.3)
    return stub_embed(texts)

embed_to_disk(TEXTS, slow, cache_dir=sys.argv[1], fingerprint="f", options=DiskEmbeddings(shard_size=2))
"""


def test_a_run_killed_by_sigkill_resumes_and_ends_byte_equal(tmp_path):
    """A real kill -9 mid-way (12 shards, 0.3 s each): the next run embeds only the missing shards and writes the
    file an uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .test_scale import ROOT

    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache")], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("embeddings-*/shard-00002.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    done = {p.stem for p in entry.glob("shard-*.json")}
    assert 3 <= len(done) < 12 and not (entry / "embeddings.npy").exists()

    resumed = Counting()
    embed_to_disk(TEXTS, resumed, cache_dir=tmp_path / "cache", fingerprint="f", options=DiskEmbeddings(shard_size=2))
    assert len(resumed.calls) == 12 - len(done)
    embed_to_disk(TEXTS, stub_embed, cache_dir=tmp_path / "whole", fingerprint="f", options=DiskEmbeddings(2))
    (whole,) = (tmp_path / "whole").glob("*/embeddings.npy")
    assert (entry / "embeddings.npy").read_bytes() == whole.read_bytes()


def test_faiss_searches_a_float16_corpus_on_disk_without_copying_it(tmp_path):
    """The memory-mapped float16 corpus is searched where it lies (the tensor shares the map's memory), and FAISS
    flat over it returns the exact search's top 10."""
    pytest.importorskip("faiss")
    from hf_margin.data.embedding_store import memmap_tensor
    from hf_margin.data.search import SearchIndex, SearchOptions
    from hf_margin.evaluation.retrieval import exact_search

    texts = [f"passage {i}" for i in range(300)]
    array = embed_to_disk(
        texts, RandomMiner().embed, cache_dir=tmp_path, fingerprint="r", options=DiskEmbeddings(64, "float16"),
        normalize=True,
    )  # fmt: skip
    corpus = memmap_tensor(array)
    assert corpus.dtype == torch.float16 and corpus.data_ptr() == array.ctypes.data  # no copy
    queries = corpus[:20].float()
    index = SearchIndex(corpus, SearchOptions(search="faiss", index="flat"))
    exclude = [[i] for i in range(20)]
    assert torch.equal(index.search(queries, k=10, exclude=exclude)[1],
                       exact_search(queries, corpus, k=10, similarity="dot", exclude=exclude)[1])  # fmt: skip


def resident_file_kib() -> int | None:
    """This process's file-backed resident memory (``RssFile`` of /proc/self/status), None where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in lines if line.startswith("RssFile:")), None)


def test_released_pages_leave_the_resident_set_and_the_values_unchanged(tmp_path):
    """Reading a whole memory-mapped corpus makes all of it resident; release_pages gives the pages back (the file
    and its values stay), only for maps: an in-memory tensor is left alone. The index built over the map, which
    releases as it fills, still returns the exact top 10."""
    from hf_margin.data.embedding_store import memmap_tensor, release_pages

    if resident_file_kib() is None:
        pytest.skip("no RssFile in /proc/self/status")
    rows = torch.randn(8192, 1024, generator=torch.Generator().manual_seed(0))  # 32 MiB of float32
    np.save(tmp_path / "corpus.npy", rows.numpy())
    corpus = memmap_tensor(np.load(tmp_path / "corpus.npy", mmap_mode="r"))
    before = resident_file_kib()
    assert torch.equal(corpus.clone(), rows)  # every page read
    assert resident_file_kib() - before > 24 * 1024
    assert release_pages(corpus)
    assert resident_file_kib() - before < 8 * 1024
    assert torch.equal(corpus.clone(), rows)  # faulted back in from the file
    assert release_pages(corpus[100:200])  # a view of the map releases it too
    assert not release_pages(rows) and not release_pages(corpus.clone())
    assert torch.equal(rows, torch.randn(8192, 1024, generator=torch.Generator().manual_seed(0)))

    faiss = pytest.importorskip("faiss")
    del faiss
    from hf_margin.data.search import SearchIndex, SearchOptions
    from hf_margin.evaluation.retrieval import exact_search

    queries = rows[:16]
    index = SearchIndex(corpus, SearchOptions(search="faiss", index="flat"))
    found = index.search(queries, k=10)[1]
    assert resident_file_kib() - before < 8 * 1024  # filled and searched, then released
    assert torch.equal(found, exact_search(queries, corpus, k=10, similarity="dot")[1])


MINING_SCRIPT = """
import json, sys
from accelerate import PartialState
from hf_margin.data.embedding_store import DiskEmbeddings
from hf_margin.data.mining import build_query_corpus_triplets
from tests.test_embedding_store import RandomMiner
from tests.test_query_corpus import DOCUMENTS, OPTIONS

out, cache = sys.argv[1], sys.argv[2]
state = PartialState(cpu=True)
seen = []
class Recording(RandomMiner):
    def embed(self, texts, role="document", *, remember=True):
        seen.extend(texts)
        return super().embed(texts, role, remember=remember)
built = build_query_corpus_triplets(["sun7", "sea7 sea8", "dog7 tea7", "map7"], DOCUMENTS, Recording(), cache_dir=cache,
                                    disk=DiskEmbeddings(shard_size=3), positives_per_query=1, **OPTIONS)
json.dump({"seen": seen, "rows": built.to_dict()}, open(f"{out}-{state.process_index}.json", "w"))
"""


def test_two_processes_share_the_embedding_of_a_query_corpus_build(tmp_path):
    """Through the mining path (the cache's on_miss hook): each of two gloo processes embeds its own shards of the
    documents and queries, and both read the triplets one in-memory process builds."""
    from .test_query_corpus import DOCUMENTS, OPTIONS

    r = run_python(MINING_SCRIPT, tmp_path, str(tmp_path / "two"), str(tmp_path / "cache"),
                   launcher=accelerate_launch("multi-cpu.yaml"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads((tmp_path / f"two-{i}.json").read_text()) for i in range(2)]
    assert runs[0]["seen"] and runs[1]["seen"] and not set(runs[0]["seen"]) & set(runs[1]["seen"])
    assert sorted(runs[0]["seen"] + runs[1]["seen"]) == sorted(DOCUMENTS + ["sun7", "sea7 sea8", "dog7 tea7", "map7"])
    single = build_query_corpus_triplets(
        ["sun7", "sea7 sea8", "dog7 tea7", "map7"], DOCUMENTS, RandomMiner(), cache_dir=tmp_path / "one",
        positives_per_query=1, **OPTIONS,
    )  # fmt: skip
    assert runs[0]["rows"] == runs[1]["rows"] == single.to_dict()


def spied_teacher(folder: Path, seed: int) -> tuple[object, list[str]]:
    """A tiny random bi-encoder teacher and the list of every text it embeds (memo misses)."""
    from transformers import BertModel

    from hf_margin.models.scoring import BiEncoderScorer

    from .conftest import make_tokenizer, tiny_config

    torch.manual_seed(seed)
    tok = make_tokenizer()
    BertModel(tiny_config(len(tok), hidden_size=16 * (seed + 1)), add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    teacher = BiEncoderScorer.from_pretrained(folder, device="cpu", show_progress=False)
    embedded: list[str] = []
    own = teacher._embed_into_memo

    def spy(order, memo, prompt, max_length):
        embedded.extend(order)
        return own(order, memo, prompt, max_length)

    teacher._embed_into_memo = spy
    return teacher, embedded


def scored(dataset, teacher, cache: Path):
    from hf_margin.data.margins import attach_teacher_margins
    from hf_margin.data.teacher_embeddings import attach_teacher_embeddings

    with_margins = attach_teacher_margins(dataset, teacher, cache_dir=cache)
    return attach_teacher_embeddings(with_margins, teacher, cache_dir=cache)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_teacher_that_mined_a_disk_corpus_embeds_none_of_its_documents_again_to_score_them(tmp_path, ensemble):
    """The corpus is embedded to disk with its rows' norms: the teacher gets back the embeddings of the documents
    the triplets hold (``keep_embeddings``: the miner is the teacher), and scoring them (margins, teacher embeddings)
    embeds no document a second time. Margins and embeddings equal those of the in-memory path; a float16 store, or a
    miner that does not keep them (the default), gives none back and scores the same."""
    from hf_margin.models.scoring import MeanScoreScorer

    from .conftest import TOPICS

    words = [w for ws in TOPICS.values() for w in ws]
    documents = [" ".join(words[(7 * i + k) % len(words)] for k in range(5 + i % 4)) for i in range(40)]
    queries = [" ".join(words[(11 * i + k) % len(words)] for k in range(2)) for i in range(12)]
    options = {**OPTIONS, "positives_per_query": 1}
    figures = {}
    for store in ("memory", "float32", "float16", "float32, not kept"):
        members = [spied_teacher(tmp_path / f"{store}-t{m}", m) for m in range(2 if ensemble else 1)]
        teacher = MeanScoreScorer([t for t, _ in members]) if ensemble else members[0][0]
        disk = None if store == "memory" else DiskEmbeddings(shard_size=7, dtype=store.split(",")[0])
        cache = tmp_path / f"cache-{store}"
        keep = store != "float32, not kept"
        built = build_query_corpus_triplets(
            queries, documents, teacher, cache_dir=cache, disk=disk, keep_embeddings=keep, **options
        )
        mined = [list(e) for _, e in members]
        figures[store] = scored(built, teacher, cache)
        again = [e[len(m) :] for (_, e), m in zip(members, mined)]
        if store in (
            "float16",
            "float32, not kept",
        ):  # no rows given back: the built triplets' texts are embedded again, once each
            texts = set(built["query"]) | set(built["positive"]) | {n for r in built["negatives"] for n in r}
            assert all(sorted(a) == sorted(texts) for a in again)
        else:  # every text of the triplets came from the memo
            assert again == [[] for _ in members]
            assert all(sorted(m) == sorted(documents + queries) for m in mined)
    assert figures["float32"]["positive"] == figures["memory"]["positive"]
    for store in ("float32", "float16", "float32, not kept"):
        for column in ("teacher_margins", "teacher_query_embedding", "teacher_document_embeddings"):
            np.testing.assert_allclose(
                np.asarray(figures[store][column]), np.asarray(figures["memory"][column]), atol=1e-5
            )


def test_negatives_mined_from_a_disk_corpus_are_not_embedded_again_to_score_them(tmp_path):
    """Hard-negative mining over a corpus on disk gives the miner back its negatives' embeddings: scoring the mined
    rows embeds only the positives, which are not in the corpus (it embedded the queries itself, and kept them), as
    the in-memory path does, with its margins."""
    from datasets import Dataset

    from hf_margin.data.margins import attach_teacher_margins
    from hf_margin.data.mining import mine_hard_negatives

    from .conftest import TOPICS

    words = [w for ws in TOPICS.values() for w in ws]
    corpus = [" ".join(words[(5 * i + k) % len(words)] for k in range(4 + i % 3)) for i in range(30)]
    pairs = Dataset.from_dict({"query": words[:6], "positive": [f"{w} {w}" for w in words[6:12]]})
    margins = {}
    for store in ("memory", "disk"):
        teacher, embedded = spied_teacher(tmp_path / f"{store}-teacher", 0)
        disk = DiskEmbeddings(shard_size=8) if store == "disk" else None
        mined = mine_hard_negatives(
            pairs,
            corpus,
            teacher,
            num_negatives=2,
            skip_top=1,
            sample_from=8,
            cache_dir=tmp_path / store,
            disk=disk,
            keep_embeddings=True,
        )
        before = len(embedded)
        margins[store] = attach_teacher_margins(mined, teacher, cache_dir=tmp_path / store)["teacher_margins"]
        assert sorted(embedded[before:]) == sorted(pairs["positive"])  # in neither the corpus nor the queries
    np.testing.assert_allclose(np.asarray(margins["disk"]), np.asarray(margins["memory"]), atol=1e-5)

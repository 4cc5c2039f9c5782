"""Corpora of 100k to 10M texts: on-disk sharded embedding, and exact search against each FAISS index.

A stub encoder isolates the search from the model: text ``i`` is the unit vector of a seeded cluster centre plus
noise (``--clusters`` centres, width ``--width``), generated shard by shard, so neighbours are mostly in the same
cluster as with a real encoder, and embedding costs nothing. Each (size, search) runs in a fresh process (peak RSS
is per process). Stages, each timed:

- ``embed``: :func:`hf_margin.data.embedding_store.embed_to_disk` into an empty cache (shards, join, memory map);
- ``build``: :class:`hf_margin.data.search.SearchIndex` over the memory-mapped embeddings;
- ``search``: ``--sample`` seeded queries (corpus mode: every text is a query and never its own neighbour), top 30,
  timed and extrapolated to all N queries; recall@10 and @30 against the exact search of the same queries.

``--device cuda`` runs the exact search on the GPU (:attr:`SearchOptions.device`): ``build`` is then the copy of the
corpus to the GPU, the sample is searched once untimed first (CUDA start-up), and recall is checked against the CPU's
exact search on the first ``--check`` sampled queries (default: all of them).

``--corpus_mode`` instead runs the whole corpus-mode build (:func:`hf_margin.data.mining.build_corpus_triplets`,
every text a query, 1 positive and 4 negatives from ranks [3, 30), embeddings on disk) and records its wall time,
peak RSS and the index's recall@30 on ``--sample`` checked queries. ``--processes 2`` embeds under
``accelerate launch`` with that many CPU (gloo) processes and records how many shards each one embedded.

    python benchmarks/corpus_scale.py --sizes 100000 --searches exact flat ivf hnsw ivfpq
    python benchmarks/corpus_scale.py --sizes 1000000 --searches ivf ivfpq --dtype float16
    python benchmarks/corpus_scale.py --sizes 1000000 --corpus_mode --searches ivf --dtype float16
    python benchmarks/corpus_scale.py --sizes 100000 --stage embed --processes 1 2
    python benchmarks/corpus_scale.py --sizes 10000000 --searches exact --device cuda --sample 65536 --check 256 \
        --processes 8                                  (a GPU machine: scripts/gpu_session.sh, part "scale")
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine  # noqa: E402

OUT = RESULTS / "corpus_scale.jsonl"

CHILD = """
import json, logging, resource, sys, time
import numpy as np, torch
from accelerate import PartialState
from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk
from hf_margin.data.mining import build_corpus_triplets
from hf_margin.data.embedding_store import memmap_tensor
from hf_margin.data.search import SearchIndex, SearchOptions, recall_at_k
from hf_margin.evaluation.retrieval import exact_search

o = json.loads(sys.argv[1])
GPU_WARMUP = 8192
state = PartialState(cpu=True)
n, width = o["size"], o["width"]
centres = torch.randn(o["clusters"], width, generator=torch.Generator().manual_seed(0))
centres = torch.nn.functional.normalize(centres, dim=-1)
shards = []

def stub_embed(texts):
    first = int(texts[0][1:])
    idx = torch.tensor([int(t[1:]) for t in texts])
    shards.append(first)
    noise = torch.randn(len(texts), width, generator=torch.Generator().manual_seed(first))
    return centres[(idx * 2654435761) % o["clusters"]] + o["noise"] * noise / width**0.5

class StubMiner:
    fingerprint = f"stub-{o['clusters']}-{o['noise']}-{width}"
    def role_settings(self, role): return ("", 0)
    def embed(self, texts, role="document", *, remember=True): return stub_embed(list(texts))

def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
texts = [f"t{i}" for i in range(n)]
disk = DiskEmbeddings(shard_size=o["shard_size"], dtype=o["dtype"])
exact = o["search"] == "exact"
search = SearchOptions(search="exact" if exact else "faiss", index="flat" if exact else o["search"], nprobe=o["nprobe"],
                       ef_search=o["ef_search"], check_queries=o["sample"] if o["corpus_mode"] else 0,
                       device=o["device"] if exact else "cpu")
out = {"rss_mb_start": rss()}
cache = o["cache"]
if o["corpus_mode"]:
    recalls = []
    class Grab(logging.Handler):
        def emit(self, record):
            if "recall@" in record.getMessage(): recalls.append(record.getMessage())
    log = logging.getLogger("hf_margin.data.search")
    log.addHandler(Grab())
    log.setLevel(logging.INFO)
    start = time.perf_counter()
    built = build_corpus_triplets(texts, StubMiner(), positives_per_query=1, num_negatives=4, cache_dir=cache,
                                  search=search, disk=disk)
    out.update(corpus_mode_s=time.perf_counter() - start, triplets=len(built),
               recall_log=recalls[-1] if recalls else None)
    out["recall@30"] = float(recalls[-1].rsplit(": ", 1)[-1].rstrip(")")) if recalls else None
else:
    start = time.perf_counter()
    emb = embed_to_disk(texts, stub_embed, cache_dir=cache, fingerprint="stub", options=disk, normalize=True)
    out.update(embed_s=time.perf_counter() - start, shards_embedded=len(shards), process=state.process_index,
               processes=state.num_processes, rss_mb_after_embed=rss())
    if o["stage"] == "search" and state.is_main_process:
        corpus = memmap_tensor(emb)
        start = time.perf_counter()
        index = SearchIndex(corpus, search)
        out.update(build_s=time.perf_counter() - start, search_device=str(index.device), reason=index.reason)
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(1))[: o["sample"]].sort().values
        queries = corpus[rows].float()
        exclude = [[r] for r in rows.tolist()]
        if index.device.type == "cuda":  # CUDA and cuBLAS start-up, untimed
            index.search(queries[:GPU_WARMUP], k=30, exclude=exclude[:GPU_WARMUP])
        start = time.perf_counter()
        _, found = index.search(queries, k=30, exclude=exclude)  # results come back to the CPU: synchronised
        seconds = time.perf_counter() - start
        check = min(o["check"] or len(rows), len(rows))
        _, exact = exact_search(queries[:check], corpus, k=30, similarity="dot", exclude=exclude[:check])
        out.update(search_s_sample=seconds, search_s_all_queries=seconds * n / len(rows), checked=check,
                   exact_rows=index.exact_rows,
                   **{f"recall@{k}": recall_at_k(found[:check, :k], exact[:, :k], k) for k in (10, 30)})
        if index.device.type == "cuda":
            out["gpu_peak_mib"] = torch.cuda.max_memory_allocated(index.device) / 2**20
out["peak_rss_mb"] = rss()
print("RESULT " + json.dumps(out), flush=True)
"""


def run_one(options: dict, processes: int) -> list[dict]:
    """One measurement in fresh processes, in a new cache folder (shared by its processes, deleted after)."""
    cache = tempfile.mkdtemp(prefix="corpus-scale-", dir=options["tmp"])
    try:
        return _run(options, processes, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(options: dict, processes: int, cache: str) -> list[dict]:
    if processes > 1 and options["device"].startswith("cuda") and options["stage"] == "search":
        # the CPU processes embed with the GPUs hidden (the gloo launch needs that); then one process with the GPU
        # visible opens the finished cache (no embedding left) and searches
        embedded = _run({**options, "stage": "embed", "device": "cpu"}, processes, cache)
        searched = _run(options, 1, cache)
        main = next(r for r in embedded if r["process"] == 0)
        return [r for r in embedded if r["process"] != 0] + [
            {**searched[0], "embed_s": main["embed_s"], "shards_embedded": main["shards_embedded"],
             "processes": processes, "embed_peak_rss_mb": main["peak_rss_mb"]}
        ]  # fmt: skip
    options = {**options, "cache": cache}
    command = [sys.executable, "-c", CHILD, json.dumps(options)]
    if processes > 1:
        script = Path(cache) / "corpus_scale_child.py"
        script.write_text(CHILD)
        config = ROOT / "recipes" / "accelerate" / "multi-cpu.yaml"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        command += ["--num_processes", str(processes), str(script), json.dumps(options)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), **_env(options["device"])}
    )
    if done.returncode != 0:
        raise SystemExit(f"{options} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line[len("RESULT ") :]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]


def _env(device: str) -> dict[str, str]:
    hide = {} if device.startswith("cuda") else {"CUDA_VISIBLE_DEVICES": ""}
    return {**os.environ, "HF_HUB_OFFLINE": "1", **hide}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--searches", nargs="+", default=["exact", "flat", "ivf", "hnsw", "ivfpq"],
                        choices=["exact", "flat", "ivf", "hnsw", "ivfpq"])  # fmt: skip
    parser.add_argument("--stage", choices=["embed", "search"], default="search")
    parser.add_argument("--corpus_mode", action="store_true", help="The whole corpus-mode build, every text a query.")
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="Embedding processes (gloo).")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float16")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--noise", type=float, default=1.0, help="Noise norm around each cluster centre (unit).")
    parser.add_argument("--shard_size", type=int, default=65_536)
    parser.add_argument("--sample", type=int, default=1000, help="Queries timed and checked against exact search.")
    parser.add_argument("--check", type=int, default=0, help="Sampled queries checked against exact (0: all).")
    parser.add_argument("--device", default="cpu", help="Where the exact search runs: cpu, cuda or cuda:N.")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--ef_search", type=int, default=128)
    parser.add_argument("--tmp", default="/tmp", help="Where the cache of each run is made (and deleted).")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    for size in opts.sizes:
        for processes in opts.processes:
            for search in opts.searches if opts.stage == "search" or opts.corpus_mode else ["exact"]:
                names = ("width", "clusters", "noise", "shard_size", "sample", "check", "nprobe", "ef_search", "dtype",
                         "device")  # fmt: skip
                options = {k: getattr(opts, k) for k in (*names, "stage", "corpus_mode", "tmp")}
                options.update(size=size, search=search)
                for result in run_one(options, processes):
                    record = {**options, **result, "machine": machine()}
                    append_jsonl(opts.out, record)
                    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

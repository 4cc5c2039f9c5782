"""Memory of corpus mode (the teacher builds the training set from unlabelled texts) at growing corpus sizes.

Each size runs in a fresh process (peak RSS is per process): N synthetic distinct texts (8 to 16 words drawn,
seeded, from the STS-B train vocabulary), all-MiniLM-L6-v2 as the miner, `build_corpus_triplets` with 1 positive
and 4 negatives from ranks [3, 30), into an empty cache. Records wall time, peak host RSS and, on a GPU, peak GPU
memory. The embeddings are N x 384 float32 (1.5 GB per million texts); the exact search holds one block of
query x corpus-chunk scores (256 x at most 50,000), never N x N.

`--stub` replaces the 6 transformer layers by none (MiniLM's config with 0 layers: token embeddings and layer
norm, random weights): the same tokenizer, batches, memo, search and dataset writing at a fraction of the compute,
so what grows with N is measured on a CPU; the transformer's own memory is per batch and does not. `--stage embed`
stops after the miner has embedded the corpus (no search): the part of the memory that grows with N, measurable at
1M texts on a CPU. `--queries Q` makes a seeded sample of Q texts the queries (corpus mode's `max_queries`): every
query is still searched against all N texts, so the embeddings and the search's blocks are those of the full
build, at Q/N of its compute (the 1M-text search on a CPU).

    python benchmarks/corpus_memory.py [--texts 10000 30000]                  # CPU, the real miner
    python benchmarks/corpus_memory.py --stub --texts 10000 30000 100000      # CPU, build without the transformer
    python benchmarks/corpus_memory.py --stub --stage embed --texts 1000000   # CPU, the embedding stage at 1M
    python benchmarks/corpus_memory.py --stub --queries 10000 --texts 1000000 # CPU, 10k queries searched in 1M
    python benchmarks/corpus_memory.py --texts 10000 100000 1000000           # GPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine  # noqa: E402

OUT = RESULTS / "corpus_memory.jsonl"

CHILD = """
import json, random, resource, sys, tempfile, time
import torch
from hf_margin import BiEncoderTeacher
from hf_margin.app.stsb import load_stsb, unique_sentences
from hf_margin.data.mining import build_corpus_triplets
from hf_margin.models.resolve import resolve_model

n, stub, stage = int(sys.argv[1]), sys.argv[2] == "stub", sys.argv[3]
max_queries = int(sys.argv[4]) if sys.argv[4] != "all" else None
vocab = sorted({w for s in unique_sentences(load_stsb(None)["train"]) for w in s.split()})
rng = random.Random(0)
texts = list(dict.fromkeys(" ".join(rng.choices(vocab, k=rng.randint(8, 16))) for _ in range(int(n * 1.01) + 10)))[:n]
device = "cuda" if torch.cuda.is_available() else "cpu"
path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
options = {"device": device, "batch_size": 512 if device == "cuda" else 128, "show_progress": False}
if stub:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(path, num_hidden_layers=0)
    miner = BiEncoderTeacher(AutoModel.from_config(config), AutoTokenizer.from_pretrained(path), **options)
else:
    miner = BiEncoderTeacher.from_pretrained(path, **options)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory() as cache:
    start = time.perf_counter()
    if stage == "embed":
        built = miner.embed(texts)
    else:
        built = build_corpus_triplets(
            texts, miner, positives_per_query=1, num_negatives=4, max_queries=max_queries, cache_dir=cache
        )
    seconds = time.perf_counter() - start
print(json.dumps({
    "texts": n, "queries": min(max_queries or n, n), "stub": stub, "stage": stage,
    "triplets": len(built) if stage == "build" else None,
    "seconds": seconds, "device": device,
    "peak_rss_mb_before_building": before,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, nargs="+", default=[10000, 30000])
    parser.add_argument("--stub", action="store_true", help="A 0-layer encoder: the data structures, not the model.")
    parser.add_argument("--stage", choices=["build", "embed"], default="build")
    parser.add_argument("--queries", type=int, default=None, help="Search only a seeded sample of this many queries.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    for n in opts.texts:
        queries = str(opts.queries or "all")
        child = [sys.executable, "-c", CHILD, str(n), "stub" if opts.stub else "real", opts.stage, queries]
        done = subprocess.run(child, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{n} texts failed:\n{done.stderr[-3000:]}")
        record = {**json.loads(done.stdout.strip().splitlines()[-1]), "machine": machine()}
        append_jsonl(opts.out, record)
        print(record, flush=True)


if __name__ == "__main__":
    main()

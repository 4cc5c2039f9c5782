"""Memory of corpus mode (the teacher builds the training set from unlabelled texts) at growing corpus sizes.

Each size runs in a fresh process (peak RSS is per process): N synthetic distinct texts (8 to 16 words drawn,
seeded, from the STS-B train vocabulary), the real all-MiniLM-L6-v2 as the miner, `build_corpus_triplets` with
1 positive and 4 negatives from ranks [3, 30), into an empty cache. Records wall time, peak host RSS and, on a GPU,
peak GPU memory. The embeddings are N x 384 float32 (1.5 GB per million texts); the exact search holds one block
of query x corpus-chunk scores, never N x N.

    python benchmarks/corpus_memory.py [--texts 10000 30000]          # CPU
    python benchmarks/corpus_memory.py --texts 10000 100000 1000000   # GPU
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
from hf_margin.mining import build_corpus_triplets
from hf_margin.resolve import resolve_model

n = int(sys.argv[1])
vocab = sorted({w for s in unique_sentences(load_stsb(None)["train"]) for w in s.split()})
rng = random.Random(0)
texts = list(dict.fromkeys(" ".join(rng.choices(vocab, k=rng.randint(8, 16))) for _ in range(int(n * 1.01) + 10)))[:n]
device = "cuda" if torch.cuda.is_available() else "cpu"
miner = BiEncoderTeacher.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device=device,
                                         batch_size=512 if device == "cuda" else 128, show_progress=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory() as cache:
    start = time.perf_counter()
    built = build_corpus_triplets(texts, miner, positives_per_query=1, num_negatives=4, cache_dir=cache)
    seconds = time.perf_counter() - start
print(json.dumps({
    "texts": n, "triplets": len(built), "seconds": seconds, "device": device,
    "peak_rss_mb_before_building": before,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, nargs="+", default=[10000, 30000])
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    for n in opts.texts:
        done = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{n} texts failed:\n{done.stderr[-3000:]}")
        record = {**json.loads(done.stdout.strip().splitlines()[-1]), "machine": machine()}
        append_jsonl(opts.out, record)
        print(record, flush=True)


if __name__ == "__main__":
    main()

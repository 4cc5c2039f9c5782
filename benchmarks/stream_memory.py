"""Peak memory of scoring and training from a streamed (Iterable) dataset, at two sizes: it should not grow
with the number of rows. Each size runs in a fresh process (peak RSS is per process). A tiny random
bi-encoder keeps the run short; every row has distinct texts, so nothing is shared between rows.

    python benchmarks/stream_memory.py [--sizes 20000 80000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchmarks.common import RESULTS, ROOT, append_jsonl, machine

OUT = RESULTS / "stream_memory.jsonl"

CHILD = """
import json, resource, sys, tempfile
import torch
from datasets import IterableDataset
from transformers import BertModel
from tests.conftest import make_tokenizer, tiny_config, TOPICS
from hf_margin import BiEncoderTeacher, MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins

rows = int(sys.argv[1])
words = [w for ws in TOPICS.values() for w in ws]

def generate():
    for i in range(rows):  # distinct texts per row: word choices spell out the row number
        digits = [words[int(d) * 4 + k % 4] for k, d in enumerate(f"{i:06d}")]
        yield {"query": " ".join(digits), "positive": " ".join(digits[::-1]), "negatives": [" ".join(digits[1:])]}

tok = make_tokenizer()
torch.manual_seed(0)
teacher = BiEncoderTeacher(BertModel(tiny_config(len(tok)), add_pooling_layer=False), tok, show_progress=False)
with tempfile.TemporaryDirectory() as cache:
    stream = IterableDataset.from_generator(generate)
    scored = attach_teacher_margins(stream, teacher, cache_dir=cache, batch_size=512, data_fingerprint=f"rows-{rows}")
    after_scoring = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    student = BertModel(tiny_config(len(tok)), add_pooling_layer=False)
    args = MarginDistillConfig(output_dir=cache + "/out", num_train_epochs=1, per_device_train_batch_size=256,
        report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True, logging_steps=10**6)
    MarginDistillTrainer(student, args, train_dataset=scored, processing_class=tok).train()
print(json.dumps({"rows": rows, "scored_rows": len(scored), "peak_rss_mb_after_scoring": after_scoring,
                  "peak_rss_mb_after_training": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 80000])
    opts = parser.parse_args()
    for size in opts.sizes:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(size)], capture_output=True, text=True, cwd=ROOT, check=True
        )
        record = {**json.loads(done.stdout.strip().splitlines()[-1]), "machine": machine()}
        append_jsonl(OUT, record)
        print(record)


if __name__ == "__main__":
    main()

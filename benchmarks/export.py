"""ONNX export of a trained student (the speed issue's goal: int8 ≥ 2× the fp32 PyTorch student on 2 CPU threads,
within 1 point of its quality). One run: `hf-margin export DIR --quantize int8` (cosine agreement and texts/s on
the same 256 SciFact abstracts, batches and threads; and 200 SciFact claims one at a time, as a search service meets
queries), then `hf-margin evaluate --backend B` for B in torch, onnx,
onnx-O2 (fused for onnxruntime), onnx-int8 (quantised from the fused graph) on SciFact test (nDCG@10, MRR@10,
Recall@100) and STS-B test (Spearman), each in its own process.

    python benchmarks/export.py --student outputs/scifact-distil
    python benchmarks/export.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, append_jsonl, machine, read_jsonl, tree_is_clean  # noqa: E402

OUT = RESULTS / "export.jsonl"
SCIFACT = ROOT / "hf_margin" / "app" / "data" / "scifact"
BACKENDS = ("torch", "onnx", "onnx-O2", "onnx-int8")


def hf_margin(*argv: str) -> dict[str, Any]:
    """Run `hf-margin ARGV` in its own process; the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", "hf_margin", *argv],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(done.stdout[done.stdout.index("{") :])


def run(student: str) -> dict[str, Any]:
    exported = hf_margin("export", student, "--quantize", "int8")
    quality: dict[str, Any] = {}
    for backend in BACKENDS:
        ir = hf_margin("evaluate", "--student", student, "--backend", backend, "--ir_eval_dir", str(SCIFACT))
        sts = hf_margin("evaluate", "--student", student, "--backend", backend)
        quality[backend] = {
            "scifact": {m: ir["ir"][m] for m in ("ndcg@10", "mrr@10", "recall@100")},
            "stsb_test": {"spearman": sts["stsb_test"]["spearman"]},
            "speed_scifact": ir.get("speed"),
        }
    return {
        "student": os.path.relpath(student, ROOT),
        "export": exported,
        "quality": quality,
        "machine": machine(),
        "clean_tree": tree_is_clean(),
    }


def one_at_a_time(record: dict[str, Any], key: str) -> str:
    """ "claims/s (x PyTorch)" of one file timed on queries one at a time; "–" for the older records, which timed
    documents only."""
    queries = record["export"].get("queries_one_at_a_time", {})
    if key not in queries:
        return "–"
    return f"{queries[key]['texts_per_s']:.1f} ({queries[key]['texts_per_s'] / queries['pytorch']['texts_per_s']:.2f}x)"


def report(records: list[dict[str, Any]]) -> str:
    """Markdown: per student and backend, quality and texts/s with the speed-up over PyTorch fp32."""
    lines = [
        "| student | backend | SciFact nDCG@10 | MRR@10 | Recall@100 | STS-B test Spearman | texts/s (256 abstracts) | "
        "vs PyTorch | claims/s one at a time (vs PyTorch) | min cosine vs PyTorch | commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    files = {
        "torch": "pytorch",
        "onnx": "onnx/model.onnx",
        "onnx-O2": "onnx/model_O2.onnx",
        "onnx-int8": "onnx/model_qint8.onnx",
    }
    for r in records:
        speed, base = r["export"]["speed"], r["export"]["speed"]["pytorch"]["texts_per_s"]
        for backend, q in r["quality"].items():
            key = files[backend]
            cosine = r["export"]["agreement_with_pytorch"].get(key, {}).get("min_cosine", 1.0)
            one = one_at_a_time(r, key)
            lines.append(
                f"| {r['student']} | {backend} | {q['scifact']['ndcg@10']:.2f} | {q['scifact']['mrr@10']:.2f} | "
                f"{q['scifact']['recall@100']:.2f} | {q['stsb_test']['spearman']:.2f} | "
                f"{speed[key]['texts_per_s']:.1f} | {speed[key]['texts_per_s'] / base:.2f}x | {one} | {cosine:.4f} | "
                f"{r['machine']['commit']}{'' if r['clean_tree'] else ' (dirty)'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="outputs/scifact-distil", help="A student saved by hf-margin train.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if not opts.report:
        record = run(opts.student)
        append_jsonl(opts.out, record)
    print(report(read_jsonl(opts.out)))


if __name__ == "__main__":
    main()

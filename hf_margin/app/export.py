"""``hf-margin export DIR [--quantize int8]``: write a saved student as ONNX (fp32 plain and fused for
onnxruntime, and int8 when asked) into ``DIR/onnx/``, then check it against the PyTorch student in the same
process: the cosine of each text's two embeddings and the encoding speed of each, on the same texts, batches and
threads: documents in batches (texts/s, the corpus side) and queries one at a time (the online side of a search).
The figures are printed and kept in ``DIR/onnx/export.json``. ``hf-margin evaluate --student
DIR --backend onnx-int8`` then gives its quality on any evaluation set."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from hf_margin.app.arguments import UserError
from hf_margin.app.tasks.retrieval import SHIPPED_SCIFACT
from hf_margin.data.sources import load_corpus
from hf_margin.evaluation.throughput import encoding_throughput
from hf_margin.models.export import OnnxTransformer, export_onnx
from hf_margin.models.kind import saved_student_kind
from hf_margin.models.modeling import load_student
from hf_margin.training.trainer import write_json_atomic

logger = logging.getLogger(__name__)

CHECK_TEXTS = 256
CHECK_QUERIES = 200
REPORT = "export.json"


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-margin export",
        description="Export a saved student to ONNX (DIR/onnx/model.onnx, and model_O2.onnx fused for onnxruntime; "
        "--quantize int8 adds model_qint8.onnx, quantised from the fused graph) "
        "and compare it with the PyTorch student: cosine agreement and texts/s on the same texts and threads.",
    )
    parser.add_argument("student", help="A student saved by hf-margin (transformers + sentence-transformers files).")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="Export format (onnx).")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="Also write a dynamic int8 model.")
    parser.add_argument(
        "--texts",
        default=None,
        help=f"Texts of the check (a .txt file, one per line, or a corpus .jsonl); default: the first {CHECK_TEXTS} "
        "SciFact abstracts shipped with hf-margin.",
    )
    parser.add_argument("--max_texts", type=int, default=CHECK_TEXTS, help="How many texts the check embeds.")
    parser.add_argument(
        "--queries",
        default=None,
        help="Queries timed one at a time, as a search service meets them (a .txt file or a queries .jsonl); "
        f"default: the first {CHECK_QUERIES} SciFact claims shipped with hf-margin.",
    )
    parser.add_argument("--max_queries", type=int, default=CHECK_QUERIES, help="How many queries are timed.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Alternating timing rounds per file (the median is reported)."
    )
    return parser


def timed_in_rounds(
    scorers: dict[str, Any], texts: list[str], rounds: int, **options: Any
) -> dict[str, dict[str, Any]]:
    """Each scorer's :func:`encoding_throughput` (``options``: its role and batch size) in ``rounds`` alternating
    rounds (a drift of the machine falls on every file alike): the median round's figures, with every round's
    texts/s under ``rounds``."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in scorers}
    for _ in range(rounds):
        for name, scorer in scorers.items():
            runs[name].append(encoding_throughput(scorer, texts, **options))
    speed = {}
    for name, timings in runs.items():
        ordered = sorted(timings, key=lambda t: t["texts_per_s"])
        speed[name] = {**ordered[len(ordered) // 2], "rounds": [t["texts_per_s"] for t in timings]}
    return speed


def check_texts(path: str | None, n: int, default: str = "corpus.jsonl") -> list[str]:
    return load_corpus(path if path else SHIPPED_SCIFACT / default)[:n]


def run_export(argv: list[str]) -> dict[str, Any]:
    """Export, check and report (see the module docstring); returns what ``export.json`` holds."""
    options = export_parser().parse_args(argv)
    folder = Path(options.student)
    if not (folder / "config.json").is_file() or not (folder / "modules.json").is_file():
        raise UserError(
            f"{folder}: not a saved hf-margin student (it needs config.json and modules.json); give the output_dir "
            "of hf-margin train"
        )
    if saved_student_kind(folder).name != "bi-encoder":
        raise UserError(f"{folder}: only bi-encoder students are exported")
    texts = check_texts(options.texts, options.max_texts)  # read before the export: a bad file costs nothing
    queries = check_texts(options.queries, options.max_queries, "queries.jsonl")
    files = list(export_onnx(folder, quantize=options.quantize).values())
    kind = saved_student_kind(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch_scorer = kind.scorer(load_student(folder).eval(), tokenizer, device="cpu")
    reference = torch_scorer.embed(texts)
    scorers = {"pytorch": torch_scorer}
    agreement = {}
    for path in files:
        scorer = kind.scorer(OnnxTransformer(path), tokenizer, device="cpu")
        embeddings = scorer.embed(texts)
        cosine = torch.nn.functional.cosine_similarity(embeddings, reference, dim=-1)
        name = str(path.relative_to(folder))
        agreement[name] = {"min_cosine": cosine.min().item(), "mean_cosine": cosine.mean().item()}
        scorers[name] = scorer
    speed = timed_in_rounds(scorers, texts, options.rounds)
    base = speed["pytorch"]["texts_per_s"]
    one_at_a_time = timed_in_rounds(scorers, queries, options.rounds, role="query", batch_size=1)
    query_base = one_at_a_time["pytorch"]["texts_per_s"]
    report = {
        "student": str(folder),
        "files": [str(p.relative_to(folder)) for p in files],
        "texts": len(texts),
        "agreement_with_pytorch": agreement,
        "speed": speed,
        "speedup_over_pytorch": {k: v["texts_per_s"] / base for k, v in speed.items() if k != "pytorch"},
        "queries_one_at_a_time": one_at_a_time,
        "query_speedup_over_pytorch": {
            k: v["texts_per_s"] / query_base for k, v in one_at_a_time.items() if k != "pytorch"
        },
    }
    write_json_atomic(folder / "onnx" / REPORT, report)
    print(json.dumps(report, indent=2))
    return report

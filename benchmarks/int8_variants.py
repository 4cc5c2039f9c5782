"""Which int8 ONNX file is fastest on this CPU (the speed issue's int8 goal): onnxruntime's quantisations of one
student, each against the PyTorch student in the same process, on documents in batches (256 SciFact abstracts at 256
tokens, batches of 32 sorted by length) and on queries one at a time (200 SciFact claims), 2 threads, median of 3
rounds; with each file's cosine agreement with PyTorch on the abstracts.

Variants: the shipped one (`hf-margin export --quantize int8`: the fused graph, int8 weights per output channel,
7-bit), the same from the plain graph, the plain graph with full 8-bit weights, the fused graph with one uint8 scale
per tensor, and static QDQ quantisation of the matrix products with 64 abstracts for calibration.

    python benchmarks/int8_variants.py [--student DIR]   # default: MiniLM's layers 0 and 5, untrained
    python benchmarks/int8_variants.py --report
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    RESULTS,
    append_jsonl,
    int8_instructions,
    machine,
    read_jsonl,
    tree_is_clean,
)

OUT = RESULTS / "int8_variants.jsonl"
SCIFACT = ROOT / "hf_margin" / "app" / "data" / "scifact"


def variants(files: dict[str, Path], folder: Path, calibration: list[dict]) -> dict[str, Path]:
    """The int8 files besides the shipped one, written into ``folder``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = {"shipped: fused, per channel, 7-bit": files["int8"]}
    for name, source, options in [
        ("plain graph, per channel, 7-bit", files["fp32"], {"per_channel": True, "reduce_range": True}),
        ("plain graph, per channel, 8-bit", files["fp32"], {"per_channel": True, "reduce_range": False}),
        ("fused, per tensor, uint8", files["O2"], {"weight_type": QuantType.QUInt8, "per_channel": False}),
    ]:
        path = folder / f"{len(out)}.onnx"
        options.setdefault("weight_type", QuantType.QInt8)
        quantize_dynamic(str(source), str(path), extra_options={"DefaultTensorType": 1}, **options)
        out[name] = path

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared, path = folder / "prepared.onnx", folder / "static.onnx"
    quant_pre_process(str(files["fp32"]), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"])  # fmt: skip
    out["static QDQ, matrix products, calibrated"] = path
    return out


def run(student: str | None) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from hf_margin.app.export import timed_in_rounds
    from hf_margin.data.sources import load_corpus
    from hf_margin.models.export import OnnxTransformer, export_onnx
    from hf_margin.models.modeling import load_student
    from hf_margin.models.resolve import resolve_model
    from hf_margin.models.scoring import BiEncoderScorer

    torch.set_num_threads(2)
    abstracts = load_corpus(SCIFACT / "corpus.jsonl")[:256]
    claims = load_corpus(SCIFACT / "queries.jsonl")[:200]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if student is None:
            source = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
            load_student(source, layers=[0, 5]).save_pretrained(work / "student")
            AutoTokenizer.from_pretrained(source).save_pretrained(work / "student")
        folder = Path(student) if student else work / "student"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        files = export_onnx(folder, quantize="int8", output_dir=work)
        calibration = [
            {k: v.astype(np.int64) for k, v in tokenizer(abstracts[i : i + 16], padding=True, truncation=True,
                                                         max_length=256, return_tensors="np").items()}
            for i in range(0, 64, 16)
        ]  # fmt: skip
        models = {"pytorch fp32": load_student(folder).eval(), "onnx fp32 fused": OnnxTransformer(files["O2"])}
        models |= {name: OnnxTransformer(path) for name, path in variants(files, work, calibration).items()}

        scorers = {
            name: BiEncoderScorer(model, tokenizer, max_length=256, show_progress=False)
            for name, model in models.items()
        }
        # alternating rounds (a drift of the machine falls on every file alike), timed as `hf-margin export` times
        documents = timed_in_rounds(scorers, abstracts, 3)
        queries = timed_in_rounds(scorers, claims, 3, role="query", batch_size=1)
        reference = BiEncoderScorer(models["pytorch fp32"], tokenizer, max_length=256).embed(abstracts)
        results = {}
        for name, model in models.items():
            embedded = BiEncoderScorer(model, tokenizer, max_length=256).embed(abstracts)
            cosine = torch.nn.functional.cosine_similarity(embedded, reference, dim=-1)
            results[name] = {
                "documents_per_s": documents[name]["texts_per_s"],
                "queries_per_s": queries[name]["texts_per_s"],
                "rounds": {"documents": documents[name]["rounds"], "queries": queries[name]["rounds"]},
                "min_cosine": cosine.min().item(),
            }
    return {"student": student or "MiniLM layers 0, 5 (untrained)", "variants": results, "machine": machine(),
            "clean_tree": tree_is_clean()}  # fmt: skip


def report(records: list[dict[str, Any]]) -> str:
    """Markdown: per file, documents/s and queries/s with the speed-up over the same run's PyTorch student."""
    lines = [
        "| student | file | abstracts/s (batches of 32) | vs PyTorch | claims/s (one at a time) | vs PyTorch | "
        "min cosine | CPU's int8 instructions | commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        base = r["variants"]["pytorch fp32"]
        for name, v in r["variants"].items():
            lines.append(
                f"| {r['student']} | {name} | {v['documents_per_s']:.1f} | "
                f"{v['documents_per_s'] / base['documents_per_s']:.2f}x | {v['queries_per_s']:.1f} | "
                f"{v['queries_per_s'] / base['queries_per_s']:.2f}x | {v['min_cosine']:.4f} | "
                f"{int8_instructions(r['machine'])} | "
                f"{r['machine']['commit']}{'' if r['clean_tree'] else ' (dirty)'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=None, help="A saved student; default: MiniLM's layers 0, 5 untrained.")
    parser.add_argument("--report", action="store_true", help="Print the table from the results and exit.")
    parser.add_argument("--out", type=Path, default=OUT)
    opts = parser.parse_args()
    if not opts.report:
        append_jsonl(opts.out, run(opts.student))
    print(report(read_jsonl(opts.out)))


if __name__ == "__main__":
    main()

"""``hf-margin evaluate``: a saved student (PyTorch or its ONNX export) on your STS file, BEIR folder or held-out
triplets, else on the STS-B test split; its encoding speed, and with ``--teacher`` the teacher's figures and speed
beside it (the speed-up and the share of the teacher's quality the student keeps)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoTokenizer

from hf_margin.app.arguments import DEFAULT_TEACHER, DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.loading import checked_model_path, load_checked, load_teacher, teacher_name
from hf_margin.app.report import cached_results, evaluation_table, quality_kept, run_evaluators, texts_for_speed
from hf_margin.app.stsb import load_stsb, stsb_evaluators
from hf_margin.app.tasks.common import Evaluator, user_evaluators
from hf_margin.data.formats import normalize_dataset
from hf_margin.data.margins import attach_teacher_margins
from hf_margin.data.sources import load_data_file
from hf_margin.evaluation.evaluators import TripletEvaluator
from hf_margin.evaluation.throughput import encoding_throughput, speed_summary
from hf_margin.models.export import FP32_FILE, INT8_FILE, ONNX_FOLDER, OPTIMIZED_FILE, OnnxTransformer
from hf_margin.models.kind import StudentKind, saved_student_kind
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)


def run_evaluate(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, dict[str, float]]:
    """Evaluate a saved student (``--student``, default ``output_dir``): on ``--sts_eval_file``, ``--ir_eval_dir``
    and held-out triplets (``--validation_file``: margin agreement with the teacher) when given, else on the
    STS-B test split (Spearman, Pearson, duplicate retrieval); prints its encoding speed (texts/s) beside them."""
    reference = model_args.student or args.output_dir
    checked_model_path(reference, "student")
    evaluators = user_evaluators(eval_args, args)
    if data_args.validation_file:
        evaluators["triplets"] = TripletEvaluator(held_out_triplets(model_args, data_args))
    if not evaluators:
        evaluators = stsb_evaluators(
            load_stsb(data_args.data_dir)["test"], "stsb_test", duplicates=args.student_kind.is_bi_encoder
        )
    kind = reading_options(reference, args)
    if eval_args.backend != "torch":
        model = onnx_model(reference, eval_args.backend, model_args)
    else:
        model = load_checked(
            "student",
            reference,
            lambda p: kind.load(p, layers=model_args.student_layers, trust_remote_code=model_args.trust_remote_code),
        )
    tokenizer = load_checked("student", reference, lambda p: AutoTokenizer.from_pretrained(p))
    scorer = kind.scorer(model, tokenizer, device=PartialState().device)
    result = run_evaluators(evaluators, scorer)
    if PartialState().is_main_process:
        texts = texts_for_speed(evaluators)
        speed = encoding_throughput(scorer, texts)
        shown: dict[str, Any] = {"model": reference, **result, **({"speed": speed} if speed else {})}
        if model_args.teacher and eval_args.eval_teacher:  # the comparison a student exists for
            shown.update(teacher_comparison(model_args, data_args, evaluators, result, speed, texts))
        print(json.dumps(shown, indent=2))
    return result


def reading_options(reference: str, args: MarginDistillConfig) -> StudentKind:
    """How ``evaluate`` reads a saved bi-encoder: as it was saved (its sentence-transformers files: max_seq_length,
    pooling, similarity, normalisation, prompts), so its figures are the ones training printed, with every reading
    option the command line moved off its default on top (``--max_length 128`` evaluates at 128 tokens)."""
    kind = args.student_kind
    if not kind.is_bi_encoder or not (Path(reference) / "modules.json").is_file():
        return kind
    defaults = {f.name: f.default for f in dataclasses.fields(MarginDistillConfig)}
    default = StudentKind(
        kind.name,
        defaults["pooling"],
        defaults["similarity"],
        defaults["normalize"],
        defaults["document_max_length"] or defaults["max_length"],
        query_max_length=defaults["query_max_length"],
        query_prompt=defaults["query_prompt"],
        document_prompt=defaults["document_prompt"],
    )
    given = {
        f.name: getattr(kind, f.name)
        for f in dataclasses.fields(kind)
        if getattr(kind, f.name) != getattr(default, f.name)
    }
    saved = saved_student_kind(reference)
    read = dataclasses.replace(saved, **given)
    logger.info(
        "Reading the student as saved in %s%s: max_length %d, pooling %s, %s similarity%s%s",
        reference,
        f" (command line: {', '.join(sorted(given))})" if given else "",
        read.max_length,
        read.pooling,
        read.similarity,
        ", normalised" if read.normalize else "",
        f", prompts {read.prompts}" if read.prompts else "",
    )
    return read


def teacher_comparison(
    model_args: ModelArguments,
    data_args: DataArguments,
    evaluators: dict[str, Evaluator],
    result: dict[str, dict[str, float]],
    speed: dict[str, Any] | None,
    texts: list[str],
) -> dict[str, Any]:
    """The teacher's figures on the same evaluators (cached), its speed on the same texts, the student's speed-up
    over it and the share of its quality the student keeps."""
    teacher = load_teacher(model_args)
    figures = cached_results(evaluators, teacher, data_args.cache_dir)
    teacher_speed = encoding_throughput(teacher, texts, max_length=speed["max_length"] if speed else None)
    return {
        "teacher": {"model": teacher_name(model_args, model_args.teacher or DEFAULT_TEACHER), **figures},
        "teacher_speed": teacher_speed,
        "speedup": speed_summary(speed, teacher_speed)["speedup"],
        "quality_kept": quality_kept(evaluation_table({"after": result, "teacher": figures})),
    }


def onnx_model(reference: str, backend: str, model_args: ModelArguments) -> torch.nn.Module:
    """The ONNX file `hf-margin export` wrote for ``backend`` (``onnx``, ``onnx-O2`` or ``onnx-int8``), as a model
    scorers run."""
    path = Path(reference) / ONNX_FOLDER / {"onnx-int8": INT8_FILE, "onnx-O2": OPTIMIZED_FILE}.get(backend, FP32_FILE)
    if not path.is_file():
        quantize = " --quantize int8" if backend == "onnx-int8" else ""
        raise UserError(f"--backend {backend}: no {path}; write it first: hf-margin export {reference}{quantize}")
    if model_args.student_layers:
        raise UserError("--backend onnx runs the exported model whole: --student_layers applies to PyTorch only")
    return OnnxTransformer(path)


def held_out_triplets(model_args: ModelArguments, data_args: DataArguments) -> Dataset:
    """``validation_file`` as triplets with teacher margins: its own scores, or the teacher's (cached)."""
    data, fmt = normalize_dataset(
        load_data_file(data_args.validation_file), column_map=data_args.columns, source=data_args.validation_file
    )
    if not fmt.has_negatives:
        raise UserError(f"{data_args.validation_file}: held-out triplets need negatives (it holds pairs only)")
    if "teacher_margins" not in data.column_names:
        data = attach_teacher_margins(data, load_teacher(model_args), cache_dir=data_args.cache_dir)
    return data

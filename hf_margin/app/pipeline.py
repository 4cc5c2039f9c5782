"""The jobs behind the ``hf-margin`` command: build the task (:mod:`hf_margin.app.tasks`: STS-B, your data or a
retrieval corpus; scored by the teacher, cached), train, evaluate before / after / teacher, and save everything
under ``output_dir``."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from datasets.fingerprint import Hasher
from transformers import AutoTokenizer

from hf_margin.app.arguments import DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.stsb import load_stsb, stsb_evaluators
from hf_margin.app.tasks import TaskData, build_task
from hf_margin.app.tasks.common import Evaluator, checked_model_path, load_checked, load_teacher, user_evaluators
from hf_margin.data.formats import normalize_dataset
from hf_margin.data.fresh_negatives import FreshNegatives
from hf_margin.data.margin_scaling import scale_teacher_margins
from hf_margin.data.margins import attach_teacher_margins, default_cache_dir
from hf_margin.data.sources import load_data_file
from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator, TripletEvaluator
from hf_margin.evaluation.throughput import encoding_throughput, speed_summary
from hf_margin.models.export import FP32_FILE, INT8_FILE, ONNX_FOLDER, OnnxTransformer
from hf_margin.models.kind import StudentKind
from hf_margin.models.modeling import saved_prompts
from hf_margin.training.config import MarginDistillConfig
from hf_margin.training.trainer import MarginDistillTrainer

logger = logging.getLogger(__name__)


# ---- evaluation and the summary -------------------------------------------------------------------------


def run_evaluators(evaluators: dict[str, Evaluator], scorer: Any) -> dict[str, dict[str, float]]:
    """``{name: {metric: value}}``; an evaluator that cannot run with this scorer (IR with a cross-encoder) is
    left out with a log line."""
    out = {}
    for name, evaluator in evaluators.items():
        try:
            out[name] = evaluator(scorer)
        except ValueError as exc:
            logger.info("%s skipped: %s", name, exc)
    return out


def teacher_results(evaluators: dict[str, Evaluator], teacher: Any, cache_dir: str | None) -> dict[str, Any]:
    """:func:`run_evaluators` for the teacher, remembered in the cache by the teacher's and the evaluators'
    fingerprints: the teacher's figures never change, so a rerun does not embed the evaluation corpus again."""
    key = Hasher.hash([teacher.fingerprint, {name: Hasher.hash(e) for name, e in sorted(evaluators.items())}])
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"teacher-evaluation-{key}.json"
    try:
        results = json.loads(path.read_text())
        logger.info("Teacher figures from the cache (%s)", path)
        return results
    except (OSError, ValueError):
        pass
    results = run_evaluators(evaluators, teacher)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")  # written whole, then renamed: never half a file
    tmp.write_text(json.dumps(results))
    os.replace(tmp, path)
    return results


SUMMARY_METRICS = ("spearman", "pearson", "mrr@10", "ndcg@10", "recall@10", "recall@100")


def summary_lines(table: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """One line per evaluator and headline metric: before -> after; teacher."""
    lines = []
    for name, metrics in table.items():
        for metric in SUMMARY_METRICS:
            if metric not in metrics:
                continue
            v = metrics[metric]
            parts = [f"{who} {v[who]:.2f}" for who in ("before", "after", "teacher") if v.get(who) is not None]
            lines.append(f"  {name} {metric} x100: " + ", ".join(parts))
    return lines


SPEED_TEXTS = 256  # texts embedded to measure encoding speed (documents of the retrieval corpus where there is one)


def texts_for_speed(evaluators: dict[str, Evaluator], n: int = SPEED_TEXTS) -> list[str]:
    """The texts speed is measured on: the first ``n`` documents of a retrieval evaluator's corpus, else of an STS
    evaluator's second sentences (what a user's model will embed most)."""
    for evaluator in evaluators.values():
        if isinstance(evaluator, RetrievalEvaluator):
            return list(dict.fromkeys(evaluator.data.corpus.values()))[:n]
    for evaluator in evaluators.values():
        if isinstance(evaluator, StsEvaluator):
            return list(dict.fromkeys(evaluator.sentences2))[:n]
    return []


def quality_kept(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The student's share (%) of the teacher's figure, per evaluator and headline metric."""
    kept: dict[str, dict[str, float]] = {}
    for name, metrics in table.items():
        for metric in SUMMARY_METRICS:
            values = metrics.get(metric, {})
            if values.get("after") is not None and values.get("teacher"):
                kept.setdefault(name, {})[metric] = 100.0 * values["after"] / values["teacher"]
    return kept


def speed_line(speed: dict[str, Any]) -> str | None:
    """'student 74.0 texts/s, teacher 29.9 (2.47x faster; cpu, float32, 2 threads, 256 tokens)', or None."""
    student, teacher = speed.get("student"), speed.get("teacher")
    if not student:
        return None
    setting = f"{student['device']}, {student['dtype']}, {student['threads']} threads, {student['max_length']} tokens"
    if not teacher:
        return f"student {student['texts_per_s']:.1f} texts/s ({setting})"
    return (
        f"student {student['texts_per_s']:.1f} texts/s, teacher {teacher['texts_per_s']:.1f} "
        f"({speed['speedup']:.2f}x {'faster' if speed['speedup'] >= 1 else 'as fast'}; {setting}; teacher "
        f"{teacher['max_length']} tokens, {teacher['dtype']})"
    )


def _table(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{who: {evaluator: {metric: v}}} -> {evaluator: {metric: {who: v}}}."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for who, results in rows.items():
        for name, metrics in results.items():
            for metric, value in metrics.items():
                table.setdefault(name, {}).setdefault(metric, {})[who] = value
    return table


def _card_eval(table: dict[str, dict[str, dict[str, float]]], teacher_ref: str | None) -> dict[str, dict[str, float]]:
    names = {
        "before": "student before training",
        "after": "student after training",
        "teacher": f"teacher ({teacher_ref})",
    }
    rows: dict[str, dict[str, float]] = {}
    for name, metrics in table.items():
        for metric, values in metrics.items():
            if metric not in SUMMARY_METRICS:
                continue
            for who, value in values.items():
                rows.setdefault(names[who], {})[f"{name} {metric} x100"] = value
    return rows


def _model_index(table: dict[str, dict[str, dict[str, float]]], task: TaskData) -> list[dict[str, Any]]:
    evaluator_of = task.final_evaluators
    out = []
    for name, metrics in table.items():
        stsb = name.startswith("stsb_test")
        source = str(getattr(evaluator_of.get(name), "source", name))
        for metric, values in metrics.items():
            if metric not in SUMMARY_METRICS or values.get("after") is None:
                continue
            out.append(
                {
                    "task": "sentence-similarity" if metric in ("spearman", "pearson") else "text-retrieval",
                    "dataset": "sentence-transformers/stsb" if stsb else source,
                    "dataset_name": ("STS-B duplicate retrieval" if "duplicates" in name else "STS-B")
                    if stsb
                    else name,
                    "split": "test" if stsb else None,
                    "metric": metric,
                    "name": f"{name} {metric}",
                    "value": values["after"] / 100.0,
                }
            )
    return out


# ---- the jobs --------------------------------------------------------------------------------------------


def run_score_teacher(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, int]:
    """Mine negatives and attach teacher margins for train and validation (cached); nothing is trained."""
    task = build_task(model_args, data_args, eval_args, args)
    sizes = {"train": len(task.train), **({"validation": len(task.validation)} if task.validation is not None else {})}
    print(json.dumps({"triplets": sizes, "columns": task.train.column_names}, indent=2))
    return sizes


def run_train(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> dict[str, Any]:
    """Build the task (cached), evaluate the teacher, train, evaluate before/after; write model, metrics.json,
    training_curves.png and the model card (the trainer writes them when it saves)."""
    start = time.perf_counter()
    state = PartialState()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and args.world_size == 1:
        raise UserError(
            f"launched as {launched} processes, but each would train alone (no GPU per process): add --use_cpu true "
            "to join them in one gloo group, or use --accelerate-config multi-cpu"
        )
    will_evaluate = (
        data_args.task == "stsb"
        or data_args.dev_split
        or data_args.validation_file
        or (data_args.dataset_name and data_args.validation_split)
        or eval_args.sts_eval_file
        or eval_args.ir_eval_dir
    )
    if args.eval_strategy != "no" and not will_evaluate:
        raise UserError(
            "eval_strategy is set but there is nothing to evaluate: give --validation_file, "
            "--sts_eval_file or --ir_eval_dir, or --eval_strategy no"
        )
    task = build_task(model_args, data_args, eval_args, args)
    kind: StudentKind = args.student_kind
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if task.teacher is not None and state.is_main_process and eval_args.eval_teacher:  # once, on the main process
        rows["teacher"] = teacher_results(task.final_evaluators, task.teacher, data_args.cache_dir)
    speed_texts = texts_for_speed(task.final_evaluators)
    teacher_speed = (
        encoding_throughput(task.teacher, speed_texts) if task.teacher is not None and state.is_main_process else None
    )
    del task.teacher  # the teacher never sits in training memory
    gc.collect()

    student_ref = model_args.student or task.teacher_ref
    student = load_checked(
        "student",
        student_ref,
        lambda p: kind.load(p, layers=model_args.student_layers, trust_remote_code=model_args.trust_remote_code),
    )
    tokenizer = load_checked(
        "student",
        student_ref,
        lambda p: AutoTokenizer.from_pretrained(p, trust_remote_code=model_args.trust_remote_code),
    )
    if state.is_main_process:  # on this process's device (the student is still on the CPU)
        rows["before"] = run_evaluators(task.final_evaluators, kind.scorer(student, tokenizer, device=state.device))
    triplets = {"train": task.train, **({"validation": task.validation} if task.validation is not None else {})}
    scaling: dict[str, float] = {}
    if args.needs_teacher:
        triplets, scaling = scale_teacher_margins(
            triplets, data_args.margin_scaling(model_args.teacher_type), student, tokenizer, args
        )
    train = triplets["train"]
    if data_args.fresh_negatives_per_epoch:  # the band is tokenised once; each epoch picks from it
        train = FreshNegatives(train, data_args.num_negatives, seed=args.seed)
    trainer = MarginDistillTrainer(
        student,
        args,
        train_dataset=train,
        eval_dataset=triplets.get("validation"),
        processing_class=tokenizer,
        evaluators=task.train_evaluators,
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    # every process: a sharded model (ZeRO-3, FSDP) needs all of them in its forward; only the main one reports
    after = run_evaluators(task.final_evaluators, kind.scorer(trainer.model, tokenizer))
    if state.is_main_process:
        rows["after"] = after
    student_speed = (
        encoding_throughput(kind.scorer(trainer.model, tokenizer), speed_texts) if state.is_main_process else None
    )
    table = _table(rows)
    metrics = {
        "recipe": args.run_name,
        "evaluation": table,
        "data": task.info,
        "train_triplets": len(triplets["train"]),
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "wall_time_s": time.perf_counter() - start,
        "train_examples_per_s": train_output.metrics.get("train_samples_per_second"),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "options": {"model": asdict(model_args), "data": asdict(data_args), "eval": asdict(eval_args)},
        "teacher_margin_scaling": scaling,
        "speed": speed_summary(student_speed, teacher_speed),
        "quality_kept": quality_kept(table),
    }
    for metric in ("spearman", "pearson"):  # the headline figures under flat names (benchmarks read them)
        if metric in table.get("stsb_test", {}):
            metrics[f"stsb_test_{metric}"] = table["stsb_test"][metric]
    trainer.results = metrics
    trainer.card_info = {
        "teacher": task.teacher_ref,
        "teacher_note": (
            f"none loaded: the training data brought its own teacher scores ({task.info.get('score_source')})."
            if task.info.get("score_source")
            else "none: the loss reads no teacher margins."
        ),
        "base_model": student_ref,
        "layers": model_args.student_layers,
        "dataset": task.dataset,
        "dataset_description": task.description
        + (
            f" Each epoch, every row's {data_args.num_negatives} negatives were drawn anew from all its mined "
            "candidates (fresh negatives per epoch; teacher margins of every candidate cached before training)."
            if data_args.fresh_negatives_per_epoch
            else ""
        ),
        "eval": _card_eval(table, task.teacher_ref),
        "model_index": _model_index(table, task),
        "eval_note": "Figures x100. Pair-score correlations use the model's "
        + (f"{args.similarity} similarity of the two texts' embeddings" if kind.is_bi_encoder else "logit")
        + "; retrieval ranks the corpus by exact search."
        + (" The teacher row scores the same way with the teacher." if "teacher" in rows else ""),
        "speed": speed_line(metrics["speed"]),
        "quality_kept": metrics["quality_kept"],
        "license": "apache-2.0",
        "language": "en",
    }
    trainer.save_state()  # trainer_state.json: the whole log history (loss curve, evaluations)
    if args.push_to_hub:  # saves the model and its files, writes the card and uploads the folder, once
        trainer.push_to_hub(commit_message="hf-margin: distilled student")
    else:
        trainer.save_model()
    if state.is_main_process:
        print_summary(metrics)
    return metrics


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
    kind = args.student_kind
    saved = saved_prompts(reference) if kind.is_bi_encoder and not kind.prompts else {}
    if saved:  # read queries and documents as the student was trained to (its saved prompts)
        logger.info("Using the student's saved prompts %s", saved)
        kind = dataclasses.replace(kind, query_prompt=saved.get("query", ""), document_prompt=saved.get("document", ""))
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
    figures = teacher_results(evaluators, teacher, data_args.cache_dir)
    teacher_speed = encoding_throughput(teacher, texts)
    return {
        "teacher": {"model": model_args.teacher, **figures},
        "teacher_speed": teacher_speed,
        "speedup": speed_summary(speed, teacher_speed)["speedup"],
        "quality_kept": quality_kept(_table({"after": result, "teacher": figures})),
    }


def onnx_model(reference: str, backend: str, model_args: ModelArguments) -> torch.nn.Module:
    """The ONNX file `hf-margin export` wrote for ``backend`` (``onnx`` or ``onnx-int8``), as a model scorers run."""
    path = Path(reference) / ONNX_FOLDER / (INT8_FILE if backend == "onnx-int8" else FP32_FILE)
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


def print_summary(metrics: dict[str, Any]) -> None:
    lines = summary_lines(metrics["evaluation"])
    data = metrics.get("data", {})
    share = (
        f" ({data['gold_triplets']} gold + {data['corpus_triplets']} teacher-built)"
        if data.get("corpus_triplets")
        else ""
    )
    print(
        f"\nhf-margin ({metrics['recipe']}), {metrics['train_triplets']} training triplets{share}, "
        f"wall time {metrics['wall_time_s']:.0f} s:"
    )
    print("\n".join(lines) if lines else "  no evaluation was asked for (--sts_eval_file, --ir_eval_dir)")
    for name, kept in metrics.get("quality_kept", {}).items():
        print(f"  {name}: the student keeps " + ", ".join(f"{v:.1f}% of the teacher's {m}" for m, v in kept.items()))
    line = speed_line(metrics.get("speed", {}))
    if line:
        print(f"  encoding speed: {line}")

"""The jobs of ``hf-margin train`` and ``score-teacher``: build the task (:mod:`hf_margin.app.tasks`: STS-B, your
data or a retrieval corpus; scored by the teacher, cached), train, evaluate before / after / teacher, and save
everything under ``output_dir`` (``hf-margin evaluate`` is :mod:`hf_margin.app.evaluate_student`'s)."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from hf_margin.app.arguments import DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.loading import check_embedding_targets, load_checked, load_embedding_teacher
from hf_margin.app.report import (
    cached_results,
    card_info,
    evaluation_table,
    print_summary,
    quality_kept,
    run_evaluators,
    texts_for_speed,
)
from hf_margin.app.tasks import build_task
from hf_margin.data.fresh_negatives import FreshNegatives
from hf_margin.data.teacher_embeddings import attach_teacher_embeddings
from hf_margin.evaluation.throughput import encoding_throughput, fewer_threads_than_cores, speed_summary
from hf_margin.models.kind import StudentKind
from hf_margin.training.config import MarginDistillConfig
from hf_margin.training.trainer import MarginDistillTrainer

logger = logging.getLogger(__name__)


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
    if state.device.type == "cpu" and state.num_processes == 1 and (warning := fewer_threads_than_cores()):
        logger.warning(warning)
    check_embedding_targets(model_args, args.embedding_weight, args.in_batch_weight)
    if args.needs_teacher_embeddings and data_args.fresh_negatives_per_epoch:
        raise UserError("embedding_weight and in_batch_weight need fixed negatives (their teacher embeddings are "
                        "cached): drop --fresh_negatives_per_epoch, or set both to 0")  # fmt: skip
    task = build_task(model_args, data_args, eval_args, args)
    if args.needs_teacher_embeddings:  # the texts the teacher just mined and scored are in its memo: cheap (cached)
        targets = load_embedding_teacher(model_args, task.teacher)
        if targets is None:
            raise UserError("embedding_weight and in_batch_weight need a teacher to embed the training texts: name "
                            "one with --teacher")  # fmt: skip
        task.train = attach_teacher_embeddings(task.train, targets, cache_dir=data_args.cache_dir)
        if args.in_batch_teacher_similarity is None:  # the embedding teacher scores as it scores its own margins
            args.in_batch_teacher_similarity = (
                "cosine" if model_args.embedding_teacher else model_args.teacher_similarity
            )
        del targets
    kind: StudentKind = args.student_kind
    rows: dict[str, dict[str, dict[str, float]]] = {}
    if task.teacher is not None and state.is_main_process and eval_args.eval_teacher:  # once, on the main process
        rows["teacher"] = cached_results(task.final_evaluators, task.teacher, data_args.cache_dir)
    speed_texts = texts_for_speed(task.final_evaluators)
    timed = eval_args.measure_speed and state.is_main_process
    teacher_speed = (  # at the student's length: the two encoders timed on the same input
        encoding_throughput(task.teacher, speed_texts, max_length=kind.max_length)
        if task.teacher is not None and timed
        else None
    )
    del task.teacher  # the teacher never sits in training memory
    gc.collect()

    student_ref = model_args.student or task.teacher_ref
    student = load_checked(
        "student",
        student_ref,
        lambda p: kind.load(
            p,
            layers=model_args.student_layers,
            trust_remote_code=model_args.trust_remote_code,
            attention_dropout=model_args.student_attention_dropout,
        ),
    )
    tokenizer = load_checked(
        "student",
        student_ref,
        lambda p: AutoTokenizer.from_pretrained(p, trust_remote_code=model_args.trust_remote_code),
    )
    if state.is_main_process and eval_args.eval_before:  # on this process's device (the student is on the CPU)
        before = kind.scorer(student, tokenizer, device=state.device)
        rows["before"] = cached_results(task.final_evaluators, before, data_args.cache_dir, who="student")
    # the trainer rescales the teacher margins (teacher_margin_scaling), once; 'auto' needs the teacher's type
    args.resolve_teacher_margin_scaling(model_args.teacher_type)
    train = task.train
    if data_args.fresh_negatives_per_epoch:  # the band is tokenised once; each epoch picks from it
        train = FreshNegatives(train, data_args.num_negatives, seed=args.seed)
    trainer = MarginDistillTrainer(
        student,
        args,
        train_dataset=train,
        eval_dataset=task.validation,
        processing_class=tokenizer,
        evaluators=task.train_evaluators,
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    # every process: a sharded model (ZeRO-3, FSDP) needs all of them in its forward; only the main one reports
    after = run_evaluators(task.final_evaluators, kind.scorer(trainer.model, tokenizer))
    if state.is_main_process:
        rows["after"] = after
    student_speed = encoding_throughput(kind.scorer(trainer.model, tokenizer), speed_texts) if timed else None
    table = evaluation_table(rows)
    metrics = {
        "recipe": args.run_name,
        "evaluation": table,
        "data": task.info,
        "train_triplets": len(task.train),
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "wall_time_s": time.perf_counter() - start,
        "train_examples_per_s": train_output.metrics.get("train_samples_per_second"),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "options": {"model": asdict(model_args), "data": asdict(data_args), "eval": asdict(eval_args)},
        "teacher_margin_scaling": trainer.margin_scaling_stats,
        "speed": speed_summary(student_speed, teacher_speed),
        "quality_kept": quality_kept(table),
    }
    for metric in ("spearman", "pearson"):  # the headline figures under flat names (benchmarks read them)
        if metric in table.get("stsb_test", {}):
            metrics[f"stsb_test_{metric}"] = table["stsb_test"][metric]
    trainer.results = metrics
    trainer.card_info = card_info(task, rows, metrics, model_args, data_args, args)
    if args.needs_teacher_embeddings:
        teacher = trainer.card_info.get("teacher") or task.teacher_ref  # an ensemble: "a + b (mean score)"
        trainer.card_info["embedding_teacher"] = model_args.embedding_teacher or teacher
    trainer.save_state()  # trainer_state.json: the whole log history (loss curve, evaluations)
    if args.push_to_hub:  # saves the model and its files, writes the card and uploads the folder, once
        trainer.push_to_hub(commit_message="hf-margin: distilled student")
    else:
        trainer.save_model()
    if state.is_main_process:
        print_summary(metrics)
    return metrics

"""Make a cross-encoder teacher: fine-tune a checkpoint with a fresh one-logit head on STS-B gold scores.

The plain ``transformers.Trainer`` does the training (``AutoModelForSequenceClassification`` with
``num_labels=1`` regresses the float label with MSE), so the teacher's raw logits live on the gold 0-5
scale, not on the cosine scale of a bi-encoder student. ``hf-margin train-teacher RECIPE`` runs it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)

from hf_margin.app.stsb import HUB_DATASET, load_stsb
from hf_margin.evaluation.evaluators import StsEvaluator
from hf_margin.evaluation.metrics import sts_correlation
from hf_margin.models.resolve import resolve_model
from hf_margin.models.scoring import CrossEncoderScorer
from hf_margin.reporting.card import build_teacher_card
from hf_margin.training.trainer import write_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class CrossEncoderTeacherArguments:
    """The checkpoint to start from and the STS-B data of a cross-encoder teacher."""

    base_model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Checkpoint whose encoder the teacher starts from (Hub id or local directory)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "STS-B: folder with sts-{train,dev,test}.csv or a Hub id; unset: the copy shipped."},
    )
    max_length: int = field(default=128, metadata={"help": "Longest joined pair, in tokens."})
    both_orders: bool = field(
        default=False, metadata={"help": "Also train on (sentence2, sentence1): twice the examples per epoch."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})


TEACHER_DATACLASSES = (CrossEncoderTeacherArguments, TrainingArguments)


def tokenize_pairs(split: Dataset, tokenizer, *, max_length: int, both_orders: bool = False) -> Dataset:
    """Joined-pair inputs (``input_ids``, ``attention_mask``, ...) and float ``labels`` = gold score, via ``map``
    (cached by fingerprint). With ``both_orders`` each pair appears twice, once per sentence order."""
    if both_orders:
        swapped = split.map(
            lambda r: {"sentence1": r["sentence2"], "sentence2": r["sentence1"]}, desc="Swapping sentence order"
        )
        from datasets import concatenate_datasets

        split = concatenate_datasets([split, swapped])

    def encode(batch: dict[str, list]) -> dict[str, Any]:
        enc = tokenizer(batch["sentence1"], batch["sentence2"], truncation=True, max_length=max_length)
        return {**enc, "labels": [float(s) for s in batch["score"]]}

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="Tokenizing pairs")


def sts_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` of the teacher: Spearman and Pearson x100 of its logits against the gold scores."""
    logits = np.asarray(eval_pred.predictions).reshape(-1)
    return sts_correlation(logits, np.asarray(eval_pred.label_ids).reshape(-1))


def load_cross_encoder_base(path: str, *, trust_remote_code: bool = False) -> PreTrainedModel:
    """The checkpoint's encoder with a fresh one-logit regression head."""
    return AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, problem_type="regression", trust_remote_code=trust_remote_code
    )


def run_train_teacher(teacher_args: CrossEncoderTeacherArguments, args: TrainingArguments) -> dict[str, Any]:
    """Fine-tune the cross-encoder teacher, score STS-B dev and test pairs with it, save it with a model card."""
    start = time.perf_counter()
    splits = load_stsb(teacher_args.data_dir)
    path = resolve_model(teacher_args.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=teacher_args.trust_remote_code)
    model = load_cross_encoder_base(path, trust_remote_code=teacher_args.trust_remote_code)
    with args.main_process_first(desc="tokenizing STS-B pairs"):
        train = tokenize_pairs(
            splits["train"], tokenizer, max_length=teacher_args.max_length, both_orders=teacher_args.both_orders
        )
        dev = tokenize_pairs(splits["validation"], tokenizer, max_length=teacher_args.max_length)
    logger.info("Cross-encoder teacher from %s: %d training pairs", teacher_args.base_model, len(train))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=sts_metrics,
    )
    out = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    scorer = CrossEncoderScorer(
        trainer.model, tokenizer, max_length=teacher_args.max_length, device=trainer.args.device, show_progress=False
    )
    test = StsEvaluator.from_dataset(splits["test"])(scorer)
    dev_scores = StsEvaluator.from_dataset(splits["validation"])(scorer)
    metrics = {
        "recipe": args.run_name,
        "stsb_test_spearman": test["spearman"],
        "stsb_test_pearson": test["pearson"],
        "stsb_dev_spearman": dev_scores["spearman"],
        "train_pairs": len(train),
        "train_loss": out.training_loss,
        "train_runtime_s": out.metrics.get("train_runtime"),
        "wall_time_s": time.perf_counter() - start,
        "options": asdict(teacher_args),
    }
    trainer.save_model()
    trainer.save_state()
    if trainer.is_world_process_zero():
        output_dir = Path(args.output_dir)
        write_json_atomic(output_dir / "metrics.json", metrics)
        build_teacher_card(teacher_args.base_model, teacher_args.max_length, args, metrics, HUB_DATASET).save(
            output_dir / "README.md"
        )
    print(
        f"\nCross-encoder teacher ({args.run_name}): STS-B test Spearman x100 {test['spearman']:.2f} "
        f"(Pearson {test['pearson']:.2f}), dev {dev_scores['spearman']:.2f}. "
        f"Wall time {metrics['wall_time_s']:.0f} s. Saved to {args.output_dir}"
    )
    return metrics

"""The main job: recipe dataclasses and the score-teacher / train / evaluate steps behind the CLI."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoTokenizer, HfArgumentParser

from hf_margin.config import MarginDistillConfig
from hf_margin.margin_scaling import SCALINGS, scale_teacher_margins
from hf_margin.mining import mine_hard_negatives
from hf_margin.modeling import load_student
from hf_margin.resolve import resolve_model
from hf_margin.stsb import HUB_DATASET, evaluate_sts, load_stsb, positive_pairs, unique_sentences
from hf_margin.teacher import BiEncoderTeacher, CrossEncoderTeacher, attach_teacher_margins

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Teacher and student."""

    teacher: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Teacher: a Hub id or a local directory (offline, packaged copies are used)."},
    )
    teacher_type: str = field(
        default="bi-encoder",
        metadata={
            "help": "'bi-encoder' (pooled embeddings) or 'cross-encoder' (one logit).",
            "choices": ["bi-encoder", "cross-encoder"],
        },
    )
    teacher_pooling: str = field(default="mean", metadata={"help": "Bi-encoder teacher pooling: 'mean' or 'cls'."})
    teacher_similarity: str = field(default="cosine", metadata={"help": "Bi-encoder teacher score: 'cosine' or 'dot'."})
    teacher_sigmoid: bool = field(default=False, metadata={"help": "Cross-encoder teacher: sigmoid of the logit."})
    teacher_batch_size: int = field(default=128, metadata={"help": "Pairs or texts per teacher forward pass."})
    student: str | None = field(
        default=None, metadata={"help": "Student checkpoint (Hub id or local directory); default: the teacher's."}
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Keep only these transformer layers of the student checkpoint, e.g. 0 1 (DistilBERT-style)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})


@dataclass
class DataArguments:
    """STS-B, triplets and hard-negative mining."""

    data_dir: str | None = field(
        default="../shared/data/stsb",
        metadata={"help": "Folder with sts-{train,dev,test}.csv; when absent, the Hub dataset is loaded."},
    )
    dataset_name: str = field(default=HUB_DATASET, metadata={"help": "Hub dataset used when data_dir is absent."})
    min_positive_score: float = field(default=3.0, metadata={"help": "Gold score (0-5) a pair needs to be a positive."})
    num_negatives: int = field(default=4, metadata={"help": "Hard negatives mined per query."})
    skip_top: int = field(default=3, metadata={"help": "Skip the miner's top ranks (likely unlabelled positives)."})
    sample_from: int = field(default=30, metadata={"help": "Sample negatives from ranks [skip_top, sample_from)."})
    miner: str | None = field(
        default=None, metadata={"help": "Bi-encoder used to mine negatives; default: the teacher if it is one."}
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Use at most this many training triplets."})
    teacher_margin_scaling: str = field(
        default="none",
        metadata={
            "help": "One global rescaling of the teacher margins before training, with the train split's mean and "
            "std: 'none', 'zscore' (mean 0, std 1) or 'student' (z-score, then the student's own margin mean and "
            "std before training). Meant for Margin-MSE against a teacher on another scale.",
            "choices": list(SCALINGS),
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache of mined negatives and teacher margins; default $HF_DATASETS_CACHE/hf_margin."},
    )


RECIPE_DATACLASSES = (ModelArguments, DataArguments, MarginDistillConfig)


def _to_argv(config: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in config.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def parse_recipe(
    recipe: str | os.PathLike | None,
    overrides: list[str] | None = None,
    dataclasses: tuple[type, ...] = RECIPE_DATACLASSES,
) -> tuple:
    """Parse a recipe YAML into ``dataclasses`` (default: model, data and training arguments of a distillation);
    ``overrides`` (``--key value`` flags) win over the file."""
    parser = HfArgumentParser(dataclasses)
    argv: list[str] = []
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {recipe} not found; the shipped ones are in recipes/")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"recipe {recipe} must be a mapping of option: value")
        known = {f for cls in dataclasses for f in cls.__dataclass_fields__}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ValueError(f"recipe {recipe}: unknown option(s) {unknown}; see `hf-margin train --help`")
        loaded.setdefault("output_dir", f"outputs/{path.stem}")
        loaded.setdefault("run_name", path.stem)
        argv = _to_argv(loaded)
    return tuple(parser.parse_args_into_dataclasses(args=argv + list(overrides or [])))


def _looks_local(reference: str) -> bool:
    path = Path(reference).expanduser()
    return path.is_absolute() or reference.startswith((".", "~")) or path.parts[0] == "outputs"


def load_teacher(model_args: ModelArguments) -> BiEncoderTeacher | CrossEncoderTeacher:
    if _looks_local(model_args.teacher) and not Path(model_args.teacher).expanduser().is_dir():
        raise FileNotFoundError(
            f"teacher directory {model_args.teacher} does not exist (relative to {Path.cwd()}): train it first "
            "(`make teacher`, i.e. hf-margin train-teacher recipes/teacher-cross-encoder-stsb.yaml) or pass "
            "--teacher with a model directory or Hub id"
        )
    path = resolve_model(model_args.teacher)
    common = {"trust_remote_code": model_args.trust_remote_code, "batch_size": model_args.teacher_batch_size}
    if model_args.teacher_type == "cross-encoder":
        return CrossEncoderTeacher.from_pretrained(path, apply_sigmoid=model_args.teacher_sigmoid, **common)
    return BiEncoderTeacher.from_pretrained(
        path, pooling=model_args.teacher_pooling, similarity_fn=model_args.teacher_similarity, **common
    )


def build_triplets(
    model_args: ModelArguments, data_args: DataArguments, teacher=None, *, score_margins: bool = True
) -> tuple[dict[str, Dataset], dict[str, Dataset], Any]:
    """STS-B splits and triplets ``{"train", "validation"}``: positives by gold score, negatives mined from the
    same split, teacher margins attached (unless ``score_margins`` is false); all cached.
    Returns (splits, triplets, teacher)."""
    splits = load_stsb(data_args.data_dir, data_args.dataset_name)
    teacher = teacher if teacher is not None else load_teacher(model_args)
    if data_args.miner is not None:
        miner = BiEncoderTeacher.from_pretrained(
            resolve_model(data_args.miner), batch_size=model_args.teacher_batch_size
        )
    elif isinstance(teacher, BiEncoderTeacher):
        miner = teacher
    else:
        raise ValueError("a cross-encoder teacher cannot mine negatives: set --miner to a bi-encoder")
    triplets = {}
    for split in ("train", "validation"):
        pairs = positive_pairs(splits[split], data_args.min_positive_score)
        if split == "train" and data_args.max_train_examples is not None:
            pairs = pairs.select(range(min(data_args.max_train_examples, len(pairs))))
        mined = mine_hard_negatives(
            pairs,
            unique_sentences(splits[split]),
            miner,
            num_negatives=data_args.num_negatives,
            skip_top=data_args.skip_top,
            sample_from=data_args.sample_from,
            cache_dir=data_args.cache_dir,
        )
        triplets[split] = (
            attach_teacher_margins(mined, teacher, batch_size=256, cache_dir=data_args.cache_dir)
            if score_margins
            else mined
        )
        logger.info("%s: %d triplets with %d negatives each", split, len(triplets[split]), data_args.num_negatives)
    return splits, triplets, teacher


def _sts_kwargs(args: MarginDistillConfig) -> dict[str, Any]:
    return {
        "student_type": args.student_type,
        "pooling": args.pooling,
        "normalize": args.normalize,
        "similarity_fn": args.similarity,
        "max_length": args.max_length,
    }


def teacher_sts(teacher, split: Dataset) -> dict[str, float]:
    if isinstance(teacher, CrossEncoderTeacher):
        return evaluate_sts(
            teacher.model, teacher.tokenizer, split, student_type="cross-encoder", max_length=teacher.max_length
        )
    return evaluate_sts(
        teacher.model,
        teacher.tokenizer,
        split,
        pooling=teacher.pooling,
        normalize=teacher.normalize,
        similarity_fn=teacher.similarity_fn,
        max_length=teacher.max_length,
    )


def run_score_teacher(model_args: ModelArguments, data_args: DataArguments, args: MarginDistillConfig) -> dict:
    """Mine negatives and attach teacher margins for train and dev (cached); nothing is trained."""
    _, triplets, _ = build_triplets(model_args, data_args)
    return {split: len(ds) for split, ds in triplets.items()}


def run_train(model_args: ModelArguments, data_args: DataArguments, args: MarginDistillConfig) -> dict[str, Any]:
    """Score (cached), train, evaluate before/after/teacher on STS-B test; write model, metrics, plot and card."""
    from hf_margin.plotting import plot_training_curves
    from hf_margin.trainer import MarginDistillTrainer

    start = time.perf_counter()
    if data_args.teacher_margin_scaling == "student" and args.student_type != "bi-encoder":
        raise ValueError("teacher_margin_scaling='student' needs a bi-encoder student; use 'zscore' or 'none'")
    state = PartialState()
    splits, triplets, teacher = build_triplets(model_args, data_args, score_margins=args.needs_teacher)
    teacher_test = teacher_sts(teacher, splits["test"])
    logger.info("Teacher STS-B test Spearman: %.2f", teacher_test["spearman"])
    del teacher  # the teacher never sits in training memory
    gc.collect()

    student_ref = model_args.student or model_args.teacher
    student_path = resolve_model(student_ref)
    student = load_student(
        student_path,
        student_type=args.student_type,
        layers=model_args.student_layers,
        trust_remote_code=model_args.trust_remote_code,
    )
    tokenizer = AutoTokenizer.from_pretrained(student_path, trust_remote_code=model_args.trust_remote_code)
    sts = _sts_kwargs(args)
    before_test = evaluate_sts(student, tokenizer, splits["test"], **sts)
    logger.info("Student STS-B test Spearman before training: %.2f", before_test["spearman"])
    if args.needs_teacher:
        triplets, scaling = scale_teacher_margins(triplets, data_args.teacher_margin_scaling, student, tokenizer, args)

    trainer = MarginDistillTrainer(
        student,
        args,
        train_dataset=triplets["train"],
        eval_dataset=triplets["validation"],
        processing_class=tokenizer,
        evaluators={"stsb_dev": lambda model: evaluate_sts(model, tokenizer, splits["validation"], **sts)},
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    after_test = evaluate_sts(trainer.model, tokenizer, splits["test"], **sts)
    after_dev = evaluate_sts(trainer.model, tokenizer, splits["validation"], **sts)
    wall = time.perf_counter() - start
    metrics = {
        "recipe": args.run_name,
        "stsb_test_spearman": {
            "before": before_test["spearman"],
            "after": after_test["spearman"],
            "teacher": teacher_test["spearman"],
        },
        "stsb_test_pearson": {
            "before": before_test["pearson"],
            "after": after_test["pearson"],
            "teacher": teacher_test["pearson"],
        },
        "stsb_dev_spearman_after": after_dev["spearman"],
        "train_triplets": len(triplets["train"]),
        "train_loss": train_output.training_loss,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "wall_time_s": wall,
        "train_examples_per_s": train_output.metrics.get("train_samples_per_second"),
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "options": {"model": asdict(model_args), "data": asdict(data_args)},
        "teacher_margin_scaling": scaling if args.needs_teacher else {},
    }
    layers = model_args.student_layers
    trainer.card_info = {
        "teacher": model_args.teacher,
        "base_model": student_ref,
        "layers": layers,
        "dataset": data_args.dataset_name,
        "dataset_description": (
            f"STS Benchmark train split: {len(triplets['train'])} triplets (query = sentence 1, positive = sentence 2 "
            f"with gold score >= {data_args.min_positive_score}, {data_args.num_negatives} hard negatives mined by the "
            f"teacher from ranks [{data_args.skip_top}, {data_args.sample_from}))."
        ),
        "eval": {
            "student before training": {
                "STS-B test Spearman x100": before_test["spearman"],
                "STS-B test Pearson x100": before_test["pearson"],
            },
            "student after training": {
                "STS-B test Spearman x100": after_test["spearman"],
                "STS-B test Pearson x100": after_test["pearson"],
            },
            f"teacher ({model_args.teacher})": {
                "STS-B test Spearman x100": teacher_test["spearman"],
                "STS-B test Pearson x100": teacher_test["pearson"],
            },
        },
        "eval_note": (
            f"Spearman and Pearson correlation x100 between the {args.similarity} similarity of the two sentences' "
            if args.student_type == "bi-encoder"
            else "Spearman and Pearson correlation x100 between the cross-encoder's logit for the pair "
        )
        + "and the gold score, on STS-B test. The teacher row scores the same way with the teacher.",
        "license": "apache-2.0",
        "language": "en",
    }
    if state.is_main_process:  # first, so that the upload below carries them
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", metrics)
        plot_training_curves(trainer.state.log_history, out / "training_curves.png", title=args.run_name or "")
    trainer.save_state()  # trainer_state.json: the whole log history (loss curve, evaluations)
    if args.push_to_hub:  # saves the model, writes the card and uploads the folder, once
        trainer.push_to_hub(commit_message="hf-margin: distilled student")
    else:
        trainer.save_model()
        trainer.create_model_card()
    print_summary(metrics)
    return metrics


def run_evaluate(model_args: ModelArguments, data_args: DataArguments, args: MarginDistillConfig) -> dict[str, float]:
    """STS-B test (and dev) Spearman of a saved student (``--student``, default ``output_dir``)."""
    splits = load_stsb(data_args.data_dir, data_args.dataset_name)
    path = resolve_model(model_args.student or args.output_dir)
    model = load_student(path, student_type=args.student_type, trust_remote_code=model_args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
    sts = _sts_kwargs(args)
    result = {
        "stsb_test_spearman": evaluate_sts(model, tokenizer, splits["test"], **sts)["spearman"],
        "stsb_dev_spearman": evaluate_sts(model, tokenizer, splits["validation"], **sts)["spearman"],
    }
    print(json.dumps({"model": str(path), **result}, indent=2))
    return result


def print_summary(metrics: dict[str, Any]) -> None:
    s = metrics["stsb_test_spearman"]
    print(
        f"\nSTS-B test Spearman x100 ({metrics['recipe']}): student before {s['before']:.2f} -> "
        f"after {s['after']:.2f}; teacher {s['teacher']:.2f}. Wall time {metrics['wall_time_s']:.0f} s."
    )


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it: a killed run leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def dump_recipe(path: str | os.PathLike, **values: Any) -> None:
    """Write a recipe YAML (used by tests and benchmarks)."""
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))

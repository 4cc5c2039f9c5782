"""What a run reports: its evaluators run (the figures of the teacher and the untrained student cached), the
before / after / teacher table, the summary it prints, the speed line, the share of the teacher's quality the
student keeps, and what the model card says of the run (evaluation rows, model-index results, data)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from datasets.fingerprint import Hasher

from hf_margin.app.arguments import DataArguments, ModelArguments
from hf_margin.app.loading import teacher_name
from hf_margin.app.tasks.common import Evaluator, TaskData
from hf_margin.data.cache import written_whole
from hf_margin.data.margins import default_cache_dir
from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator
from hf_margin.training.config import MarginDistillConfig

logger = logging.getLogger(__name__)


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


def evaluation_fingerprint(evaluator: Evaluator) -> str:
    """An evaluator's class, data and options, not the path it was read from (``source``): a clone hits the cache."""
    state = getattr(evaluator, "__dict__", None)
    if state is None:
        return Hasher.hash(evaluator)
    return Hasher.hash([type(evaluator).__name__, {k: v for k, v in state.items() if k != "source"}])


def cached_results(
    evaluators: dict[str, Evaluator], scorer: Any, cache_dir: str | None, who: str = "teacher"
) -> dict[str, Any]:
    """:func:`run_evaluators`, remembered in the cache by the scorer's and the evaluators' fingerprints (the
    scorer's is a content hash of its weights, tokenizer and scoring options). A fixed model's figures never
    change: a rerun embeds the evaluation corpus again neither for the teacher nor for the untrained student
    (``who`` names the cache file: ``teacher`` or ``student``)."""
    key = Hasher.hash([scorer.fingerprint, {name: evaluation_fingerprint(e) for name, e in sorted(evaluators.items())}])
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{who}-evaluation-{key}.json"
    try:
        results = json.loads(path.read_text())
        logger.info("The %s's figures from the cache (%s)", who, path)
        return results
    except (OSError, ValueError):
        pass
    results = run_evaluators(evaluators, scorer)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(results))
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
    threads = student["threads"]
    cores = student.get("cores", 0) if student["device"] == "cpu" else 0
    of_cores = f" of {cores} cores" if threads < cores else ""
    setting = (
        f"{student['device']}, {student['dtype']}, {threads} thread{'s' if threads != 1 else ''}{of_cores}, "
        f"{student['max_length']} tokens"
    )
    if not teacher:
        return f"student {student['texts_per_s']:.1f} texts/s ({setting})"
    return (
        f"student {student['texts_per_s']:.1f} texts/s, teacher {teacher['texts_per_s']:.1f} "
        f"({speed['speedup']:.2f}x {'faster' if speed['speedup'] >= 1 else 'as fast'}; {setting}; teacher "
        f"{teacher['max_length']} tokens, {teacher['dtype']})"
    )


def evaluation_table(rows: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
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
        if name.endswith("_dev"):  # a dev split chose the run's settings: the Hub index lists held-out figures only
            continue
        stsb = name.startswith("stsb_test")
        source = str(getattr(evaluator_of.get(name), "source", name))
        if Path(source).exists():  # a local folder or file: its name, never this machine's path, on the Hub
            source = Path(source).name
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


def card_info(
    task: TaskData,
    rows: dict[str, dict[str, dict[str, float]]],
    metrics: dict[str, Any],
    model_args: ModelArguments,
    data_args: DataArguments,
    args: MarginDistillConfig,
) -> dict[str, Any]:
    """What the model card says of a training run beyond the trainer's state (``trainer.card_info``): teacher,
    base model, data, the evaluation ``rows`` (``{who: {evaluator: {metric: value}}}``) and the run's metrics."""
    table = metrics["evaluation"]
    student_ref = model_args.student or task.teacher_ref
    kind = args.student_kind
    teacher = teacher_name(model_args, task.teacher_ref)
    return {
        "teacher": teacher,
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
        "eval": _card_eval(table, teacher),
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


def print_summary(metrics: dict[str, Any]) -> None:
    """The run's summary on stdout: its triplets and wall time, before / after / teacher figures, the share of
    the teacher's quality kept, the encoding speed."""
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

"""Loading the checkpoints a job names (teacher, miner, student, query generator), refused early and in one line
when they cannot load: a missing directory, or offline a Hub id that is neither packaged nor cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import constants

from hf_margin.app.arguments import DEFAULT_TEACHER, DataArguments, ModelArguments, UserError
from hf_margin.models.resolve import packaged_model_path, resolve_model
from hf_margin.models.scoring import BiEncoderScorer, CrossEncoderScorer, MeanScoreScorer


def checked_model_path(reference: str, role: str) -> str:
    """``resolve_model(reference)``, refusing early (one clear line) what cannot load: a missing local directory,
    or offline a Hub id that is neither packaged nor in the Hub cache."""
    path = Path(reference).expanduser()
    looks_local = path.is_absolute() or reference.startswith((".", "~", "outputs/")) or reference.count("/") > 1
    if path.is_dir():
        return str(path)
    if looks_local:
        hint = " (train it first: `make teacher`, or pass a model directory or Hub id)" if role == "teacher" else ""
        raise UserError(f"{role} {reference!r}: no such directory (relative to {Path.cwd()}){hint}")
    resolved = resolve_model(reference)
    if resolved == reference and constants.HF_HUB_OFFLINE and packaged_model_path(reference) is None:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(reference, "config.json"), str):
            raise UserError(
                f"{role} {reference!r} not found: not a local directory, not in the Hub cache, and the Hub is off "
                "(HF_HUB_OFFLINE=1). Give a local model directory, or run online once to cache it"
            )
    return resolved


def check_teachers(model_args: ModelArguments, reference: str | None) -> None:
    """Refuse early (before any model loads) a teacher, or a member of ``teacher_ensemble``, that cannot load."""
    for ref in [reference, *(model_args.teacher_ensemble or [])] if reference else []:
        checked_model_path(ref, "teacher")


def check_embedding_targets(model_args: ModelArguments, embedding_weight: float, in_batch_weight: float = 0.0) -> None:
    """With ``embedding_weight > 0`` or ``in_batch_weight > 0``, refuse early (before anything is embedded) an
    embedding teacher that has no embeddings (a cross-encoder); with ``embedding_weight > 0`` also an ensemble (its
    joined embeddings are no single model's) and one of another width than the student's. The in-batch term compares
    scores, not vectors: an ensemble's joined embeddings give its mean score (``MeanScoreScorer``)."""
    if embedding_weight <= 0 and in_batch_weight <= 0:
        return
    source = model_args.embedding_teacher
    cross = model_args.teacher_type != "bi-encoder"
    if source is None and (cross or (model_args.teacher_ensemble and embedding_weight > 0)):
        weights = (("embedding_weight", embedding_weight), ("in_batch_weight", in_batch_weight))
        used = [n for n, w in weights if w > 0] if cross else ["embedding_weight"]  # an ensemble refuses only this
        raise UserError(
            f"{' and '.join(used)}: the teacher's embeddings are needed, and the teacher is "
            + ("a cross-encoder" if cross else "an ensemble (its joined embeddings are no single model's)")
            + ": name the bi-encoder with --embedding_teacher (e.g. the model the student was cut from), or set "
            + " ".join(f"--{n} 0" for n in used)
        )
    if embedding_weight <= 0:
        return
    from transformers import AutoConfig

    teacher = model_args.teacher or DEFAULT_TEACHER
    widths = {}
    for role, reference in (("embedding teacher", source or teacher), ("student", model_args.student or teacher)):
        path = checked_model_path(reference, role)
        widths[role] = getattr(AutoConfig.from_pretrained(path, trust_remote_code=model_args.trust_remote_code),
                               "hidden_size", None)  # fmt: skip
    if widths["embedding teacher"] != widths["student"]:
        raise UserError(
            f"embedding_weight: the embedding teacher embeds texts in {widths['embedding teacher']} dimensions and "
            f"the student in {widths['student']}; their embeddings cannot be compared. Name one of the student's "
            "width with --embedding_teacher (the model a cut student came from), or set --embedding_weight 0"
        )


def load_embedding_teacher(model_args: ModelArguments, teacher: Any) -> Any:
    """The scorer whose embeddings are the student's targets: ``--embedding_teacher``, else the teacher itself."""
    if not model_args.embedding_teacher:
        return teacher
    return load_checked(
        "embedding teacher",
        model_args.embedding_teacher,
        lambda p: BiEncoderScorer.from_pretrained(
            p, trust_remote_code=model_args.trust_remote_code, batch_size=model_args.teacher_batch_size
        ),
    )


def load_checked(role: str, reference: str, loader: Callable[[str], Any]) -> Any:
    """``loader(path)`` of the checked ``reference``; a failure to load is one :class:`UserError` line."""
    path = checked_model_path(reference, role)
    try:
        return loader(path)
    except (OSError, ValueError) as exc:  # no such repo / no connection / no weights / bad layer indices
        raise UserError(f"{role} {reference!r} could not be loaded: {str(exc).splitlines()[0]}") from exc


def load_teacher(
    model_args: ModelArguments, reference: str | None = None
) -> BiEncoderScorer | CrossEncoderScorer | MeanScoreScorer:
    """The teacher scorer named by ``model_args`` (or ``reference``), on this process's device: with
    ``teacher_ensemble``, a :class:`MeanScoreScorer` of it and those bi-encoders."""
    reference = reference or model_args.teacher or DEFAULT_TEACHER
    common = {"trust_remote_code": model_args.trust_remote_code, "batch_size": model_args.teacher_batch_size}
    if model_args.teacher_type == "cross-encoder":
        return load_checked(
            "teacher",
            reference,
            lambda p: CrossEncoderScorer.from_pretrained(p, apply_sigmoid=model_args.teacher_sigmoid, **common),
        )
    check_teachers(model_args, reference)  # every path refused before the first model loads
    members = [
        load_checked(
            "teacher",
            ref,
            lambda p: BiEncoderScorer.from_pretrained(
                p, pooling=model_args.teacher_pooling, similarity_fn=model_args.teacher_similarity, **common
            ),
        )
        for ref in [reference, *(model_args.teacher_ensemble or [])]
    ]
    return MeanScoreScorer(members) if len(members) > 1 else members[0]


def teacher_name(model_args: ModelArguments, reference: str | None) -> str | None:
    """How reports name the teacher: its reference, or 'A + B (mean score)' for a mean-score teacher."""
    if reference and model_args.teacher_ensemble:
        return " + ".join([reference, *model_args.teacher_ensemble]) + " (mean score)"
    return reference


def require_bi_encoder_miner(model_args: ModelArguments, data_args: DataArguments, teacher_ref: str | None) -> None:
    """Refuse, before any model loads, a run that must rank texts (mining, corpus mode) with no bi-encoder to do it."""
    if not data_args.miner and (teacher_ref is None or model_args.teacher_type == "cross-encoder"):
        raise UserError("texts must be ranked by a bi-encoder (mining, corpus mode): set --miner (a cross-encoder "
                        "teacher cannot)")  # fmt: skip


def load_miner(model_args: ModelArguments, data_args: DataArguments, teacher: Any) -> BiEncoderScorer | MeanScoreScorer:
    """The bi-encoder that mines negatives: ``miner``, else the teacher when it is a bi-encoder."""
    if data_args.miner is not None:
        return load_checked(
            "miner",
            data_args.miner,
            lambda p: BiEncoderScorer.from_pretrained(p, batch_size=model_args.teacher_batch_size),
        )
    if isinstance(teacher, BiEncoderScorer | MeanScoreScorer):
        return teacher
    raise UserError("negatives must be mined, and a cross-encoder teacher cannot mine: set --miner to a bi-encoder")

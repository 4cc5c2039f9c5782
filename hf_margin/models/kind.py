"""The student's kind: :class:`StudentKind`, the one place that knows a bi-encoder from a cross-encoder, and saving
a student with (and reading back) the files that describe its kind.

It sits above :mod:`hf_margin.models.modeling` (pooling, scores, loading) and :mod:`hf_margin.models.scoring` (the
scorers, which use modeling's functions), so that ``StudentKind.scorer`` needs no import cycle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel

from hf_margin.data.columns import BI_ENCODER_COLUMNS, CROSS_ENCODER_COLUMNS
from hf_margin.models.modeling import (
    POOLINGS,
    SIMILARITIES,
    STUDENT_TYPES,
    load_student,
    saved_prompts,
    state_dict_for_saving,
    student_scores,
    write_sentence_transformers_files,
)
from hf_margin.models.scoring import BiEncoderScorer, CrossEncoderScorer


def saved_student_kind(path: str | os.PathLike) -> StudentKind:
    """How a bi-encoder saved with the sentence-transformers files reads and scores texts: pooling, L2
    normalisation, similarity, ``max_seq_length`` and prompts, as :func:`write_sentence_transformers_files`
    wrote them (a file that is absent keeps :class:`StudentKind`'s default)."""
    folder = Path(path)

    def read(name: str) -> dict[str, Any]:
        try:
            return dict(json.loads((folder / name).read_text()))
        except (OSError, ValueError):
            return {}

    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    pooling = "cls" if read("1_Pooling/config.json").get("pooling_mode_cls_token") else "mean"
    prompts = saved_prompts(folder)
    return StudentKind(
        "bi-encoder",
        pooling=pooling,
        similarity="dot" if read("config_sentence_transformers.json").get("similarity_fn_name") == "dot" else "cosine",
        normalize=any(m.get("type", "").endswith("Normalize") for m in modules),
        max_length=int(read("sentence_bert_config.json").get("max_seq_length") or StudentKind.max_length),
        query_prompt=prompts.get("query", ""),
        document_prompt=prompts.get("document", ""),
    )


def save_student(
    model: PreTrainedModel,
    output_dir: str | os.PathLike,
    *,
    tokenizer=None,
    student_type: str = "bi-encoder",
    pooling: str = "mean",
    normalize: bool = False,
    similarity_fn: str = "cosine",
    max_length: int = 128,
) -> None:
    """Save a student in safetensors (``save_pretrained``, with a zero pooler where it was loaded without one: see
    :func:`unused_pooler_state`); a bi-encoder also gets the sentence-transformers files."""
    model.save_pretrained(output_dir, state_dict=state_dict_for_saving(model), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    StudentKind(student_type, pooling, similarity_fn, normalize, max_length).save_extras(model, output_dir)


@dataclass(frozen=True)
class StudentKind:
    """What kind of model a student (or teacher) is and how it scores: the one place that knows
    bi-encoder from cross-encoder.

    A bi-encoder scores ``similarity(pool(q), pool(d))`` of separately encoded texts; a cross-encoder scores
    the one logit of the joined pair. Tokenised columns, loading, batch scoring, scorers and saving all ask
    this object.
    """

    name: str = "bi-encoder"
    pooling: str = "mean"
    similarity: str = "cosine"
    normalize: bool = False
    max_length: int = 128
    query_max_length: int | None = None
    query_prompt: str = ""
    document_prompt: str = ""

    def __post_init__(self) -> None:
        for option, value, allowed in (
            ("student_type", self.name, STUDENT_TYPES),
            ("similarity", self.similarity, SIMILARITIES),
            ("pooling", self.pooling, POOLINGS),
        ):
            if value not in allowed:
                raise ValueError(f"{option} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.is_bi_encoder and (self.query_max_length or self.query_prompt or self.document_prompt):
            raise ValueError(
                "query_max_length, query_prompt and document_prompt read queries and documents apart: a "
                "cross-encoder reads them joined (max_length); drop them or use a bi-encoder student"
            )

    @property
    def prompts(self) -> dict[str, str]:
        """The sentence-transformers ``prompts`` of this kind: ``query`` and ``document``, where set."""
        return {k: v for k, v in (("query", self.query_prompt), ("document", self.document_prompt)) if v}

    @property
    def reads_queries_apart(self) -> bool:
        """Whether queries are read with another length or prompt than documents."""
        longer_or_shorter = (self.query_max_length or self.max_length) != self.max_length
        return longer_or_shorter or self.query_prompt != self.document_prompt

    def token_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~hf_margin.data.columns.tokenize_triplets` for this kind."""
        options: dict[str, Any] = {"student_type": self.name, "max_length": self.max_length}
        if self.is_bi_encoder:
            options.update(
                query_max_length=self.query_max_length,
                query_prompt=self.query_prompt,
                document_prompt=self.document_prompt,
            )
        return options

    @property
    def is_bi_encoder(self) -> bool:
        return self.name == "bi-encoder"

    @property
    def token_columns(self) -> tuple[str, ...]:
        """Columns :func:`~hf_margin.data.columns.tokenize_triplets` writes for this kind."""
        return BI_ENCODER_COLUMNS if self.is_bi_encoder else CROSS_ENCODER_COLUMNS

    def load(self, name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedModel:
        """:func:`load_student` for this kind (``layers=``, ``trust_remote_code=`` pass through)."""
        return load_student(name_or_path, student_type=self.name, **kwargs)

    def check(self, model: nn.Module) -> None:
        """Refuse a model that cannot score as this kind (a cross-encoder needs exactly one logit)."""
        if not self.is_bi_encoder:
            num_labels = getattr(getattr(model, "config", None), "num_labels", None)
            if num_labels != 1:
                raise ValueError(
                    f"student_type='cross-encoder' needs a model with one output logit, got num_labels={num_labels}. "
                    "Load it with hf_margin.load_student(path, student_type='cross-encoder')."
                )

    def scores(
        self, model: nn.Module, batch: dict[str, Tensor], *, chunk_size: int = 0, return_embeddings: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """``s(q,p)`` ``(B,)`` and ``s(q,n)`` ``(B, N)`` of a collated batch, and with ``return_embeddings`` the
        embeddings (:func:`student_scores`)."""
        return student_scores(
            model,
            batch,
            student_type=self.name,
            similarity_fn=self.similarity,
            pooling=self.pooling,
            normalize=self.normalize,
            chunk_size=chunk_size,
            return_embeddings=return_embeddings,
        )

    def scorer(self, model: nn.Module, tokenizer: Any, **kwargs: Any) -> BiEncoderScorer | CrossEncoderScorer:
        """A :mod:`hf_margin.models.scoring` scorer of plain texts with this model (on the model's own device)."""
        kwargs.setdefault("device", next(iter((*model.parameters(), *model.buffers()))).device)
        kwargs.setdefault("max_length", self.max_length)
        kwargs.setdefault("show_progress", False)
        if self.is_bi_encoder:
            return BiEncoderScorer(
                model,
                tokenizer,
                pooling=self.pooling,
                normalize=self.normalize,
                similarity_fn=self.similarity,
                query_max_length=self.query_max_length,
                query_prompt=self.query_prompt,
                document_prompt=self.document_prompt,
                **kwargs,
            )
        return CrossEncoderScorer(model, tokenizer, **kwargs)

    def save_extras(self, model: nn.Module, output_dir: str | os.PathLike) -> None:
        """Files beside ``save_pretrained``'s: the sentence-transformers layout for a bi-encoder."""
        if self.is_bi_encoder:
            write_sentence_transformers_files(
                output_dir,
                hidden_size=model.config.hidden_size,
                pooling=self.pooling,
                normalize=self.normalize,
                similarity_fn=self.similarity,
                max_length=self.max_length,
                prompts=self.prompts,
            )

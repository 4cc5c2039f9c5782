"""Students and teachers: loading, pooling, scoring a batch and saving a student (``modeling``); which kind a
student is, bi-encoder or cross-encoder, and what that changes (``kind``); the scorers that score text pairs for
teachers, miners and evaluation (``scoring``); resolving a model name offline to a packaged or local copy
(``resolve``); and ONNX export (``export``, with the optional ``onnx`` extra).

The main names are re-exported here (not ``export``'s, which are imported from their module); modules of the
library import from the module that defines a name.
"""

from __future__ import annotations

from hf_margin.models.kind import StudentKind, save_student, saved_student_kind
from hf_margin.models.modeling import encode, keep_layers, load_student
from hf_margin.models.resolve import resolve_model
from hf_margin.models.scoring import (
    BiEncoderScorer,
    BiEncoderTeacher,
    CrossEncoderScorer,
    CrossEncoderTeacher,
    MeanScoreScorer,
    TeacherScorer,
)

__all__ = [
    "BiEncoderScorer",
    "BiEncoderTeacher",
    "CrossEncoderScorer",
    "CrossEncoderTeacher",
    "MeanScoreScorer",
    "StudentKind",
    "TeacherScorer",
    "encode",
    "keep_layers",
    "load_student",
    "resolve_model",
    "save_student",
    "saved_student_kind",
]

"""hf-margin: distil a similarity teacher into a smaller student with an adaptive difference (margin) loss.

The core library (this package outside ``hf_margin.app``): losses, data, formats, scoring, margins, mining,
modeling, config, trainer, evaluation, card and metrics. ``hf_margin.app`` holds the ``hf-margin`` command.
"""

from __future__ import annotations

from hf_margin.config import MarginDistillConfig
from hf_margin.data import DataValidationError, MarginDistillCollator, tokenize_triplets, validate_triplets
from hf_margin.evaluation import RetrievalEvaluator, StsEvaluator, TripletEvaluator
from hf_margin.formats import DataFormat, detect_format, normalize_dataset
from hf_margin.fresh_negatives import FreshNegatives
from hf_margin.losses import (
    LOSS_REGISTRY,
    AdaptiveDifferenceLoss,
    LabelHingeLoss,
    ListwiseKLLoss,
    LossSpec,
    MarginMSELoss,
    adaptive_difference_loss,
    label_hinge_loss,
    listwise_kl_loss,
    margin_mse_loss,
)
from hf_margin.margins import attach_band_margins, attach_teacher_margins
from hf_margin.metrics import compute_margin_metrics, margin_agreement
from hf_margin.mining import build_corpus_triplets, build_query_corpus_triplets, mine_hard_negatives
from hf_margin.modeling import StudentKind, encode, keep_layers, load_student, save_student
from hf_margin.query_generation import generate_queries
from hf_margin.scoring import (
    BiEncoderScorer,
    BiEncoderTeacher,
    CrossEncoderScorer,
    CrossEncoderTeacher,
    TeacherScorer,
)
from hf_margin.throughput import encoding_throughput
from hf_margin.trainer import MarginDistillTrainer

__version__ = "0.2.0"

__all__ = [
    "build_query_corpus_triplets",
    "encoding_throughput",
    "generate_queries",
    "LOSS_REGISTRY",
    "AdaptiveDifferenceLoss",
    "BiEncoderScorer",
    "BiEncoderTeacher",
    "CrossEncoderScorer",
    "CrossEncoderTeacher",
    "DataFormat",
    "DataValidationError",
    "FreshNegatives",
    "LabelHingeLoss",
    "ListwiseKLLoss",
    "LossSpec",
    "MarginDistillCollator",
    "MarginDistillConfig",
    "MarginDistillTrainer",
    "MarginMSELoss",
    "RetrievalEvaluator",
    "StsEvaluator",
    "TripletEvaluator",
    "StudentKind",
    "TeacherScorer",
    "adaptive_difference_loss",
    "attach_band_margins",
    "attach_teacher_margins",
    "build_corpus_triplets",
    "compute_margin_metrics",
    "detect_format",
    "encode",
    "keep_layers",
    "label_hinge_loss",
    "listwise_kl_loss",
    "load_student",
    "margin_agreement",
    "margin_mse_loss",
    "mine_hard_negatives",
    "normalize_dataset",
    "save_student",
    "tokenize_triplets",
    "validate_triplets",
]

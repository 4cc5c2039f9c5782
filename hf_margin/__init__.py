"""hf-margin: distil a similarity teacher into a smaller student with an adaptive difference (margin) loss."""

from __future__ import annotations

from hf_margin.config import MarginDistillConfig
from hf_margin.data import DataValidationError, MarginDistillCollator, tokenize_triplets, validate_triplets
from hf_margin.losses import (
    AdaptiveDifferenceLoss,
    LabelHingeLoss,
    MarginMSELoss,
    adaptive_difference_loss,
    label_hinge_loss,
    margin_mse_loss,
)
from hf_margin.metrics import compute_margin_metrics, margin_agreement
from hf_margin.modeling import encode, keep_layers, load_student, save_student
from hf_margin.teacher import BiEncoderTeacher, CrossEncoderTeacher, TeacherScorer, attach_teacher_margins
from hf_margin.trainer import MarginDistillTrainer

__version__ = "0.1.0"

__all__ = [
    "AdaptiveDifferenceLoss",
    "BiEncoderTeacher",
    "CrossEncoderTeacher",
    "DataValidationError",
    "LabelHingeLoss",
    "MarginDistillCollator",
    "MarginDistillConfig",
    "MarginDistillTrainer",
    "MarginMSELoss",
    "TeacherScorer",
    "adaptive_difference_loss",
    "attach_teacher_margins",
    "compute_margin_metrics",
    "encode",
    "keep_layers",
    "label_hinge_loss",
    "load_student",
    "margin_agreement",
    "margin_mse_loss",
    "save_student",
    "tokenize_triplets",
    "validate_triplets",
]

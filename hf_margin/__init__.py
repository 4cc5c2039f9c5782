"""hf-margin: distil a similarity teacher into a smaller student with an adaptive difference (margin) loss.

The core library (this package outside ``hf_margin.app``) is grouped by concept: ``hf_margin.data`` (the training
data: columns, formats, sources, mining, teacher margins, caches), ``hf_margin.models`` (students and teachers:
loading, kinds, scorers, offline resolution, ONNX export), ``hf_margin.training`` (losses, config, trainer),
``hf_margin.evaluation`` (evaluators, retrieval, metrics, throughput) and ``hf_margin.reporting`` (model card,
training curves). ``hf_margin.app`` holds the ``hf-margin`` command. The public names are re-exported here.
"""

from __future__ import annotations

from hf_margin.data import (
    DataFormat,
    DataValidationError,
    FreshNegatives,
    MarginDistillCollator,
    attach_band_margins,
    attach_teacher_embeddings,
    attach_teacher_margins,
    build_corpus_triplets,
    build_query_corpus_triplets,
    detect_format,
    generate_queries,
    mine_hard_negatives,
    normalize_dataset,
    tokenize_triplets,
    validate_triplets,
)
from hf_margin.evaluation import (
    RetrievalEvaluator,
    StsEvaluator,
    TripletEvaluator,
    compute_margin_metrics,
    encoding_throughput,
    margin_agreement,
)
from hf_margin.models import (
    BiEncoderScorer,
    BiEncoderTeacher,
    CrossEncoderScorer,
    CrossEncoderTeacher,
    MeanScoreScorer,
    StudentKind,
    TeacherScorer,
    encode,
    keep_layers,
    load_student,
    save_student,
)
from hf_margin.training import (
    LOSS_REGISTRY,
    AdaptiveDifferenceLoss,
    LabelHingeLoss,
    ListwiseKLLoss,
    LossSpec,
    MarginDistillConfig,
    MarginDistillTrainer,
    MarginMSELoss,
    adaptive_difference_loss,
    embedding_distance_loss,
    label_hinge_loss,
    listwise_kl_loss,
    margin_mse_loss,
)

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
    "MeanScoreScorer",
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
    "attach_teacher_embeddings",
    "attach_teacher_margins",
    "build_corpus_triplets",
    "compute_margin_metrics",
    "detect_format",
    "encode",
    "keep_layers",
    "embedding_distance_loss",
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

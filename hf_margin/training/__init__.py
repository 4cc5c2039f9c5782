"""Training: the losses on teacher and student margins and their registry (``losses``), the training options
(``config``: ``MarginDistillConfig``, a ``transformers.TrainingArguments``) and the trainer that applies them and
writes metrics, curves and the model card when it saves (``trainer``: ``MarginDistillTrainer``).

The main names are re-exported here; modules of the library import from the module that defines a name.
"""

from __future__ import annotations

from hf_margin.training.config import MarginDistillConfig
from hf_margin.training.losses import (
    LOSS_REGISTRY,
    AdaptiveDifferenceLoss,
    LabelHingeLoss,
    ListwiseKLLoss,
    LossSpec,
    MarginMSELoss,
    adaptive_difference_loss,
    embedding_distance_loss,
    in_batch_kl_loss,
    label_hinge_loss,
    listwise_kl_loss,
    margin_mse_loss,
)
from hf_margin.training.trainer import MarginDistillTrainer

__all__ = [
    "LOSS_REGISTRY",
    "AdaptiveDifferenceLoss",
    "LabelHingeLoss",
    "ListwiseKLLoss",
    "LossSpec",
    "MarginDistillConfig",
    "MarginDistillTrainer",
    "MarginMSELoss",
    "adaptive_difference_loss",
    "embedding_distance_loss",
    "in_batch_kl_loss",
    "label_hinge_loss",
    "listwise_kl_loss",
    "margin_mse_loss",
]

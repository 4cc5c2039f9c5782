"""MarginDistillTrainer: a ``transformers.Trainer`` whose loss distils cached teacher margins."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer

from hf_margin.config import MarginDistillConfig
from hf_margin.data import (
    BI_ENCODER_COLUMNS,
    CROSS_ENCODER_COLUMNS,
    POSITIVE,
    QUERY,
    TEACHER_MARGINS,
    MarginDistillCollator,
    tokenize_triplets,
    validate_triplets,
)
from hf_margin.losses import adaptive_difference_loss, label_hinge_loss, margin_mse_loss
from hf_margin.metrics import compute_margin_metrics
from hf_margin.modeling import student_scores, write_sentence_transformers_files

logger = logging.getLogger(__name__)


class MarginDistillTrainer(Trainer):
    """Train a student so that its margins ``Δs = s(q,p) − s(q,n)`` reach the teacher's ``Δt``.

    The loss is ``distill(Δs, Δt) + label_weight · relu(label_margin − Δs)``, with ``distill`` the adaptive
    difference loss, Margin-MSE, or nothing (``loss='label_hinge'``). Datasets of raw triplets are validated
    and tokenised once (with ``processing_class``); tokenised ones are used as they are. Teacher margins come
    from :func:`~hf_margin.attach_teacher_margins`, so the teacher never sits in training memory.

    The loss of a micro-batch is its sum over real negatives divided by the count over the whole
    accumulated (and, across processes, gathered) batch, so gradient accumulation gives the large batch's update.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: PreTrainedModel | nn.Module,
        args: MarginDistillConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class=None,
        compute_metrics=compute_margin_metrics,
        evaluators: dict[str, Callable[[nn.Module], dict[str, float]]] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = MarginDistillConfig(output_dir="outputs/hf-margin")
        if not isinstance(args, MarginDistillConfig):
            raise TypeError(f"args must be a MarginDistillConfig, got {type(args).__name__}")
        self._check_student(model, args)
        train_dataset = self._prepare_dataset(train_dataset, args, processing_class, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, args, processing_class, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._prepare_dataset(eval_dataset, args, processing_class, "eval")
        if data_collator is None:
            pad_id = getattr(processing_class, "pad_token_id", None)
            if pad_id is None:
                pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
            data_collator = MarginDistillCollator(pad_token_id=pad_id, student_type=args.student_type)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.evaluators = dict(evaluators or {})
        # What the model card reports beyond the Trainer's state (teacher, data, evaluation table); see
        # `hf_margin.model_card.build_model_card`.
        self.card_info: dict[str, Any] = {}

    # ---- setup -------------------------------------------------------------------------------------

    @staticmethod
    def _check_student(model: nn.Module, args: MarginDistillConfig) -> None:
        if args.student_type == "cross-encoder":
            num_labels = getattr(getattr(model, "config", None), "num_labels", None)
            if num_labels != 1:
                raise ValueError(
                    f"student_type='cross-encoder' needs a model with one output logit, got num_labels={num_labels}. "
                    "Load it with hf_margin.load_student(path, student_type='cross-encoder')."
                )

    @staticmethod
    def _prepare_dataset(dataset, args: MarginDistillConfig, processing_class, name: str):
        if dataset is None:
            return None
        columns = set(dataset.column_names or [])
        if args.needs_teacher and TEACHER_MARGINS not in columns:
            raise ValueError(
                f"the {name} dataset has no '{TEACHER_MARGINS}' column, which loss='{args.loss}' needs. Run "
                "hf_margin.attach_teacher_margins(dataset, teacher) first, or set loss='label_hinge'."
            )
        if {QUERY, POSITIVE} <= columns:
            validate_triplets(dataset)
            if processing_class is None:
                raise ValueError(
                    f"the {name} dataset holds raw text: pass processing_class=tokenizer so it can be tokenised "
                    "once, or tokenise it with hf_margin.tokenize_triplets."
                )
            with args.main_process_first(desc=f"tokenizing the {name} dataset"):
                return tokenize_triplets(
                    dataset, processing_class, student_type=args.student_type, max_length=args.max_length
                )
        needed = BI_ENCODER_COLUMNS if args.student_type == "bi-encoder" else CROSS_ENCODER_COLUMNS
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(
                f"the {name} dataset has neither raw triplets (query, positive, negative[s]) nor the tokenised "
                f"columns {missing} of a {args.student_type}; its columns are {sorted(columns)}."
            )
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        # Keep the tokenised triplet columns and the teacher margins through `remove_unused_columns`.
        if self._signature_columns is None:
            needed = BI_ENCODER_COLUMNS if self.args.student_type == "bi-encoder" else CROSS_ENCODER_COLUMNS
            self._signature_columns = [*needed, TEACHER_MARGINS]

    # ---- loss --------------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Tensor | None:
        """Real negatives over all micro-batches of one optimiser step (and all processes)."""
        if not batch_samples:
            return None
        count = sum(b["negatives_mask"].sum() for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Distillation loss of a collated batch.

        Without ``num_items_in_batch`` it is the mean over the batch's real negatives; with it, the sum divided
        by that count (times the number of processes when the count was gathered, as DDP averages gradients).
        """
        args: MarginDistillConfig = self.args
        mask = inputs["negatives_mask"]
        pos, neg = student_scores(
            model,
            inputs,
            student_type=args.student_type,
            similarity_fn=args.similarity,
            pooling=args.pooling,
            normalize=args.normalize,
            chunk_size=args.forward_chunk_size,
        )
        student_margin = pos.float().unsqueeze(-1) - neg.float()
        teacher_margin = inputs.get(TEACHER_MARGINS)
        num_items = num_items_in_batch
        if num_items is not None and args.average_tokens_across_devices and args.world_size > 1:
            num_items = num_items / args.world_size
        if args.loss == "adaptive":
            distill = adaptive_difference_loss(
                student_margin,
                teacher_margin,
                activation=args.activation,
                teacher_activation=args.teacher_activation,
                temperature=args.temperature,
                scale=args.scale,
                beta=args.beta,
                overshoot_width=args.overshoot_width,
                mse_weight=args.mse_weight,
                mask=mask,
                num_items=num_items,
            )
        elif args.loss == "margin_mse":
            distill = margin_mse_loss(student_margin, teacher_margin, mask=mask, num_items=num_items)
        else:
            distill = None
        label_weight = 1.0 if distill is None else args.label_weight
        loss = distill if distill is not None else student_margin.new_zeros(())
        if label_weight > 0:
            label = label_hinge_loss(student_margin, margin=args.label_margin, mask=mask, num_items=num_items)
            loss = loss + label_weight * label
        if model.training:  # per-micro-batch means for the logs (the loss itself may be a share of a larger batch)
            with torch.no_grad():
                count = mask.sum().clamp_min(1)
                share = 1.0 if num_items is None else num_items / count
                if label_weight > 0:
                    self._record("label_loss", label.detach() * share)
                if distill is not None:
                    self._record("distill_loss", distill.detach() * share)
                real = student_margin.detach().masked_fill(~mask, 0.0)
                self._record("student_margin", real.sum() / count)
                self._record("pairwise_accuracy", ((real > 0) & mask).sum() / count)
        outputs = {"student_margin": student_margin, "negatives_mask": mask}
        if teacher_margin is not None:
            outputs["teacher_margin"] = teacher_margin
        return (loss, outputs) if return_outputs else loss

    def _record(self, key: str, value: Tensor) -> None:
        # kept as tensors: no device-to-host sync on the training step; `log` turns them into floats
        self._metrics["train"][key].append(value)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None, Tensor | None]:
        """Eval loss, predictions ``(student margins (B, N), mask (B, N))`` and labels = teacher margins."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        mask = outputs["negatives_mask"].float()
        teacher = outputs.get("teacher_margin")
        if teacher is None:  # label-hinge runs without a teacher: agreement with the gold order only
            teacher = torch.ones_like(outputs["student_margin"])
        return loss, (outputs["student_margin"].detach(), mask), teacher.detach()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the means of the recorded training metrics (loss parts, margins) to the Trainer's logs."""
        if "loss" in logs:  # a training log
            for key, values in self._metrics["train"].items():
                if values:
                    logs[key] = torch.stack([v.float() for v in values]).mean().item()
            self._metrics["train"].clear()
        super().log(logs, start_time)

    def evaluate(
        self,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """The Trainer's evaluation, then each extra evaluator (e.g. STS-B dev Spearman), logged as
        ``{prefix}_{name}_{metric}``."""
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        extra = {}
        for name, evaluator in self.evaluators.items():
            for key, value in evaluator(self.model).items():
                extra[f"{metric_key_prefix}_{name}_{key}"] = value
        if extra:
            self.log(extra)
            metrics.update(extra)
        return metrics

    # ---- saving ------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save with ``save_pretrained`` (safetensors); a bi-encoder also gets the sentence-transformers files."""
        super()._save(output_dir, state_dict=state_dict)
        args: MarginDistillConfig = self.args
        output_dir = output_dir if output_dir is not None else args.output_dir
        if args.student_type == "bi-encoder" and self.args.should_save:
            config = self.accelerator.unwrap_model(self.model).config
            write_sentence_transformers_files(
                output_dir,
                hidden_size=config.hidden_size,
                pooling=args.pooling,
                normalize=args.normalize,
                similarity_fn=args.similarity,
                max_length=args.max_length,
            )

    def create_model_card(self, model_name: str | None = None, **kwargs: Any) -> None:
        """Write ``README.md`` (a ``huggingface_hub.ModelCard``) into ``output_dir``; ``push_to_hub`` uploads it."""
        if not self.is_world_process_zero():
            return
        from hf_margin.model_card import build_model_card

        info = dict(self.card_info)
        for key in ("license", "language", "tags"):  # as Trainer.push_to_hub(**kwargs) passes them on
            if kwargs.get(key) is not None:
                info[key] = kwargs[key]
        card = build_model_card(self.args, info, model_name=model_name, log_history=self.state.log_history)
        card.save(os.path.join(self.args.output_dir, "README.md"))

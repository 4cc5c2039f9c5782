"""MarginDistillTrainer: a ``transformers.Trainer`` whose loss distils cached teacher margins."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer

from hf_margin.data.cache import written_whole
from hf_margin.data.columns import (
    POSITIVE,
    QUERY,
    TEACHER_DOCUMENT_EMBEDDINGS,
    TEACHER_MARGINS,
    TEACHER_QUERY_EMBEDDING,
    MarginDistillCollator,
    tokenize_triplets,
    validate_triplets,
)
from hf_margin.data.fresh_negatives import FreshNegatives
from hf_margin.data.margin_scaling import scale_teacher_margins
from hf_margin.data.margins import BAND_MARGINS
from hf_margin.data.teacher_embeddings import EMBEDDING_COLUMNS
from hf_margin.evaluation.metrics import compute_margin_metrics
from hf_margin.models.modeling import state_dict_for_saving, unused_pooler_state
from hf_margin.reporting.card import build_model_card
from hf_margin.reporting.plotting import plot_training_curves
from hf_margin.training.config import MarginDistillConfig
from hf_margin.training.losses import LOSS_REGISTRY, embedding_distance_loss, in_batch_kl_loss

logger = logging.getLogger(__name__)


class MarginDistillTrainer(Trainer):
    """Train a student so that its margins ``Δs = s(q,p) − s(q,n)`` reach the teacher's ``Δt``.

    The loss (``args.loss``, one of :data:`~hf_margin.training.losses.LOSS_REGISTRY`) is computed in
    :meth:`compute_loss` from the student's scores and the cached teacher margins: the adaptive difference loss
    ``φ(g(Δt) − Δs)`` (``adaptive``), ``margin_mse``, ``listwise_kl`` over the positive and negatives, or
    ``label_hinge`` alone; any of them plus ``label_weight · relu(label_margin − Δs)``. The teacher never sits in
    training memory: its margins come from :func:`~hf_margin.attach_teacher_margins` (cached by ``datasets``).

    Args:
        model: the student, a bi-encoder (``AutoModel``) or a cross-encoder (``AutoModelForSequenceClassification``)
            as ``args.student_type`` says; :func:`~hf_margin.load_student` cuts layers from a bigger checkpoint.
        args: :class:`~hf_margin.MarginDistillConfig` (the loss, the student's pooling and lengths, and every
            ``TrainingArguments`` field). Default: ``MarginDistillConfig(output_dir="outputs/hf-margin")``.
        data_collator: default :class:`~hf_margin.MarginDistillCollator` (pads queries apart from documents).
        train_dataset, eval_dataset: rows ``query``, ``positive``, ``negatives`` (``(N,)`` texts) and
            ``teacher_margins`` (``(N,)`` floats), raw (validated and tokenised here, once, with
            ``processing_class``) or already tokenised; or a :class:`~hf_margin.data.fresh_negatives.FreshNegatives`
            train set, whose negatives are drawn anew every epoch from each row's cached band. ``eval_dataset`` may
            be a dict of named sets.
        processing_class: the student's tokenizer.
        compute_metrics: default :func:`~hf_margin.evaluation.metrics.compute_margin_metrics` (margin agreement
            with the teacher on held-out triplets).
        evaluators: ``{name: callable(scorer) -> {metric: value}}`` run at each evaluation (STS, retrieval), their
            figures logged as ``eval_<name>_<metric>``.

    Batches: the loss of a micro-batch is its sum over real negatives divided by their count over the whole
    accumulated (and, across processes, gathered) batch, so gradient accumulation and several processes give the
    large batch's update. ``args.teacher_margin_scaling`` rescales the train and eval margins once, here, with the
    train split's mean and std (``student``: to the student's own margin moments before training), kept in
    ``margin_scaling_stats`` and metrics.json: pass raw margins. :meth:`save_model` writes the student with the
    sentence-transformers files, ``metrics.json``, ``training_curves.png`` and a model card.

    Example::

        from transformers import AutoTokenizer
        from hf_margin import BiEncoderTeacher, MarginDistillConfig, MarginDistillTrainer, attach_teacher_margins
        from hf_margin import load_student

        name = "sentence-transformers/all-MiniLM-L6-v2"
        train = attach_teacher_margins(triplets, BiEncoderTeacher.from_pretrained(name))  # + teacher_margins
        student, tokenizer = load_student(name, layers=[0, 5]), AutoTokenizer.from_pretrained(name)
        args = MarginDistillConfig(output_dir="outputs/student")  # adaptive, dead zone 0.25, lr 4e-4
        MarginDistillTrainer(student, args, train_dataset=train, processing_class=tokenizer).train()
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
        evaluators: Mapping[str, Callable[[Any], dict[str, float]]] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = MarginDistillConfig(output_dir="outputs/hf-margin")
        if not isinstance(args, MarginDistillConfig):
            raise TypeError(f"args must be a MarginDistillConfig, got {type(args).__name__}")
        self.student_kind = args.student_kind  # read once: compute_loss asks it every step
        self.student_kind.check(model)
        train_dataset, eval_dataset = self._scale_teacher_margins(
            model, args, processing_class, train_dataset, eval_dataset
        )
        train_dataset = self._prepare_dataset(train_dataset, args, processing_class, "train")
        if eval_dataset is None and evaluators:  # evaluators alone may drive eval_strategy (no held-out triplets)
            eval_dataset = {}
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, args, processing_class, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._prepare_dataset(eval_dataset, args, processing_class, "eval")
        if data_collator is None:
            pad_id = getattr(processing_class, "pad_token_id", None)
            if pad_id is None:
                pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
            data_collator = MarginDistillCollator(
                pad_token_id=pad_id,
                student_type=args.student_type,
                pad_queries_apart=self.student_kind.is_bi_encoder and self.student_kind.reads_queries_apart,
            )
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
        # name -> evaluator(scorer) -> {metric: value}: run at every evaluation with a scorer of the student
        # (hf_margin.evaluation.evaluators: StsEvaluator, RetrievalEvaluator), logged as eval_{name}_{metric}.
        self.evaluators = dict(evaluators or {})
        # What the model card reports beyond the Trainer's state (teacher, data, evaluation table, model-index
        # results); see `hf_margin.reporting.card.build_model_card`. The application fills it; the Python route may too.
        self.card_info: dict[str, Any] = {}
        # Extra entries of metrics.json (e.g. before/after/teacher tables); written by `save_model`.
        self.results: dict[str, Any] = {}

    # ---- setup -------------------------------------------------------------------------------------

    def _scale_teacher_margins(self, model, args: MarginDistillConfig, processing_class, train_dataset, eval_dataset):
        """The train and eval datasets with ``args.teacher_margin_scaling`` applied to their teacher margins (the
        train split's statistics for every split; 'auto' unresolved is 'none'); sets ``margin_scaling_stats``."""
        how = args.resolve_teacher_margin_scaling()
        self.margin_scaling_stats: dict[str, float] = {}
        fresh = isinstance(train_dataset, FreshNegatives)
        train = train_dataset.triplets if fresh else train_dataset
        if how == "none" or not args.needs_teacher or train is None:
            if how != "none" and train is None:
                logger.warning("teacher_margin_scaling=%r needs a train dataset: no margins rescaled", how)
            return train_dataset, eval_dataset
        if not isinstance(train, Dataset):
            raise ValueError(
                f"teacher_margin_scaling={how!r} reads the train split's margin statistics first: pass a "
                f"datasets.Dataset, not a {type(train).__name__}, or set teacher_margin_scaling='none'"
            )
        if TEACHER_MARGINS not in train.column_names:  # _prepare_dataset says what is missing
            return train_dataset, eval_dataset
        if how == "student" and QUERY not in train.column_names:
            raise ValueError(
                "teacher_margin_scaling='student' measures the student's own margins on the train texts: pass the "
                "train dataset untokenised, with processing_class=tokenizer"
            )
        evals = eval_dataset if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
        splits = {"train": train}
        for name, dataset in evals.items():
            if isinstance(dataset, Dataset) and TEACHER_MARGINS in dataset.column_names:
                splits[f"eval/{name}"] = dataset
        with args.main_process_first(desc="rescaling teacher margins"):
            scaled, self.margin_scaling_stats = scale_teacher_margins(splits, how, model, processing_class, args)
        evals = {name: scaled.get(f"eval/{name}", dataset) for name, dataset in evals.items()}
        train_dataset = train_dataset.with_triplets(scaled["train"]) if fresh else scaled["train"]
        return train_dataset, evals if isinstance(eval_dataset, dict) else evals["eval"]

    @staticmethod
    def _prepare_dataset(dataset, args: MarginDistillConfig, processing_class, name: str):
        if dataset is None:
            return None
        if isinstance(dataset, FreshNegatives):
            return MarginDistillTrainer._prepare_fresh(dataset, args, processing_class, name)
        columns = set(dataset.column_names or [])
        if args.needs_teacher and TEACHER_MARGINS not in columns:
            raise ValueError(
                f"the {name} dataset has no '{TEACHER_MARGINS}' column, which loss='{args.loss}' needs. Run "
                "hf_margin.attach_teacher_margins(dataset, teacher) first, or set loss='label_hinge'."
            )
        if name == "train" and args.needs_teacher_embeddings and not set(EMBEDDING_COLUMNS) <= columns:
            terms = [f"{n}={getattr(args, n)}" for n in ("embedding_weight", "in_batch_weight") if getattr(args, n) > 0]
            raise ValueError(
                f"the {name} dataset has no teacher embeddings ({', '.join(EMBEDDING_COLUMNS)}), which "
                f"{' and '.join(terms)} {'needs' if len(terms) == 1 else 'need'}. Run "
                "hf_margin.attach_teacher_embeddings(dataset, teacher) first, or set it to 0."
            )
        if {QUERY, POSITIVE} <= columns:
            validate_triplets(dataset)
            if processing_class is None:
                raise ValueError(
                    f"the {name} dataset holds raw text: pass processing_class=tokenizer so it can be tokenised "
                    "once, or tokenise it with hf_margin.tokenize_triplets."
                )
            with args.main_process_first(desc=f"tokenizing the {name} dataset"):
                return tokenize_triplets(dataset, processing_class, **args.student_kind.token_options())
        needed = args.student_kind.token_columns
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(
                f"the {name} dataset has neither raw triplets (query, positive, negative[s]) nor the tokenised "
                f"columns {missing} of a {args.student_type}; its columns are {sorted(columns)}."
            )
        return dataset

    @staticmethod
    def _prepare_fresh(dataset: FreshNegatives, args: MarginDistillConfig, processing_class, name: str):
        """Validate the bands and tokenise every candidate once; the pick per epoch happens per item."""
        if name != "train":
            raise ValueError(f"fresh negatives are for training; the {name} dataset must hold fixed negatives")
        if args.needs_teacher_embeddings:
            raise ValueError(
                "embedding_weight and in_batch_weight need the teacher's embedding of each negative, and fresh "
                "negatives are drawn anew every epoch: train on fixed negatives, or set both to 0"
            )
        if args.needs_teacher and not dataset.has_margins:
            raise ValueError(
                f"the {name} dataset's bands have no '{BAND_MARGINS}', which loss='{args.loss}' needs. Run "
                "hf_margin.attach_band_margins(dataset, teacher) first, or set loss='label_hinge'."
            )
        if QUERY not in dataset.column_names:  # tokenised already
            return dataset
        dataset.validate()
        if processing_class is None:
            raise ValueError(f"the {name} dataset holds raw text: pass processing_class=tokenizer")
        with args.main_process_first(desc=f"tokenizing the {name} bands"):
            tokens = dataset.tokenized(processing_class, **args.student_kind.token_options())
        logger.info("Training with %s", tokens.describe())
        return tokens

    def _get_train_sampler(self, train_dataset=None):
        """Fresh negatives: an :class:`EpochSampler` seeded like the Trainer's shuffle (``data_seed``, else ``seed``),
        whose ``(epoch, row)`` keys carry the epoch to every data-loader worker."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(dataset, FreshNegatives):
            if self.args.train_sampling_strategy != "random":
                logger.warning(
                    "train_sampling_strategy=%r is ignored with fresh negatives: rows are shuffled per epoch",
                    self.args.train_sampling_strategy,
                )
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return dataset.sampler(seed=seed)
        return super()._get_train_sampler(train_dataset)

    def _set_signature_columns_if_needed(self) -> None:
        # Keep the tokenised triplet columns and the teacher margins through `remove_unused_columns`.
        if self._signature_columns is None:
            self._signature_columns = [*self.student_kind.token_columns, TEACHER_MARGINS, *EMBEDDING_COLUMNS]

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
        # the train set carries the teacher's embeddings; an eval set may not (its loss is then the margins' alone)
        embed = args.needs_teacher_embeddings and TEACHER_QUERY_EMBEDDING in inputs
        scored = self.student_kind.scores(model, inputs, chunk_size=args.chunk_size, return_embeddings=embed)
        pos, neg = scored[:2]
        student_margin = pos.float().unsqueeze(-1) - neg.float()
        teacher_margin = inputs.get(TEACHER_MARGINS)
        num_items = num_items_in_batch
        if num_items is not None and args.average_tokens_across_devices and args.world_size > 1:
            num_items = num_items / args.world_size
        spec = args.loss_spec
        distill = (
            spec(student_margin, teacher_margin, args, mask=mask, num_items=num_items) if spec.needs_teacher else None
        )
        label_weight = 1.0 if distill is None else args.label_weight
        loss = distill if distill is not None else student_margin.new_zeros(())
        if label_weight > 0:
            label = LOSS_REGISTRY["label_hinge"](student_margin, None, args, mask=mask, num_items=num_items)
            loss = loss + label_weight * label
        # the teacher's embeddings as targets: each term weighted by this micro-batch's share of the step's negatives
        share_of_step = 1.0 if num_items is None else mask.sum() / num_items
        queries, documents = scored[2] if embed else (None, None)
        if embed and args.embedding_weight > 0:
            student_embeddings = torch.cat([queries, documents])
            teacher_embeddings = torch.cat([inputs[TEACHER_QUERY_EMBEDDING], inputs[TEACHER_DOCUMENT_EMBEDDINGS]])
            embedding = embedding_distance_loss(student_embeddings, teacher_embeddings) * share_of_step
            loss = loss + args.embedding_weight * embedding
        if embed and args.in_batch_weight > 0:
            in_batch = in_batch_kl_loss(
                queries,
                documents,
                inputs[TEACHER_QUERY_EMBEDDING],
                inputs[TEACHER_DOCUMENT_EMBEDDINGS],
                temperature=args.in_batch_temperature,
                similarity=args.similarity,
                teacher_similarity=args.in_batch_teacher_similarity,
            )
            in_batch = in_batch * share_of_step
            loss = loss + args.in_batch_weight * in_batch
        if model.training:  # per-micro-batch means for the logs (the loss itself may be a share of a larger batch)
            with torch.no_grad():
                count = mask.sum().clamp_min(1)
                share = 1.0 if num_items is None else num_items / count
                if label_weight > 0:
                    self._record("label_loss", label.detach() * share)
                if distill is not None:
                    self._record("distill_loss", distill.detach() * share)
                if embed and args.embedding_weight > 0:
                    self._record("embedding_loss", embedding.detach() * share)
                if embed and args.in_batch_weight > 0:
                    self._record("in_batch_loss", in_batch.detach() * share)
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
        if not eval_dataset and not self.eval_dataset:  # evaluators only (no held-out triplets)
            metrics: dict[str, float] = {}
        else:
            metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        extra = {}
        if self.evaluators:
            scorer = self.student_kind.scorer(self.accelerator.unwrap_model(self.model), self.processing_class)
            for name, evaluator in self.evaluators.items():
                for key, value in evaluator(scorer).items():
                    extra[f"{metric_key_prefix}_{name}_{key}"] = value
        if extra:
            self.log(extra)
            metrics.update(extra)
        return metrics

    # ---- saving ------------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save with ``save_pretrained`` (safetensors, with a zero pooler where the student has none, so that it loads
        without a "MISSING" report); a bi-encoder also gets the sentence-transformers files."""
        model = self.accelerator.unwrap_model(self.model)
        if isinstance(model, PreTrainedModel) and unused_pooler_state(model):
            state_dict = state_dict_for_saving(model, state_dict)
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            self.student_kind.save_extras(self.accelerator.unwrap_model(self.model), output_dir)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student; into ``output_dir`` (not a checkpoint) also ``metrics.json``, ``training_curves.png``
        and the model card ``README.md``, so every route (Python, CLI, ``push_to_hub``) writes the same files."""
        super().save_model(output_dir, _internal_call=True)
        final = output_dir is None or Path(output_dir).resolve() == Path(self.args.output_dir).resolve()
        if final and self.is_world_process_zero():
            self.write_artifacts()
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="hf-margin: distilled student", revision=self.args.hub_revision)

    def summary_metrics(self) -> dict[str, Any]:
        """What ``metrics.json`` holds: loss and options, the last training and evaluation figures, and
        ``self.results`` (tables the application adds, e.g. before/after/teacher)."""
        args: MarginDistillConfig = self.args
        history = self.state.log_history
        train = next((dict(h) for h in reversed(history) if "train_runtime" in h), {})
        last_eval = next((dict(h) for h in reversed(history) if any(k.startswith("eval_") for k in h)), {})
        return {
            "model": args.hub_model_id or args.output_dir,
            "run_name": args.run_name,
            "loss": args.loss,
            "loss_options": args.loss_spec.card_options(args),
            "student": {"type": args.student_type, "similarity": args.similarity, "pooling": args.pooling},
            "teacher_margin_scaling": self.margin_scaling_stats,
            "global_step": self.state.global_step,
            "train": train,
            "eval": last_eval,
            **self.results,
        }

    def write_artifacts(self, output_dir: str | os.PathLike | None = None) -> None:
        """Write ``metrics.json`` (atomically), ``training_curves.png`` and ``README.md`` into ``output_dir``."""
        out = Path(output_dir if output_dir is not None else self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", self.summary_metrics())
        plot_training_curves(
            self.state.log_history,
            out / "training_curves.png",
            title=self.args.run_name or "",
            logging_steps=self.args.logging_steps,
        )
        self.create_model_card()

    def create_model_card(self, model_name: str | None = None, **kwargs: Any) -> None:
        """Write ``README.md`` (a ``huggingface_hub.ModelCard``) into ``output_dir``; ``push_to_hub`` uploads it."""
        if not self.is_world_process_zero():
            return
        info = dict(self.card_info)
        for key in ("license", "language", "tags"):  # as Trainer.push_to_hub(**kwargs) passes them on
            if kwargs.get(key) is not None:
                info[key] = kwargs[key]
        card = build_model_card(self.args, info, model_name=model_name, log_history=self.state.log_history)
        card.save(os.path.join(self.args.output_dir, "README.md"))


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it: a killed run leaves no half file."""
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")

"""Training options: :class:`MarginDistillConfig`, a ``transformers.TrainingArguments`` with the loss's options."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from hf_margin.data.margin_scaling import SCALINGS
from hf_margin.models.kind import StudentKind
from hf_margin.models.modeling import POOLINGS, SIMILARITIES, STUDENT_TYPES
from hf_margin.training.losses import ACTIVATIONS, LOSS_REGISTRY, TEACHER_ACTIVATIONS, LossSpec

logger = logging.getLogger(__name__)

LOSSES: tuple[str, ...] = tuple(LOSS_REGISTRY)
MARGIN_SCALINGS: tuple[str, ...] = ("auto", *SCALINGS)
# The library's defaults are the best measured settings (BENCHMARKS.md sections 8 and 9): the adaptive family's
# best arm on STS-B dev (two-sided dead zone 0.25), its learning rate, batch and epochs.
DEFAULT_OVERSHOOT_WIDTH = 0.25
DEFAULT_LEARNING_RATE = 4e-4
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 2.0
CPU_CHUNK_SIZE = 32  # length-sorted forward chunks on a CPU (benchmarks/speed.py)
GPU_LOADER_WORKERS = 2  # collation off the training loop on a GPU (benchmarks/gpu.py)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class MarginDistillConfig(TrainingArguments):
    """``TrainingArguments`` plus the options of :class:`~hf_margin.MarginDistillTrainer`.

    Every field is a command-line flag through ``HfArgumentParser`` and a key of a recipe YAML.

    Parameters:
        > Loss (the registry ``hf_margin.LOSS_REGISTRY`` says which options each loss reads)

        loss (`str`, default `"adaptive"`): `adaptive`, `margin_mse`, `listwise_kl` or `label_hinge`.
        activation, teacher_activation, temperature, scale, beta: φ and g of the adaptive loss (φ(g(Δt) − Δs)).
        overshoot_width (`float` or `None`, default `0.25`, **changed**: was `None`, the one-sided hinge):
            the two-sided dead zone `[g, g + ρ·|g|]`; the adaptive family's best arm on STS-B dev.
        mse_weight, label_weight, label_margin, student_temperature: loss variants and the gold-label hinge mix.
        embedding_weight (`float`, default `0`): add this times the cosine distance between the student's and the
            teacher's embedding of every text of the batch (the data needs the teacher's embeddings:
            `attach_teacher_embeddings`); a bi-encoder teacher of the student's width, e.g. the model it was cut from.
        in_batch_weight (`float`, default `0`), in_batch_temperature (`float`, default `0.1`): add this times the
            KL between the teacher's and the student's softmax over every document of the micro-batch, per query
            (`in_batch_kl_loss`, from the same cached embeddings); any teacher width. in_batch_teacher_similarity
            (`str` or `None`): how the teacher's embeddings are scored; unset: `similarity` (`hf-margin train` sets
            the teacher's `--teacher_similarity`).
        teacher_margin_scaling (`str`, default `"auto"`): one global rescaling of the teacher margins (the loss's
            target), which the trainer applies to its train and eval datasets before training, with the train
            split's mean and std: `none`, `zscore` (mean 0, std 1) or `student` (then the student's own margin
            mean and std before training). `auto` is `student` for a cross-encoder teacher and `none` otherwise;
            the trainer does not know the teacher, so there `auto` is `none` unless
            :meth:`resolve_teacher_margin_scaling` was told the teacher's type (as `hf-margin train` does).

        > Student

        student_type, similarity, pooling, normalize: how the student scores (bi- or cross-encoder).
        max_length (`int`, default `128`): tokens per text (per joined pair for a cross-encoder).
        query_max_length, document_max_length, query_prompt, document_prompt: queries and documents read apart
            (each its own length and prompt; prompts saved for sentence-transformers' `encode_query`).
        forward_chunk_size: length-sorted chunks on a CPU (`auto`).

        > Training (defaults that differ from `TrainingArguments`')

        learning_rate (`float`, default `4e-4`, **changed**: `5e-5` there), per_device_train_batch_size (`int`,
            default `32`, **changed**: `8`), num_train_epochs (`float`, default `2`, **changed**: `3`): chosen
            on STS-B dev for the 2-layer student (BENCHMARKS.md sections 8 and 9).
        gpu_defaults (`bool`, default `True`): on a CUDA GPU turns on bf16, 2 persistent loader workers and pinned
            memory and drops the per-step NaN filter, unless the recipe sets them; no effect on a CPU.

    Example:
        ```python
        args = MarginDistillConfig(output_dir="outputs/demo", report_to="none")  # adaptive, dead zone 0.25, lr 4e-4
        args = MarginDistillConfig(output_dir="outputs/mse", loss="margin_mse", query_max_length=64, max_length=256)
        ```
    """

    # Defaults changed from TrainingArguments': the best settings measured (BENCHMARKS.md sections 8 and 9).
    learning_rate: float = field(
        default=DEFAULT_LEARNING_RATE,
        metadata={
            "help": f"Peak AdamW learning rate (default {DEFAULT_LEARNING_RATE}, chosen on STS-B dev for the "
            "2-layer student; TrainingArguments' own is 5e-5)."
        },  # fmt: skip
    )
    per_device_train_batch_size: int = field(
        default=DEFAULT_BATCH_SIZE,
        metadata={"help": f"Triplets per device and step (default {DEFAULT_BATCH_SIZE}; TrainingArguments': 8)."},
    )
    num_train_epochs: float = field(
        default=DEFAULT_EPOCHS,
        metadata={"help": f"Epochs (default {DEFAULT_EPOCHS}, chosen on STS-B dev; TrainingArguments': 3)."},
    )
    loss: str = field(
        default="adaptive",
        metadata={
            "help": "Distillation loss: 'adaptive' (φ(g(Δt) − Δs), the teacher margin as a per-example hinge "
            "margin), 'margin_mse' ((Δs − Δt)², Hofstätter et al. 2020), 'listwise_kl' (KL of the softmax over "
            "[positive, negatives], as sentence-transformers' DistillKLDivLoss) or 'label_hinge' "
            "(relu(label_margin − Δs), no teacher).",
            "choices": LOSSES,
        },
    )
    activation: str = field(
        default="relu",
        metadata={
            "help": "φ of the adaptive loss: 'relu' (hinge), 'softplus' (smooth hinge) or 'squared_relu' "
            "(squared hinge relu(x)²).",
            "choices": ACTIVATIONS,
        },
    )
    teacher_activation: str = field(
        default="identity",
        metadata={
            "help": "a in g(Δt) = scale · a(Δt / temperature): 'identity', 'sigmoid' or 'tanh'.",
            "choices": TEACHER_ACTIVATIONS,
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Temperature of g, and of the teacher's softmax for listwise_kl; must be > 0."}
    )
    student_temperature: float | None = field(
        default=None,
        metadata={"help": "listwise_kl: temperature of the student's softmax; unset = the teacher's (temperature)."},
    )
    scale: float = field(default=1.0, metadata={"help": "Scale of g: the largest target margin for sigmoid/tanh."})
    beta: float = field(default=1.0, metadata={"help": "Sharpness of softplus, log(1 + exp(β·x)) / β; must be > 0."})
    overshoot_width: float | None = field(
        default=DEFAULT_OVERSHOOT_WIDTH,
        metadata={
            "help": "Adaptive loss: two-sided with a dead zone [g, g + ρ·|g|] (ρ = this value) whose width is set by "
            f"the teacher margin; overshooting it is penalised by φ too. Default {DEFAULT_OVERSHOOT_WIDTH}: the "
            "adaptive family's best arm on STS-B dev (BENCHMARKS.md section 8). none: the one-sided hinge (the "
            "method as first shipped, 6 points behind there)."
        },
    )
    mse_weight: float = field(
        default=0.0,
        metadata={"help": "Adaptive loss variant: add mse_weight · (g(Δt) − Δs)² to the hinge; 0 turns it off."},
    )
    label_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the gold-label hinge added to the distillation loss; 0 turns it off."},
    )
    embedding_weight: float = field(
        default=0.0,
        metadata={
            "help": "Add embedding_weight · (1 − cos) between the student's and the teacher's embedding of each text "
            "of a batch (query, positive, negatives) to the loss: the teacher's geometry as a target, not only its "
            "margins. Needs a bi-encoder teacher of the student's width (the model a cut student came from); 0 "
            "turns it off. BENCHMARKS.md section 10 (ninth round)."
        },
    )
    in_batch_weight: float = field(
        default=0.0,
        metadata={
            "help": "Add in_batch_weight · KL(teacher ‖ student) · τ² of each query's softmax over every document of "
            "the micro-batch (in_batch_kl_loss) to the loss: scores against the other rows' documents too, from the "
            "teacher's cached embeddings. Any bi-encoder teacher width (mpnet into a cut MiniLM); 0 turns it off."
        },
    )
    in_batch_temperature: float = field(
        default=0.1, metadata={"help": "Softmax temperature of the in-batch term (in_batch_weight)."}
    )
    in_batch_teacher_similarity: str | None = field(
        default=None,
        metadata={
            "help": "In-batch term: 'cosine' or 'dot' on the teacher's cached embeddings, as the teacher scores its "
            "margins. Unset: the student's similarity (hf-margin train: the teacher's --teacher_similarity).",
            "choices": SIMILARITIES,
        },
    )
    label_margin: float = field(
        default=0.1, metadata={"help": "Fixed margin of the label hinge relu(label_margin − Δs)."}
    )
    teacher_margin_scaling: str = field(
        default="auto",
        metadata={
            "help": "One global rescaling of the teacher margins before training, with the train split's mean and "
            "std: 'none', 'zscore' (mean 0, std 1), 'student' (z-score, then the student's own margin mean and "
            "std before training) or 'auto' (default): 'student' for a cross-encoder teacher, whose logits are "
            "not on the student's cosine scale, else 'none' (BENCHMARKS.md section 8).",
            "choices": MARGIN_SCALINGS,
        },
    )
    student_type: str = field(
        default="bi-encoder",
        metadata={
            "help": "'bi-encoder' (pooled embeddings compared by `similarity`) or 'cross-encoder' (one logit on "
            "the joined pair).",
            "choices": STUDENT_TYPES,
        },
    )
    similarity: str = field(
        default="cosine",
        metadata={"help": "Bi-encoder score: 'cosine' or 'dot' of pooled embeddings.", "choices": SIMILARITIES},
    )
    pooling: str = field(
        default="mean", metadata={"help": "Bi-encoder pooling: 'mean' over tokens or 'cls'.", "choices": POOLINGS}
    )
    normalize: bool = field(
        default=False,
        metadata={"help": "L2-normalise bi-encoder embeddings (also written as a Normalize module for ST)."},
    )
    forward_chunk_size: str = field(
        default="auto",
        metadata={
            "help": "Run a batch's texts (or pairs) through the student in length-sorted chunks of this many rows, "
            "each padded only to its own longest row (same outputs, less padding); 0 = one padded pass; 'auto' = "
            f"chunks of {CPU_CHUNK_SIZE} on a CPU (2.3x faster there), one pass on an accelerator (no per-chunk "
            "launches)."
        },
    )
    max_length: int = field(default=128, metadata={"help": "Truncate every text (or joined pair) to this many tokens."})
    query_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Bi-encoder: truncate queries to this many tokens (short queries, long documents); unset: "
            "max_length. Queries are then padded apart from documents."
        },  # fmt: skip
    )
    document_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Bi-encoder: truncate positives and negatives (documents) to this many tokens; unset: "
            "max_length. Saved as the student's max_seq_length."
        },  # fmt: skip
    )
    query_prompt: str = field(
        default="",
        metadata={
            "help": "Bi-encoder: prefix of every query (E5/BGE style, e.g. 'query: '); saved as the "
            "sentence-transformers prompt 'query' (SentenceTransformer.encode_query prepends it)."
        },  # fmt: skip
    )
    document_prompt: str = field(
        default="",
        metadata={
            "help": "Bi-encoder: prefix of every document (e.g. 'passage: '); saved as the prompt 'document' "
            "(SentenceTransformer.encode_document)."
        },  # fmt: skip
    )
    gpu_defaults: bool = field(
        default=True,
        metadata={
            "help": "On a CUDA GPU: bf16 mixed precision where the card supports it (unless --fp16/--bf16 is "
            f"given), {GPU_LOADER_WORKERS} persistent data-loader workers (unless dataloader_num_workers > 0), "
            "pinned memory, and no logging_nan_inf_filter (it reads every step's loss on the host). "
            "false keeps the Trainer's defaults there (fp32, collation on the main process). No effect on a CPU."
        },
    )

    def __post_init__(self) -> None:
        _choice("loss", self.loss, LOSSES)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("teacher_activation", self.teacher_activation, TEACHER_ACTIVATIONS)
        _choice("teacher_margin_scaling", self.teacher_margin_scaling, MARGIN_SCALINGS)
        _ = self.student_kind  # validates student_type, similarity and pooling
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")
        if self.student_temperature is not None and self.student_temperature <= 0:
            raise ValueError(f"student_temperature must be > 0; got {self.student_temperature}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0; got {self.beta}")
        if self.overshoot_width is not None and self.overshoot_width < 0:
            raise ValueError(f"overshoot_width must be >= 0 or unset; got {self.overshoot_width}")
        if self.mse_weight < 0:
            raise ValueError(f"mse_weight must be >= 0; got {self.mse_weight}")
        if self.label_weight < 0:
            raise ValueError(f"label_weight must be >= 0; got {self.label_weight}")
        if self.embedding_weight < 0:
            raise ValueError(f"embedding_weight must be >= 0; got {self.embedding_weight}")
        if self.embedding_weight > 0 and self.student_type != "bi-encoder":
            raise ValueError("embedding_weight distils embeddings: it needs a bi-encoder student (and teacher)")
        if self.in_batch_weight < 0:
            raise ValueError(f"in_batch_weight must be >= 0; got {self.in_batch_weight}")
        if self.in_batch_temperature <= 0:
            raise ValueError(f"in_batch_temperature must be > 0; got {self.in_batch_temperature}")
        if self.in_batch_teacher_similarity is not None:
            _choice("in_batch_teacher_similarity", self.in_batch_teacher_similarity, SIMILARITIES)
        if self.in_batch_weight > 0 and self.student_type != "bi-encoder":
            raise ValueError("in_batch_weight scores embeddings: it needs a bi-encoder student (and teacher)")
        if str(self.forward_chunk_size) != "auto":
            try:
                self.forward_chunk_size = int(self.forward_chunk_size)
            except ValueError:
                raise ValueError(
                    f"forward_chunk_size must be 'auto' or an integer; got {self.forward_chunk_size!r}"
                ) from None
            if self.forward_chunk_size < 0:
                raise ValueError(f"forward_chunk_size must be >= 0 or 'auto'; got {self.forward_chunk_size}")
        for name in ("max_length", "query_max_length", "document_max_length"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"{name} must be >= 2; got {value}")
        if self.gpu_defaults and not self.use_cpu and torch.cuda.is_available():
            self._apply_gpu_defaults()
        super().__post_init__()

    def _apply_gpu_defaults(self) -> None:
        """bf16, loader workers and pinned memory on a CUDA GPU (``gpu_defaults``); explicit choices win."""
        if not (self.bf16 or self.fp16) and torch.cuda.is_bf16_supported():
            self.bf16 = True
        if self.dataloader_num_workers == 0:
            self.dataloader_num_workers = GPU_LOADER_WORKERS
            self.dataloader_persistent_workers = True
        self.dataloader_pin_memory = True  # page-locked batches: the host-to-GPU copy runs asynchronously
        self.logging_nan_inf_filter = False  # the filter reads every step's loss on the host: a sync per step

    def resolve_teacher_margin_scaling(self, teacher_type: str | None = None) -> str:
        """Resolve ``teacher_margin_scaling='auto'`` in place by the teacher's type, with a log line: 'student' for
        a cross-encoder teacher (its logits are not on the student's cosine scale), else 'none' (also when the
        type is unknown, as in :class:`~hf_margin.MarginDistillTrainer`). Returns the scaling."""
        if self.teacher_margin_scaling == "auto":
            self.teacher_margin_scaling = "student" if teacher_type == "cross-encoder" else "none"
            why = {
                "cross-encoder": "a cross-encoder teacher's logits are not on the student's scale",
                None: "the trainer does not know the teacher (set 'student' for a cross-encoder teacher)",
            }.get(teacher_type, f"a {teacher_type} teacher scores on the student's scale")
            logger.info("teacher_margin_scaling 'auto' is '%s': %s", self.teacher_margin_scaling, why)
        return self.teacher_margin_scaling

    @property
    def chunk_size(self) -> int:
        """``forward_chunk_size`` resolved for this run's device: 'auto' is chunks on a CPU, one pass elsewhere."""
        if self.forward_chunk_size == "auto":
            return CPU_CHUNK_SIZE if self.device.type == "cpu" else 0
        return int(self.forward_chunk_size)

    @property
    def loss_spec(self) -> LossSpec:
        """The registry entry of ``loss``: function, options and card label."""
        return LOSS_REGISTRY[self.loss]

    @property
    def needs_teacher(self) -> bool:
        """Whether the loss reads teacher margins (every loss but the label hinge alone)."""
        return self.loss_spec.needs_teacher

    @property
    def needs_teacher_embeddings(self) -> bool:
        """Whether the train set must carry the teacher's embeddings (``embedding_weight`` or ``in_batch_weight``)."""
        return self.embedding_weight > 0 or self.in_batch_weight > 0

    @property
    def student_kind(self) -> StudentKind:
        """The student's kind and scoring options (bi-/cross-encoder, pooling, similarity, length)."""
        return StudentKind(
            self.student_type,
            self.pooling,
            self.similarity,
            self.normalize,
            self.document_max_length or self.max_length,
            query_max_length=self.query_max_length,
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
        )

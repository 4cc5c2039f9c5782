"""The options of ``hf-margin train`` / ``evaluate`` / ``score-teacher`` beside
:class:`~hf_margin.MarginDistillConfig`: teacher and student (:class:`ModelArguments`), training data
(:class:`DataArguments`, made of the groups in :mod:`hf_margin.app.data_options`) and evaluation
(:class:`EvalArguments`); :class:`UserError`, the one-line mistake. :mod:`hf_margin.app.recipes` reads a recipe
into them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hf_margin.app.data_options import DataSourceOptions, MiningOptions, TeacherBuiltOptions
from hf_margin.app.errors import UserError
from hf_margin.data.search import SEARCH_INDEXES, SEARCHES, SearchOptions, search_device

logger = logging.getLogger(__name__)

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class ModelArguments:
    """Teacher and student."""

    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Teacher: a Hub id or a local directory (offline, packaged copies are used). Unset: "
            f"{DEFAULT_TEACHER} for data without teacher scores; data that carries scores loads no teacher."
        },
    )
    teacher_type: str = field(
        default="bi-encoder",
        metadata={
            "help": "'bi-encoder' (pooled embeddings) or 'cross-encoder' (one logit).",
            "choices": ["bi-encoder", "cross-encoder"],
        },
    )
    teacher_ensemble: list[str] | None = field(
        default=None,
        metadata={
            "help": "More bi-encoder teachers (Hub ids or local directories): the teacher's score becomes the mean "
            "of --teacher's and theirs, e.g. a bigger teacher with the student's own family. Each embeds with its "
            "own tokenizer, with the teacher's pooling; cosine scores only."
        },
    )
    teacher_pooling: str = field(default="mean", metadata={"help": "Bi-encoder teacher pooling: 'mean' or 'cls'."})
    teacher_similarity: str = field(default="cosine", metadata={"help": "Bi-encoder teacher score: 'cosine' or 'dot'."})
    teacher_sigmoid: bool = field(default=False, metadata={"help": "Cross-encoder teacher: sigmoid of the logit."})
    teacher_batch_size: int = field(default=128, metadata={"help": "Pairs or texts per teacher forward pass."})
    rescore: bool = field(
        default=False,
        metadata={"help": "Score data that already carries teacher scores with --teacher anyway (replacing them)."},
    )
    student: str | None = field(
        default=None,
        metadata={
            "help": "Student checkpoint (Hub id or local directory); default: the teacher's. Required when no "
            "teacher is loaded."
        },
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Keep only these transformer layers of the student checkpoint, e.g. 0 1 (DistilBERT-style)."},
    )
    student_attention_dropout: float | None = field(
        default=None,
        metadata={
            "help": "Dropout on the student's attention probabilities while training; unset: the checkpoint's. 0 "
            "lets a CPU run attention fused: 37%% faster steps at 256 tokens (BENCHMARKS.md section 10)."
        },
    )
    embedding_teacher: str | None = field(
        default=None,
        metadata={
            "help": "With --embedding_weight or --in_batch_weight: the bi-encoder whose embeddings the student "
            "learns, e.g. the model a cut student came from beside a bigger or mean-score teacher that gives the "
            "margins. Unset: the teacher (an ensemble gives --in_batch_weight its mean scores)."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})

    def __post_init__(self) -> None:
        if self.student_attention_dropout is not None and not 0 <= self.student_attention_dropout < 1:
            raise UserError(f"student_attention_dropout must be in [0, 1); got {self.student_attention_dropout}")
        if self.teacher_ensemble and (self.teacher_type != "bi-encoder" or self.teacher_similarity != "cosine"):
            raise UserError(
                "teacher_ensemble averages bi-encoders' cosine scores: drop it, or use a bi-encoder teacher with "
                "teacher_similarity cosine"
            )


@dataclass
class DataArguments(MiningOptions, TeacherBuiltOptions, DataSourceOptions):
    """Training data: your own (a file or a dataset) or the STS-B task; negatives; teacher-margin cache."""

    # The bases are listed last group first: a dataclass puts its last base's fields first, so the options keep
    # their order (source, teacher-built, mining, then these) in --help and in metrics.json.
    max_train_examples: int | None = field(default=None, metadata={"help": "Use at most this many training triplets."})
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache of mined negatives and teacher margins; default $HF_DATASETS_CACHE/hf_margin."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "STS-B task: folder with sts-{train,dev,test}.csv or a Hub id; unset: the shipped copy."},
    )

    def __post_init__(self) -> None:
        own = self.train_file or self.dataset_name
        if self.train_file and self.dataset_name:
            raise UserError("give train_file or dataset_name, not both")
        chosen = self.task
        if self.task == "auto":
            self.task = "data" if own or self.query_file or self.query_generator else "stsb"
        if self.query_file and self.unlabelled_file and self.unlabelled_file != "stsb:train":
            raise UserError(
                "give query_file (queries ranked against corpus_file) or unlabelled_file (each text a query of the "
                "others), not both"
            )
        if self.title_queries < -1:
            raise UserError(f"title_queries must be -1 (all), 0 (none) or a count; got {self.title_queries}")
        if self.title_queries and self.task != "retrieval":
            raise UserError("title_queries reads the titles of a BEIR corpus: use it with --task retrieval")
        if self.query_file and self.task == "stsb":
            raise UserError("query_file ranks a corpus for each query: use it with task data or retrieval")
        if (self.query_file or self.query_generator) and self.task == "data" and not self.corpus_file:
            raise UserError(
                f"{'query_file ' + self.query_file if self.query_file else 'query_generator'} needs the documents to "
                "rank: add --corpus_file (one text per line, jsonl with 'text', or a BEIR corpus.jsonl)"
            )
        if self.query_generator and self.task == "stsb":
            raise UserError("query_generator writes queries for a corpus: use it with task data or retrieval")
        if self.queries_per_document < 1:
            raise UserError(f"queries_per_document must be >= 1; got {self.queries_per_document}")
        if self.task == "retrieval":
            if own:
                raise UserError(
                    "the retrieval task trains on its folder's queries and corpus (add gold pairs with gold_split): "
                    "drop train_file/dataset_name, or use task data"
                )
            if self.unlabelled_file == "stsb:train":  # a recipe's STS-B corpus mode does not belong here
                self.unlabelled_file = None
            if self.unlabelled_file:
                raise UserError(
                    "the retrieval task builds triplets from query_file and its corpus: drop unlabelled_file"
                )
        elif self.gold_split or self.dev_split:
            raise UserError(
                "gold_split and dev_split name qrels splits of the retrieval task: use them with task retrieval"
            )
        if self.unlabelled_file == "stsb:train" and self.task != "stsb":
            if chosen != "auto":
                raise UserError(
                    "unlabelled_file 'stsb:train' is the STS-B task's train sentences: use it with task stsb"
                )
            # the default recipe's corpus mode belongs to STS-B; own data given beside it replaces the task
            logger.warning(
                "Your data replaces the STS-B task, so the recipe's unlabelled_file 'stsb:train' is not used; "
                "--unlabelled_file FILE adds corpus mode on your own texts"
            )
            self.unlabelled_file = None
        if self.task == "data" and not (own or self.unlabelled_file or self.query_file or self.query_generator):
            raise UserError(
                "task 'data' needs --train_file FILE, --dataset_name NAME, --unlabelled_file FILE or --query_file FILE"
            )
        if self.positives_per_query < 1:
            raise UserError(f"positives_per_query must be >= 1; got {self.positives_per_query}")
        if self.task == "stsb" and own:
            raise UserError(
                "task 'stsb' trains on STS-B, but --train_file/--dataset_name was given: drop `task: stsb` (or pass "
                "--task data) to train on your data"
            )
        if self.num_negatives < 1:
            raise UserError(f"num_negatives must be >= 1; got {self.num_negatives}")
        if self.search not in SEARCHES or self.search_index not in SEARCH_INDEXES:
            raise UserError(
                f"search must be one of {list(SEARCHES)} and search_index one of {list(SEARCH_INDEXES)}; got "
                f"{self.search!r} and {self.search_index!r}"
            )
        try:  # the form, and a GPU that is visible: refused before anything is embedded
            search_device(SearchOptions(device=self.search_device))
        except ValueError as err:
            raise UserError(f"search_device: {err}") from None
        for name, least in (("nprobe", 1), ("ef_search", 1), ("search_check", 0), ("embedding_shard_size", 1)):
            if getattr(self, name) < least:
                raise UserError(f"{name} must be >= {least}; got {getattr(self, name)}")
        if not 0 <= self.skip_top < self.sample_from or self.sample_from - self.skip_top < self.num_negatives:
            raise UserError(
                f"mining samples num_negatives={self.num_negatives} from ranks [skip_top={self.skip_top}, "
                f"sample_from={self.sample_from}): need 0 <= skip_top and sample_from - skip_top >= num_negatives"
            )


@dataclass
class EvalArguments:
    """Evaluation on your data, during training, at the end and by `hf-margin evaluate`."""

    sts_eval_file: str | None = field(
        default=None,
        metadata={"help": "STS pairs (csv/tsv/jsonl with sentence1, sentence2, score): Spearman and Pearson x100."},
    )
    ir_eval_dir: str | None = field(
        default=None,
        metadata={
            "help": "Retrieval set in BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): MRR@10, "
            "nDCG@10, Recall@10 and @100 by exact search."
        },
    )
    ir_split: str = field(default="test", metadata={"help": "The qrels split of ir_eval_dir."})
    backend: str = field(
        default="torch",
        metadata={
            "help": "evaluate: run the student in PyTorch, or the ONNX model `hf-margin export` wrote (onnx: "
            "onnx/model.onnx; onnx-O2: onnx/model_O2.onnx, fused for onnxruntime; onnx-int8: onnx/model_qint8.onnx) "
            "through onnxruntime on the CPU.",
            "choices": ["torch", "onnx", "onnx-O2", "onnx-int8"],
        },
    )
    eval_teacher: bool = field(
        default=True,
        metadata={
            "help": "Evaluate the teacher too (its row of the summary and card); false saves its corpus "
            "embedding on a rerun. Its encoding speed is measured either way (unless --measure_speed false)."
        },  # fmt: skip
    )
    eval_before: bool = field(
        default=True,
        metadata={
            "help": "train: evaluate the untrained student too (the 'before' row of the summary and card); false "
            "saves one evaluation pass where it cannot change, e.g. across the runs of a learning-rate search."
        },
    )
    measure_speed: bool = field(
        default=True,
        metadata={
            "help": "train: time the student's and the teacher's encoding (the card's speed line, metrics.json "
            "'speed'); false skips it, e.g. across the runs of a learning-rate search."
        },
    )

"""Recipe arguments: the options of ``hf-margin train`` / ``evaluate`` / ``score-teacher`` beside
:class:`~hf_margin.MarginDistillConfig`, and reading a recipe YAML into them (``HfArgumentParser``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_margin.data.margin_scaling import SCALINGS
from hf_margin.data.search import SEARCH_INDEXES, SEARCHES, SearchOptions
from hf_margin.training.config import MarginDistillConfig
from hf_margin.training.losses import LOSS_REGISTRY

logger = logging.getLogger(__name__)

DEFAULT_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = ("auto", "stsb", "data", "retrieval")


class UserError(ValueError):
    """A mistake in the command, recipe or data, reported in one line (exit status 2) by the CLI."""


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
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})


@dataclass
class DataArguments:
    """Training data: your own (a file or a dataset) or the STS-B task; negatives; teacher-margin cache."""

    task: str = field(
        default="auto",
        metadata={
            "help": "'stsb' (the STS Benchmark task), 'data' (your train_file / dataset_name, or unlabelled text "
            "alone), 'retrieval' (a corpus in BEIR layout, data_dir; unset: the shipped SciFact), or 'auto': 'data' "
            "when train_file, dataset_name, query_file or unlabelled_file is given, else 'stsb'.",
            "choices": list(TASKS),
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training rows: .jsonl, .json, .csv, .tsv or .parquet. Formats: query/positive/negatives "
            "(or negative); sentence-transformers anchor/positive/negative_1..n (+ label of margins); "
            "FlagEmbedding query/pos/neg (+ pos_scores/neg_scores); or pairs query/positive (negatives mined)."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out rows in a training format: eval loss and margin agreement."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Instead of train_file: a Hub dataset id, a local dataset folder or a save_to_disk folder."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of dataset_name."})
    train_split: str = field(default="train", metadata={"help": "Split of dataset_name to train on."})
    validation_split: str | None = field(default=None, metadata={"help": "Split of dataset_name to hold out."})
    column_map: str | None = field(
        default=None,
        metadata={"help": 'Rename your columns first: JSON {"your_column": "query", ...} or your=query,...'},
    )
    corpus_file: str | None = field(
        default=None,
        metadata={
            "help": "Pairs-only data: mine negatives from this corpus (one text per line, jsonl with 'text', "
            "or a BEIR corpus.jsonl). Default: the data's own positives."
        },
    )
    unlabelled_file: str | None = field(
        default=None,
        metadata={
            "help": "Corpus mode: unlabelled texts (one per line, jsonl with 'text', or a BEIR corpus.jsonl; "
            "'stsb:train' = the STS-B train sentences) from which the teacher builds triplets: each text a query, "
            "its nearest neighbours the positives, negatives from ranks [skip_top, sample_from). Mixed with the "
            "labelled data when there is some (task data without a train file: corpus triplets only)."
        },
    )
    query_file: str | None = field(
        default=None,
        metadata={
            "help": "Query-corpus mode: unlabelled queries (one per line, jsonl with 'text', or a BEIR "
            "queries.jsonl). The teacher (or --miner) ranks corpus_file's documents for each: its top "
            "positives_per_query are the positives, negatives come from ranks [skip_top, sample_from). Mixed with "
            "labelled data when there is some. The retrieval task defaults it to its folder's unlabelled.txt."
        },
    )
    query_generator: str | None = field(
        default=None,
        metadata={
            "help": "Query-corpus mode without a query log: a seq2seq checkpoint (Hub id or folder, e.g. a doc2query "
            "T5) writes queries_per_document queries for each corpus_file document (sampled, cached); they join "
            "query_file's queries, if any, and go through the same ranking."
        },
    )
    queries_per_document: int = field(default=3, metadata={"help": "query_generator: queries written per document."})
    title_queries: int = field(
        default=0,
        metadata={
            "help": "Retrieval task: also use this many document titles (corpus.jsonl 'title' of at least 4 words; "
            "a fixed seeded sample, -1: all) as unlabelled queries, ranked like the others. No label is read: a "
            "title is a short, query-like text, and its own abstract is usually, not always, the teacher's top "
            "document. On SciFact 2,200 titles beside the 1,101 claims gave nDCG@10 59.61 against 57.91 "
            "(BENCHMARKS.md section 10), at 3x the training time."
        },
    )
    min_positive_score: float | None = field(
        default=None,
        metadata={
            "help": "Query-corpus mode: a positive needs at least this teacher (miner) score, else it is dropped; a "
            "query left without a positive is dropped as ambiguous. STS-B task: the gold score (0-5) a pair "
            "needs to be a positive (unset: 3)."
        },
    )
    min_positive_margin: float | None = field(
        default=None,
        metadata={
            "help": "Query-corpus mode: a positive must lead the document at rank max(skip_top, "
            "positives_per_query) (the first negative candidate) by this much, else it is dropped (ambiguous)."
        },
    )
    gold_split: str | None = field(
        default=None,
        metadata={"help": "Retrieval task: also train on the relevant pairs of qrels/<gold_split>.tsv (e.g. train)."},
    )
    dev_split: str | None = field(
        default=None,
        metadata={"help": "Retrieval task: evaluate qrels/<dev_split>.tsv during training (eval_strategy)."},
    )
    positives_per_query: int = field(
        default=1, metadata={"help": "Corpus and query-corpus mode: positives per query (nearest neighbours)."}
    )
    max_queries: int | None = field(
        default=None, metadata={"help": "Corpus mode: use a seeded sample of this many texts as queries."}
    )
    num_negatives: int = field(default=4, metadata={"help": "Hard negatives mined per query."})
    skip_top: int = field(default=3, metadata={"help": "Skip the miner's top ranks (likely unlabelled positives)."})
    sample_from: int = field(default=30, metadata={"help": "Sample negatives from ranks [skip_top, sample_from)."})
    fresh_negatives_per_epoch: bool = field(
        default=False,
        metadata={
            "help": "Draw each training row's num_negatives anew every epoch (seeded by seed and epoch) from all its "
            "mined candidates in ranks [skip_top, sample_from), instead of one fixed sample. The teacher scores every "
            "candidate once before training (cached), so no teacher runs during training. Needs mined negatives: "
            "pairs data, the STS-B task or corpus mode (not data that brings its own negatives or scores)."
        },
    )
    miner: str | None = field(
        default=None, metadata={"help": "Bi-encoder used to mine negatives; default: the teacher if it is one."}
    )
    search: str = field(
        default="auto",
        metadata={
            "help": "Nearest-neighbour search of mining and corpus / query-corpus mode: 'exact' (every query "
            "against every text), 'faiss' (an index, needs pip install faiss-cpu) or 'auto': faiss above 200,000 "
            "texts when it is installed, else exact.",
            "choices": list(SEARCHES),
        },
    )
    search_index: str = field(
        default="flat",
        metadata={
            "help": "The FAISS index: 'flat' (exact), 'ivf' (inverted lists, see nprobe), 'hnsw' (a graph, see "
            "ef_search) or 'ivfpq' (compressed inverted lists). Candidates are re-scored exactly.",
            "choices": list(SEARCH_INDEXES),
        },
    )
    nprobe: int = field(default=16, metadata={"help": "FAISS ivf / ivfpq: lists searched per query (more: recall)."})
    ef_search: int = field(default=128, metadata={"help": "FAISS hnsw: search breadth (more: recall, slower)."})
    search_check: int = field(
        default=0,
        metadata={"help": "FAISS: also search this many sampled queries exactly and log the index's recall@k."},
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Use at most this many training triplets."})
    teacher_margin_scaling: str = field(
        default="auto",
        metadata={
            "help": "One global rescaling of the teacher margins before training, with the train split's mean and "
            "std: 'none', 'zscore' (mean 0, std 1), 'student' (z-score, then the student's own margin mean and "
            "std before training) or 'auto' (default): 'student' for a cross-encoder teacher, whose logits are "
            "not on the student's cosine scale, else 'none' (BENCHMARKS.md section 8).",
            "choices": ["auto", *SCALINGS],
        },
    )

    def search_options(self) -> SearchOptions:
        """The nearest-neighbour search of mining (:class:`~hf_margin.data.search.SearchOptions`) these options
        ask for."""
        return SearchOptions(
            search=self.search,
            index=self.search_index,
            nprobe=self.nprobe,
            ef_search=self.ef_search,
            check_queries=self.search_check,
        )

    def margin_scaling(self, teacher_type: str) -> str:
        """``teacher_margin_scaling`` with 'auto' resolved for a teacher of ``teacher_type``."""
        if self.teacher_margin_scaling != "auto":
            return self.teacher_margin_scaling
        return "student" if teacher_type == "cross-encoder" else "none"

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
        for name, least in (("nprobe", 1), ("ef_search", 1), ("search_check", 0)):
            if getattr(self, name) < least:
                raise UserError(f"{name} must be >= {least}; got {getattr(self, name)}")
        if not 0 <= self.skip_top < self.sample_from or self.sample_from - self.skip_top < self.num_negatives:
            raise UserError(
                f"mining samples num_negatives={self.num_negatives} from ranks [skip_top={self.skip_top}, "
                f"sample_from={self.sample_from}): need 0 <= skip_top and sample_from - skip_top >= num_negatives"
            )

    @property
    def columns(self) -> dict[str, str] | None:
        """``column_map`` as a dict (JSON object, or ``a=b,c=d``)."""
        if not self.column_map:
            return None
        text = self.column_map.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"column_map is not valid JSON ({exc}): {text}") from None
        else:
            pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise UserError(f"column_map must be JSON or your_column=name,...; got {text!r}")
            value = {a.strip(): b.strip() for a, b in pairs}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UserError(f"column_map must map column names to column names; got {text!r}")
        return value


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
            "onnx/model.onnx; onnx-int8: onnx/model_qint8.onnx) through onnxruntime on the CPU.",
            "choices": ["torch", "onnx", "onnx-int8"],
        },
    )
    eval_teacher: bool = field(
        default=True,
        metadata={
            "help": "Evaluate the teacher too (its row of the summary and card); false saves its corpus "
            "embedding on a rerun. Its encoding speed is measured either way."
        },  # fmt: skip
    )


RECIPE_DATACLASSES = (ModelArguments, DataArguments, EvalArguments, MarginDistillConfig)
# Help groups of `hf-margin train --help`: the loss options come from the loss registry.
LOSS_FIELDS = ("loss", *dict.fromkeys(o for spec in LOSS_REGISTRY.values() for o in spec.options), "label_weight")
STUDENT_FIELDS = (
    "student_type",
    "similarity",
    "pooling",
    "normalize",
    "max_length",
    "query_max_length",
    "document_max_length",
    "query_prompt",
    "document_prompt",
    "forward_chunk_size",
)

# What `evaluate` reads, by help group: its --help lists these only (every option is still accepted, so that one
# recipe serves train and evaluate).
EVALUATE_OPTIONS = {
    "which model": ("student", "student_layers", "backend", "trust_remote_code", "output_dir"),
    "what to evaluate on (none: the STS-B test split)": (
        "sts_eval_file",
        "ir_eval_dir",
        "ir_split",
        "validation_file",
        "column_map",
        "data_dir",
    ),
    "teacher (compared with: its figures, speed and the share the student keeps; also scores --validation_file)": (
        "teacher",
        "teacher_type",
        "eval_teacher",
        "cache_dir",
    ),
    "how the student reads and scores (as trained; saved prompts are read)": STUDENT_FIELDS[:-1],  # not chunking
}


def _to_argv(config: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in config.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def known_options(dataclasses: tuple[type, ...] = RECIPE_DATACLASSES) -> set[str]:
    return {f for cls in dataclasses for f in cls.__dataclass_fields__ if cls.__dataclass_fields__[f].init}


def read_recipe(recipe: str | os.PathLike, dataclasses: tuple[type, ...] = RECIPE_DATACLASSES) -> dict[str, Any]:
    """A recipe YAML as a dict, checked: a mapping, every key an option (with "did you mean")."""
    import difflib

    path = Path(recipe)
    if not path.is_file():
        raise UserError(f"recipe {recipe} not found (relative to {Path.cwd()}); the shipped ones are in recipes/")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {recipe} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(loaded, dict):
        raise UserError(f"recipe {recipe} must be a mapping of option: value")
    known = known_options(dataclasses)
    for key in loaded:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; see `hf-margin train --help`"
            raise UserError(f"recipe {recipe}: unknown option '{key}'{hint}")
    loaded.setdefault("output_dir", f"outputs/{path.stem}")
    loaded.setdefault("run_name", path.stem)
    return loaded


class RecipeParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are :class:`UserError` (one line in the CLI), not a usage dump + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


UNSET_VALUES = ("none", "null")


def _optional_fields(dataclasses: tuple[type, ...]) -> set[str]:
    """Options that may be None: a None default or an optional annotation (``float | None``). The annotations are
    read from the classes: HfArgumentParser rewrites ``Field.type`` (``float | None`` becomes ``float``)."""
    optional = set()
    for cls in dataclasses:
        annotations: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            annotations.update(vars(base).get("__annotations__", {}))
        for f in fields(cls):
            hint = str(annotations.get(f.name, ""))
            if f.init and (f.default is None or "None" in hint or "Optional" in hint):
                optional.add(f.name)
    return optional


def _take_unset_options(overrides: list[str], dataclasses: tuple[type, ...]) -> tuple[list[str], set[str]]:
    """Split ``--key none`` (or ``null``) off the overrides for options that may be None (optional types): those
    are unset, a recipe's value and a default included (e.g. ``--overshoot_width none`` over the default 0.25)."""
    unsettable = _optional_fields(dataclasses)
    kept, unset = [], set()
    i = 0
    while i < len(overrides):
        key = overrides[i][2:].replace("-", "_") if overrides[i].startswith("--") else None
        if key in unsettable and i + 1 < len(overrides) and overrides[i + 1].lower() in UNSET_VALUES:
            unset.add(key)
            i += 2
            continue
        kept.append(overrides[i])
        i += 1
    return kept, unset


def parse_recipe(
    recipe: str | os.PathLike | None,
    overrides: list[str] | None = None,
    dataclasses: tuple[type, ...] = RECIPE_DATACLASSES,
) -> tuple:
    """Parse a recipe YAML into ``dataclasses`` (default: model, data, evaluation and training arguments);
    ``overrides`` (``--key value`` flags) win over the file; ``--key none`` (or ``key: null`` in the file) sets an
    optional option to None, whatever its default. Without a recipe, ``output_dir`` is ``outputs/hf-margin``."""
    parser = RecipeParser(dataclasses)
    values: dict[str, Any] = read_recipe(recipe, dataclasses) if recipe is not None else {}
    overrides, unset = _take_unset_options(list(overrides or []), dataclasses)
    unset |= {k for k, v in values.items() if v is None and k in _optional_fields(dataclasses)}  # `key: null`
    values = {k: v for k, v in values.items() if k not in unset}
    if "--output_dir" not in overrides:
        values.setdefault("output_dir", "outputs/hf-margin")
    parsed = tuple(parser.parse_args_into_dataclasses(args=_to_argv(values) + overrides))
    for obj in parsed:  # an unset option is None even where its default is not (overshoot_width: 0.25)
        for key in unset:
            if key in getattr(obj, "__dataclass_fields__", {}):
                setattr(obj, key, None)
    training = parsed[-1]
    if getattr(training, "run_name", "") is None:  # name the run after its output folder (logs, card, summary)
        training.run_name = Path(training.output_dir).name
    return parsed


def dump_recipe(path: str | os.PathLike, **values: Any) -> None:
    """Write a recipe YAML (used by tests and benchmarks)."""
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))

"""The option groups :class:`~hf_margin.app.arguments.DataArguments` is made of: where the training data comes
from, how the teacher builds triplets from unlabelled text, and how negatives are mined."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hf_margin.app.errors import UserError
from hf_margin.data.embedding_store import DTYPES, DiskEmbeddings
from hf_margin.data.search import SEARCH_INDEXES, SEARCHES, SearchOptions

TASKS = ("auto", "stsb", "data", "retrieval")


@dataclass
class DataSourceOptions:
    """The task and your own data: files, a dataset, its splits and columns, a corpus to mine from."""

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
class TeacherBuiltOptions:
    """Triplets the teacher builds from unlabelled text (corpus and query–corpus mode), and the retrieval task's
    qrels splits."""

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


@dataclass
class MiningOptions:
    """Hard negatives: how many, from which ranks, by which miner and nearest-neighbour search."""

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
            "against every text), 'faiss' (an index, needs pip install faiss-cpu) or 'auto': exact on the GPU "
            "where one is visible, else faiss above 200,000 texts when it is installed, else exact.",
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
    search_device: str = field(
        default="auto",
        metadata={
            "help": "Where the exact search computes: 'auto' (the GPU where one is visible, else the CPU), 'cpu', "
            "'cuda' or 'cuda:N'. On a GPU the corpus embeddings are held there (as stored: float16 with "
            "--embedding_dtype float16) when they fit in half its free memory, else streamed."
        },
    )
    search_check: int = field(
        default=0,
        metadata={"help": "FAISS: also search this many sampled queries exactly and log the index's recall@k."},
    )

    embeddings_on_disk: bool = field(
        default=False,
        metadata={
            "help": "Keep the corpus embeddings of mining and corpus / query-corpus mode on disk in the cache, "
            "embedded in shards split over every process (accelerate launch) and memory-mapped, not held as an "
            "in-memory copy (with --search faiss, --search_index ivfpq keeps the index small too). A killed run "
            "resumes from its finished shards."
        },
    )
    embedding_dtype: str = field(
        default="float32",
        metadata={"help": "embeddings_on_disk: stored as float32 or float16 (half the disk).", "choices": list(DTYPES)},
    )
    embedding_shard_size: int = field(
        default=65_536, metadata={"help": "embeddings_on_disk: texts per shard (the unit of work and of resuming)."}
    )

    def disk_embeddings(self) -> DiskEmbeddings | None:
        """On-disk corpus embeddings (:class:`~hf_margin.data.embedding_store.DiskEmbeddings`), or None (in memory)."""
        if not self.embeddings_on_disk:
            return None
        return DiskEmbeddings(shard_size=self.embedding_shard_size, dtype=self.embedding_dtype)

    def search_options(self) -> SearchOptions:
        """The nearest-neighbour search of mining (:class:`~hf_margin.data.search.SearchOptions`) these options
        ask for."""
        return SearchOptions(
            search=self.search,
            index=self.search_index,
            nprobe=self.nprobe,
            ef_search=self.ef_search,
            check_queries=self.search_check,
            device=self.search_device,
        )

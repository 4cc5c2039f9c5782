"""The training data: column names, validation, tokenisation and the collator (``columns``); user formats and
where rows come from (``formats``, ``sources``); hard negatives mined by a scorer and the nearest-neighbour search
they use (``mining``, ``search``), with corpus embeddings kept on disk and sharded over processes
(``embedding_store``); teacher margins attached and rescaled (``margins``, ``margin_scaling``); the teacher's
embeddings as targets (``teacher_embeddings``); negatives redrawn every epoch (``fresh_negatives``); queries
written by a seq2seq model (``query_generation``); and the fingerprinted, locked cache entries they are all kept
in (``cache``).

The main names are re-exported here; modules of the library import from the module that defines a name.
"""

from __future__ import annotations

from hf_margin.data.columns import DataValidationError, MarginDistillCollator, tokenize_triplets, validate_triplets
from hf_margin.data.embedding_store import DiskEmbeddings, embed_to_disk
from hf_margin.data.formats import DataFormat, detect_format, normalize_dataset
from hf_margin.data.fresh_negatives import FreshNegatives
from hf_margin.data.margin_scaling import scale_teacher_margins
from hf_margin.data.margins import attach_band_margins, attach_teacher_margins
from hf_margin.data.mining import build_corpus_triplets, build_query_corpus_triplets, mine_hard_negatives
from hf_margin.data.query_generation import generate_queries
from hf_margin.data.search import SearchOptions
from hf_margin.data.sources import load_corpus, load_data_file
from hf_margin.data.teacher_embeddings import attach_teacher_embeddings

__all__ = [
    "DataFormat",
    "DataValidationError",
    "DiskEmbeddings",
    "FreshNegatives",
    "MarginDistillCollator",
    "SearchOptions",
    "attach_band_margins",
    "attach_teacher_embeddings",
    "attach_teacher_margins",
    "build_corpus_triplets",
    "build_query_corpus_triplets",
    "detect_format",
    "embed_to_disk",
    "generate_queries",
    "load_corpus",
    "load_data_file",
    "mine_hard_negatives",
    "normalize_dataset",
    "scale_teacher_margins",
    "tokenize_triplets",
    "validate_triplets",
]

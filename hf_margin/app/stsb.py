"""The STS-B task: the STS Benchmark (shipped copy, a local folder or the Hub), triplets for distillation,
and its evaluations (pair-score correlation; duplicate retrieval)."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from hf_margin.evaluation.evaluators import RetrievalEvaluator, StsEvaluator
from hf_margin.evaluation.retrieval import duplicate_retrieval_data

logger = logging.getLogger(__name__)

HUB_DATASET = "sentence-transformers/stsb"
SHIPPED_DIR = Path(__file__).parent / "data" / "stsb"  # the STS-B copy shipped with hf-margin (licence inside)
SPLIT_FILES = {"train": "sts-train.csv", "validation": "sts-dev.csv", "test": "sts-test.csv"}


def read_sts_file(path: str | os.PathLike) -> Dataset:
    """Read one STS-B file as distributed: tab-separated, no header, no quoting, first seven columns.

    Sentences hold bare double quotes, so quoting is off (``csv.QUOTE_NONE``); rows with extra source
    columns keep only the first seven. Returns columns ``sentence1``, ``sentence2``, ``score`` (0 to 5).
    """
    rows: dict[str, list] = {"sentence1": [], "sentence2": [], "score": []}
    with open(path, encoding="utf-8", newline="") as f:
        for line_no, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(fields) < 7:
                raise ValueError(f"{path}, line {line_no}: {len(fields)} tab-separated fields, expected at least 7")
            try:
                score = float(fields[4])
            except ValueError:
                raise ValueError(f"{path}, line {line_no}, column 5 (score): {fields[4]!r} is not a number") from None
            rows["sentence1"].append(fields[5])
            rows["sentence2"].append(fields[6])
            rows["score"].append(score)
    return Dataset.from_dict(rows)


def load_stsb(data_dir: str | os.PathLike | None = None) -> DatasetDict:
    """STS-B with splits ``train``, ``validation``, ``test`` and gold ``score`` on the 0-5 scale.

    ``data_dir``: None for the copy shipped with hf-margin (offline, any machine); a folder holding
    ``sts-{train,dev,test}.csv``; or a Hub dataset id (``sentence-transformers/stsb``: its 0-1 scores are
    scaled to 0-5).
    """
    folder = SHIPPED_DIR if data_dir is None else Path(data_dir).expanduser()
    if folder.is_dir():
        missing = [f for f in SPLIT_FILES.values() if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"STS-B folder {folder} lacks {missing}; give a folder with sts-train.csv, sts-dev.csv and "
                "sts-test.csv, or leave data_dir unset for the shipped copy"
            )
        logger.info("Reading STS-B from %s", folder)
        return DatasetDict({split: read_sts_file(folder / f) for split, f in SPLIT_FILES.items()})
    if str(data_dir).startswith((".", "~", "/")) or str(data_dir).count("/") != 1:  # a path, not a Hub id
        raise FileNotFoundError(
            f"STS-B folder {data_dir} not found (relative to {Path.cwd()}); leave data_dir unset for the shipped copy"
        )
    hub = load_dataset(str(data_dir))
    return DatasetDict({split: hub[split].map(lambda r: {"score": r["score"] * 5.0}) for split in SPLIT_FILES})


def positive_pairs(split: Dataset, min_score: float = 3.0) -> Dataset:
    """Pairs with gold score >= ``min_score`` as (``query``, ``positive``) rows."""
    kept = split.filter(lambda r: r["score"] >= min_score, desc=f"Keeping pairs with score >= {min_score}")
    return kept.select_columns(["sentence1", "sentence2"]).rename_columns(
        {"sentence1": "query", "sentence2": "positive"}
    )


def unique_sentences(split: Dataset) -> list[str]:
    """Every distinct sentence of a split, in first-seen order."""
    return list(dict.fromkeys([*split["sentence1"], *split["sentence2"]]))


def stsb_evaluators(split: Dataset, prefix: str, *, duplicates: bool = True) -> dict[str, Any]:
    """Evaluators of one STS-B split: ``{prefix}`` (Spearman, Pearson of the pair scores) and, with
    ``duplicates``, ``{prefix}_duplicates``: duplicate retrieval (queries = sentence 1 of pairs with gold >= 4,
    relevant = its sentence 2, corpus = every distinct sentence of the split) -> MRR@10, nDCG@10, Recall."""
    evaluators: dict[str, Any] = {prefix: StsEvaluator.from_dataset(split, name=prefix)}
    if duplicates:
        data = duplicate_retrieval_data(split["sentence1"], split["sentence2"], split["score"], min_score=4.0)
        evaluators[f"{prefix}_duplicates"] = RetrievalEvaluator(data, name=f"{prefix}_duplicates")
    return evaluators

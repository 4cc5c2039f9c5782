"""STS Benchmark: loading (local folder or the Hub), triplets for distillation, and the STS evaluation."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import constants

from hf_margin.metrics import sts_correlation
from hf_margin.modeling import embed_texts, similarity

logger = logging.getLogger(__name__)

HUB_DATASET = "sentence-transformers/stsb"
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


def load_stsb(data_dir: str | os.PathLike | None = None, dataset_name: str = HUB_DATASET) -> DatasetDict:
    """STS-B with splits ``train``, ``validation``, ``test`` and gold ``score`` on the 0-5 scale.

    Reads ``data_dir`` when it holds the three files; otherwise loads ``dataset_name`` from the Hub (its
    0-1 scores are scaled to 0-5).
    """
    if data_dir is not None and all((Path(data_dir) / f).is_file() for f in SPLIT_FILES.values()):
        logger.info("Reading STS-B from %s", data_dir)
        return DatasetDict({split: read_sts_file(Path(data_dir) / f) for split, f in SPLIT_FILES.items()})
    if data_dir is not None:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"{data_dir} (relative to {Path.cwd()}) does not hold {list(SPLIT_FILES.values())} and the Hub is "
                "off (HF_HUB_OFFLINE=1): run from the repository root or pass --data_dir with the STS-B folder"
            )
        logger.warning(
            "%s does not hold %s; loading %s from the Hub", data_dir, list(SPLIT_FILES.values()), dataset_name
        )
    hub = load_dataset(dataset_name)
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


@torch.inference_mode()
def score_sts_pairs(
    model: torch.nn.Module,
    tokenizer,
    sentences1: Sequence[str],
    sentences2: Sequence[str],
    *,
    student_type: str = "bi-encoder",
    pooling: str = "mean",
    normalize: bool = False,
    similarity_fn: str = "cosine",
    max_length: int = 128,
    batch_size: int = 128,
) -> np.ndarray:
    """A model's score for each pair: similarity of embeddings (bi-encoder) or the logit (cross-encoder)."""
    sentences1, sentences2 = list(sentences1), list(sentences2)
    was_training = model.training
    model.eval()
    try:
        if student_type == "bi-encoder":
            texts = list(dict.fromkeys([*sentences1, *sentences2]))
            index = {t: i for i, t in enumerate(texts)}
            emb = embed_texts(
                model,
                tokenizer,
                texts,
                pooling=pooling,
                normalize=normalize,
                max_length=max_length,
                batch_size=batch_size,
            )
            a = emb[[index[s] for s in sentences1]]
            b = emb[[index[s] for s in sentences2]]
            return similarity(a, b, similarity_fn).numpy()
        device = next(model.parameters()).device
        scores = []
        for start in range(0, len(sentences1), batch_size):
            enc = tokenizer(
                list(sentences1[start : start + batch_size]),
                list(sentences2[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            scores.append(model(**enc).logits.squeeze(-1).float().cpu())
        return torch.cat(scores).numpy()
    finally:
        model.train(was_training)


def evaluate_sts(model: torch.nn.Module, tokenizer, split: Dataset, **kwargs) -> dict[str, float]:
    """Spearman and Pearson (x100) of a model's pair scores against the gold scores of an STS split."""
    scores = score_sts_pairs(model, tokenizer, split["sentence1"], split["sentence2"], **kwargs)
    return sts_correlation(scores, np.asarray(split["score"]))

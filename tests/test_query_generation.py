"""Pseudo-queries from a seq2seq generator: a tiny random T5 built from a config writes queries for documents,
the result is cached and seeded, and `hf-margin train --query_generator` trains on them without any query log."""

from __future__ import annotations

import json

import pytest
from transformers import T5Config, T5ForConditionalGeneration

from hf_margin.app.cli import main
from hf_margin.data.query_generation import generate_queries

from .conftest import make_tokenizer, write_tiny_teacher
from .test_pipeline import TRAIN
from .test_retrieval_task import MINING, write_beir


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    tokenizer = make_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("models") / "t5"
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


DOCUMENTS = ["sun1 sun2 sun3 sea1", "car1 car2 dog3", "tea1 tea2 map3 map4", "dog1 dog2 dog4"]


def test_queries_are_written_per_document_seeded_and_cached(tmp_path, generator_dir):
    first = generate_queries(DOCUMENTS, generator_dir, queries_per_document=2, max_new_tokens=5, cache_dir=tmp_path)
    assert 0 < len(first) <= 2 * len(DOCUMENTS)
    assert set(first["document"]) <= set(DOCUMENTS) and all(q.strip() for q in first["query"])
    vocabulary = set(make_tokenizer().get_vocab())
    assert all(set(q.split()) <= vocabulary for q in first["query"])  # decoded from the generator's own tokens
    again = generate_queries(DOCUMENTS, generator_dir, queries_per_document=2, max_new_tokens=5, cache_dir=tmp_path)
    assert again.to_dict() == first.to_dict()
    entries = [p for p in tmp_path.iterdir() if p.name.startswith("generated-queries") and p.is_dir()]
    assert len(entries) == 1  # the rerun read the cache entry
    other = generate_queries(
        DOCUMENTS, generator_dir, queries_per_document=2, max_new_tokens=5, cache_dir=tmp_path, seed=7
    )
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("generated-queries") and p.is_dir()]) == 2
    assert other["document"]  # another seed: another entry


def test_train_on_written_queries_with_no_query_log(tmp_path, generator_dir):
    folder, _ = write_beir(tmp_path / "beir")
    teacher = write_tiny_teacher(tmp_path / "teacher")
    out = tmp_path / "out"
    argv = ["train", *TRAIN, *MINING, "--query_generator", str(generator_dir), "--queries_per_document", "1"]
    argv += ["--corpus_file", str(folder / "corpus.jsonl"), "--teacher", str(teacher), "--output_dir", str(out)]
    assert main([*argv, "--cache_dir", str(tmp_path / "cache")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["format"] == "query-corpus" and metrics["data"]["corpus_triplets"] > 0
    assert "queries written by" in (out / "README.md").read_text()

"""Reading the user's files through datasets' builders, datasets by name, and corpora; errors name the file."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from hf_margin.data.columns import DataValidationError
from hf_margin.data.sources import load_corpus, load_data_file, load_named_dataset

ROWS = [{"query": "a b", "positive": "c", "negatives": ["d", "e"]}, {"query": "f", "positive": "g", "negatives": ["h"]}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_every_file_type_reads_the_same_rows(tmp_path, suffix):
    """Guards the builder chosen by suffix: tsv must split on tabs, parquet keep lists."""
    flat = [{"query": r["query"], "positive": r["positive"], "negative": r["negatives"][0]} for r in ROWS]
    path = tmp_path / f"rows{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in flat))
    elif suffix == ".json":
        path.write_text(json.dumps(flat))
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text(
            "query,positive,negative\n".replace(",", sep) + "".join(sep.join(r.values()) + "\n" for r in flat)
        )
    else:
        Dataset.from_list(flat).to_parquet(str(path))
    assert load_data_file(path).to_list() == flat


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_data_file(tmp_path / "missing.jsonl")
    (tmp_path / "rows.xlsx").write_text("x")
    with pytest.raises(DataValidationError, match=r"rows.xlsx: unknown file type '.xlsx'"):
        load_data_file(tmp_path / "rows.xlsx")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataValidationError, match="empty.jsonl: the file is empty"):
        load_data_file(tmp_path / "empty.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"query": "a"}\n{"query": \n')
    with pytest.raises(DataValidationError, match="broken.jsonl, line 2, column 11: JSON syntax error"):
        load_data_file(tmp_path / "broken.jsonl")


def test_save_to_disk_folder_and_its_splits(tmp_path):
    from datasets import DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "dev": Dataset.from_list(ROWS[:1])}).save_to_disk(tmp_path / "d")
    assert load_named_dataset(str(tmp_path / "d"), split="dev").to_list() == ROWS[:1]
    with pytest.raises(DataValidationError, match="no split 'test'"):
        load_named_dataset(str(tmp_path / "d"), split="test")


def test_corpus_from_text_lines_jsonl_and_beir(tmp_path):
    """One text per line (blank lines and repeats dropped), jsonl `text`, BEIR title + text."""
    (tmp_path / "c.txt").write_text("one\n\ntwo\none\n")
    assert load_corpus(tmp_path / "c.txt") == ["one", "two"]
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "1", "title": "T", "text": "x"}) + "\n" + json.dumps({"_id": "2", "title": "", "text": "y"})
    )
    assert load_corpus(tmp_path / "corpus.jsonl") == ["T x", "y"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataValidationError, match="needs a 'text' column"):
        load_corpus(tmp_path / "bad.jsonl")

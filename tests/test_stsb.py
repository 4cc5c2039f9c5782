"""The STS-B task: reading the distributed files, the shipped copy, its evaluators."""

from __future__ import annotations

import pytest

from hf_margin.app.stsb import SHIPPED_DIR, load_stsb, read_sts_file, stsb_evaluators


def test_sts_file_reading_keeps_bare_quotes_and_ignores_extra_columns(tmp_path):
    """STS-B rows hold bare double quotes and sometimes 9 columns: csv quoting would merge rows silently."""
    lines = [
        'main-news\tMSRpar\t2012\t0001\t4.5\tHe said "stop.\tHe said: "stop" now.',
        "main-news\theadlines\t2015\t0002\t1.0\tA cat.\tA dog.\tsrc-a\tsrc-b",
        'main-forum\tdeft\t2014\t0003\t2.25\t"Quoted" start\tend "quoted"',
    ]
    path = tmp_path / "sts-train.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = read_sts_file(path)
    assert len(ds) == 3
    assert ds["sentence1"] == ['He said "stop.', "A cat.", '"Quoted" start']
    assert ds["sentence2"] == ['He said: "stop" now.', "A dog.", 'end "quoted"']
    assert ds["score"] == [4.5, 1.0, 2.25]


def test_sts_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a\tb\tc\td\t4.0\tx\ty\na\tb\tc\td\tfive\tx\ty\n")
    with pytest.raises(ValueError, match="line 2, column 5"):
        read_sts_file(path)


def test_shipped_copy_loads_offline_with_its_licence():
    """Guards `make train` on any machine (no data folder beside the clone): STS-B ships inside the package with
    its licence."""
    splits = load_stsb()
    assert {k: len(v) for k, v in splits.items()} == {"train": 5749, "validation": 1500, "test": 1379}
    assert (SHIPPED_DIR / "LICENSE.txt").is_file() and "CC BY-SA 4.0" in (SHIPPED_DIR / "README.md").read_text()
    assert min(splits["test"]["score"]) == 0.0 and max(splits["test"]["score"]) == 5.0


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_stsb(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_stsb(tmp_path / "nope" / "deeper")


def test_duplicate_retrieval_queries_are_high_scoring_pairs():
    """STS-B duplicate retrieval: queries = sentence 1 of pairs with gold >= 4, relevant = sentence 2, corpus =
    every distinct sentence of the split."""
    test = load_stsb()["test"]
    ir = stsb_evaluators(test, "stsb_test")["stsb_test_duplicates"].data
    high = {s1 for s1, s2, g in zip(test["sentence1"], test["sentence2"], test["score"]) if g >= 4 and s1 != s2}
    assert len(ir.queries) == len(high)
    assert len(ir.corpus) == len(set(test["sentence1"]) | set(test["sentence2"]))

"""Recognising and normalising user training data (triplets, sentence-transformers, FlagEmbedding, pairs)."""

from __future__ import annotations

import json
import logging
import math
import re

import datasets
import pytest
from datasets import Dataset

from hf_margin.data.columns import DataValidationError
from hf_margin.data.formats import SCORE_COLUMNS, DataFormat, detect_format, normalize_dataset

# Scores are binary fractions, so float32 holds them (and their differences) exactly and rows compare with ==.
FLAG = {
    "query": ["q1", "q2"],
    "pos": [["p1", "p2"], ["p3"]],
    "neg": [["n1", "n2"], ["n3"]],
    "pos_scores": [[1.0, 0.75], [0.5]],
    "neg_scores": [[0.5, 0.25], [0.125]],
}
FLAG_ROWS = [
    {
        "query": "q1",
        "positive": "p1",
        "negatives": ["n1", "n2"],
        "teacher_pos_score": 1.0,
        "teacher_neg_scores": [0.5, 0.25],
        "teacher_margins": [0.5, 0.75],
    },
    {
        "query": "q1",
        "positive": "p2",
        "negatives": ["n1", "n2"],
        "teacher_pos_score": 0.75,
        "teacher_neg_scores": [0.5, 0.25],
        "teacher_margins": [0.25, 0.5],
    },
    {
        "query": "q2",
        "positive": "p3",
        "negatives": ["n3"],
        "teacher_pos_score": 0.5,
        "teacher_neg_scores": [0.125],
        "teacher_margins": [0.375],
    },
]


def triplets(n: int = 4, **extra: list) -> dict[str, list]:
    """``n`` good triplet rows with two negatives each, plus ``extra`` columns."""
    data: dict[str, list] = {
        "query": [f"query {i}" for i in range(n)],
        "positive": [f"positive {i}" for i in range(n)],
        "negatives": [[f"negative {i}a", f"negative {i}b"] for i in range(n)],
    }
    data.update(extra)
    return data


def normalize(data: dict[str, list], **kwargs) -> tuple[Dataset, DataFormat]:
    return normalize_dataset(Dataset.from_dict(data), **kwargs)


def refused(data: dict[str, list], *parts: str, **kwargs) -> str:
    """Normalise ``data``, expect a DataValidationError whose message contains every part (in order)."""
    pattern = ".*".join(re.escape(p) for p in parts)
    with pytest.raises(DataValidationError, match=pattern) as info:
        normalize(data, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------- formats (a)-(d)


def test_triplets_with_negatives_list_normalise_to_the_same_rows():
    """Guards that canonical triplets pass through unchanged (no reordering, no lost negatives)."""
    out, fmt = normalize({"query": ["q1", "q2"], "positive": ["p1", "p2"], "negatives": [["a", "b"], ["c"]]})
    assert fmt == DataFormat("triplets", None, True)
    assert not fmt.has_scores
    assert out.to_list() == [
        {"query": "q1", "positive": "p1", "negatives": ["a", "b"]},
        {"query": "q2", "positive": "p2", "negatives": ["c"]},
    ]


def test_triplets_with_single_negative_become_a_negatives_list():
    """Guards that a one-string 'negative' column is turned into a one-element 'negatives' list."""
    out, fmt = normalize({"query": ["q1", "q2"], "positive": ["p1", "p2"], "negative": ["a", "b"]})
    assert fmt.name == "triplets"
    assert out.column_names == ["query", "positive", "negatives"]
    assert out["negatives"] == [["a"], ["b"]]


def test_sentence_transformers_ntuples_with_label_margins():
    """Guards that anchor/negative_1..n columns are gathered in order and a list 'label' becomes the margins."""
    data = {
        "anchor": ["q1", "q2"],
        "positive": ["p1", "p2"],
        "negative_1": ["a", "c"],
        "negative_2": ["b", "d"],
        "label": [[0.5, 0.25], [1.5, -0.75]],
    }
    out, fmt = normalize(data)
    assert fmt == DataFormat("sentence-transformers", "label", True)
    assert out.to_list() == [
        {"query": "q1", "positive": "p1", "negatives": ["a", "b"], "teacher_margins": [0.5, 0.25]},
        {"query": "q2", "positive": "p2", "negatives": ["c", "d"], "teacher_margins": [1.5, -0.75]},
    ]


def test_sentence_transformers_single_negative_with_float_label():
    """Guards the ST triplet (anchor, positive, negative) with a float label: one negative, one margin."""
    out, fmt = normalize({"anchor": ["q"], "positive": ["p"], "negative": ["n"], "label": [0.625]})
    assert fmt == DataFormat("sentence-transformers", "label", True)
    assert out.to_list() == [{"query": "q", "positive": "p", "negatives": ["n"], "teacher_margins": [0.625]}]


def test_sentence_transformers_numbered_negatives_accept_query():
    """Guards that ST n-tuples whose first column is 'query' (not 'anchor') are recognised too."""
    out, fmt = normalize({"query": ["q"], "positive": ["p"], "negative_1": ["a"], "negative_2": ["b"]})
    assert fmt == DataFormat("sentence-transformers", None, True)
    assert out.to_list() == [{"query": "q", "positive": "p", "negatives": ["a", "b"]}]


def test_flagembedding_expands_each_positive_into_its_own_row():
    """Guards the FlagEmbedding expansion: one row per positive, all negatives, that positive's own score."""
    out, fmt = normalize(FLAG)
    assert fmt == DataFormat("flagembedding", "pos_scores+neg_scores", True)
    assert out.to_list() == FLAG_ROWS


def test_flagembedding_without_scores_has_no_score_columns():
    """Guards that unscored FlagEmbedding data is expanded without inventing teacher score columns."""
    data = {k: FLAG[k] for k in ("query", "pos", "neg")}
    out, fmt = normalize(data)
    assert fmt == DataFormat("flagembedding", None, True)
    assert out.to_list() == [{k: r[k] for k in ("query", "positive", "negatives")} for r in FLAG_ROWS]


@pytest.mark.parametrize("query", ["query", "anchor"])
def test_pairs_have_no_negatives_column(query):
    """Guards that query/anchor + positive data is 'pairs' and gets no (empty) negatives column to mine into."""
    out, fmt = normalize({query: ["q1", "q2"], "positive": ["p1", "p2"]})
    assert fmt == DataFormat("pairs", None, False)
    assert out.to_list() == [{"query": "q1", "positive": "p1"}, {"query": "q2", "positive": "p2"}]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["query", "positive", "negatives"], DataFormat("triplets", None, True)),
        (["query", "positive", "negative", "teacher_margins"], DataFormat("triplets", "teacher_margins", True)),
        (
            ["query", "positive", "negatives", "teacher_pos_score", "teacher_neg_scores", "teacher_margins"],
            DataFormat("triplets", "teacher_pos_score+teacher_neg_scores", True),
        ),
        (
            ["anchor", "positive", "negative_1", "negative_2", "label"],
            DataFormat("sentence-transformers", "label", True),
        ),
        (["query", "pos", "neg"], DataFormat("flagembedding", None, True)),
        (["anchor", "positive", "id"], DataFormat("pairs", None, False)),
    ],
)
def test_detect_format_from_column_names(columns, expected):
    """Guards format detection from column names alone (order-independent, extra columns ignored)."""
    assert detect_format(columns) == expected
    assert detect_format(list(reversed(columns))) == expected
    assert expected.has_scores == (expected.score_source is not None)


# ------------------------------------------------------------------------------------------- score sources


def test_raw_scores_give_margins_pos_minus_neg():
    """Guards that teacher_pos_score + teacher_neg_scores yield teacher_margins = pos - neg, per negative."""
    data = triplets(2, teacher_pos_score=[0.75, 2.0], teacher_neg_scores=[[0.25, 1.0], [2.5, -1.0]])
    out, fmt = normalize(data)
    assert fmt.score_source == "teacher_pos_score+teacher_neg_scores"
    assert out["teacher_pos_score"] == [0.75, 2.0]
    assert out["teacher_neg_scores"] == [[0.25, 1.0], [2.5, -1.0]]
    assert out["teacher_margins"] == [[0.5, -0.25], [-0.5, 3.0]]


def test_margins_alone_are_kept_without_raw_score_columns():
    """Guards that margins-only data keeps its margins and gets no made-up pos/neg score columns."""
    out, fmt = normalize(triplets(2, teacher_margins=[[0.5, 0.25], [-1.0, 2.0]]))
    assert fmt == DataFormat("triplets", "teacher_margins", True)
    assert out.column_names == ["query", "positive", "negatives", "teacher_margins"]
    assert out["teacher_margins"] == [[0.5, 0.25], [-1.0, 2.0]]


def test_agreeing_margins_and_raw_scores_are_all_kept():
    """Guards that margins and raw scores that agree (within 1e-4) are both kept, the user's margins as given."""
    data = triplets(1, teacher_pos_score=[0.75], teacher_neg_scores=[[0.25, 1.0]], teacher_margins=[[0.50005, -0.25]])
    out, fmt = normalize(data)
    assert fmt.score_source == "teacher_pos_score+teacher_neg_scores"
    assert out["teacher_pos_score"] == [0.75]
    assert out["teacher_neg_scores"] == [[0.25, 1.0]]
    assert out["teacher_margins"][0] == pytest.approx([0.50005, -0.25], abs=1e-7)


def test_single_negative_takes_scalar_scores():
    """Guards that with one 'negative' string, scalar teacher_neg_scores/teacher_margins count as one-element lists."""
    data = {
        "query": ["q"],
        "positive": ["p"],
        "negative": ["n"],
        "teacher_pos_score": [1.0],
        "teacher_neg_scores": [0.25],
        "teacher_margins": [0.75],
    }
    out, _ = normalize(data)
    assert out.to_list() == [
        {
            "query": "q",
            "positive": "p",
            "negatives": ["n"],
            "teacher_pos_score": 1.0,
            "teacher_neg_scores": [0.25],
            "teacher_margins": [0.75],
        }
    ]


def test_score_columns_have_a_stable_float32_schema():
    """Guards the explicit Features: integer or float64 input scores come out float32, texts as strings."""
    out, _ = normalize(triplets(1, teacher_pos_score=[2], teacher_neg_scores=[[1, 3]]))
    assert out.features["teacher_pos_score"] == datasets.Value("float32")
    assert out.features["teacher_neg_scores"] == datasets.List(datasets.Value("float32"))
    assert out.features["teacher_margins"] == datasets.List(datasets.Value("float32"))
    assert out.features["negatives"] == datasets.List(datasets.Value("string"))
    assert out["teacher_margins"] == [[1.0, -1.0]]
    assert set(SCORE_COLUMNS) <= set(out.column_names)


def test_normalised_output_normalises_to_itself():
    """Guards idempotence: canonical output (with all three score columns) is recognised and left unchanged."""
    once, _ = normalize(FLAG)
    twice, fmt = normalize_dataset(once)
    assert fmt.name == "triplets"
    assert twice.to_list() == once.to_list() == FLAG_ROWS


def test_margins_disagreeing_with_raw_scores_are_refused():
    """Guards that contradictory user scores are not silently resolved by dropping one of them."""
    data = triplets(3, teacher_pos_score=[1.0] * 3, teacher_neg_scores=[[0.5, 0.25]] * 3)
    data["teacher_margins"] = [[0.5, 0.75], [0.5, 0.75], [0.5, 0.7]]
    refused(data, "row 2, column 'teacher_margins', negative 1", "0.7", "0.75", "must agree")


def test_label_disagreeing_with_teacher_margins_is_refused():
    """Guards that an ST 'label' and a 'teacher_margins' column that contradict each other are refused."""
    data = {
        "anchor": ["q"],
        "positive": ["p"],
        "negative": ["n"],
        "label": [0.25],
        "teacher_margins": [[0.5]],
    }
    refused(data, "row 0, column 'label', negative 0", "disagrees with 'teacher_margins'", "sentence-transformers")


# ------------------------------------------------------------------------------------------------ column_map


def test_column_map_renames_user_columns_first():
    """Guards that any naming works through column_map, including mapping to a format's own names."""
    data = {"question": ["q"], "answers": [["p1", "p2"]], "hard": [["n"]], "p_s": [[1.0, 0.5]], "n_s": [[0.25]]}
    column_map = {"question": "query", "answers": "pos", "hard": "neg", "p_s": "pos_scores", "n_s": "neg_scores"}
    out, fmt = normalize(data, column_map=column_map)
    assert fmt.name == "flagembedding"
    assert out["positive"] == ["p1", "p2"]
    assert out["teacher_margins"] == [[0.75], [0.25]]


def test_column_map_error_names_both_user_and_mapped_column():
    """Guards that an error on a renamed column shows the user's name (what is in their file) and the mapped one."""
    data = {"question": ["q1", "q2"], "answer": ["p1", "   "], "negative": ["n1", "n2"]}
    refused(
        data,
        "row 1, column 'answer' (mapped to 'positive')",
        "whitespace-only",
        column_map={"question": "query", "answer": "positive"},
    )


def test_column_map_with_missing_source_column_is_refused():
    """Guards that a typo in a column_map key is named, with the columns that do exist."""
    data = {"question": ["q"], "positive": ["p"]}
    refused(
        data, "column_map", "['questoin']", "Columns found: ['question', 'positive']", column_map={"questoin": "query"}
    )


def test_column_map_with_unknown_target_is_refused():
    """Guards that mapping to a name no format uses (a typo like 'qeury') fails instead of being dropped."""
    refused({"question": ["q"], "positive": ["p"]}, "unknown name(s) ['qeury']", column_map={"question": "qeury"})


def test_column_map_onto_an_existing_column_is_refused():
    """Guards that renaming onto a column the data already has is refused rather than clobbering it."""
    data = {"question": ["q"], "query": ["other"], "positive": ["p"]}
    refused(data, "already has", "'query'", column_map={"question": "query"})


# ------------------------------------------------------------------------------------------------ bad rows


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("query", "", "found an empty string"),
        ("query", " \t ", "found a whitespace-only string"),
        ("positive", None, "found None"),
        ("positive", "   ", "whitespace-only"),
    ],
)
def test_bad_text_names_column_and_row(column, value, found):
    """Guards that an empty, whitespace-only or missing text is reported with the user's column and its row."""
    data = triplets(4)
    data[column][2] = value
    message = refused(data, f"row 2, column '{column}'", found, "non-empty string", "triplets format")
    if value == "":
        assert "whitespace-only" not in message


def test_non_string_text_names_its_type():
    """Guards that a numeric text column is reported as not a string, with the type found."""
    refused({"query": [1, 2], "positive": ["p", "q"]}, "row 0, column 'query'", "int", "not a string", "pairs format")


def test_bad_negative_inside_a_list_names_the_item():
    """Guards that a whitespace-only negative in a list column names the row and the item index."""
    data = triplets(4)
    data["negatives"][3] = ["fine", "  "]
    refused(data, "row 3, column 'negatives', item 1", "whitespace-only")


def test_empty_negatives_list_is_refused():
    """Guards that a row with an empty negatives list is refused (it would give a loss with no terms)."""
    data = triplets(4)
    data["negatives"][1] = []
    refused(data, "row 1, column 'negatives'", "empty negatives list")


def test_negatives_given_as_a_string_are_refused():
    """Guards that a 'negatives' column of plain strings is not split into characters or accepted as a list."""
    data = {"query": ["q"], "positive": ["p"], "negatives": ["n"]}
    refused(data, "row 0, column 'negatives'", "a str", "not a list of strings")


def test_bad_numbered_negative_names_its_column():
    """Guards that a bad text in ST 'negative_2' is reported under that column, not a merged name."""
    data = {"anchor": ["q", "r"], "positive": ["p", "s"], "negative_1": ["a", "b"], "negative_2": ["c", ""]}
    refused(data, "row 1, column 'negative_2'", "empty string", "sentence-transformers format")


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("teacher_pos_score", None, "found None"),
        ("teacher_pos_score", math.nan, "found nan, not a finite number"),
        ("teacher_pos_score", math.inf, "found inf, not a finite number"),
        ("teacher_neg_scores", [0.5, -math.inf], "item 1: found -inf"),
        ("teacher_neg_scores", [0.5, None], "item 1: found None"),
    ],
)
def test_non_finite_score_names_column_and_row(column, value, found):
    """Guards that a missing, NaN or infinite teacher score is refused with its column and row, not cached."""
    data = triplets(3, teacher_pos_score=[1.0, 1.0, 1.0], teacher_neg_scores=[[0.5, 0.25]] * 3)
    data[column][1] = value
    refused(data, f"row 1, column '{column}'", found, "finite numbers")


def test_score_given_as_a_string_is_refused():
    """Guards that a text-typed score column (e.g. '0.5' from a CSV) is refused instead of being parsed blindly."""
    data = triplets(2, teacher_margins=[["0.5", "0.25"], ["1", "2"]])
    refused(data, "row 0, column 'teacher_margins', item 0", "a str ('0.5'), not a number")


def test_score_list_length_must_match_its_texts():
    """Guards the example of 3 neg_scores for 4 negatives: reported with the FlagEmbedding column and row."""
    data = {
        "query": ["q1", "q2"],
        "pos": [["p"], ["p"]],
        "neg": [["a"], ["a", "b", "c", "d"]],
        "pos_scores": [[1.0], [1.0]],
        "neg_scores": [[0.5], [0.5, 0.25, 0.125]],
    }
    refused(data, "row 1, column 'neg_scores'", "found 3 values for 4 negatives in 'neg'", "FlagEmbedding format")


def test_pos_scores_length_must_match_positives():
    """Guards that FlagEmbedding pos_scores need one score per positive (else a positive would get a wrong score)."""
    data = {k: list(v) for k, v in FLAG.items()}
    data["pos_scores"] = [[1.0], [0.5]]
    refused(data, "row 0, column 'pos_scores'", "found 1 value for 2 positives in 'pos'")


def test_empty_positive_list_is_refused():
    """Guards that a FlagEmbedding row with no positives is refused instead of silently producing no rows."""
    data = {"query": ["q1", "q2"], "pos": [["p"], []], "neg": [["n"], ["n"]]}
    refused(data, "row 1, column 'pos'", "empty positives list")


def test_label_length_must_match_negative_columns():
    """Guards that an ST label list must have one margin per negative_i column."""
    data = {
        "anchor": ["q"],
        "positive": ["p"],
        "negative_1": ["a"],
        "negative_2": ["b"],
        "negative_3": ["c"],
        "label": [[0.5, 0.25]],
    }
    refused(data, "row 0, column 'label'", "found 2 values for 3 negatives", "'negative_1'..'negative_3'")


def test_source_file_prefixes_the_location():
    """Guards the 'train.jsonl, line 13, column 'neg': ...' location: the file's line, counted from 1 as an editor
    counts it (the row was once reported 0-based, 'row 12', one line above the bad one)."""
    data = {"query": [f"q{i}" for i in range(14)], "pos": [["p"]] * 14, "neg": [["n", "m"]] * 14}
    data["neg"] = [list(x) for x in data["neg"]]
    data["neg"][12] = ["n", " "]
    refused(data, "train.jsonl, line 13, column 'neg', item 1: found a whitespace-only", source="train.jsonl")
    refused(data, "pairs.csv, line 14, column 'neg'", source="pairs.csv")  # line 1 is the header
    refused(data, "user/set:train, row 12, column 'neg'", source="user/set:train")  # not line-based: dataset[12]


def test_row_index_counts_across_validation_batches():
    """Guards that rows are numbered in the user's data, not within a validation batch (1500, not 500)."""
    data = triplets(1600)
    data["query"][1500] = ""
    message = refused(data, "row 1500, column 'query'")
    assert "row 500," not in message


def test_first_bad_row_is_reported():
    """Guards that with several bad rows the first one is named."""
    data = triplets(6)
    data["positive"][4] = ""
    data["positive"][2] = ""
    refused(data, "row 2, column 'positive'")


# ----------------------------------------------------------------------------------------- bad column sets


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"text": ["q"], "answer": ["p"]}, "no query column"),
        ({"query": ["q"], "answer": ["p"]}, "no positive column"),
        ({"query": ["q"], "anchor": ["a"], "positive": ["p"]}, "both 'query' and 'anchor'"),
        (
            {"query": ["q"], "positive": ["p"], "negative": ["n"], "negatives": [["n"]]},
            "both 'negative' and 'negatives'",
        ),
        ({"anchor": ["q"], "positive": ["p"], "negative_1": ["a"], "negative_3": ["b"]}, "not numbered"),
        ({"query": ["q"], "pos": [["p"]]}, "['neg'] missing"),
        ({"query": ["q"], "pos": [["p"]], "neg": [["n"]], "positive": ["p"]}, "mixed with ['positive']"),
        ({"query": ["q"], "pos": [["p"]], "neg": [["n"]], "pos_scores": [[1.0]]}, "'pos_scores' without 'neg_scores'"),
        (triplets(1, teacher_pos_score=[1.0]), "'teacher_pos_score' without 'teacher_neg_scores'"),
        (triplets(1, teacher_neg_scores=[[1.0, 2.0]]), "'teacher_neg_scores' without 'teacher_pos_score'"),
        ({"query": ["q"], "positive": ["p"], "teacher_margins": [[1.0]]}, "pairs data (no negatives)"),
        ({"query": ["q"], "positive": ["p"], "negative": ["n"], "label": [1.0]}, "'label' is read as teacher margins"),
    ],
)
def test_unrecognised_column_set_lists_columns_and_formats(data, problem):
    """Guards that an unusable column set says what is wrong, lists the columns found and explains every format."""
    columns = ", ".join(f"'{c}'" for c in data)
    message = refused(data, problem, f"Columns found: [{columns}]")
    for expected in ("triplets", "sentence-transformers", "FlagEmbedding", "pairs", "column_map"):
        assert expected in message


def test_detect_format_refuses_unknown_columns():
    """Guards that detect_format itself raises the explanatory error (not a KeyError later)."""
    with pytest.raises(DataValidationError, match=r"no query column.*Columns found: \['text'\].*FlagEmbedding"):
        detect_format(["text"])


def test_empty_dataset_is_refused():
    """Guards that a 0-row dataset (wrong split, over-eager filter) fails up front and says it is empty."""
    empty = Dataset.from_dict({"query": [], "positive": []})
    with pytest.raises(DataValidationError, match=r"train\.jsonl: the dataset is empty \(0 rows"):
        normalize_dataset(empty, source="train.jsonl")


def test_extra_columns_are_dropped_with_a_warning(caplog):
    """Guards the documented choice: only canonical columns are returned, and the dropped ones are logged."""
    with caplog.at_level(logging.WARNING, logger="hf_margin.data.formats"):
        out, _ = normalize({"query": ["q"], "positive": ["p"], "id": [7], "source": ["web"]})
    assert out.column_names == ["query", "positive"]
    assert "['id', 'source']" in caplog.text


def test_a_dataset_dict_is_refused_with_a_hint():
    """Guards that passing a whole DatasetDict gives a clear TypeError pointing at choosing a split."""
    with pytest.raises(TypeError, match=r"dataset\['train'\]"):
        normalize_dataset(datasets.DatasetDict({"train": Dataset.from_dict(FLAG)}))


# ---------------------------------------------------------------------------------------------------- files


def test_jsonl_list_columns_round_trip(tmp_path):
    """Guards that FlagEmbedding list columns loaded from a jsonl file keep their lists and scores."""
    path = tmp_path / "train.jsonl"
    rows = [{k: FLAG[k][i] for k in FLAG} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    out, fmt = normalize_dataset(loaded, source=path.name)
    assert fmt.name == "flagembedding"
    assert out.to_list() == FLAG_ROWS


def test_jsonl_bad_row_is_named_with_the_file(tmp_path):
    """Guards that a bad row in a loaded jsonl is reported with the file name and its line (the third line: 3)."""
    path = tmp_path / "train.jsonl"
    rows = [{"query": f"q{i}", "positive": "p", "negatives": ["n"]} for i in range(3)]
    rows[2]["negatives"] = []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataValidationError, match=r"train\.jsonl, line 3, column 'negatives': found an empty"):
        normalize_dataset(loaded, source=path.name)


def test_parallel_map_gives_the_same_rows():
    """Guards that the conversion works with num_proc > 1 (its function and arguments pickle) and keeps row order."""
    data = {k: [v[i % 2] for i in range(8)] for k, v in FLAG.items()}
    serial, _ = normalize(data)
    parallel, _ = normalize(data, num_proc=2)
    assert parallel.to_list() == serial.to_list()
    assert len(serial) == 12

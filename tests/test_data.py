"""Triplet validation, one-time tokenisation and the padding collator, checked row by row against the tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from hf_margin.data.columns import (
    BI_ENCODER_COLUMNS,
    CROSS_ENCODER_COLUMNS,
    DataValidationError,
    MarginDistillCollator,
    tokenize_triplets,
    validate_triplets,
)
from hf_margin.models.modeling import encode, student_scores

from .conftest import make_triplets

BAD_ROW = 5

# Texts of different lengths (1 to 4 words) and ragged negatives (1, 3, 1), so padding is really exercised.
VARIED = {
    "query": ["sun1", "sea1 sea2 sea3", "car1 car2"],
    "positive": ["sun2 sun3", "sea4", "car3 car4 car5 car6"],
    "negatives": [["dog1"], ["tea1 tea2", "map1", "dog2 dog3 dog4"], ["sun5 sun6"]],
    "teacher_margins": [[0.5], [0.25, -1.5, 2.0], [0.75]],
}


def varied() -> Dataset:
    return Dataset.from_dict({k: [list(v) if isinstance(v, list) else v for v in vs] for k, vs in VARIED.items()})


def rows(n: int = 8, **overrides) -> dict[str, list]:
    """Columns of ``make_triplets(n)`` as plain lists, with ``overrides`` replacing whole columns."""
    data = make_triplets(n).to_dict()
    data.update(overrides)
    return data


def with_bad(column: str, value, n: int = 8, row: int = BAD_ROW) -> Dataset:
    """``make_triplets(n)`` with ``column`` replaced by ``value`` at ``row``."""
    data = rows(n)
    data[column][row] = value
    return Dataset.from_dict(data)


def single_negative(n: int = 8) -> dict[str, list]:
    data = rows(n)
    data["negative"] = [negs[0] for negs in data.pop("negatives")]
    return data


def raises_naming(dataset: Dataset, *parts: str, **kwargs) -> str:
    with pytest.raises(DataValidationError) as info:
        validate_triplets(dataset, **kwargs)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def ids(tokenizer, text: str, pair: str | None = None) -> list[int]:
    return tokenizer(text, pair)["input_ids"]


# --------------------------------------------------------------------------------------------- validation


def test_valid_data_returns_the_negatives_column_name():
    """Guards that good data passes and the caller learns which negatives column ('negatives' or 'negative') it uses."""
    assert validate_triplets(make_triplets(8)) == "negatives"
    assert validate_triplets(make_triplets(8, ragged=True)) == "negatives"
    assert validate_triplets(Dataset.from_dict(single_negative())) == "negative"
    assert validate_triplets(varied(), require_teacher_margins=True) == "negatives"


@pytest.mark.parametrize("column", ["query", "positive"])
def test_missing_text_column_is_named(column):
    """Guards that a dataset without 'query' or 'positive' fails up front with the column's name and rename hint."""
    data = rows()
    data.pop(column)
    raises_naming(Dataset.from_dict(data), f"missing column(s) ['{column}']:", "rename_column")


def test_no_negatives_column_is_named():
    """Guards that data with neither 'negative' nor 'negatives' fails and says which columns to add."""
    data = rows()
    data["hard_negatives"] = data.pop("negatives")
    raises_naming(Dataset.from_dict(data), "no negatives column", "'negative'", "'negatives'", "hard_negatives")


@pytest.mark.parametrize("column", ["query", "positive"])
@pytest.mark.parametrize(("value", "problem"), [("", "empty"), ("   \t ", "whitespace-only"), (None, "NoneType")])
def test_bad_text_names_column_and_first_bad_row(column, value, problem):
    """Guards that an empty, whitespace or None query/positive is reported with its column and row index."""
    dataset = with_bad(column, value)
    message = raises_naming(dataset, f"'{column}'", f"row {BAD_ROW}:", problem)
    assert "row 0" not in message


def test_first_bad_row_is_reported_when_several_are_bad():
    """Guards that the message names the *first* bad row, not a later one."""
    data = rows(8)
    data["positive"][6] = ""
    data["positive"][3] = " "
    raises_naming(Dataset.from_dict(data), "'positive', row 3:")


def test_bad_row_beyond_the_first_validation_batch_has_a_global_index():
    """Guards that rows are numbered across validation batches (row 1030 is not reported as row 6)."""
    n = 1040
    data = rows(n)
    data["query"][1030] = ""
    raises_naming(Dataset.from_dict(data), "'query', row 1030:")


@pytest.mark.parametrize("column", ["query", "positive"])
def test_non_string_text_is_named(column):
    """Guards that a numeric text column is rejected with the column, the row and the offending type."""
    data = rows(4)
    data[column] = [10, 11, 12, 13]
    raises_naming(Dataset.from_dict(data), f"'{column}', row 0:", "int", "not a string")


@pytest.mark.parametrize(("value", "problem"), [("", "empty"), ("  ", "whitespace-only"), (None, "NoneType")])
def test_bad_single_negative_names_column_and_row(value, problem):
    """Guards that a bad text in a 'negative' string column is reported with that column and the row."""
    data = single_negative()
    data["negative"][BAD_ROW] = value
    message = raises_naming(Dataset.from_dict(data), f"'negative', row {BAD_ROW}:", problem)
    assert "negative 0" not in message  # a string column has no negative index


@pytest.mark.parametrize(("value", "problem"), [("", "empty"), (" \n ", "whitespace-only"), (None, "NoneType")])
def test_bad_text_in_negatives_list_names_row_and_negative_index(value, problem):
    """Guards that a bad text inside a 'negatives' list is reported with the row and its position in the list."""
    data = rows()
    data["negatives"][BAD_ROW][2] = value
    raises_naming(Dataset.from_dict(data), f"'negatives', row {BAD_ROW}, negative 2:", problem)


def test_non_string_negatives_are_named():
    """Guards that a list of numbers as negatives is rejected as non-string, naming the first negative."""
    data = rows(4)
    data["negatives"] = [[1, 2], [3], [4], [5]]
    raises_naming(Dataset.from_dict(data), "'negatives', row 0, negative 0:", "int")


def test_empty_negatives_list_names_row():
    """Guards that an example with an empty list of negatives is rejected before any compute."""
    data = rows()
    data["negatives"][BAD_ROW] = []
    raises_naming(Dataset.from_dict(data), f"'negatives', row {BAD_ROW}:", "no negatives")


def test_none_negatives_list_names_row():
    """Guards that a None instead of a list of negatives is rejected like an empty list."""
    data = rows()
    data["negatives"][BAD_ROW] = None
    raises_naming(Dataset.from_dict(data), f"'negatives', row {BAD_ROW}:", "no negatives")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_teacher_margin_names_row_and_negative(bad):
    """Guards that NaN/inf teacher margins are refused (they would poison the loss), naming row and negative."""
    data = rows()
    margins = [[0.1, 0.2, 0.3] for _ in data["query"]]
    margins[BAD_ROW][1] = bad
    raises_naming(
        Dataset.from_dict({**data, "teacher_margins": margins}),
        f"'teacher_margins', row {BAD_ROW}, negative 1:",
        "not finite",
    )


def test_non_finite_teacher_margin_in_single_negative_data():
    """Guards that a scalar teacher margin per row (with a 'negative' column) is also checked for NaN."""
    data = single_negative()
    margins = [0.5] * len(data["query"])
    margins[BAD_ROW] = math.nan
    raises_naming(
        Dataset.from_dict({**data, "teacher_margins": margins}),
        f"'teacher_margins', row {BAD_ROW}, negative 0:",
        "not finite",
    )
    margins[BAD_ROW] = 0.25
    assert validate_triplets(Dataset.from_dict({**data, "teacher_margins": margins})) == "negative"


@pytest.mark.parametrize("length", [2, 4])
def test_teacher_margins_length_must_match_negatives(length):
    """Guards that a teacher_margins row with more or fewer entries than negatives is refused, naming the row."""
    data = rows()
    margins = [[0.1, 0.2, 0.3] for _ in data["query"]]
    margins[BAD_ROW] = [0.1] * length
    raises_naming(
        Dataset.from_dict({**data, "teacher_margins": margins}),
        f"'teacher_margins', row {BAD_ROW}:",
        f"{length} margins for 3 negatives",
    )


def test_missing_teacher_margins_when_required():
    """Guards that a distillation loss without teacher margins says to run attach_teacher_margins."""
    raises_naming(make_triplets(4), "'teacher_margins'", "attach_teacher_margins", require_teacher_margins=True)


# --------------------------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize("negatives_column", ["negatives", "negative"])
def test_tokenize_bi_encoder_columns_and_ids(tokenizer, negatives_column):
    """Guards the bi-encoder columns: ids equal the tokenizer's, raw texts dropped, teacher columns kept."""
    data = make_triplets(6, ragged=True, seed=3).to_dict()
    if negatives_column == "negative":
        data["negative"] = [negs[0] for negs in data.pop("negatives")]
        data["teacher_margins"] = [0.1 * i for i in range(6)]
        neg_lists = [[n] for n in data["negative"]]
    else:
        data["teacher_margins"] = [[0.1 * i] * len(negs) for i, negs in enumerate(data["negatives"])]
        neg_lists = data["negatives"]
    out = tokenize_triplets(Dataset.from_dict(data), tokenizer, student_type="bi-encoder")

    assert set(out.column_names) == {*BI_ENCODER_COLUMNS, "teacher_margins"}
    for i in range(6):
        row = out[i]
        assert row["query_input_ids"] == ids(tokenizer, data["query"][i])
        assert row["positive_input_ids"] == ids(tokenizer, data["positive"][i])
        assert row["negatives_input_ids"] == [ids(tokenizer, n) for n in neg_lists[i]]
        assert row["teacher_margins"] == pytest.approx(data["teacher_margins"][i])


@pytest.mark.parametrize("negatives_column", ["negatives", "negative"])
def test_tokenize_cross_encoder_pairs_and_token_types(tokenizer, negatives_column):
    """Guards the cross-encoder pairs: [CLS] q [SEP] d [SEP] ids and token_type_ids 1 on the document segment."""
    data = varied().to_dict()
    if negatives_column == "negative":
        data["negative"] = [negs[-1] for negs in data.pop("negatives")]
        data["teacher_margins"] = [m[-1] for m in data["teacher_margins"]]
        neg_lists = [[n] for n in data["negative"]]
    else:
        neg_lists = data["negatives"]
    out = tokenize_triplets(Dataset.from_dict(data), tokenizer, student_type="cross-encoder")

    assert set(out.column_names) == {*CROSS_ENCODER_COLUMNS, "teacher_margins"}

    def segments(q: str, d: str) -> list[int]:
        nq, nd = len(q.split()), len(d.split())
        return [0] * (nq + 2) + [1] * (nd + 1)

    for i, q in enumerate(data["query"]):
        row = out[i]
        pos = data["positive"][i]
        assert row["positive_pair_input_ids"] == ids(tokenizer, q, pos)
        assert row["positive_pair_token_type_ids"] == segments(q, pos)
        assert row["positive_pair_token_type_ids"] == tokenizer(q, pos)["token_type_ids"]
        assert row["negatives_pair_input_ids"] == [ids(tokenizer, q, n) for n in neg_lists[i]]
        assert row["negatives_pair_token_type_ids"] == [segments(q, n) for n in neg_lists[i]]
        assert row["teacher_margins"] == pytest.approx(data["teacher_margins"][i])


def test_tokenize_truncates_to_max_length(tokenizer):
    """Guards that max_length is applied to every text, keeping the final [SEP]."""
    data = {"query": ["sun1 sun2 sun3 sun4 sun5 sun6"], "positive": ["sea1"], "negatives": [["car1 car2 car3 car4"]]}
    out = tokenize_triplets(Dataset.from_dict(data), tokenizer, max_length=4)
    row = out[0]
    assert row["query_input_ids"] == ids(tokenizer, "sun1 sun2")
    assert row["positive_input_ids"] == ids(tokenizer, "sea1")
    assert row["negatives_input_ids"] == [ids(tokenizer, "car1 car2")]


# --------------------------------------------------------------------------------------------- collator


def collate(tokenizer, student_type: str, dataset: Dataset | None = None, **kwargs) -> dict[str, torch.Tensor]:
    tokenised = tokenize_triplets(dataset if dataset is not None else varied(), tokenizer, student_type=student_type)
    collator = MarginDistillCollator(pad_token_id=tokenizer.pad_token_id, student_type=student_type, **kwargs)
    return collator([tokenised[i] for i in range(len(tokenised))])


def assert_padded_rows(batch, expected: list[list[int]], pad_id: int, key: str = "input_ids", pad_value=None):
    pad_value = pad_id if pad_value is None else pad_value
    assert batch[key].shape[0] == len(expected)
    for r, seq in enumerate(expected):
        n = len(seq)
        assert batch[key][r, :n].tolist() == seq, f"row {r}"
        assert (batch[key][r, n:] == pad_value).all(), f"row {r} padding"
        assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (batch[key].shape[1] - n), f"row {r} mask"


def test_bi_encoder_collator_layout_with_ragged_negatives(tokenizer):
    """Guards the bi-encoder layout: B queries, B positives, the real negatives row-major, and padded masks."""
    batch = collate(tokenizer, "bi-encoder")
    q, p, negs = VARIED["query"], VARIED["positive"], VARIED["negatives"]
    texts = q + p + [n for row in negs for n in row]
    expected = [ids(tokenizer, t) for t in texts]
    assert set(batch) == {"input_ids", "attention_mask", "negatives_mask", "teacher_margins"}
    assert batch["input_ids"].shape == (2 * 3 + 5, max(len(e) for e in expected)) == (11, 6)
    assert batch["input_ids"].dtype == torch.long
    assert_padded_rows(batch, expected, tokenizer.pad_token_id)
    assert batch["attention_mask"].sum().item() == sum(len(e) for e in expected)

    assert batch["negatives_mask"].dtype == torch.bool
    assert batch["negatives_mask"].tolist() == [[True, False, False], [True, True, True], [True, False, False]]
    assert batch["teacher_margins"].dtype == torch.float32
    assert batch["teacher_margins"].tolist() == [[0.5, 0.0, 0.0], [0.25, -1.5, 2.0], [0.75, 0.0, 0.0]]


def test_bi_encoder_collator_without_teacher_margins(tokenizer):
    """Guards that rows without teacher margins collate (label_hinge) and get no teacher_margins key."""
    batch = collate(tokenizer, "bi-encoder", dataset=varied().remove_columns("teacher_margins"))
    assert set(batch) == {"input_ids", "attention_mask", "negatives_mask"}
    assert batch["negatives_mask"].sum().item() == 5


def test_bi_encoder_collator_with_single_negative_column(tokenizer):
    """Guards that a 'negative' string column collates to N=1 with scalar teacher margins."""
    data = {"query": VARIED["query"], "positive": VARIED["positive"], "negative": ["dog1", "tea1 tea2", "map1"]}
    data["teacher_margins"] = [0.5, -0.5, 1.5]
    batch = collate(tokenizer, "bi-encoder", dataset=Dataset.from_dict(data))
    texts = data["query"] + data["positive"] + data["negative"]
    assert_padded_rows(batch, [ids(tokenizer, t) for t in texts], tokenizer.pad_token_id)
    assert batch["negatives_mask"].tolist() == [[True]] * 3
    assert batch["teacher_margins"].tolist() == [[0.5], [-0.5], [1.5]]


def test_cross_encoder_collator_layout(tokenizer):
    """Guards the cross-encoder layout: B (q, p) pairs then M (q, n) pairs row-major, with token_type_ids."""
    batch = collate(tokenizer, "cross-encoder")
    pairs = list(zip(VARIED["query"], VARIED["positive"]))
    pairs += [(q, n) for q, negs in zip(VARIED["query"], VARIED["negatives"]) for n in negs]
    expected = [ids(tokenizer, q, d) for q, d in pairs]
    expected_types = [tokenizer(q, d)["token_type_ids"] for q, d in pairs]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "negatives_mask", "teacher_margins"}
    assert batch["input_ids"].shape == (3 + 5, max(len(e) for e in expected))
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    assert_padded_rows(batch, expected, tokenizer.pad_token_id)
    assert_padded_rows(batch, expected_types, tokenizer.pad_token_id, key="token_type_ids", pad_value=0)
    assert batch["token_type_ids"].sum().item() == sum(sum(t) for t in expected_types) > 0
    assert batch["negatives_mask"].tolist() == [[True, False, False], [True, True, True], [True, False, False]]
    assert batch["teacher_margins"].tolist() == [[0.5, 0.0, 0.0], [0.25, -1.5, 2.0], [0.75, 0.0, 0.0]]


@pytest.mark.parametrize("student_type", ["bi-encoder", "cross-encoder"])
@pytest.mark.parametrize("multiple", [4, 8, 5])
def test_pad_to_multiple_of_rounds_length_up(tokenizer, student_type, multiple):
    """Guards that pad_to_multiple_of rounds the padded length up (tensor cores) without changing the content."""
    plain = collate(tokenizer, student_type)
    padded = collate(tokenizer, student_type, pad_to_multiple_of=multiple)
    length = plain["input_ids"].shape[1]
    want = -(-length // multiple) * multiple
    assert padded["input_ids"].shape == (plain["input_ids"].shape[0], want)
    assert padded["attention_mask"].shape == padded["input_ids"].shape
    assert torch.equal(padded["input_ids"][:, :length], plain["input_ids"])
    assert (padded["input_ids"][:, length:] == tokenizer.pad_token_id).all()
    assert (padded["attention_mask"][:, length:] == 0).all()
    if student_type == "cross-encoder":
        assert padded["token_type_ids"].shape == padded["input_ids"].shape
        assert torch.equal(padded["token_type_ids"][:, :length], plain["token_type_ids"])


@pytest.mark.parametrize("student_type", ["bi-encoder", "cross-encoder"])
def test_collator_on_untokenised_rows_says_to_tokenise(student_type):
    """Guards that raw text rows reaching the collator fail with the missing columns and a tokenize_triplets hint."""
    raw = varied()
    collator = MarginDistillCollator(pad_token_id=0, student_type=student_type)
    with pytest.raises(DataValidationError, match="tokenize_triplets") as info:
        collator([raw[i] for i in range(3)])
    expected = BI_ENCODER_COLUMNS if student_type == "bi-encoder" else CROSS_ENCODER_COLUMNS
    for column in expected:
        assert column in str(info.value)


def test_cross_encoder_collator_on_bi_encoder_tokens_says_to_tokenise(tokenizer):
    """Guards that rows tokenised for the other student type are refused, not silently mis-collated."""
    tokenised = tokenize_triplets(varied(), tokenizer, student_type="bi-encoder")
    collator = MarginDistillCollator(pad_token_id=0, student_type="cross-encoder")
    with pytest.raises(DataValidationError, match="positive_pair_input_ids"):
        collator([tokenised[i] for i in range(3)])


def test_collator_rejects_margins_that_disagree_with_negatives(tokenizer):
    """Guards that a row whose teacher_margins length differs from its negatives fails at collation."""
    tokenised = tokenize_triplets(varied(), tokenizer)
    features = [dict(tokenised[i]) for i in range(3)]
    features[1]["teacher_margins"] = [0.1, 0.2]
    with pytest.raises(DataValidationError, match="position 1 of a collated batch: 2 teacher margins for 3 negatives"):
        MarginDistillCollator(pad_token_id=0)(features)


# --------------------------------------------------------------------------------------------- one padded pass


def sharpen(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> torch.nn.Module:
    """Redraw the weight matrices with a larger std, in place.

    At BERT's initializer_range (0.02) every text embeds almost alike (scores differ by ~1e-5), so a
    misplaced row would hide inside the tolerance; here scores spread by ~0.1 or more.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model.eval()


def single(model, tokenizer, text: str, pooling: str) -> torch.Tensor:
    enc = tokenizer(text, return_tensors="pt")
    return encode(model, enc["input_ids"], enc["attention_mask"], pooling=pooling)[0]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("source", ["varied", "triplets"])
def test_bi_encoder_batch_scores_equal_separate_passes(tokenizer, bi_encoder, pooling, source):
    """Guards that one padded forward pass over the collated batch scores each pair like an unpadded pass."""
    dataset = varied() if source == "varied" else make_triplets(4, ragged=True, seed=2)
    data = dataset.to_dict()
    sharpen(bi_encoder)
    batch = collate(tokenizer, "bi-encoder", dataset=dataset, pad_to_multiple_of=8)
    with torch.no_grad():
        pos, neg = student_scores(bi_encoder, batch, student_type="bi-encoder", pooling=pooling)
        b, width = len(data["query"]), max(len(n) for n in data["negatives"])
        assert pos.shape == (b,) and neg.shape == (b, width)
        for i, q in enumerate(data["query"]):
            eq = single(bi_encoder, tokenizer, q, pooling)
            ep = single(bi_encoder, tokenizer, data["positive"][i], pooling)
            assert pos[i].item() == pytest.approx(F.cosine_similarity(eq, ep, dim=-1).item(), abs=1e-5)
            for j in range(width):
                if j < len(data["negatives"][i]):
                    en = single(bi_encoder, tokenizer, data["negatives"][i][j], pooling)
                    want = F.cosine_similarity(eq, en, dim=-1).item()
                    assert neg[i, j].item() == pytest.approx(want, abs=1e-5), (i, j)
                else:
                    assert neg[i, j].item() == 0.0
    real = torch.cat([pos, neg[batch["negatives_mask"]]])
    assert real.max() - real.min() > 0.05  # scores spread: a misplaced row would not match


def test_cross_encoder_batch_scores_equal_separate_passes(tokenizer, cross_encoder):
    """Guards that one padded cross-encoder pass gives each pair's logit as scored alone, unpadded."""
    sharpen(cross_encoder)
    batch = collate(tokenizer, "cross-encoder", pad_to_multiple_of=8)

    def logit(q: str, d: str) -> float:
        return cross_encoder(**tokenizer(q, d, return_tensors="pt")).logits[0, 0].item()

    with torch.no_grad():
        pos, neg = student_scores(cross_encoder, batch, student_type="cross-encoder")
        assert pos.shape == (3,) and neg.shape == (3, 3)
        for i, q in enumerate(VARIED["query"]):
            assert pos[i].item() == pytest.approx(logit(q, VARIED["positive"][i]), abs=1e-5)
            for j in range(3):
                if j < len(VARIED["negatives"][i]):
                    assert neg[i, j].item() == pytest.approx(logit(q, VARIED["negatives"][i][j]), abs=1e-5), (i, j)
                else:
                    assert neg[i, j].item() == 0.0
        real = torch.cat([pos, neg[batch["negatives_mask"]]])
        assert real.max() - real.min() > 0.05

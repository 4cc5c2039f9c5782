"""Recognise a user's training data format and normalise it to the canonical triplet columns.

Four formats are recognised (after an optional ``column_map`` rename, ``{user column: known name}``):

(a) **triplets**: ``query``, ``positive`` and ``negatives`` (a list of strings) or ``negative`` (one string).
(b) **sentence-transformers** n-tuples: ``anchor`` (or ``query``), ``positive``, ``negative_1`` .. ``negative_n``
    (or one ``negative`` column after ``anchor``); an optional ``label`` holds the teacher margins
    ``pos − neg_i`` (one float, or a list of ``n`` floats), as sentence-transformers' ``MarginMSELoss`` uses.
(c) **FlagEmbedding**: ``query``, ``pos`` (list of strings), ``neg`` (list of strings), optional ``pos_scores``
    (one float per positive) and ``neg_scores`` (one float per negative). Each positive becomes its own output
    row with *all* the row's negatives and its own positive score, so the output has ``sum(len(pos))`` rows,
    in the original order.
(d) **pairs**: ``query`` (or ``anchor``) and ``positive`` only; negatives are mined later.

Teacher scores may come as ``teacher_pos_score`` + ``teacher_neg_scores`` and/or ``teacher_margins`` (formats a
and b), the ST ``label`` (margins), or FlagEmbedding ``pos_scores`` + ``neg_scores``. When raw scores and margins
are both given they must agree (``pos − neg``, within 1e-4); nothing a user brings is dropped silently.

The result has the canonical columns only: ``query``, ``positive``, ``negatives`` (unless pairs), and, when scores
were given, ``teacher_margins`` plus ``teacher_pos_score``/``teacher_neg_scores`` when raw scores are known, with
explicit ``datasets.Features`` (strings, float32 scores). Other columns (ids, prompts, ...) are dropped, with a
logged warning that names them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
from datasets import Dataset

from hf_margin.data.columns import (
    NEGATIVE,
    NEGATIVES,
    POSITIVE,
    QUERY,
    TEACHER_MARGINS,
    DataValidationError,
    row_location,
)

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "SCORE_COLUMNS", "DataFormat", "detect_format", "normalize_dataset"]

TEACHER_POS_SCORE, TEACHER_NEG_SCORES = "teacher_pos_score", "teacher_neg_scores"
SCORE_COLUMNS: tuple[str, ...] = (TEACHER_POS_SCORE, TEACHER_NEG_SCORES, TEACHER_MARGINS)
FORMATS: tuple[str, ...] = ("triplets", "sentence-transformers", "flagembedding", "pairs")

ANCHOR, LABEL = "anchor", "label"
POS, NEG, POS_SCORES, NEG_SCORES = "pos", "neg", "pos_scores", "neg_scores"
_NUMBERED_NEGATIVE = re.compile(r"^negative_(\d+)$")
_KNOWN = (QUERY, ANCHOR, POSITIVE, NEGATIVE, NEGATIVES, LABEL, POS, NEG, POS_SCORES, NEG_SCORES, *SCORE_COLUMNS)
_TITLES = {
    "triplets": "triplets",
    "sentence-transformers": "sentence-transformers",
    "flagembedding": "FlagEmbedding",
    "pairs": "pairs",
}
_VALIDATION_BATCH = 1000
_TOLERANCE = 1e-4

_FORMATS_HELP = (
    "Recognised formats: (a) triplets: 'query', 'positive', and 'negatives' (list of strings) or 'negative' "
    "(one string); (b) sentence-transformers n-tuples: 'anchor' (or 'query'), 'positive', 'negative_1'.."
    "'negative_n' (or one 'negative' after 'anchor'), optional 'label' = teacher margins pos - neg_i; "
    "(c) FlagEmbedding: 'query', 'pos' (list of strings), 'neg' (list of strings), optional 'pos_scores' and "
    "'neg_scores'; (d) pairs: 'query' (or 'anchor') and 'positive' only (negatives are mined later). "
    "Teacher scores in (a) and (b): 'teacher_pos_score' + 'teacher_neg_scores' and/or 'teacher_margins'. "
    "For other column names pass column_map={'your_column': 'query', ...}."
)


@dataclass(frozen=True)
class DataFormat:
    """A recognised data format and where its teacher scores (if any) come from."""

    name: str  #: one of FORMATS
    #: "teacher_pos_score+teacher_neg_scores", "teacher_margins", "pos_scores+neg_scores", "label" or None
    score_source: str | None
    has_negatives: bool

    @property
    def has_scores(self) -> bool:
        """Whether the data carries teacher scores or margins."""
        return self.score_source is not None


@dataclass(frozen=True)
class _Layout:
    """Which (renamed) columns play which role; internal to detection and normalisation."""

    format: DataFormat
    query: str
    positive: str  # 'positive', or FlagEmbedding's 'pos' (a list)
    negatives: tuple[str, ...]  # ('negatives',) / ('neg',) list columns, ('negative',) or ('negative_1', ...)
    negatives_is_list: bool
    pos_score: str | None  # 'teacher_pos_score' or 'pos_scores'
    neg_scores: str | None  # 'teacher_neg_scores' or 'neg_scores'
    margins: tuple[str, ...]  # given margin columns, preferred first: 'teacher_margins', 'label'

    @property
    def columns(self) -> list[str]:
        scores = [c for c in (self.pos_score, self.neg_scores) if c]
        return [self.query, self.positive, *self.negatives, *scores, *self.margins]


def _fail(problem: str, names: Sequence[str], renamed: Mapping[str, str], source: str | None) -> DataValidationError:
    found = ", ".join(f"'{renamed[n]}' (mapped to '{n}')" if n in renamed else f"'{n}'" for n in names)
    prefix = f"{source}: " if source else ""
    return DataValidationError(f"{prefix}{problem}. Columns found: [{found}]. {_FORMATS_HELP}")


def _layout(names: Sequence[str], renamed: Mapping[str, str] | None = None, source: str | None = None) -> _Layout:
    renamed = renamed or {}
    cols = set(names)

    def fail(problem: str) -> DataValidationError:
        return _fail(problem, names, renamed, source)

    queries = [c for c in (QUERY, ANCHOR) if c in cols]
    if len(queries) == 2:
        raise fail("both 'query' and 'anchor' are present, so the query column is ambiguous; drop one")
    if not queries:
        raise fail("no query column ('query', or 'anchor' in sentence-transformers style) was found")
    query = queries[0]
    numbered = sorted((int(m.group(1)), c) for c in cols if (m := _NUMBERED_NEGATIVE.match(c)))
    teacher = [c for c in SCORE_COLUMNS if c in cols]
    flag = [c for c in (POS, NEG, POS_SCORES, NEG_SCORES) if c in cols]

    if flag:
        missing = [c for c in (POS, NEG) if c not in cols]
        if missing:
            raise fail(
                f"FlagEmbedding column(s) {flag} are present but {missing} missing: that format needs 'pos' and 'neg'"
            )
        others = [c for c in (ANCHOR, POSITIVE, NEGATIVE, NEGATIVES, LABEL, *teacher) if c in cols]
        others += [c for _, c in numbered]
        if others:
            raise fail(
                f"FlagEmbedding columns ('pos'/'neg') are mixed with {others}; FlagEmbedding data carries its "
                "teacher scores in 'pos_scores' and 'neg_scores'"
            )
        if (POS_SCORES in cols) != (NEG_SCORES in cols):
            have, lack = (POS_SCORES, NEG_SCORES) if POS_SCORES in cols else (NEG_SCORES, POS_SCORES)
            raise fail(
                f"FlagEmbedding '{have}' without '{lack}': give both (one score per pos, one per neg) or neither"
            )
        scored = POS_SCORES in cols
        return _Layout(
            DataFormat("flagembedding", "pos_scores+neg_scores" if scored else None, True),
            query,
            POS,
            (NEG,),
            True,
            POS_SCORES if scored else None,
            NEG_SCORES if scored else None,
            (),
        )

    if POSITIVE not in cols:
        raise fail("no positive column ('positive', or FlagEmbedding 'pos') was found")
    if numbered:
        numbers = [k for k, _ in numbered]
        if numbers != list(range(1, len(numbers) + 1)):
            raise fail(
                f"sentence-transformers negative columns {[c for _, c in numbered]} are not numbered "
                "negative_1..negative_n without gaps"
            )
        clash = [c for c in (NEGATIVE, NEGATIVES) if c in cols]
        if clash:
            raise fail(f"both sentence-transformers 'negative_1'.. columns and {clash}: keep one negatives layout")
        name, negatives, is_list = "sentence-transformers", tuple(c for _, c in numbered), False
    elif NEGATIVE in cols and NEGATIVES in cols:
        raise fail("both 'negative' and 'negatives' are present: keep one")
    elif query == ANCHOR and NEGATIVES in cols:
        raise fail(
            "'anchor' with a 'negatives' list: sentence-transformers data uses 'negative' or 'negative_1'.."
            "'negative_n', and triplets use 'query' (pass column_map={'anchor': 'query'})"
        )
    elif NEGATIVE in cols or NEGATIVES in cols:
        is_list = NEGATIVES in cols
        name = "sentence-transformers" if query == ANCHOR else "triplets"
        negatives = (NEGATIVES if is_list else NEGATIVE,)
    else:
        name, negatives, is_list = "pairs", (), False

    if name == "pairs":
        scores = [c for c in (*teacher, LABEL) if c in cols]
        if scores:
            raise fail(
                f"pairs data (no negatives) with score column(s) {scores}: teacher scores need negatives to form "
                "margins; drop them and score the mined triplets with attach_teacher_margins"
            )
    elif LABEL in cols and name != "sentence-transformers":
        raise fail(
            "'label' is read as teacher margins only in the sentence-transformers format ('anchor', 'positive', "
            "'negative'/'negative_1'..); for triplets name it 'teacher_margins' (column_map={'label': "
            "'teacher_margins'})"
        )
    if (TEACHER_POS_SCORE in cols) != (TEACHER_NEG_SCORES in cols):
        have, lack = (
            (TEACHER_POS_SCORE, TEACHER_NEG_SCORES)
            if TEACHER_POS_SCORE in cols
            else (TEACHER_NEG_SCORES, TEACHER_POS_SCORE)
        )
        raise fail(f"'{have}' without '{lack}': raw teacher scores need both (or give only 'teacher_margins')")
    raw = TEACHER_POS_SCORE in cols
    margins = tuple(c for c in (TEACHER_MARGINS, LABEL) if c in cols)
    if raw:
        score_source: str | None = f"{TEACHER_POS_SCORE}+{TEACHER_NEG_SCORES}"
    else:
        score_source = margins[0] if margins else None
    return _Layout(
        DataFormat(name, score_source, name != "pairs"),
        query,
        POSITIVE,
        negatives,
        is_list,
        TEACHER_POS_SCORE if raw else None,
        TEACHER_NEG_SCORES if raw else None,
        margins,
    )


def detect_format(column_names: list[str]) -> DataFormat:
    """Recognise the data format from its column names (after any ``column_map`` rename).

    Raises:
        DataValidationError: for an unrecognised or ambiguous column set, listing the columns found and the
            four recognised formats.
    """
    return _layout(list(column_names)).format


# ------------------------------------------------------------------------------------------------ validation


def _describe(value: Any) -> str:
    if value is None:
        return "None (a missing value)"
    text = repr(value)
    return f"a {type(value).__name__} ({text if len(text) <= 60 else text[:57] + '...'})"


def _text_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"found {_describe(value)}, not a string"
    if value == "":
        return "found an empty string"
    if not value.strip():
        return f"found a whitespace-only string ({value!r})"
    return None


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"found {_describe(value)}, not a number"
    if not math.isfinite(value):
        return f"found {value}, not a finite number"
    return None


def _as_list(value: Any, *, scalar_ok: bool) -> list | None:
    """A list cell as a list; a lone number as ``[number]`` where ``scalar_ok``; otherwise ``None``."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return None


class _Validator:
    """Row checks whose messages name the user's column and where the row is (a line of a line-based file)."""

    def __init__(self, layout: _Layout, renamed: Mapping[str, str], source: str | None) -> None:
        self.layout = layout
        self.renamed = renamed
        self.source = source
        self.title = _TITLES[layout.format.name]

    def name(self, column: str) -> str:
        if column in self.renamed:
            return f"'{self.renamed[column]}' (mapped to '{column}')"
        return f"'{column}'"

    def error(self, row: int, column: str, problem: str, fix: str, item: str | None = None) -> DataValidationError:
        where = f"{row_location(row, self.source)}, column {self.name(column)}" + (f", {item}" if item else "")
        return DataValidationError(f"{where}: {problem}. {fix} ({self.title} format).")

    def text(self, row: int, column: str, value: Any, item: str | None = None) -> None:
        problem = _text_problem(value)
        if problem:
            fix = "Every text must be a non-empty string; fix the value or drop the row"
            raise self.error(row, column, problem, fix, item)

    def texts(self, row: int, column: str, value: Any, unit: str) -> list:
        if not isinstance(value, list):
            raise self.error(
                row, column, f"found {_describe(value)}, not a list of strings", f"Give a list of {unit} texts"
            )
        if not value:
            raise self.error(row, column, f"found an empty {unit}s list", f"Each row needs at least one {unit}")
        for j, v in enumerate(value):
            self.text(row, column, v, f"item {j}")
        return value

    def number(self, row: int, column: str, value: Any, item: str | None = None) -> float:
        problem = _number_problem(value)
        if problem:
            fix = "Teacher scores must be finite numbers; fix the score or drop the row"
            raise self.error(row, column, problem, fix, item)
        return float(value)

    def numbers(self, row: int, column: str, value: Any, count: int, unit: str, texts: str) -> list[float]:
        """A list of ``count`` finite scores, one per ``unit`` (a lone number counts as a list of one)."""
        values = _as_list(value, scalar_ok=True)
        if values is None:
            raise self.error(
                row, column, f"found {_describe(value)}, not a list of numbers", f"Give one number per {unit}"
            )
        if len(values) != count:
            raise self.error(
                row,
                column,
                f"found {len(values)} value{'' if len(values) == 1 else 's'} for {count} {unit}s in {texts}",
                f"There must be exactly one score per {unit}; fix or recompute the scores",
            )
        return [self.number(row, column, v, f"item {j}") for j, v in enumerate(values)]

    def check(self, batch: Mapping[str, list], i: int, row: int) -> None:
        lay = self.layout
        self.text(row, lay.query, batch[lay.query][i])
        if lay.format.name == "flagembedding":
            positives = self.texts(row, POS, batch[POS][i], "positive")
            negatives = self.texts(row, NEG, batch[NEG][i], "negative")
            if lay.pos_score:
                self.numbers(row, POS_SCORES, batch[POS_SCORES][i], len(positives), "positive", self.name(POS))
                self.numbers(row, NEG_SCORES, batch[NEG_SCORES][i], len(negatives), "negative", self.name(NEG))
            return
        self.text(row, POSITIVE, batch[POSITIVE][i])
        if not lay.negatives:
            return
        if lay.negatives_is_list:
            count = len(self.texts(row, NEGATIVES, batch[NEGATIVES][i], "negative"))
        else:
            for column in lay.negatives:
                self.text(row, column, batch[column][i])
            count = len(lay.negatives)
        texts = self.name(lay.negatives[0])
        if len(lay.negatives) > 1:
            texts = f"columns {texts}..{self.name(lay.negatives[-1])}"
        margins = {c: self.numbers(row, c, batch[c][i], count, "negative", texts) for c in lay.margins}
        if lay.pos_score:
            pos = self.number(row, TEACHER_POS_SCORE, batch[TEACHER_POS_SCORE][i])
            negs = self.numbers(row, TEACHER_NEG_SCORES, batch[TEACHER_NEG_SCORES][i], count, "negative", texts)
            reference = [pos - n for n in negs]
            ref_name = f"{self.name(TEACHER_POS_SCORE)} - {self.name(TEACHER_NEG_SCORES)}"
        elif len(margins) > 1:
            reference, ref_name = margins.pop(lay.margins[0]), self.name(lay.margins[0])
        else:
            return
        for column, values in margins.items():
            for j, (given, expected) in enumerate(zip(values, reference)):
                if not math.isclose(given, expected, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE):
                    raise self.error(
                        row,
                        column,
                        f"margin {given:.6g} disagrees with {ref_name} = {expected:.6g} (tolerance {_TOLERANCE:g})",
                        "Both were given, so they must agree; if the margins were rescaled on purpose, keep only "
                        "one source (dataset.remove_columns([...])), otherwise fix or recompute them",
                        f"negative {j}",
                    )


def _validate(dataset: Dataset, layout: _Layout, renamed: Mapping[str, str], source: str | None) -> None:
    validator = _Validator(layout, renamed, source)
    offset = 0
    for batch in dataset.select_columns(layout.columns).iter(batch_size=_VALIDATION_BATCH):
        size = len(batch[layout.query])
        for i in range(size):
            validator.check(batch, i, offset + i)
        offset += size


# --------------------------------------------------------------------------------------------- normalisation


def _output_features(layout: _Layout) -> datasets.Features:
    features = {QUERY: datasets.Value("string"), POSITIVE: datasets.Value("string")}
    if layout.format.has_negatives:
        features[NEGATIVES] = datasets.List(datasets.Value("string"))
    if layout.pos_score:
        features[TEACHER_POS_SCORE] = datasets.Value("float32")
        features[TEACHER_NEG_SCORES] = datasets.List(datasets.Value("float32"))
    if layout.format.has_scores:
        features[TEACHER_MARGINS] = datasets.List(datasets.Value("float32"))
    return datasets.Features(features)


def _wrap(values: list) -> list[list]:
    return [v if isinstance(v, list) else [v] for v in values]


def _convert(batch: dict[str, list], layout: _Layout) -> dict[str, list]:
    """Batched ``map`` function: one format's (validated) columns to the canonical columns."""
    if layout.format.name == "flagembedding":
        out: dict[str, list] = {QUERY: [], POSITIVE: [], NEGATIVES: []}
        if layout.pos_score:
            out.update({TEACHER_POS_SCORE: [], TEACHER_NEG_SCORES: [], TEACHER_MARGINS: []})
        for i, (query, positives, negatives) in enumerate(zip(batch[layout.query], batch[POS], batch[NEG])):
            for k, positive in enumerate(positives):
                out[QUERY].append(query)
                out[POSITIVE].append(positive)
                out[NEGATIVES].append(list(negatives))
                if layout.pos_score:
                    pos = _as_list(batch[POS_SCORES][i], scalar_ok=True)[k]
                    negs = _as_list(batch[NEG_SCORES][i], scalar_ok=True)
                    out[TEACHER_POS_SCORE].append(pos)
                    out[TEACHER_NEG_SCORES].append(list(negs))
                    out[TEACHER_MARGINS].append([pos - n for n in negs])
        return out

    out = {QUERY: batch[layout.query], POSITIVE: batch[POSITIVE]}
    if not layout.format.has_negatives:
        return out
    if layout.negatives_is_list:
        out[NEGATIVES] = batch[NEGATIVES]
    else:
        out[NEGATIVES] = [list(row) for row in zip(*(batch[c] for c in layout.negatives))]
    if layout.margins:  # the user's own margins are kept as given (validated to agree with any raw scores)
        out[TEACHER_MARGINS] = _wrap(batch[layout.margins[0]])
    if layout.pos_score:
        negs = _wrap(batch[TEACHER_NEG_SCORES])
        out[TEACHER_POS_SCORE] = batch[TEACHER_POS_SCORE]
        out[TEACHER_NEG_SCORES] = negs
        if not layout.margins:
            out[TEACHER_MARGINS] = [[p - n for n in row] for p, row in zip(batch[TEACHER_POS_SCORE], negs)]
    return out


def _apply_column_map(
    dataset: Dataset, column_map: Mapping[str, str] | None, source: str | None
) -> tuple[Dataset, dict[str, str]]:
    """Rename per ``column_map``; return the renamed dataset and ``{new name: user's name}``."""
    mapping = {k: v for k, v in (column_map or {}).items() if k != v}
    if not mapping:
        return dataset, {}
    names = list(dataset.column_names)
    prefix = f"{source}: " if source else ""
    missing = [k for k in mapping if k not in names]
    if missing:
        raise DataValidationError(
            f"{prefix}column_map renames column(s) {missing}, which the data does not have. Columns found: "
            f"{names}. Fix the column_map keys (user column -> known name). {_FORMATS_HELP}"
        )
    unknown = sorted({v for v in mapping.values() if v not in _KNOWN and not _NUMBERED_NEGATIVE.match(v)})
    if unknown:
        raise DataValidationError(
            f"{prefix}column_map maps to unknown name(s) {unknown}; known names are {list(_KNOWN)} and "
            f"'negative_1'..'negative_n'. {_FORMATS_HELP}"
        )
    targets = list(mapping.values())
    doubled = sorted({v for v in targets if targets.count(v) > 1})
    if doubled:
        raise DataValidationError(f"{prefix}column_map maps several columns to {doubled}: each name may be used once")
    clash = [v for v in targets if v in names and v not in mapping]
    if clash:
        raise DataValidationError(
            f"{prefix}column_map renames columns to {clash}, but the data already has column(s) with that name; "
            f"drop or map those first (dataset.remove_columns({clash}))"
        )
    return dataset.rename_columns(mapping), {v: k for k, v in mapping.items()}


def normalize_dataset(
    dataset: Dataset,
    *,
    column_map: dict[str, str] | None = None,
    source: str | None = None,
    num_proc: int | None = None,
) -> tuple[Dataset, DataFormat]:
    """Validate ``dataset`` and return it in the canonical columns, with the format that was recognised.

    ``column_map`` (``{user column: known name}``) is applied first. Every row is checked (in batches) before
    anything is converted; errors name the user's column and the row (its line in a JSON Lines or CSV ``source``).
    The conversion is one cached, batched ``datasets.map`` with explicit ``Features``; FlagEmbedding
    rows with several positives become one row per positive. Columns outside the format are dropped (logged).

    Raises:
        DataValidationError: for an empty dataset, an unrecognised column set, a bad ``column_map``, a bad text,
            list or score, mismatched lengths, or given margins that disagree with given raw scores.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"normalize_dataset takes a datasets.Dataset, got {type(dataset).__name__}; for a DatasetDict pass "
            "one split (dataset['train'])"
        )
    prefix = f"{source}: " if source else ""
    if len(dataset) == 0:
        raise DataValidationError(
            f"{prefix}the dataset is empty (0 rows; columns {dataset.column_names}): there is nothing to train on. "
            "Check the data file, the split, or a filter that removed every row."
        )
    renamed_ds, renamed = _apply_column_map(dataset, column_map, source)
    layout = _layout(renamed_ds.column_names, renamed, source)
    dropped = [renamed.get(c, c) for c in renamed_ds.column_names if c not in layout.columns]
    if dropped:
        logger.warning(
            "%scolumns %s are not part of the %s format and are dropped by normalize_dataset",
            prefix,
            dropped,
            _TITLES[layout.format.name],
        )
    _validate(renamed_ds, layout, renamed, source)
    normalised = renamed_ds.select_columns(layout.columns).map(
        _convert,
        batched=True,
        fn_kwargs={"layout": layout},
        remove_columns=layout.columns,
        features=_output_features(layout),
        num_proc=num_proc,
        desc=f"Normalising {_TITLES[layout.format.name]} data",
    )
    return normalised, layout.format

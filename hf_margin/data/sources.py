"""Reading the user's data the way ``datasets`` does: files (json, jsonl, csv, tsv, parquet) through its own
builders, a dataset by name (Hub id, local dataset folder, or a ``save_to_disk`` folder), and text corpora.

Every error names the file or dataset and says what to do.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from hf_margin.data.columns import DataValidationError

logger = logging.getLogger(__name__)

# suffix -> (datasets builder, its options)
FILE_BUILDERS: dict[str, tuple[str, dict]] = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
}


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} {path} not found (relative to {Path.cwd()}); check the path")


def load_data_file(path: str | os.PathLike) -> Dataset:
    """One file as a ``Dataset``, read by the ``datasets`` builder its suffix names (cached by ``datasets``).

    Raises:
        FileNotFoundError: no such file.
        DataValidationError: an unknown suffix, an empty file, or a file the builder cannot parse (the
            builder's own reason, e.g. the JSON line, is in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise _missing(p, "data file")
    builder = FILE_BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise DataValidationError(
            f"{p}: unknown file type {p.suffix!r}; give one of {', '.join(FILE_BUILDERS)} (the suffix names the format)"
        )
    if p.stat().st_size == 0:
        raise DataValidationError(f"{p}: the file is empty (0 bytes); it needs at least one row")
    name, options = builder
    if name in ("json", "csv") and not _scan_text(p):
        raise DataValidationError(f"{p}: the file holds no rows (only blank lines); it needs at least one")
    try:
        data = load_dataset(name, data_files=str(p), split="train", **options)
    except Exception as exc:  # datasets wraps the parser's error: find the line, or surface the innermost reason
        if name == "json":
            _raise_json_syntax_error(p)
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__
        raise DataValidationError(
            f"{p}: could not be read as {name} ({type(cause).__name__}: {cause}); fix the file or convert it"
        ) from exc
    if len(data) == 0:
        raise DataValidationError(f"{p}: the file holds no rows (only blank lines or a header); it needs at least one")
    return data


def _scan_text(path: Path) -> bool:
    """Whether a text file holds anything but blank lines; name the first line that is not UTF-8 (pyarrow
    reports that only on first access, with no file or row)."""
    content = False
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            content = content or bool(raw.strip())
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataValidationError(
                    f"{path}, line {line_no}: not valid UTF-8 (byte {raw[exc.start]:#04x} at byte {exc.start + 1} of "
                    "the line); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT)"
                ) from None
    return content


def _raise_json_syntax_error(path: Path) -> None:
    """After the json builder failed: find the first line (JSON Lines) or position (one JSON document) that does
    not parse, and raise naming the file and line; return quietly when every line parses."""
    text = path.read_text(encoding="utf-8")
    try:
        json.loads(text)
        return
    except json.JSONDecodeError as whole:
        if text.lstrip().startswith("["):
            raise DataValidationError(
                f"{path}, line {whole.lineno}, column {whole.colno}: JSON syntax error ({whole.msg}); fix the file"
            ) from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError(
                f"{path}, line {line_no}, column {exc.colno}: JSON syntax error ({exc.msg}); each line of a JSON "
                "Lines file must be one complete JSON object"
            ) from None


def load_named_dataset(name: str, *, config: str | None = None, split: str = "train") -> Dataset:
    """A split of a dataset named by a ``save_to_disk`` folder, a local dataset folder, or a Hub id."""
    path = Path(name).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
        try:
            loaded = load_from_disk(str(path))
        except FileNotFoundError:
            loaded = None
        if isinstance(loaded, Dataset):
            return loaded
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise DataValidationError(f"{name}: no split {split!r}; it has {sorted(loaded)}")
            return loaded[split]
    try:
        return load_dataset(str(path) if path.is_dir() else name, config, split=split)
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise DataValidationError(f"{name}: {exc}") from exc
        raise
    except (FileNotFoundError, ConnectionError) as exc:
        raise FileNotFoundError(
            f"dataset {name!r} not found: not a local folder, and the Hub could not be reached or has no such "
            f"dataset ({type(exc).__name__}). Give a local folder, a file (--train_file), or check the name"
        ) from exc


def load_corpus(path: str | os.PathLike) -> list[str]:
    """Distinct texts of a corpus file, in first-seen order: one text per line (``.txt``), or jsonl/json rows
    with ``text`` (a BEIR ``corpus.jsonl``: ``title`` + " " + ``text`` when the title is not empty)."""
    p = Path(path)
    if not p.is_file():
        raise _missing(p, "corpus file")
    if p.suffix.lower() in (".txt", ".text", ""):
        texts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    else:
        data = load_data_file(p)
        if "text" not in data.column_names:
            raise DataValidationError(
                f"{p}: a corpus needs a 'text' column (or one text per line in a .txt file); it has {data.column_names}"
            )
        titles = data["title"] if "title" in data.column_names else [None] * len(data)
        texts = [(f"{t} {x}" if t else x) for t, x in zip(titles, data["text"]) if isinstance(x, str)]
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise DataValidationError(f"{p}: the corpus holds no text")
    return list(dict.fromkeys(texts))

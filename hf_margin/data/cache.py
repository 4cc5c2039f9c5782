"""Cache files of computed columns (teacher margins, mined negatives) that hit when they should and heal when
they break.

Each cache is a folder named by its fingerprint, ``<cache_dir>/<kind>-<fingerprint>/``, holding ``data.arrow``
and ``checksum.json`` (SHA-256, row count and columns of ``data.arrow``, written after it). While a process
computes or checks an entry it holds a lock (``<kind>-<fingerprint>.lock`` beside the folder), so two runs of
the same scoring (two terminals) produce one cache: the second waits, then reads it. Under that lock, temporary
files in the folder can only be left by a killed run, and are removed. A file that fails its check (cut short,
emptied, overwritten, no checksum) is reported with its path, deleted and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from filelock import FileLock

logger = logging.getLogger(__name__)

CHUNK = 8 * 2**20


@contextlib.contextmanager
def written_whole(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary name beside ``path`` (``tmp-<pid>-<name>``) for the block to write; renamed onto ``path`` once the
    block finished (after an fsync of the file where ``fsync``), removed if the block fails. A reader sees the old
    file or the whole new one, never half of it; in a cache folder a killed run's leftover is cleared under the
    entry's lock (its name starts with ``tmp``)."""
    path = Path(path)
    tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One fingerprinted cache entry: ``folder/data.arrow`` (or another ``file_name``) + ``folder/checksum.json``."""

    folder: Path
    description: str = "cache"
    file_name: str = "data.arrow"

    @classmethod
    def create(
        cls, cache_dir: str | os.PathLike, kind: str, fingerprint: str, description: str, file_name: str = "data.arrow"
    ) -> CacheEntry:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return cls(Path(cache_dir) / f"{kind}-{fingerprint}", description, file_name)

    @property
    def data_file(self) -> Path:
        return self.folder / self.file_name

    @property
    def checksum_file(self) -> Path:
        return self.folder / "checksum.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the entry's lock; then remove temporary files that only a killed run can have left."""
        with FileLock(str(self.folder.with_name(self.folder.name + ".lock"))):
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in [p for p in self.folder.iterdir() if p.name.startswith("tmp")]:
                logger.warning(
                    "Removing %s, left by a run that was killed while writing the %s", stale, self.description
                )
                stale.unlink(missing_ok=True)
            try:
                yield
            finally:
                if not any(self.folder.iterdir()):  # a failed run leaves no empty entry behind
                    self.folder.rmdir()

    def problem(self, rows: int | None = None, columns: Sequence[str] = ()) -> str | None:
        """Why the data file cannot be used (None when it can): missing checksum, checksum mismatch, unreadable,
        wrong row count or missing columns."""
        if not self.checksum_file.is_file():
            return "it has no checksum.json (written by an older hf-margin or a run killed before sealing it)"
        try:
            recorded = json.loads(self.checksum_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"its checksum.json is unreadable ({exc})"
        if os.path.getsize(self.data_file) != recorded.get("bytes"):
            return f"it has {os.path.getsize(self.data_file)} bytes, {recorded.get('bytes')} were written"
        if file_sha256(self.data_file) != recorded.get("sha256"):
            return "its content does not match the checksum written with it (changed on disk)"
        if rows is not None and recorded.get("rows") != rows:
            return f"it holds {recorded.get('rows')} rows for data of {rows}"
        missing = [c for c in columns if c not in recorded.get("columns", [])]
        if missing:
            return f"it lacks the column(s) {missing}"
        return None

    def usable(self, rows: int | None = None, columns: Sequence[str] = ()) -> bool:
        """Whether the data file exists and passes :meth:`problem`; a damaged one is deleted with a warning."""
        if not self.data_file.exists():
            self.checksum_file.unlink(missing_ok=True)
            return False
        reason = self.problem(rows, columns)
        if reason is None:
            return True
        logger.warning("The %s %s is damaged: %s. Deleted; it is recomputed.", self.description, self.data_file, reason)
        self.data_file.unlink(missing_ok=True)
        self.checksum_file.unlink(missing_ok=True)
        return False

    def map(
        self,
        dataset: Dataset,
        function: Any,
        *,
        columns: Sequence[str] = (),
        rows: int | None = None,
        any_rows: bool = False,
        load: bool = True,
        on_miss: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Dataset:
        """``dataset.map(function, **kwargs)`` cached in this entry: checked before use, sealed after writing.

        ``rows``: the row count the result must have (default: the input's; ``any_rows``: not checked, for a map
        that drops rows). Under several Accelerate processes
        the main one decides (holding the lock) whether the cache is usable and tells the others; on a miss every
        process calls ``on_miss`` (which may run a collective step, e.g. split the work) and the main one maps the
        function it returns; the others then read what it wrote.
        """
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        state = PartialState()
        result = None
        with self.locked() if state.is_main_process else contextlib.nullcontext():
            hit = (
                [load and self.usable(None if any_rows else len(dataset) if rows is None else rows, columns)]
                if state.is_main_process
                else [None]
            )
            if state.num_processes > 1:
                broadcast_object_list(hit)  # every process takes the same branch
            if not hit[0] and on_miss is not None:
                function = on_miss()
            if state.is_main_process:
                result = dataset.map(
                    function, cache_file_name=str(self.data_file), load_from_cache_file=hit[0], **kwargs
                )
                if not hit[0]:
                    self.seal()
        state.wait_for_everyone()
        if result is None:
            result = dataset.map(function, cache_file_name=str(self.data_file), load_from_cache_file=True, **kwargs)
        return result

    def seal(self, rows: int | None = None, columns: Sequence[str] | None = None) -> None:
        """Write ``checksum.json`` for the data file just written (to a temporary name, then renamed); ``rows`` and
        ``columns`` are read from an Arrow file when not given."""
        if rows is None or columns is None:
            table = Dataset.from_file(str(self.data_file))
            rows, columns = table.num_rows, table.column_names
        record = {
            "sha256": file_sha256(self.data_file),
            "bytes": os.path.getsize(self.data_file),
            "rows": rows,
            "columns": list(columns),
        }
        with written_whole(self.checksum_file, fsync=True) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")


__all__ = ["CacheEntry", "file_sha256", "written_whole"]

"""Cache files of computed columns (teacher margins, mined negatives) that hit when they should and heal when
they break.

Each cache is a folder named by its fingerprint, ``<cache_dir>/<kind>-<fingerprint>/``, holding ``data.arrow``
and ``checksum.json`` (SHA-256, row count and columns of ``data.arrow``, written after it). While a process
computes or checks an entry it holds a lock (``<kind>-<fingerprint>.lock`` beside the folder), so two runs of
the same scoring (two terminals) produce one cache: the second waits, then reads it. Under that lock, temporary
files that a killed run left in the folder are removed (:func:`left_by_a_dead_run`), never one that a live run
is writing. A file that fails its check (cut short, emptied, overwritten, no checksum) is reported with its
path, deleted and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset
from filelock import FileLock

from hf_margin.data.processes import process_state

logger = logging.getLogger(__name__)

CHUNK = 8 * 2**20
# A temporary file of a cache folder that nothing wrote to for this long is a killed run's (see left_by_a_dead_run).
STALE_TEMP_SECONDS = 600.0


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


def left_by_a_dead_run(path: Path) -> bool:
    """Whether a temporary file or folder in a cache folder can only be a killed run's leftover.

    Under the entry's lock no writer of the entry itself is alive, but the folder also holds the caches of
    datasets derived from it (tokenised, rescaled), which another run or process may be writing right now, under
    ``datasets``' own temporary names. So: our ``tmp-<pid>-`` names are stale when their process is gone; any
    temporary name when nothing under it was written for :data:`STALE_TEMP_SECONDS` (a live map writes every batch;
    the pid of a run on another host sharing the cache says nothing here).
    """
    try:
        times = [path.stat().st_mtime] + ([p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else [])
    except FileNotFoundError:  # its writer just renamed it into place
        return False
    if time.time() - max(times) >= STALE_TEMP_SECONDS:
        return True
    parts = path.name.split("-", 2)
    if not (len(parts) == 3 and parts[0] == "tmp" and parts[1].isdigit()):
        return False
    if int(parts[1]) == os.getpid():  # this process holds the lock and writes no such name yet: a reused pid
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


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
            for stale in [p for p in self.folder.iterdir() if p.name.startswith("tmp") and left_by_a_dead_run(p)]:
                logger.warning(
                    "Removing %s, left by a run that was killed while writing the %s", stale, self.description
                )
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
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
        from accelerate.utils import broadcast_object_list

        state = process_state()
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
            if state.is_main_process and not hit[0]:
                self._write(dataset, function, **kwargs)
        state.wait_for_everyone()
        return dataset.map(function, cache_file_name=str(self.data_file), load_from_cache_file=True, **kwargs)

    def _write(self, dataset: Dataset, function: Any, **kwargs: Any) -> None:
        """Map into a folder of this process's own (``tmp-<pid>-writing``, where ``datasets`` also puts its temporary
        file), rename the result into place and seal it. A kill leaves only that folder, which the next run removes
        as soon as it sees the process gone, while temporary files of live runs in the entry folder are kept."""
        private = self.folder / f"tmp-{os.getpid()}-writing"
        shutil.rmtree(private, ignore_errors=True)
        private.mkdir()
        try:
            dataset.map(function, cache_file_name=str(private / self.file_name), load_from_cache_file=False, **kwargs)
            os.replace(private / self.file_name, self.data_file)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        self.seal()

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

"""Corpus embeddings on disk: embedded in shards split over the Accelerate processes, resumable, memory-mapped.

A corpus of N texts is cut into shards of ``shard_size`` rows. Under Accelerate, process ``r`` of ``P`` embeds
shards ``r, r + P, r + 2P, ...`` and writes each as ``shard-00003.npy`` beside ``shard-00003.json`` (its SHA-256,
first row and row count), both through a temporary name and a rename. A run killed mid-way leaves its finished
shards; the next run checks them and embeds only the rest. The main process then joins the shards, in text order,
into one ``embeddings.npy`` sealed with ``checksum.json`` (see :mod:`hf_margin.data.cache`), and deletes them.
With ``normalize`` each row is stored unit-length and its norm before that in ``norms.npy`` (float32, ``(N,)``;
each shard's in ``shard-00003-norms.npy``): :func:`stored_norms` gives them back, so that a row times its norm is
the model's own embedding (a teacher scoring the documents it mined then embeds none of them again).

The result is opened memory-mapped and read-only: host memory holds the pages being searched, not ``N x H``
floats, and ``dtype="float16"`` halves the file. The entry is named by the caller's fingerprint (texts, model,
role) and the shard size and dtype, so a second run embeds nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm

from hf_margin.data.cache import CacheEntry, file_sha256, written_whole
from hf_margin.data.processes import process_state

logger = logging.getLogger(__name__)

__all__ = ["DTYPES", "DiskEmbeddings", "embed_to_disk", "memmap_tensor", "release_pages", "stored_norms"]

EMBEDDINGS_VERSION = "2"  # 2: a normalised store keeps its rows' norms
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class DiskEmbeddings:
    """Keep a corpus's embeddings on disk (:func:`embed_to_disk`) instead of in host memory.

    Attributes:
        shard_size: texts per shard: the unit of work split over processes, of resuming, and of host memory while
            embedding.
        dtype: ``"float32"`` or ``"float16"`` (half the disk and page cache; scores are computed in float32).
    """

    shard_size: int = 65_536
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ValueError(f"shard_size must be an integer >= 1, got {self.shard_size!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    def fingerprint(self) -> dict[str, object]:
        return {"shard_size": self.shard_size, "dtype": self.dtype}


NORMS = "norms.npy"


def _shard_files(folder: Path, shard: int) -> tuple[Path, Path]:
    return folder / f"shard-{shard:05d}.npy", folder / f"shard-{shard:05d}.json"


def _shard_norms(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}-norms.npy"


def _norms_ok(path: Path, rows: int) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == (rows,)
    except (OSError, ValueError):
        return False


def _shard_ok(folder: Path, shard: int, start: int, rows: int, norms: bool = False) -> bool:
    """Whether shard ``shard`` is on disk, whole, and holds rows ``[start, start + rows)`` (and, with ``norms``,
    their norms)."""
    data, meta = _shard_files(folder, shard)
    if not (data.is_file() and meta.is_file()) or (norms and not _norms_ok(_shard_norms(folder, shard), rows)):
        return False
    try:
        record = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("start") != start or record.get("rows") != rows or record.get("bytes") != data.stat().st_size:
        return False
    return record.get("sha256") == file_sha256(data)


def _write_array(path: Path, array: np.ndarray) -> None:
    with written_whole(path, fsync=True) as tmp, open(tmp, "wb") as f:
        np.save(f, array)  # a file object: np.save adds no ".npy" to it


def _write_shard(folder: Path, shard: int, start: int, array: np.ndarray, norms: np.ndarray | None = None) -> None:
    data, meta = _shard_files(folder, shard)
    if norms is not None:  # before the record that makes the shard count as done
        _write_array(_shard_norms(folder, shard), norms)
    _write_array(data, array)
    record = {"start": start, "rows": int(array.shape[0]), "bytes": data.stat().st_size, "sha256": file_sha256(data)}
    with written_whole(meta, fsync=True) as tmp:
        tmp.write_text(json.dumps(record) + "\n")


def _join_shards(entry: CacheEntry, num_texts: int, shard_size: int, dtype: str, norms: bool = False) -> None:
    """Copy the shards, in order, into ``embeddings.npy`` (one shard in memory at a time; their norms into
    ``norms.npy`` first), seal it, delete them."""
    folder = entry.folder
    num_shards = -(-num_texts // shard_size)
    if norms:
        _write_array(folder / NORMS, np.concatenate([np.load(_shard_norms(folder, s)) for s in range(num_shards)]))
    width = np.load(_shard_files(folder, 0)[0], mmap_mode="r").shape[1]
    with written_whole(entry.data_file, fsync=True) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype), shape=(num_texts, width))
        for shard in range(num_shards):
            part = np.load(_shard_files(folder, shard)[0], mmap_mode="r")
            out[shard * shard_size : shard * shard_size + part.shape[0]] = part
            out.flush()
            release_pages(out)  # written back: the joined file never sits whole in this process's memory
        del out
    entry.seal(rows=num_texts, columns=[f"{dtype}[{width}]"])
    _remove_shards(folder)


def _remove_shards(folder: Path) -> None:
    for path in folder.glob("shard-*"):
        path.unlink(missing_ok=True)


def embed_to_disk(
    texts: Sequence[str],
    embed: Callable[[list[str]], torch.Tensor],
    *,
    cache_dir: str | os.PathLike,
    fingerprint: str,
    options: DiskEmbeddings | None = None,
    normalize: bool = False,
    description: str = "corpus embeddings",
) -> np.ndarray:
    """Embed ``texts`` shard by shard over every Accelerate process, on disk; returns them memory-mapped.

    Args:
        texts: the N texts, in the order of the rows returned.
        embed: ``list[str] -> (n, H)`` tensor; called once per shard, by the process that owns it. It must not keep
            what it returns (e.g. ``scorer.embed(texts, remember=False)``).
        cache_dir: where the entry ``embeddings-<fingerprint>/`` is kept.
        fingerprint: names the texts and the model and settings that embed them (the caller's hash).
        options: shard size and stored dtype (:class:`DiskEmbeddings`).
        normalize: L2-normalise each row (in float32, before storing) and keep its norm (:func:`stored_norms`).
    Returns:
        ``(N, H)`` read-only ``numpy.memmap`` of ``options.dtype``, the same on every process.
    """
    from accelerate.utils import broadcast_object_list

    options = options or DiskEmbeddings()
    num_texts = len(texts)
    if num_texts == 0:
        raise ValueError("no text to embed")
    name = Hasher.hash(["embeddings", EMBEDDINGS_VERSION, fingerprint, options.fingerprint(), normalize, num_texts])
    entry = CacheEntry.create(cache_dir, "embeddings", name, description, file_name="embeddings.npy")
    state = process_state()
    num_shards = -(-num_texts // options.shard_size)
    with entry.locked() if state.is_main_process else contextlib.nullcontext():
        hit = [entry.usable(rows=num_texts)] if state.is_main_process else [None]
        if hit[0]:  # a run killed while deleting its joined shards leaves some behind
            _remove_shards(entry.folder)
        if state.num_processes > 1:
            broadcast_object_list(hit)
        if not hit[0]:
            size = options.shard_size
            mine = range(state.process_index, num_shards, state.num_processes)
            ranges = [(s, s * size, min(size, num_texts - s * size)) for s in mine]
            todo = [(s, start, n) for s, start, n in ranges if not _shard_ok(entry.folder, s, start, n, normalize)]
            if len(todo) < len(ranges):
                logger.info("Process %d: %d of its %d shards of %s are on disk already (resumed)",
                            state.process_index, len(ranges) - len(todo), len(ranges), description)  # fmt: skip
            logger.info("Embedding %d texts in %d shards of %d over %d process(es) (%s, %s)", num_texts, num_shards,
                        options.shard_size, state.num_processes, description, options.dtype)  # fmt: skip
            for shard, start, rows in tqdm(todo, desc=f"Embedding shards (process {state.process_index})",
                                           disable=not todo or not state.is_local_main_process):  # fmt: skip
                emb = embed(list(texts[start : start + rows])).detach().to("cpu", torch.float32)
                if emb.shape[0] != rows:
                    raise ValueError(f"embed returned {emb.shape[0]} rows for {rows} texts")
                norms = emb.norm(dim=-1).numpy() if normalize else None
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
                _write_shard(entry.folder, shard, start, emb.numpy().astype(options.dtype), norms)
            state.wait_for_everyone()
            if state.is_main_process:
                _join_shards(entry, num_texts, options.shard_size, options.dtype, normalize)
    state.wait_for_everyone()
    return np.load(entry.data_file, mmap_mode="r")


def stored_norms(array: np.ndarray) -> np.ndarray | None:
    """``(N,)`` float32: the norm each row of ``array`` (from :func:`embed_to_disk` with ``normalize``) had before it
    was normalised, memory-mapped; None for any other array (or a store written without them)."""
    filename = getattr(array, "filename", None)
    path = Path(filename).with_name(NORMS) if filename else None
    if path is None or not _norms_ok(path, array.shape[0]):
        return None
    return np.load(path, mmap_mode="r")


_MAPPED: dict[int, np.memmap] = {}  # storage address of a tensor from memmap_tensor -> its map, while it lives


def memmap_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only memory map (no copy; the library only reads it); :func:`release_pages` knows it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    if isinstance(array, np.memmap):
        address = tensor.untyped_storage().data_ptr()  # views and slices of the tensor share it
        _MAPPED[address] = array
        weakref.finalize(tensor, _MAPPED.pop, address, None)
    return tensor


def release_pages(mapped: np.ndarray | torch.Tensor) -> bool:
    """Drop the pages of a memory-mapped array (or of a tensor from :func:`memmap_tensor`) from this process's
    resident memory (``MADV_DONTNEED``); anything else is left alone. The data stays in the file and the kernel's
    page cache: the next read faults its pages back in. A pass over a whole map (filling an index, a recall check)
    would otherwise leave all ``N x H`` of it counted in the process's RSS. Returns whether pages were released."""
    if isinstance(mapped, torch.Tensor):
        array = _MAPPED.get(mapped.untyped_storage().data_ptr()) if mapped.device.type == "cpu" else None
    else:
        array = mapped
    handle = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    # not a map; a copy-on-write map ("c": its changes live only in these pages); or no madvise on this platform
    if handle is None or array.mode == "c" or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    try:
        handle.madvise(mmap.MADV_DONTNEED)
    except OSError:  # e.g. locked pages: they stay, nothing is lost
        return False
    return True

"""Encoding speed: how many texts per second a bi-encoder scorer embeds, with the device, dtype, threads and
length it ran at, so a report can say how much faster the student is than its teacher at the same settings."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

WARMUP_TEXTS = 16
BATCH_SIZE = 32  # sentence-transformers' encode default: student and teacher are timed with the same batches


def encoding_throughput(
    scorer: Any,
    texts: Sequence[str],
    *,
    role: str = "document",
    batch_size: int = BATCH_SIZE,
    max_length: int | None = None,
) -> dict[str, Any] | None:
    """Texts/s of ``scorer.embed(texts, role=role)`` on texts it has not remembered (its memo is cleared before
    and after), in length-sorted batches of ``batch_size`` (whatever the scorer's own), after a short warm-up;
    None for a scorer that does not embed (a cross-encoder). ``max_length``: truncate at this many tokens instead
    of the scorer's own (a teacher timed at its student's length, so the two are compared on the same input).

    Returns ``{"texts_per_s", "texts", "seconds", "batch_size", "max_length", "device", "dtype", "threads",
    "cores"}``: ``threads`` is torch's intra-op count, ``cores`` the CPUs this process may run on."""
    if not hasattr(scorer, "embed") or not texts:
        return None
    texts = list(dict.fromkeys(texts))
    parts = getattr(scorer, "members", [scorer])  # a mean-score teacher: each member's own settings come back
    own = [(p.batch_size, p.max_length, getattr(p, "query_max_length", None)) for p in parts]
    scorer.batch_size = batch_size
    if max_length is not None:
        scorer.max_length = max_length
        if role == "query":
            scorer.query_max_length = max_length
    try:
        return _timed(scorer, texts, role) | {"batch_size": batch_size}
    finally:
        for part, (size, length, query_length) in zip(parts, own):
            part.batch_size, part.max_length = size, length
            if role == "query":
                part.query_max_length = query_length


def _timed(scorer: Any, texts: list[str], role: str) -> dict[str, Any]:
    scorer.clear_memo()
    scorer.embed(texts[:WARMUP_TEXTS], role=role)
    scorer.clear_memo()
    if scorer.device.type == "cuda":
        torch.cuda.synchronize(scorer.device)
    start = time.perf_counter()
    scorer.embed(texts, role=role)
    if scorer.device.type == "cuda":
        torch.cuda.synchronize(scorer.device)
    seconds = time.perf_counter() - start
    scorer.clear_memo()
    model = scorer.model  # a transformers model (its dtype), or an ONNX encoder ("onnx-int8")
    return {
        "texts_per_s": len(texts) / seconds,
        "texts": len(texts),
        "seconds": seconds,
        "max_length": scorer.role_settings(role)[1],
        "device": str(scorer.device),
        "dtype": str(getattr(model, "dtype", None) or next(model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "cores": available_cores(),
    }


def available_cores() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fewer_threads_than_cores() -> str | None:
    """A warning when torch uses fewer CPU threads than the cores it may run on (``accelerate launch`` sets
    ``OMP_NUM_THREADS=1`` unless told otherwise), or None."""
    threads, cores = torch.get_num_threads(), available_cores()
    if threads >= cores:
        return None
    return (
        f"torch runs on {threads} of this process's {cores} CPU cores (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), so CPU training and the speed figures use {threads} "
        f"thread{'s' if threads != 1 else ''}: under accelerate launch, pass --num_cpu_threads_per_process {cores} "
        "(or set OMP_NUM_THREADS) to use them all"
    )


def speed_summary(student: dict[str, Any] | None, teacher: dict[str, Any] | None) -> dict[str, Any]:
    """``{"student", "teacher", "speedup"}``: the two measurements and the student's speed over the teacher's."""
    speedup = student["texts_per_s"] / teacher["texts_per_s"] if student and teacher else None
    return {"student": student, "teacher": teacher, "speedup": speedup}


__all__ = ["available_cores", "encoding_throughput", "fewer_threads_than_cores", "speed_summary"]

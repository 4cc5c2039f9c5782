"""Retrieval (IR) evaluation: exact top-k search in chunks, BEIR folders, and MRR/nDCG/Recall via a shipped metric.

Every query is scored against every document (no approximate index), a chunk of queries against a chunk of the
corpus at a time, so memory stays O(query_chunk x corpus_chunk + Q x k) however large the corpus is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_margin.evaluation.metrics import load_metric

__all__ = [
    "BeirFormatError",
    "RetrievalData",
    "duplicate_retrieval_data",
    "evaluate_retrieval",
    "exact_search",
    "load_beir",
    "retrieval_metrics",
]

SIMILARITIES = ("cosine", "dot")
DEEPEST_CUTOFF = 100  # recall@100: rankings must be at least this deep


class BeirFormatError(ValueError):
    """A BEIR file that cannot be read; the message names the file, the line and what to do."""


@dataclass
class RetrievalData:
    """A retrieval task: documents, queries and graded relevance judgements (qrels).

    Attributes:
        corpus: doc id -> text.
        queries: query id -> text.
        qrels: query id -> {doc id: grade}; a document is relevant when its grade is > 0.
        exclude: query id -> doc ids never ranked for that query (e.g. the query's own text in the corpus).
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    exclude: dict[str, set[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- exact search


def _stable_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of each row of ``scores`` (n, m), ordered by score descending, then column ascending.

    ``torch.topk`` is fast but picks arbitrarily among equal scores; its result is re-sorted stably by column, and
    rows where more than ``k`` entries reach the k-th score (a tie across the cut: the (k+1)-th best scores as much
    as the k-th, read from one extra top-k entry rather than a pass over the block) are redone with a full stable
    sort.
    """
    values, columns = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] > k:
        tied = (values[:, k] >= values[:, k - 1]).nonzero().flatten()
        columns = columns[:, :k]
    else:
        tied = values.new_empty(0, dtype=torch.long)
    columns = columns.sort(dim=1).values
    values, order = scores.gather(1, columns).sort(dim=1, descending=True, stable=True)
    columns = columns.gather(1, order)
    if tied.numel():
        tied_values, tied_columns = scores[tied].sort(dim=1, descending=True, stable=True)
        values[tied], columns[tied] = tied_values[:, :k], tied_columns[:, :k]
    return values, columns


def exact_search(
    query_embeddings: torch.Tensor,
    corpus_embeddings: torch.Tensor,
    *,
    k: int,
    similarity: str = "cosine",
    query_chunk_size: int = 1024,
    corpus_chunk_size: int = 50_000,
    exclude: Sequence[Collection[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k documents of each query, merging a running top-k over corpus chunks.

    Ties are broken deterministically: equal scores rank the lower corpus index first (stable sorts throughout,
    and chunks are merged in corpus order), whatever the chunk sizes.

    Args:
        query_embeddings: ``(Q, H)``.
        corpus_embeddings: ``(C, H)``; may live on another device (e.g. the CPU), each chunk is moved to the
            queries' device.
        k: how many documents per query; capped at ``C``.
        similarity: ``"cosine"`` (embeddings L2-normalised chunk by chunk) or ``"dot"``.
        query_chunk_size, corpus_chunk_size: block sizes of the score matrix computed at once.
        exclude: optional, per query, the corpus indices never to return for it (searches ``k`` plus the largest
            exclusion, then drops them).
    Returns:
        scores ``(Q, min(k, C))`` (float32, or float64 for float64 inputs) and corpus indices ``(Q, min(k, C))``
        (int64), best first, on the queries' device. Where exclusions leave a query fewer documents, its row is
        padded with score ``-inf`` and index ``-1``.
    """
    if query_embeddings.ndim != 2 or corpus_embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D (Q, H) and (C, H); got {tuple(query_embeddings.shape)} and "
            f"{tuple(corpus_embeddings.shape)}"
        )
    if query_embeddings.shape[1] != corpus_embeddings.shape[1]:
        raise ValueError(
            f"query and corpus embeddings differ in width: {query_embeddings.shape[1]} vs {corpus_embeddings.shape[1]}"
        )
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if k < 1 or query_chunk_size < 1 or corpus_chunk_size < 1:
        raise ValueError(f"k and chunk sizes must be >= 1; got {k=}, {query_chunk_size=}, {corpus_chunk_size=}")
    num_queries, num_docs = query_embeddings.shape[0], corpus_embeddings.shape[0]
    if num_docs == 0:
        raise ValueError("the corpus is empty: nothing to search")
    if exclude is not None and len(exclude) != num_queries:
        raise ValueError(f"exclude has {len(exclude)} entries for {num_queries} queries; give one per query")
    out_k = min(k, num_docs)
    depth = min(out_k + max((len(e) for e in exclude), default=0), num_docs) if exclude is not None else out_k
    device = query_embeddings.device
    dtype = torch.promote_types(query_embeddings.dtype, torch.float32)

    all_scores, all_indices = [], []
    for q0 in range(0, num_queries, query_chunk_size):
        queries = query_embeddings[q0 : q0 + query_chunk_size].to(dtype)
        if similarity == "cosine":
            queries = F.normalize(queries, dim=-1)
        best_scores = queries.new_empty((queries.shape[0], 0))
        best_indices = torch.empty((queries.shape[0], 0), dtype=torch.long, device=device)
        for c0 in range(0, num_docs, corpus_chunk_size):
            docs = corpus_embeddings[c0 : c0 + corpus_chunk_size].to(device=device, dtype=dtype)
            if similarity == "cosine":
                docs = F.normalize(docs, dim=-1)
            scores, columns = _stable_topk(queries @ docs.T, min(depth, docs.shape[0]))
            # The running best holds lower corpus indices than this chunk, so a stable sort keeps ties in index order.
            merged_scores = torch.cat([best_scores, scores], dim=1)
            merged_indices = torch.cat([best_indices, columns + c0], dim=1)
            best_scores, order = merged_scores.sort(dim=1, descending=True, stable=True)
            best_scores, best_indices = best_scores[:, :depth], merged_indices.gather(1, order[:, :depth])
        if exclude is not None:
            best_scores, best_indices = _drop_excluded(
                best_scores, best_indices, exclude[q0 : q0 + query_chunk_size], out_k
            )
        all_scores.append(best_scores)
        all_indices.append(best_indices)
    if not all_scores:
        return query_embeddings.new_empty((0, out_k), dtype=dtype), torch.empty(
            (0, out_k), dtype=torch.long, device=device
        )
    return torch.cat(all_scores), torch.cat(all_indices)


def _drop_excluded(
    scores: torch.Tensor, indices: torch.Tensor, exclude: Sequence[Collection[int]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove excluded indices from each row of ``(n, depth)`` results, keep the first ``k``; pad with -inf / -1."""
    widest = max((len(skip) for skip in exclude), default=0)
    if widest <= 64:  # one padded (n, widest) table compared at once (no per-row kernels on a GPU)
        table = torch.full((len(exclude), widest), -2, dtype=torch.long)
        for row, skip in enumerate(exclude):
            if skip:
                table[row, : len(skip)] = torch.as_tensor(list(skip), dtype=torch.long)
        table = table.to(indices.device)
        keep = ~(indices.unsqueeze(-1) == table.unsqueeze(1)).any(dim=-1)
    else:
        keep = torch.ones_like(indices, dtype=torch.bool)
        for row, skip in enumerate(exclude):
            if skip:
                skipped = torch.as_tensor(list(skip), dtype=torch.long, device=indices.device)
                keep[row] = ~torch.isin(indices[row], skipped)
    order = keep.to(torch.int8).sort(dim=1, descending=True, stable=True).indices[:, :k]
    kept = keep.gather(1, order)
    scores = scores.gather(1, order).masked_fill(~kept, float("-inf"))
    indices = indices.gather(1, order).masked_fill(~kept, -1)
    return scores, indices


# --------------------------------------------------------------------------------------------- metrics


def retrieval_metrics(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """MRR@10, nDCG@10, Recall@10, Recall@100 (fractions in [0, 1]) of ranked lists, via the shipped metric.

    Args:
        run: query id -> retrieved doc ids, best first.
        qrels: query id -> {doc id: grade}.
    Queries without a document of grade > 0 are skipped (as BEIR does); a judged query missing from ``run``
    scores 0; queries of ``run`` absent from ``qrels`` are ignored.
    """
    qids = [qid for qid, judged in qrels.items() if any(int(g) > 0 for g in judged.values())]
    if not qids:
        raise ValueError("no query in qrels has a relevant document (grade > 0); nothing to evaluate")
    return load_metric("retrieval").compute(
        predictions=[list(run.get(qid, [])) for qid in qids],
        references=[{"ids": list(qrels[qid]), "grades": [int(g) for g in qrels[qid].values()]} for qid in qids],
    )


def _embed_all(embed: Callable[[list[str]], torch.Tensor], texts: list[str], batch_size: int) -> torch.Tensor:
    """``(n, H)`` embeddings of ``texts``, ``batch_size`` texts per call of ``embed``."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            emb = embed(batch)
            if emb.ndim != 2 or emb.shape[0] != len(batch):
                raise ValueError(f"embed returned shape {tuple(emb.shape)} for {len(batch)} texts; expected (n, H)")
            out.append(emb.detach())
    return torch.cat(out)


def evaluate_retrieval(
    embed: Callable[[list[str]], torch.Tensor],
    data: RetrievalData,
    *,
    similarity: str = "cosine",
    k: int = 100,
    batch_size: int = 256,
    query_chunk_size: int = 1024,
    corpus_chunk_size: int = 50_000,
    embed_query: Callable[[list[str]], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Embed queries and corpus with ``embed`` (list of n texts -> ``(n, H)`` tensor), search exactly, score.
    ``embed_query`` embeds the queries when they are read differently (their own prompt or length).

    Queries without a relevant document are skipped; ``data.exclude`` is honoured. The corpus embeddings stay where
    ``embed`` returns them (return CPU tensors to keep a large corpus off the accelerator). ``k`` must reach the
    deepest cutoff (100).

    Returns:
        ``mrr@10``, ``ndcg@10``, ``recall@10``, ``recall@100`` as fractions in [0, 1].
    """
    if k < DEEPEST_CUTOFF:
        raise ValueError(f"k={k} is shallower than recall@{DEEPEST_CUTOFF}; search at least {DEEPEST_CUTOFF} deep")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    qids = [qid for qid, judged in data.qrels.items() if any(g > 0 for g in judged.values())]
    missing = [qid for qid in qids if qid not in data.queries]
    if missing:
        raise ValueError(f"{len(missing)} judged queries have no text in data.queries, e.g. {missing[0]!r}")
    if not qids:
        raise ValueError("no query in data.qrels has a relevant document (grade > 0); nothing to evaluate")
    doc_ids = list(data.corpus)
    doc_index = {doc: i for i, doc in enumerate(doc_ids)}
    query_emb = _embed_all(embed_query or embed, [data.queries[qid] for qid in qids], batch_size)
    corpus_emb = _embed_all(embed, [data.corpus[doc] for doc in doc_ids], batch_size)
    exclude = [{doc_index[d] for d in data.exclude.get(qid, ()) if d in doc_index} for qid in qids]
    _, indices = exact_search(
        query_emb,
        corpus_emb,
        k=k,
        similarity=similarity,
        query_chunk_size=query_chunk_size,
        corpus_chunk_size=corpus_chunk_size,
        exclude=exclude if any(exclude) else None,
    )
    run = {qid: [doc_ids[i] for i in row if i >= 0] for qid, row in zip(qids, indices.tolist())}
    return retrieval_metrics(run, {qid: data.qrels[qid] for qid in qids})


# --------------------------------------------------------------------------------------------- data

BEIR_LAYOUT = (
    "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv (as unzipped from the BEIR release)"
)


def _read_jsonl(
    path: Path, what: str, fields: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[tuple[int, str, dict]]:
    """Yield (line number, ``_id`` as str, record) per non-blank line.

    Every record needs ``_id`` and string ``fields``; ``optional`` fields may be absent or null, else strings.
    """
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(
                    f"{where}: not valid JSON ({e.msg}); each line of {path.name} must be one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise BeirFormatError(
                    f"{where}: a JSON {type(record).__name__}, not an object; write one {what} per line"
                )
            for name in ("_id", *fields):
                if name not in record:
                    raise BeirFormatError(f"{where}: the {what} has no {name!r} field; give every {what} {name!r}")
            doc_id = record["_id"]
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
                raise BeirFormatError(f"{where}: '_id' is {doc_id!r}; ids must be strings (or integers)")
            for name in fields + tuple(o for o in optional if record.get(o) is not None):
                if not isinstance(record[name], str):
                    raise BeirFormatError(f"{where}: {name!r} is {record[name]!r}; it must be a string")
            yield lineno, str(doc_id), record


def _read_ids(path: Path, what: str, texts: Iterator[tuple[int, str, str]]) -> dict[str, str]:
    """Collect (line, id, text) into id -> text; an id repeated with another text is an error."""
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, doc_id, text in texts:
        if doc_id in out and out[doc_id] != text:
            raise BeirFormatError(
                f"{path}, line {lineno}: {what} id {doc_id!r} repeats line {first_line[doc_id]} with another text; "
                "give each id once"
            )
        out.setdefault(doc_id, text)
        first_line.setdefault(doc_id, lineno)
    return out


def load_beir(folder: str | Path, split: str = "test") -> RetrievalData:
    """Read a BEIR dataset folder: ``corpus.jsonl``, ``queries.jsonl`` (or ``queries-<split>.jsonl`` where the
    split's queries have a file of their own) and ``qrels/<split>.tsv``.

    Documents are ``title + " " + text`` when the title is non-empty, else ``text``. The qrels file has
    tab-separated ``query-id corpus-id score`` rows (integer scores) under an optional header row. Only queries
    with at least one score > 0 in the qrels are kept (with all their judgements); the whole corpus is kept.

    Raises:
        FileNotFoundError: a file of the layout is missing.
        BeirFormatError: a line cannot be read; the message names file, line and the fix.
    """
    folder = Path(folder)
    corpus_path, queries_path = folder / "corpus.jsonl", folder / f"queries-{split}.jsonl"
    if not queries_path.is_file():  # one queries file for every split (BEIR's layout)
        queries_path = folder / "queries.jsonl"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for path in (corpus_path, queries_path, qrels_path):
        if not path.is_file():
            hint = BEIR_LAYOUT
            if path == qrels_path and (folder / "qrels").is_dir():
                splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
                hint += f"; qrels/ has the splits {splits}, pick one with split="
            raise FileNotFoundError(f"{path} not found: {hint}")

    def doc_text(record: dict) -> str:
        title = record.get("title") or ""
        return f"{title} {record['text']}" if title else record["text"]

    documents = _read_jsonl(corpus_path, "document", ("text",), optional=("title",))
    corpus = _read_ids(corpus_path, "document", ((n, i, doc_text(r)) for n, i, r in documents))
    queries = _read_ids(
        queries_path, "query", ((n, i, r["text"]) for n, i, r in _read_jsonl(queries_path, "query", ("text",)))
    )

    qrels: dict[str, dict[str, int]] = {}
    unknown: list[str] = []
    seen_row = False
    with qrels_path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = [x.strip() for x in line.split("\t")]
            if not seen_row and fields[0].lower() == "query-id":
                seen_row = True
                continue  # the optional header row
            seen_row = True
            where = f"{qrels_path}, line {lineno}"
            if len(fields) != 3:
                raise BeirFormatError(
                    f"{where}: {len(fields)} tab-separated fields, expected 3 (query-id, corpus-id, score); "
                    "separate the fields with single tabs"
                )
            qid, doc_id, score = fields
            try:
                grade = int(score)
            except ValueError:
                raise BeirFormatError(f"{where}: score {score!r} is not an integer; grades must be integers") from None
            if qid not in queries:
                unknown.append(f"{where}: query-id {qid!r} is not in {queries_path.name}")
            elif doc_id not in corpus:
                unknown.append(f"{where}: corpus-id {doc_id!r} is not in {corpus_path.name}")
            else:
                qrels.setdefault(qid, {})[doc_id] = grade
    if unknown:
        more = f" (and {len(unknown) - 1} more rows like it)" if len(unknown) > 1 else ""
        raise BeirFormatError(
            f"{unknown[0]}{more}; the qrels must come from the same BEIR dataset (and version) as the corpus and "
            "queries"
        )
    qrels = {qid: judged for qid, judged in qrels.items() if any(g > 0 for g in judged.values())}
    if not qrels:
        raise BeirFormatError(f"{qrels_path}: no query has a score > 0; nothing to evaluate with this split")
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return RetrievalData(corpus=corpus, queries=queries, qrels={qid: qrels[qid] for qid in queries})


def duplicate_retrieval_data(
    sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float], *, min_score: float = 4.0
) -> RetrievalData:
    """The STS-B duplicate retrieval task: find a pair's sentence 2 from its sentence 1 among all sentences.

    Queries are the distinct sentence 1 of pairs with gold ``score >= min_score``; pairs sharing a sentence 1 make one
    query with all their sentence 2 relevant (grade 1). The corpus is every distinct sentence of either column, ids
    ``d0, d1, ...`` in first-seen order (row by row, sentence 1 then 2); queries are ``q0, q1, ...`` likewise. The
    query's own text is in the corpus, so it is excluded from its ranking via ``exclude``; a pair whose two
    sentences are equal is therefore not used.
    """
    if not len(sentences1) == len(sentences2) == len(scores):
        raise ValueError(
            f"lengths differ: {len(sentences1)} sentences1, {len(sentences2)} sentences2, {len(scores)} scores"
        )
    doc_of: dict[str, str] = {}
    for s1, s2 in zip(sentences1, sentences2):
        for s in (s1, s2):
            doc_of.setdefault(s, f"d{len(doc_of)}")
    query_of: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for s1, s2, score in zip(sentences1, sentences2, scores):
        if not float(score) >= min_score or s1 == s2:
            continue
        qid = query_of.setdefault(s1, f"q{len(query_of)}")
        qrels.setdefault(qid, {})[doc_of[s2]] = 1
    if not qrels:
        raise ValueError(f"no pair of two different sentences has score >= {min_score}; no query to evaluate")
    return RetrievalData(
        corpus={doc: text for text, doc in doc_of.items()},
        queries={qid: text for text, qid in query_of.items()},
        qrels=qrels,
        exclude={qid: {doc_of[text]} for text, qid in query_of.items()},
    )

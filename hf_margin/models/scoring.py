"""Scorers: one object scores text pairs with a model, for teachers, miners, evaluation and student statistics.

A scorer has ``score_pairs(queries, documents) -> np.ndarray`` and a ``fingerprint`` string that changes
whenever its scores could (weights, options); a bi-encoder scorer also has ``embed(texts)``. A teacher is a
scorer loaded with ``from_pretrained``; :func:`hf_margin.attach_teacher_margins` caches its margins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from datasets.fingerprint import Hasher
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from hf_margin.data.processes import process_state
from hf_margin.models.modeling import encode, load_student, loading_whole, similarity

logger = logging.getLogger(__name__)


@runtime_checkable
class TeacherScorer(Protocol):
    """What :func:`~hf_margin.attach_teacher_margins` needs of a teacher."""

    @property
    def fingerprint(self) -> str: ...

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray: ...


def weights_fingerprint(model: torch.nn.Module, skip: Sequence[str] = ()) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes): a content hash of the weights.

    ``skip``: name prefixes of weights that take no part in the score (a bi-encoder's pooler head), so that a
    randomly initialised, unused head cannot change the fingerprint between two loads of one checkpoint.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(tuple(skip)) or any(f".{prefix}" in f".{name}" for prefix in skip):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its training flag after (a student mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class _TransformersScorer:
    """Shared parts of the ``transformers`` scorers: device, batching, fingerprint.

    ``device=None`` moves the model to the process's Accelerate device (a teacher); evaluation passes the
    model's own device, so a student being trained stays where it is.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device | None = None,
        show_progress: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else process_state().device
        weight = next(iter((*model.parameters(), *model.buffers())))  # an ONNX encoder holds a buffer only
        self.model = model if weight.device == self.device else model.to(self.device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.show_progress = show_progress
        self._fingerprint: str | None = None
        self._state: tuple | None = None

    def _current_state(self) -> tuple:
        """What the scores depend on, cheaply: each tensor's identity, storage, dtype and version counter
        (bumped by every in-place write: an optimiser step, ``load_state_dict``), the tokenizer object and
        every scoring option."""
        tensors = (*self.model.parameters(), *self.model.buffers())
        weights = tuple((id(t), t.data_ptr(), t.dtype, t.device, t._version) for t in tensors)
        return weights, id(self.tokenizer), tuple(sorted(self.options().items()))

    def _refresh(self) -> None:
        """Forget the fingerprint and anything scored when the weights, tokenizer or options changed."""
        state = self._current_state()
        if state != self._state:
            self._state = state
            self._fingerprint = None
            self._on_weights_changed()

    unused_weights: tuple[str, ...] = ()  # name prefixes of weights the score never reads

    def options(self) -> dict:
        return {"max_length": self.max_length}

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights, the model config, the tokenizer and every scoring option."""
        self._refresh()
        if self._fingerprint is None:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None:  # the vocabulary and pipeline, without per-call padding/truncation state
                tokenizer = {
                    k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")
                }
            else:
                tokenizer = sorted(self.tokenizer.get_vocab().items())
            self._fingerprint = Hasher.hash(
                {
                    "class": type(self).__name__,
                    "weights": weights_fingerprint(self.model, skip=self.unused_weights),
                    "config": self.model.config.to_json_string() if hasattr(self.model, "config") else None,
                    "tokenizer": [type(self.tokenizer).__name__, Hasher.hash(tokenizer)],
                    "options": self.options(),
                }
            )
        return self._fingerprint

    def _on_weights_changed(self) -> None:
        """Drop whatever was computed with the old weights."""

    def _batches(self, n: int, desc: str):
        """Batch starts, with a progress bar only for work of several batches (no bar per small call)."""
        quiet = not self.show_progress or n <= 4 * self.batch_size
        return tqdm(range(0, n, self.batch_size), desc=desc, unit="batch", disable=quiet, leave=False)


class EmbeddingMemo:
    """Remembered embeddings: ``text -> (H,)`` rows, held in a few large ``(n, H)`` blocks (one per call that
    embedded new texts) and one dict of row numbers.

    Keeping one tensor per text (views of each batch's output) fragmented the heap: building corpus triplets from
    30,000 texts peaked at 1,684 MB of RSS, 906 MB with blocks (BENCHMARKS.md section 9). A block is allocated once
    per call and filled batch by batch; rows are registered only once their block is complete.
    """

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.blocks: list[torch.Tensor] = []
        self.starts: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, text: object) -> bool:
        return text in self.rows

    def clear(self) -> None:
        self.rows.clear()
        self.blocks.clear()
        self.starts.clear()

    def add(self, texts: Sequence[str], block: torch.Tensor) -> None:
        """Remember ``block`` ``(len(texts), H)`` as the embeddings of ``texts`` (distinct, not yet known)."""
        if block.shape[0] != len(texts):
            raise ValueError(f"{len(texts)} texts but {block.shape[0]} embeddings")
        start = len(self.rows)
        self.blocks.append(block)
        self.starts.append(start)
        self.rows.update(zip(texts, range(start, start + len(texts))))

    def gather(self, texts: Sequence[str]) -> torch.Tensor:
        """The embeddings of ``texts`` (all known) as a new ``(len(texts), H)`` tensor, in their order."""
        rows = torch.tensor([self.rows[t] for t in texts], dtype=torch.long)
        if len(self.blocks) == 1:
            return self.blocks[0][rows]
        which = torch.searchsorted(torch.tensor(self.starts), rows, right=True) - 1
        out = self.blocks[0].new_empty((len(texts), self.blocks[0].shape[1]))
        for b in which.unique().tolist():
            mask = which == b
            out[mask] = self.blocks[b][rows[mask] - self.starts[b]]
        return out


class BiEncoderScorer(_TransformersScorer):
    """Scores ``sim(embed(q), embed(d))`` from pooled embeddings of an ``AutoModel``.

    Each distinct text is embedded once per scorer object, in length-sorted batches, and remembered: mining,
    margin scoring and evaluation over the same sentences share the work. Embeddings are ``(n, H)`` float32
    on the CPU.
    """

    unused_weights = ("pooler.",)  # the score pools last_hidden_state itself

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        similarity_fn: str = "cosine",
        query_max_length: int | None = None,
        query_prompt: str = "",
        document_prompt: str = "",
        **kwargs,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self._memos: dict[tuple[str, int], EmbeddingMemo] = {}  # mining and scoring embed each text once per role
        self.pooling = pooling
        self.normalize = normalize
        self.similarity_fn = similarity_fn
        self.query_max_length = query_max_length
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs):
        """Load from the Hub or a local directory (``AutoModel`` without its unused pooler + ``AutoTokenizer``)."""
        model = load_student(name_or_path, student_type="bi-encoder", trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    def _on_weights_changed(self) -> None:
        self._memos.clear()

    def clear_memo(self) -> None:
        """Forget remembered embeddings (streamed scoring does this after each batch, to bound memory)."""
        self._memos.clear()

    def options(self) -> dict:
        options = {**super().options(), "pooling": self.pooling, "normalize": self.normalize, "sim": self.similarity_fn}
        # only when set: the fingerprints (and caches) of scorers without them stay as they were
        for name in ("query_max_length", "query_prompt", "document_prompt"):
            if getattr(self, name):
                options[name] = getattr(self, name)
        return options

    def role_settings(self, role: str) -> tuple[str, int]:
        """``(prompt, max_length)`` of a role: ``"query"`` (the query side of a pair) or ``"document"``."""
        if role == "query":
            return self.query_prompt, self.query_max_length or self.max_length
        if role == "document":
            return self.document_prompt, self.max_length
        raise ValueError(f"role must be 'query' or 'document'; got {role!r}")

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], role: str = "document", *, remember: bool = True) -> torch.Tensor:
        """Embed texts ``(len(texts), H)`` as queries or documents (``role``: its prompt and length); texts seen
        before in the same role settings come from the memo, the rest are embedded in batches sorted by length.
        ``remember=False`` neither reads nor fills the memo (a corpus embedded shard by shard to disk)."""
        self._refresh()
        settings = self.role_settings(role)
        memo = self.memo(role) if remember else EmbeddingMemo()
        new = [t for t in dict.fromkeys(texts) if t not in memo]
        order = sorted(new, key=len)
        with eval_mode(self.model):
            self._embed_into_memo(order, memo, *settings)
        if not texts:
            return torch.empty(0)
        return memo.gather(texts)

    def adopt(self, texts: Sequence[str], embeddings: torch.Tensor, role: str = "document") -> int:
        """Remember ``embeddings`` ``(n, H)`` as those of ``texts`` in ``role``, as :meth:`embed` would give them
        (rows embedded with ``remember=False`` and read back from disk), so that scoring them embeds nothing.
        Texts already remembered keep their rows; returns how many were taken."""
        self._refresh()
        memo = self.memo(role)
        first = {t: i for i, t in reversed(list(enumerate(texts)))}  # each text's first row
        keep = [i for t, i in first.items() if t not in memo]
        if keep:
            memo.add([texts[i] for i in keep], embeddings[keep].to("cpu", torch.float32, copy=True))
        return len(keep)

    def memo(self, role: str = "document") -> EmbeddingMemo:
        """The remembered embeddings of a role's settings (shared by both roles when they read texts alike)."""
        return self._memos.setdefault(self.role_settings(role), EmbeddingMemo())

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """:meth:`embed` with the query prompt and length."""
        return self.embed(texts, role="query")

    def _embed_into_memo(self, order: list[str], memo: EmbeddingMemo, prompt: str, max_length: int) -> None:
        block = None
        for start in self._batches(len(order), "Embedding"):
            chunk = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [prompt + t for t in chunk] if prompt else chunk,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            emb = (
                encode(
                    self.model,
                    enc["input_ids"],
                    enc["attention_mask"],
                    pooling=self.pooling,
                    normalize=self.normalize,
                    token_type_ids=enc.get("token_type_ids"),
                )
                .float()
                .cpu()
            )
            if block is None:
                block = emb.new_empty((len(order), emb.shape[1]))
            block[start : start + len(chunk)] = emb
        if block is not None:
            memo.add(order, block)

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """``sim(embed(q, 'query'), embed(d, 'document'))`` per pair ``(len,)``; each distinct text embedded once
        per role (once in all when both roles read texts the same way)."""
        if self.role_settings("query") == self.role_settings("document"):
            unique = list(dict.fromkeys([*queries, *documents]))
            index = {t: i for i, t in enumerate(unique)}
            emb = self.embed(unique)
            q, d = emb[[index[t] for t in queries]], emb[[index[t] for t in documents]]
        else:  # rows come back in the given order, repeats included
            q, d = self.embed(queries, role="query"), self.embed(documents, role="document")
        return similarity(q, d, self.similarity_fn).numpy()


class CrossEncoderScorer(_TransformersScorer):
    """Scores the one logit of a sequence-classification model on the joined pair (optionally its sigmoid)."""

    def __init__(self, model: PreTrainedModel, tokenizer, *, apply_sigmoid: bool = False, **kwargs) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.apply_sigmoid = apply_sigmoid

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs):
        """Load from the Hub or a local directory (``AutoModelForSequenceClassification`` with one label)."""
        with loading_whole():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, trust_remote_code=trust_remote_code, output_loading_info=True
            )
        if info.get("missing_keys"):
            raise ValueError(
                f"cross-encoder teacher {name_or_path}: {len(info['missing_keys'])} weights are not in the checkpoint "
                f"({', '.join(sorted(info['missing_keys'])[:3])}): its score head would be random. Give a checkpoint "
                "trained as a cross-encoder (e.g. `make teacher`), or use --teacher_type bi-encoder"
            )
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, **kwargs)

    def options(self) -> dict:
        return {**super().options(), "sigmoid": self.apply_sigmoid}

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        if len(queries) != len(documents):
            raise ValueError(f"{len(queries)} queries but {len(documents)} documents")
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]) + len(documents[i]))
        scores = np.empty(len(queries), dtype=np.float32)
        with eval_mode(self.model):
            self._score_into(scores, order, queries, documents)
        return scores

    def _score_into(self, scores: np.ndarray, order: list[int], queries: Sequence[str], documents: Sequence[str]):
        for start in self._batches(len(queries), "Scoring pairs"):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [queries[i] for i in idx],
                [documents[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**enc).logits
            if logits.shape[-1] != 1:
                raise ValueError(f"a cross-encoder teacher must give one logit per pair; got {logits.shape[-1]}")
            logits = logits.squeeze(-1).float()
            scores[idx] = (torch.sigmoid(logits) if self.apply_sigmoid else logits).cpu().numpy()


class MeanScoreScorer:
    """A teacher of several bi-encoders whose score is the mean of theirs: ``t(q, d) = mean_i t_i(q, d)``.

    Each member scores by cosine and embeds with its own tokenizer, pooling, width, prompts and lengths.
    :meth:`embed` puts their unit-length embeddings side by side, scaled by ``1/sqrt(k)``, ``(n, H_1 + ... + H_k)``:
    every row is unit-length and the dot product (the cosine) of two rows is the mean of the members' cosines, so
    search, mining, margins and evaluation use it as they use one bi-encoder. (Dot-product members are refused:
    search and mining normalise the joined embedding, which would weigh each member by its norm.)

    Example::

        teacher = MeanScoreScorer([BiEncoderScorer.from_pretrained(a), BiEncoderScorer.from_pretrained(b)])
        teacher.score_pairs(["a query"], ["a document"])  # (1,): the mean of the two cosines
    """

    def __init__(self, members: Sequence[BiEncoderScorer]) -> None:
        if len(members) < 2:
            raise ValueError(f"a mean-score teacher needs at least 2 bi-encoders; got {len(members)}")
        bad = [type(m).__name__ for m in members if not isinstance(m, BiEncoderScorer)]
        if bad:
            raise ValueError(f"a mean-score teacher averages bi-encoders only; got {', '.join(bad)}")
        dot = [i for i, m in enumerate(members) if m.similarity_fn != "cosine"]
        if dot:
            raise ValueError(f"a mean-score teacher averages cosine scores; member(s) {dot} score by dot product")
        self.members = list(members)
        self.similarity_fn = "cosine"

    # the first member's device and model stand for the teacher where one is named (speed reports its dtype)
    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def model(self) -> PreTrainedModel:
        return self.members[0].model

    def _shared(name: str):  # noqa: N805 - a property factory used in the class body
        def get(self):
            return getattr(self.members[0], name)

        def set_(self, value) -> None:
            for member in self.members:
                setattr(member, name, value)

        return property(get, set_, doc=f"Every member's ``{name}`` (set on all of them).")

    batch_size = _shared("batch_size")
    max_length = _shared("max_length")
    query_max_length = _shared("query_max_length")
    show_progress = _shared("show_progress")
    del _shared

    @property
    def fingerprint(self) -> str:
        return Hasher.hash({"class": type(self).__name__, "members": [m.fingerprint for m in self.members]})

    def role_settings(self, role: str) -> tuple[str, int]:
        """The first member's ``(prompt, max_length)`` of ``role`` (the fingerprint covers every member's)."""
        return self.members[0].role_settings(role)

    def clear_memo(self) -> None:
        for member in self.members:
            member.clear_memo()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], role: str = "document", *, remember: bool = True) -> torch.Tensor:
        """``(len(texts), H_1 + ... + H_k)``: the members' unit-length embeddings (each with its own settings of
        ``role``) side by side, scaled by ``1/sqrt(k)``."""
        if not texts:
            return torch.empty(0)
        scale = len(self.members) ** -0.5
        parts = [
            torch.nn.functional.normalize(m.embed(texts, role=role, remember=remember), dim=-1) * scale
            for m in self.members
        ]
        return torch.cat(parts, dim=-1)

    def adopt(self, texts: Sequence[str], embeddings: torch.Tensor, role: str = "document") -> int:
        """Remember rows of :meth:`embed` ``(n, H_1 + ... + H_k)`` (read back from disk) in each member, as its
        unit-length part: every member scores by cosine, so that is the member's own embedding up to its norm,
        which neither the mean score nor :meth:`embed` reads. Returns how many texts were taken (0 where the widths
        are not the members' hidden sizes)."""
        widths = [getattr(m.model.config, "hidden_size", None) for m in self.members]
        if None in widths or sum(widths) != embeddings.shape[-1]:
            return 0
        parts = torch.split(embeddings.float() * len(self.members) ** 0.5, widths, dim=-1)
        return min(m.adopt(texts, part, role=role) for m, part in zip(self.members, parts))

    def embed_queries(self, texts: Sequence[str]) -> torch.Tensor:
        """:meth:`embed` with each member's query prompt and length."""
        return self.embed(texts, role="query")

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> np.ndarray:
        """The mean of the members' scores per pair ``(len,)``."""
        return np.mean([m.score_pairs(queries, documents) for m in self.members], axis=0)


# A teacher is a scorer loaded with ``from_pretrained``; the names say what they are used for.
BiEncoderTeacher = BiEncoderScorer
CrossEncoderTeacher = CrossEncoderScorer


__all__ = [
    "BiEncoderScorer",
    "BiEncoderTeacher",
    "CrossEncoderScorer",
    "CrossEncoderTeacher",
    "MeanScoreScorer",
    "TeacherScorer",
    "eval_mode",
    "weights_fingerprint",
]

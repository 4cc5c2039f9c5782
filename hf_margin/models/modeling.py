"""Students: load, score and save bi-encoders and cross-encoders.

The model the Trainer trains is a plain ``transformers`` model (``AutoModel`` for a bi-encoder,
``AutoModelForSequenceClassification`` with one label for a cross-encoder), so saving, resuming,
DeepSpeed and FSDP work as for any ``transformers`` model. Pooling and similarity are functions here;
:class:`~hf_margin.models.kind.StudentKind` (which kind a student is, its scorer) and ``save_student`` are in
:mod:`hf_margin.models.kind`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel

logger = logging.getLogger(__name__)

STUDENT_TYPES: tuple[str, ...] = ("bi-encoder", "cross-encoder")
SIMILARITIES: tuple[str, ...] = ("cosine", "dot")
POOLINGS: tuple[str, ...] = ("mean", "cls")
# where each architecture keeps the dropout on its attention probabilities (BERT, MPNet, RoBERTa: the first;
# DistilBERT, ModernBERT: the second; GPT-2 style: the third)
ATTENTION_DROPOUT_KEYS: tuple[str, ...] = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def pool(last_hidden_state: Tensor, attention_mask: Tensor, pooling: str = "mean") -> Tensor:
    """Pool token states ``(T, L, H)`` into text embeddings ``(T, H)`` by masked mean or the first token."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if pooling == "mean":
        weights = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
    raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}")


def encode(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    pooling: str = "mean",
    normalize: bool = False,
    token_type_ids: Tensor | None = None,
) -> Tensor:
    """Embed a padded batch of texts ``(T, L)`` with a bi-encoder into ``(T, H)``."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    hidden = model(**kwargs).last_hidden_state
    embeddings = pool(hidden, attention_mask, pooling)
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


def similarity(a: Tensor, b: Tensor, kind: str = "cosine") -> Tensor:
    """Row-wise similarity of embeddings ``a`` and ``b`` (``(..., H)`` each) into ``(...)``."""
    if kind == "cosine":
        return F.cosine_similarity(a, b, dim=-1)
    if kind == "dot":
        return (a * b).sum(-1)
    raise ValueError(f"similarity must be 'cosine' or 'dot'; got {kind!r}")


def forward_in_length_chunks(
    forward: Callable[..., Tensor],
    input_ids: Tensor,
    attention_mask: Tensor,
    token_type_ids: Tensor | None = None,
    *,
    chunk_size: int = 0,
) -> Tensor:
    """Run ``forward(input_ids, attention_mask, token_type_ids)`` on rows grouped by length, each group trimmed
    to its own longest row, and return the outputs ``(T, ...)`` in the original row order.

    Padded rows cost as much as full ones, and a triplet batch mixes short queries with long documents: sorted
    chunks of 32 rows ran a 2-layer MiniLM forward and backward 2.3x faster than one padded pass on STS-B.
    ``chunk_size=0`` runs one pass. Outputs are the same either way (padding is masked).
    """
    if chunk_size <= 0 or input_ids.shape[0] <= chunk_size:
        return forward(input_ids, attention_mask, token_type_ids)
    lengths = attention_mask.sum(1)
    order = lengths.argsort()
    sorted_lengths = lengths[order].tolist()  # one device-to-host copy for all chunks
    parts = []
    for start, rows in zip(range(0, len(sorted_lengths), chunk_size), order.split(chunk_size)):
        width = max(sorted_lengths[start : start + chunk_size])
        parts.append(
            forward(
                input_ids[rows, :width],
                attention_mask[rows, :width],
                None if token_type_ids is None else token_type_ids[rows, :width],
            )
        )
    return torch.cat(parts)[order.argsort()]


def split_scores(flat_neg: Tensor, negatives_mask: Tensor) -> Tensor:
    """Scatter the scores of real negatives ``(M,)`` into a ``(B, N)`` grid (zeros where masked)."""
    grid = flat_neg.new_zeros(negatives_mask.shape)
    return grid.masked_scatter(negatives_mask, flat_neg)


def student_scores(
    model: nn.Module,
    batch: dict[str, Tensor],
    *,
    student_type: str,
    similarity_fn: str = "cosine",
    pooling: str = "mean",
    normalize: bool = False,
    chunk_size: int = 0,
    return_embeddings: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """Score a collated batch with one forward pass: ``s(q,p)`` ``(B,)`` and ``s(q,n)`` ``(B, N)``; with
    ``return_embeddings`` (a bi-encoder) also the embeddings ``(queries (B, H), documents (B + M, H))``, the
    documents being the ``B`` positives then the ``M`` real negatives.

    The batch layout is :class:`~hf_margin.data.columns.MarginDistillCollator`'s: for a bi-encoder the rows of
    ``input_ids`` are ``B`` queries, ``B`` positives, then the ``M`` real negatives; for a cross-encoder
    they are ``B`` (query, positive) pairs, then ``M`` (query, negative) pairs; a bi-encoder batch with
    ``query_input_ids`` holds its queries there and ``B + M`` documents in ``input_ids``. With ``chunk_size`` the
    rows run in length-sorted chunks (see :func:`forward_in_length_chunks`).
    """
    mask = batch["negatives_mask"]
    b = mask.shape[0]
    if student_type == "bi-encoder":

        def embed(ids: Tensor, am: Tensor) -> Tensor:
            def forward(i: Tensor, a: Tensor, _: Tensor | None) -> Tensor:
                return encode(model, i, a, pooling=pooling, normalize=normalize)

            return forward_in_length_chunks(forward, ids, am, chunk_size=chunk_size)

        if "query_input_ids" in batch:  # queries padded apart from documents (MarginDistillCollator)
            docs = embed(batch["input_ids"], batch["attention_mask"])
            queries = embed(batch["query_input_ids"], batch["query_attention_mask"])
            positives, negatives = docs[:b], docs[b:]
            documents = docs
        else:
            emb = embed(batch["input_ids"], batch["attention_mask"])
            queries, positives, negatives = emb[:b], emb[b : 2 * b], emb[2 * b :]
            documents = emb[b:]  # positives then negatives, already contiguous: no copy
        pos = similarity(queries, positives, similarity_fn)
        query_per_negative = queries.repeat_interleave(mask.sum(1), dim=0, output_size=negatives.shape[0])
        neg = split_scores(similarity(query_per_negative, negatives, similarity_fn), mask)
        if return_embeddings:
            return pos, neg, (queries, documents)
        return pos, neg
    if student_type == "cross-encoder":
        if return_embeddings:
            raise ValueError("a cross-encoder student embeds no text alone: return_embeddings needs a bi-encoder")

        def logits_of(ids: Tensor, am: Tensor, tt: Tensor | None) -> Tensor:
            kwargs = {"input_ids": ids, "attention_mask": am}
            if tt is not None:
                kwargs["token_type_ids"] = tt
            return model(**kwargs).logits

        logits = forward_in_length_chunks(
            logits_of, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), chunk_size=chunk_size
        )
        if logits.dim() != 2 or logits.shape[-1] != 1:
            raise ValueError(
                f"a cross-encoder student must output one logit per pair; got logits of shape {tuple(logits.shape)}. "
                "Load it with AutoModelForSequenceClassification.from_pretrained(..., num_labels=1)."
            )
        scores = logits.squeeze(-1)
        return scores[:b], split_scores(scores[b:], mask)
    raise ValueError(f"student_type must be 'bi-encoder' or 'cross-encoder'; got {student_type!r}")


def _layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """Find the ``nn.ModuleList`` holding the transformer layers (``config.num_hidden_layers`` long)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == n:
                return module, child_name, child
    raise ValueError(f"could not find a list of {n} transformer layers in {type(model).__name__}")


def keep_layers(model: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Keep only the transformer layers at ``layers`` (DistilBERT-style student initialisation), in place."""
    parent, child_name, layer_list = _layer_list(model)
    n = len(layer_list)
    bad = [i for i in layers if not -n <= i < n]
    if not layers or bad:
        raise ValueError(f"layers to keep must be a non-empty list of indices into {n} layers; bad: {bad or 'empty'}")
    kept = nn.ModuleList([layer_list[i] for i in layers])
    setattr(parent, child_name, kept)
    model.config.num_hidden_layers = len(kept)
    for new_index, layer in enumerate(kept):  # keep per-layer indices (used by caches) consistent
        for sub in layer.modules():
            if hasattr(sub, "layer_idx"):
                sub.layer_idx = new_index
    logger.info("Kept layers %s of %d: the student has %d layers", list(layers), n, len(kept))
    return model


def _load_without_pooler(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedModel:
    """``AutoModel`` without the pooler head a bi-encoder never uses (where the class allows it).

    The checkpoint's pooler weights are then unused on purpose: transformers' load report about them is silenced,
    and only weights that are really missing (which would be random) are reported.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            model, info = AutoModel.from_pretrained(
                name_or_path, add_pooling_layer=False, output_loading_info=True, **kwargs
            )
        except TypeError:  # a class without a pooler switch
            model, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:
        logger.warning(
            "%s: %d weights are not in the checkpoint and start random: %s",
            name_or_path,
            len(missing),
            ", ".join(sorted(missing)[:5]),
        )
    return model


@contextmanager
def loading_whole() -> Iterator[None]:
    """Load models whole while a DeepSpeed ZeRO-3 config is active.

    Under ZeRO-3 (an ``accelerate launch`` DeepSpeed config, or ``--deepspeed``), transformers' ``from_pretrained``
    shards every model at load time through ``deepspeed.zero.Init``: a teacher or a student used before training
    (teacher scoring, the "before" evaluation) would then run on empty 1-D parameter shards ("'weight' must be
    2-D"). hf-margin's models are small; the DeepSpeed engine shards the student when training starts.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    held = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    config = held() if held is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def load_student(
    name_or_path: str | os.PathLike,
    *,
    student_type: str = "bi-encoder",
    layers: Sequence[int] | None = None,
    trust_remote_code: bool = False,
    attention_dropout: float | None = None,
    **kwargs,
) -> PreTrainedModel:
    """Load a student from the Hub or a local directory, optionally keeping only some layers.

    A cross-encoder gets a one-logit sequence-classification head (fresh when the checkpoint has none).
    ``attention_dropout``: the dropout on the attention probabilities while training (None: the checkpoint's;
    see :func:`attention_dropout_override`).
    """
    if attention_dropout is not None:
        kwargs.update(attention_dropout_override(name_or_path, attention_dropout, trust_remote_code=trust_remote_code))
    if student_type == "bi-encoder":
        with loading_whole():
            model = _load_without_pooler(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    elif student_type == "cross-encoder":
        with loading_whole():
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, trust_remote_code=trust_remote_code, **kwargs
            )
    else:
        raise ValueError(f"student_type must be 'bi-encoder' or 'cross-encoder'; got {student_type!r}")
    if layers is not None:
        keep_layers(model, layers)
    return model


def attention_dropout_override(
    name_or_path: str | os.PathLike, value: float, *, trust_remote_code: bool = False
) -> dict[str, float]:
    """The ``from_pretrained`` keyword(s) that set a checkpoint's attention dropout to ``value``.

    On a CPU, a non-zero attention dropout sends PyTorch's SDPA to its unfused path, which draws a random mask
    over every ``(batch, heads, L, L)`` attention map: at 256 tokens that was 37% of a 2-layer MiniLM training
    step (BENCHMARKS.md section 10). Evaluation never applies it. Raises ValueError for a value outside [0, 1)
    or a config without a known attention-dropout setting (:data:`ATTENTION_DROPOUT_KEYS`)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1); got {value}")
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    keys = [key for key in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, key, None), int | float)]
    if not keys:
        raise ValueError(
            f"{type(config).__name__} has none of the attention dropout settings hf-margin knows "
            f"({', '.join(ATTENTION_DROPOUT_KEYS)}): leave student_attention_dropout unset for this student"
        )
    return dict.fromkeys(keys, value)


def unused_pooler_state(model: nn.Module) -> dict[str, Tensor]:
    """Zero weights for the pooler head a bi-encoder student was loaded without, keyed as the checkpoint keys them.

    A student is trained without its ``pooler`` (pooling is mean or CLS over ``last_hidden_state``). Saved without
    it, every ``AutoModel.from_pretrained`` of the student would print transformers' load report ("pooler.dense.weight
    MISSING … newly initialized"), which reads as a broken model. Saving a zero pooler (``pooler_output`` = tanh(0)
    = 0: visibly unused) loads silently and byte-identically in every run. Empty for a model that has its pooler,
    or whose class has no ``add_pooling_layer`` switch.
    """
    if getattr(model, "pooler", "absent") is not None or not isinstance(model, PreTrainedModel):
        return {}
    try:
        with torch.device("meta"):
            full = type(model)(model.config, add_pooling_layer=True)
    except TypeError:  # no pooler switch
        return {}
    pooler = getattr(full, "pooler", None)
    if pooler is None:
        return {}
    prefix = f"{model.base_model_prefix}.pooler." if model is not model.base_model else "pooler."
    return {prefix + k: torch.zeros(v.shape, dtype=v.dtype) for k, v in pooler.state_dict().items()}


def state_dict_for_saving(model: nn.Module, state_dict: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """``state_dict`` (default: the model's) plus :func:`unused_pooler_state` where the pooler was left out."""
    state = dict(model.state_dict() if state_dict is None else state_dict)
    for key, value in unused_pooler_state(model).items():
        state.setdefault(key, value)
    return state


def write_sentence_transformers_files(
    output_dir: str | os.PathLike,
    *,
    hidden_size: int,
    pooling: str = "mean",
    normalize: bool = False,
    similarity_fn: str = "cosine",
    max_length: int = 128,
    prompts: dict[str, str] | None = None,
) -> None:
    """Write the sentence-transformers layout beside a saved bi-encoder, so ``SentenceTransformer(path)`` loads it.

    The files: ``modules.json`` (Transformer, Pooling, optional Normalize), ``1_Pooling/config.json``,
    ``sentence_bert_config.json`` and ``config_sentence_transformers.json`` (with ``prompts``, e.g.
    ``{"query": "query: ", "document": "passage: "}``, which ``encode_query`` / ``encode_document`` prepend).
    """
    out = Path(output_dir)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize or similarity_fn == "cosine":  # cosine is unchanged by L2 normalisation; dot then equals cosine
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (out / "2_Normalize").mkdir(parents=True, exist_ok=True)
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    files = {
        out / "modules.json": modules,
        out / "1_Pooling" / "config.json": pooling_config,
        out / "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
        out / "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "similarity_fn_name": "cosine" if similarity_fn == "cosine" else "dot",
            "prompts": dict(prompts or {}),
            "default_prompt_name": None,
        },
    }
    for path, content in files.items():
        path.write_text(json.dumps(content, indent=2) + "\n")


def saved_prompts(path: str | os.PathLike) -> dict[str, str]:
    """The sentence-transformers ``prompts`` saved beside a student (``{}`` when there are none or no file)."""
    config = Path(path) / "config_sentence_transformers.json"
    try:
        return dict(json.loads(config.read_text()).get("prompts") or {})
    except (OSError, ValueError):
        return {}

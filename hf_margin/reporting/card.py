"""Model cards, built with ``huggingface_hub.ModelCard``: of distilled students (:func:`build_model_card`) and of
the cross-encoder teacher ``hf-margin teacher`` trains (:func:`build_teacher_card`)."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

import accelerate
import datasets
import torch
import transformers
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainingArguments

from hf_margin.training.config import MarginDistillConfig

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A {{ student_type }} student distilled from **{{ teacher }}** with hf-margin's `MarginDistillTrainer`
and the **{{ loss_name }}**.
{% if base_model %}It starts from `{{ base_model }}`
{%- if layers %}, keeping transformer layers {{ layers }}{% endif %}.{% endif %}

## Evaluation
{% if eval_rows %}
| model | {{ eval_columns | join(" | ") }} |
| --- |{% for _ in eval_columns %} --- |{% endfor %}
{% for name, values in eval_rows %}| {{ name }} | {{ values | join(" | ") }} |
{% endfor %}
{{ eval_note }}
{% else %}No evaluation was recorded.{% endif %}
{% if speed %}
**Speed** (measured in the training run, embedding the evaluation's documents): {{ speed }}.
{% endif %}{% if quality_kept %}The student keeps {{ quality_kept }}.
{% endif %}
## Training

- Teacher: {{ teacher_line }}
- Loss: `{{ loss }}` ({{ loss_name }}), options: {{ loss_options }}.
- Scoring: {{ scoring }}
- Data: {{ dataset_description }}
- Hyperparameters: {{ hyperparameters }}
- Libraries: {{ versions }}

## Usage
{% if student_type == "bi-encoder" %}
The student reads at most {{ max_length }} tokens per text (`max_seq_length`) and scores pairs by
{{ similarity }} similarity of {{ pooling }}-pooled embeddings{% if normalized %}; its embeddings are
L2-normalised (the `Normalize` module), which leaves cosine unchanged and makes dot equal to cosine{% endif %}.

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{{ repo_id }}")
{% if prompts %}# encode_query / encode_document prepend the saved prompts {{ prompts | tojson }}
queries = model.encode_query(["A man is playing a guitar."])
documents = model.encode_document(["Someone plays an instrument."])
print(model.similarity(queries, documents))
{% else %}embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(model.similarity(embeddings[:1], embeddings[1:]))
{% endif %}```

With `transformers` alone ({{ pooling }} pooling{% if normalized %}, then L2 normalisation{% endif %}):

```python
import torch
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}")
model = AutoModel.from_pretrained("{{ repo_id }}")
batch = tokenizer(["A man is playing a guitar."], padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
{% if pooling == "cls" %}embedding = hidden[:, 0]{% else %}mask = batch["attention_mask"].unsqueeze(-1).float()
embedding = (hidden * mask).sum(1) / mask.sum(1){% endif %}
{% if normalized %}embedding = torch.nn.functional.normalize(embedding, dim=-1)
{% endif %}```
{% else %}
The student reads at most {{ max_length }} tokens per joined pair; its score is the one logit.

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("{{ repo_id }}")
print(model.predict([("A man is playing a guitar.", "Someone plays an instrument.")]))
```

With `transformers` alone:

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}")
model = AutoModelForSequenceClassification.from_pretrained("{{ repo_id }}")
score = model(**tokenizer("A man is playing a guitar.", "Someone plays an instrument.", return_tensors="pt")).logits
```
{% endif %}
"""


def hf_margin_version() -> str:
    """The version of the installed hf-margin distribution (pyproject.toml's, as ``hf_margin.__version__``).

    Read from the package metadata rather than from ``hf_margin`` itself: the package root imports the trainer,
    which writes this card, so importing the root here would close an import cycle."""
    try:
        return importlib.metadata.version("hf-margin")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return "unknown"


def _versions() -> str:
    parts = {
        "hf-margin": hf_margin_version(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
        "python": platform.python_version(),
    }
    return ", ".join(f"{k} {v}" for k, v in parts.items())


def build_model_card(
    args: MarginDistillConfig,
    info: dict[str, Any],
    *,
    model_name: str | None = None,
    log_history: list[dict[str, float]] | None = None,
) -> ModelCard:
    """A model card from the training options and ``info`` (keys: ``teacher``, ``base_model``, ``layers``,
    ``dataset``, ``dataset_description``, ``eval`` = {row name: {metric: value}}, ``eval_note``,
    ``model_index`` = [{task, dataset, dataset_name, split, metric, name, value}] for the Hub's results).

    Without ``eval``, the last ``eval_*`` figures of ``log_history`` make the table and the results."""
    repo_id = args.hub_model_id or model_name or args.output_dir
    tags = ["sentence-transformers", "sentence-similarity", "distillation", "hf-margin", args.loss]
    bi_encoder = args.student_kind.is_bi_encoder
    if not bi_encoder:
        tags[0:2] = ["cross-encoder", "text-ranking"]
    extra_tags = info.get("tags") or []
    tags += [t for t in ([extra_tags] if isinstance(extra_tags, str) else extra_tags) if t not in tags]
    card_data = ModelCardData(
        library_name="sentence-transformers" if bi_encoder else "transformers",
        base_model=info.get("base_model"),
        datasets=[info["dataset"]] if info.get("dataset") else None,
        tags=tags,
        pipeline_tag="sentence-similarity" if bi_encoder else "text-classification",
        license=info.get("license"),
        language=info.get("language"),
    )
    eval_table: dict[str, dict[str, float]] = info.get("eval") or _last_eval_row(log_history or [])
    model_index = info.get("model_index")
    if model_index is None:
        model_index = _results_from_history(log_history or [], info.get("dataset") or "held-out data")
    card_data.eval_results = [
        EvalResult(
            task_type=r.get("task", "sentence-similarity"),
            dataset_type=r["dataset"],
            dataset_name=r.get("dataset_name", r["dataset"]),
            dataset_split=r.get("split"),
            metric_type=r["metric"],
            metric_name=r.get("name", r["metric"]),
            metric_value=float(r["value"]),
        )
        for r in model_index
    ] or None
    card_data.model_name = model_name or repo_id.split("/")[-1]
    columns = sorted({k for row in eval_table.values() for k in row})
    rows = [
        (name, [f"{row[c]:.2f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns])
        for name, row in eval_table.items()
    ]
    loss_options = args.loss_spec.card_options(args)
    if args.loss != "label_hinge":
        loss_options["label_weight"] = args.label_weight
        if args.label_weight > 0:
            loss_options["label_margin"] = args.label_margin
    if args.embedding_weight > 0:  # the cosine distance to a teacher's embedding of each text, beside the margins
        loss_options["embedding_weight"] = args.embedding_weight
    if args.in_batch_weight > 0:  # the teacher's softmax over every document of the batch, per query
        loss_options["in_batch_weight"] = args.in_batch_weight
        loss_options["in_batch_temperature"] = args.in_batch_temperature
        loss_options["in_batch_teacher_similarity"] = args.in_batch_teacher_similarity or args.similarity
    if args.needs_teacher_embeddings:
        if info.get("embedding_teacher"):
            loss_options["embedding_teacher"] = info["embedding_teacher"]
    teacher = info.get("teacher")
    if teacher:
        teacher_line = f"`{teacher}`; teacher margins Δt = t(q,p) − t(q,n) computed once and cached before training."
    elif info.get("teacher_note"):
        teacher_line = info["teacher_note"]
    elif args.needs_teacher:
        teacher_line = "not named: the training data's `teacher_margins` (set `trainer.card_info['teacher']`)."
    else:
        teacher_line = "none: the loss reads no teacher margins."
    kind = args.student_kind
    query_side = (
        f"; queries read apart: {kind.query_max_length or kind.max_length} tokens"
        + (f", prompt {kind.query_prompt!r}" if kind.query_prompt else "")
        + (f"; documents prompt {kind.document_prompt!r}" if kind.document_prompt else "")
        if kind.is_bi_encoder and kind.reads_queries_apart
        else ""
    )
    scoring = (
        f"{kind.similarity} similarity of {kind.pooling}-pooled embeddings, max_seq_length {kind.max_length}"
        f"{query_side}"
        if kind.is_bi_encoder
        else f"one logit of the joined pair, max length {kind.max_length}"
    )
    hyper = {
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": args.max_steps,
        "warmup_steps": args.warmup_steps,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "weight_decay": args.weight_decay,
        "max_length": args.max_length,
        "seed": args.seed,
        "similarity": args.similarity,
        "pooling": args.pooling,
    }
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        model_name=model_name or repo_id.split("/")[-1],
        repo_id=repo_id,
        student_type=args.student_type,
        teacher=teacher or ("the teacher margins of its training data" if args.needs_teacher else "gold labels only"),
        teacher_line=teacher_line,
        scoring=scoring,
        max_length=kind.max_length,
        similarity=kind.similarity,
        normalized=kind.is_bi_encoder and (kind.normalize or kind.similarity == "cosine"),
        base_model=info.get("base_model"),
        layers=info.get("layers"),
        loss=args.loss,
        loss_name=args.loss_spec.label,
        loss_options=", ".join(f"`{k}={v}`" for k, v in loss_options.items()),
        eval_columns=columns,
        eval_rows=rows,
        eval_note=info.get("eval_note", ""),
        dataset_description=info.get("dataset_description", "not recorded"),
        hyperparameters=", ".join(f"`{k}={v}`" for k, v in hyper.items()),
        versions=_versions(),
        pooling=args.pooling,
        speed=info.get("speed"),
        quality_kept="; ".join(
            f"{', '.join(f'{v:.1f}% of the teacher’s {m}' for m, v in kept.items())} on {name}"
            for name, kept in (info.get("quality_kept") or {}).items()
        ),
        prompts=kind.prompts if kind.is_bi_encoder else {},
    )


def _last_eval_row(log_history: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    last = next((h for h in reversed(log_history) if any(k.startswith("eval_") for k in h)), None)
    if last is None:
        return {}
    skip = ("runtime", "per_second", "epoch", "model_preparation_time")
    row = {k.removeprefix("eval_"): float(v) for k, v in last.items() if k.startswith("eval_") and not k.endswith(skip)}
    return {f"student (step {last.get('step', '?')})": row}


def _results_from_history(log_history: list[dict[str, float]], dataset: str) -> list[dict[str, Any]]:
    rows = _last_eval_row(log_history)
    return [
        {"task": "sentence-similarity", "dataset": dataset, "metric": metric, "value": value}
        for row in rows.values()
        for metric, value in row.items()
        if metric != "loss"
    ]


TEACHER_CARD = """---
{{ card_data }}
---

# Cross-encoder STS teacher

`{{ base_model }}` with a fresh one-logit head, fine-tuned on the STS Benchmark train split's gold
scores (0-5, MSE regression) with `transformers.Trainer` by hf-margin. Its raw logit is the similarity
score (on the 0-5 scale); hf-margin distils it into bi-encoder students with the adaptive difference loss.

## Evaluation

| split | Spearman x100 | Pearson x100 |
| --- | --- | --- |
| STS-B test | {{ "%.2f" % test_spearman }} | {{ "%.2f" % test_pearson }} |
| STS-B dev | {{ "%.2f" % dev_spearman }} | |

## Training

{{ hyperparameters }}

## Usage

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("{{ repo_id }}")
print(model.predict([("A man is playing a guitar.", "Someone plays an instrument.")]))
```
"""


def build_teacher_card(
    base_model: str, max_length: int, args: TrainingArguments, metrics: dict[str, Any], dataset: str
) -> ModelCard:
    """Model card of a cross-encoder teacher fine-tuned on STS-B: its test and dev figures from ``metrics``
    (``stsb_test_spearman``, ``stsb_test_pearson``, ``stsb_dev_spearman``, ``train_pairs``, ``train_runtime_s``)."""
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["cross-encoder", "sentence-similarity", "hf-margin", "stsb"],
        datasets=[dataset],
        license="apache-2.0",
        language="en",
    )
    hyper = (
        f"learning rate {args.learning_rate:g}, batch {args.per_device_train_batch_size}, "
        f"{args.num_train_epochs:g} epochs, warmup {args.warmup_steps:g}, max length {max_length}, "
        f"seed {args.seed}; {metrics['train_pairs']} training pairs; "
        f"{metrics['train_runtime_s']:.0f} s of training."
    )
    return ModelCard.from_template(
        data,
        template_str=TEACHER_CARD,
        base_model=base_model,
        test_spearman=metrics["stsb_test_spearman"],
        test_pearson=metrics["stsb_test_pearson"],
        dev_spearman=metrics["stsb_dev_spearman"],
        hyperparameters=hyper,
        repo_id=args.hub_model_id or args.output_dir,
    )

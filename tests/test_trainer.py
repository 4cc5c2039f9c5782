"""MarginDistillTrainer: gradient accumulation, end-to-end learning, saving, configuration errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, HfArgumentParser

from hf_margin import (
    MarginDistillConfig,
    MarginDistillTrainer,
    attach_teacher_margins,
    encode,
    load_student,
)

from .conftest import TopicTeacher, embed_one_by_one, make_triplets


def config(tmp_path, **kwargs) -> MarginDistillConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
    )
    return MarginDistillConfig(**{**defaults, **kwargs})


@pytest.fixture
def scored(tmp_path):
    def make(n: int, seed: int = 0, ragged: bool = False):
        return attach_teacher_margins(
            make_triplets(n, seed=seed, ragged=ragged), TopicTeacher(), cache_dir=tmp_path / "cache"
        )

    return make


@pytest.mark.parametrize(
    "loss_options",
    [
        {"loss": "adaptive"},
        {"loss": "adaptive", "activation": "softplus", "teacher_activation": "tanh", "label_weight": 0.5},
        {"loss": "margin_mse"},
        {"loss": "label_hinge"},
        {"loss": "listwise_kl", "temperature": 0.05, "student_temperature": 0.5},
        {"loss": "adaptive", "activation": "squared_relu"},
    ],
)
def test_gradient_accumulation_equals_one_large_batch(tmp_path, scored, tokenizer, bi_encoder, loss_options):
    """8 × 4 accumulated micro-batches must give the weights of one batch of 32, also with ragged negatives
    (a mean of micro-batch means would weight short rows wrongly)."""
    data = scored(32, ragged=True)
    initial = {k: v.clone() for k, v in bi_encoder.state_dict().items()}
    results = []
    for batch_size, accumulation in [(8, 4), (32, 1)]:
        bi_encoder.load_state_dict(initial)
        args = config(
            tmp_path,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            **loss_options,
        )
        trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        results.append({k: v.detach().clone() for k, v in bi_encoder.state_dict().items()})
    moved = max((results[1][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-3, "the step must change the weights for the comparison to mean anything"
    for key in initial:
        torch.testing.assert_close(results[0][key], results[1][key], atol=1e-5, rtol=0)


def test_bi_encoder_learns_the_teacher_and_saves_for_transformers_and_sentence_transformers(
    tmp_path, scored, tokenizer, bi_encoder
):
    """Training lowers the held-out loss and raises margin agreement; the saved student reloads with
    transformers and SentenceTransformer to the trained model's embeddings."""
    args = config(tmp_path, per_device_train_batch_size=16, num_train_epochs=5, learning_rate=1e-3, logging_steps=10)
    trainer = MarginDistillTrainer(
        bi_encoder, args, train_dataset=scored(256), eval_dataset=scored(64, seed=1), processing_class=tokenizer
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    assert after["eval_margin_spearman"] > before["eval_margin_spearman"] + 0.2
    assert after["eval_pairwise_accuracy"] > before["eval_pairwise_accuracy"]
    assert any("distill_loss" in log for log in trainer.state.log_history)

    path = tmp_path / "student"
    trainer.save_model(str(path))
    assert (path / "model.safetensors").exists() and (path / "modules.json").exists()
    texts = ["sun1 sun2 sun3", "sea1 dog2", "tea0 tea1 map5 car2"]
    bi_encoder.eval()
    expected = embed_one_by_one(bi_encoder, tokenizer, texts)
    reloaded = AutoModel.from_pretrained(path)
    torch.testing.assert_close(embed_one_by_one(reloaded, tokenizer, texts), expected, atol=1e-5, rtol=0)

    from sentence_transformers import SentenceTransformer

    st_model = SentenceTransformer(str(path), device="cpu")
    st_embeddings = st_model.encode(texts, convert_to_tensor=True)
    # trained on cosine: the Normalize module is kept, so ST gives the L2-normalised embeddings
    normalized = torch.nn.functional.normalize(expected, dim=-1)
    torch.testing.assert_close(st_embeddings.cpu(), normalized, atol=1e-5, rtol=0)


def test_normalized_cls_student_saves_a_normalize_module(tmp_path, scored, tokenizer, bi_encoder):
    """pooling='cls' with normalize=True must reach sentence-transformers as CLS pooling + Normalize."""
    args = config(tmp_path, max_steps=2, per_device_train_batch_size=8, pooling="cls", normalize=True)
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=scored(16), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    from sentence_transformers import SentenceTransformer

    texts = ["sun1 sun2", "dog3 map1 tea2"]
    bi_encoder.eval()
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = encode(bi_encoder, enc["input_ids"], enc["attention_mask"], pooling="cls", normalize=True)
    got = SentenceTransformer(str(tmp_path / "student"), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=0)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_cross_encoder_learns_the_teacher(tmp_path, scored, tokenizer, cross_encoder):
    """A cross-encoder student scores joined pairs; training lowers the loss and raises margin agreement."""
    args = config(
        tmp_path,
        student_type="cross-encoder",
        per_device_train_batch_size=16,
        num_train_epochs=10,
        learning_rate=1e-3,
        warmup_steps=20,
        overshoot_width=None,  # the one-sided hinge the loss threshold below was set for (the default is two-sided)
    )
    trainer = MarginDistillTrainer(
        cross_encoder, args, train_dataset=scored(512), eval_dataset=scored(64, seed=1), processing_class=tokenizer
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < 0.6 * before["eval_loss"]
    assert after["eval_margin_spearman"] > before["eval_margin_spearman"] + 0.2
    trainer.save_model(str(tmp_path / "cross"))
    reloaded = load_student(tmp_path / "cross", student_type="cross-encoder")
    pair = tokenizer(["sun1 sun2"], ["sun3 dog1"], return_tensors="pt")
    cross_encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**pair).logits, cross_encoder(**pair).logits, atol=1e-5, rtol=0)


def test_extra_columns_survive_remove_unused_columns(tmp_path, scored, tokenizer, bi_encoder):
    """remove_unused_columns must keep the tokenised triplets and teacher margins, which the model's forward
    does not name, and drop the rest."""
    args = config(tmp_path, remove_unused_columns=True)
    trainer = MarginDistillTrainer(bi_encoder, args, train_dataset=scored(8), processing_class=tokenizer)
    kept = trainer._remove_unused_columns(trainer.train_dataset).column_names
    assert set(kept) == {"query_input_ids", "positive_input_ids", "negatives_input_ids", "teacher_margins"}


def test_distillation_without_teacher_margins_is_refused_before_training(tmp_path, tokenizer, bi_encoder):
    """A distillation loss on data without teacher margins fails at construction, naming the fix."""
    with pytest.raises(ValueError, match="attach_teacher_margins"):
        MarginDistillTrainer(bi_encoder, config(tmp_path), train_dataset=make_triplets(4), processing_class=tokenizer)


def test_label_hinge_needs_no_teacher(tmp_path, tokenizer, bi_encoder):
    """loss='label_hinge' trains on gold triplets alone, and reports pairwise accuracy."""
    args = config(tmp_path, loss="label_hinge", max_steps=3, per_device_train_batch_size=4)
    trainer = MarginDistillTrainer(
        bi_encoder,
        args,
        train_dataset=make_triplets(12),
        eval_dataset=make_triplets(8, seed=3),
        processing_class=tokenizer,
    )
    trainer.train()
    assert 0.0 <= trainer.evaluate()["eval_pairwise_accuracy"] <= 1.0


def test_raw_text_without_tokenizer_is_refused(tmp_path, scored, bi_encoder):
    with pytest.raises(ValueError, match="processing_class"):
        MarginDistillTrainer(bi_encoder, config(tmp_path), train_dataset=scored(4))


def test_cross_encoder_student_must_have_one_logit(tmp_path, scored, tokenizer):
    from transformers import BertForSequenceClassification

    from .conftest import tiny_config

    model = BertForSequenceClassification(tiny_config(len(tokenizer), num_labels=2))
    with pytest.raises(ValueError, match="one output logit"):
        MarginDistillTrainer(
            model, config(tmp_path, student_type="cross-encoder"), train_dataset=scored(4), processing_class=tokenizer
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "kl"}, "loss must be one of"),
        ({"activation": "gelu"}, "activation must be one of"),
        ({"teacher_activation": "exp"}, "teacher_activation"),
        ({"temperature": 0.0}, "temperature"),
        ({"beta": -1.0}, "beta"),
        ({"label_weight": -0.1}, "label_weight"),
        ({"similarity": "l2"}, "similarity"),
        ({"student_type": "colbert"}, "student_type"),
    ],
)
def test_config_rejects_bad_options(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **overrides)


def test_config_parses_from_command_line_and_dict(tmp_path):
    """Every option is a flag for HfArgumentParser, with choices and help text."""
    parser = HfArgumentParser(MarginDistillConfig)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--loss", "margin_mse", "--temperature", "0.5", "--report_to", "none"]
    )
    assert args.loss == "margin_mse" and args.temperature == 0.5
    (from_dict,) = parser.parse_dict({"output_dir": str(tmp_path), "teacher_activation": "tanh", "scale": 2.0})
    assert from_dict.teacher_activation == "tanh" and from_dict.scale == 2.0
    help_text = parser.format_help()
    assert "per-example hinge" in help_text and "--label_weight" in help_text


@pytest.mark.parametrize("student_type", ["bi-encoder", "cross-encoder"])
def test_length_chunked_forward_matches_one_padded_pass(tokenizer, bi_encoder, cross_encoder, student_type):
    """Length-sorted chunks (less padding) must give the same scores and gradients as one padded pass, in the
    original row order."""
    from hf_margin.data.columns import MarginDistillCollator, tokenize_triplets
    from hf_margin.models.modeling import student_scores

    model = bi_encoder if student_type == "bi-encoder" else cross_encoder
    data = tokenize_triplets(make_triplets(6, ragged=True, seed=4), tokenizer, student_type=student_type)
    batch = MarginDistillCollator(tokenizer.pad_token_id, student_type)(list(data))
    results = []
    for chunk_size in (0, 3):
        model.zero_grad()
        pos, neg = student_scores(model, batch, student_type=student_type, chunk_size=chunk_size)
        (pos.sum() - neg.sum()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((pos.detach(), neg.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=0)
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_python_route_writes_card_metrics_and_curves_on_save(tmp_path, scored, tokenizer, bi_encoder):
    """Guards the README's Python route: `trainer.save_model()` alone writes metrics.json, training_curves.png and
    a model card whose model-index carries the last evaluation (here an STS evaluator), like the CLI does."""
    from huggingface_hub import ModelCard

    from hf_margin import StsEvaluator

    sts = StsEvaluator(["sun1 sun2", "sea1", "car1 car2"], ["sun3", "sea2 sea3", "dog1"], [5.0, 4.0, 0.0], name="sts")
    args = config(tmp_path, max_steps=2, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2)
    trainer = MarginDistillTrainer(
        bi_encoder, args, train_dataset=scored(8), processing_class=tokenizer, evaluators={"sts": sts}
    )
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss"] == "adaptive" and metrics["global_step"] == 2
    assert metrics["eval"]["eval_sts_spearman"] == pytest.approx(
        sts(args.student_kind.scorer(bi_encoder, tokenizer))["spearman"]
    )
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = ModelCard.load(out / "README.md")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["sts_spearman"] == pytest.approx(metrics["eval"]["eval_sts_spearman"])
    assert "activation=relu" in card.text and "max_seq_length 128" in card.text
    assert not any(p.name.startswith("checkpoint-") for p in out.iterdir())


def test_gpu_defaults_turn_on_bf16_and_loader_workers_without_overriding_the_recipe(tmp_path, monkeypatch):
    """On a CUDA GPU the recipes' plain settings become bf16 + 2 persistent loader workers; an explicit fp16 or a
    worker count the user set is kept, and a CPU run is left as the Trainer has it."""
    from hf_margin.training.config import GPU_LOADER_WORKERS

    cpu = config(tmp_path)
    assert not cpu.bf16 and cpu.dataloader_num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    plain = config(tmp_path)
    plain._apply_gpu_defaults()
    assert plain.bf16 and not plain.fp16
    assert plain.dataloader_num_workers == GPU_LOADER_WORKERS and plain.dataloader_persistent_workers
    assert plain.dataloader_pin_memory and not plain.logging_nan_inf_filter  # no host sync per step
    chosen = config(tmp_path, fp16=False, dataloader_num_workers=5)
    chosen.fp16 = True  # as a recipe with fp16: true on a GPU would have it (fp16 itself needs a GPU to construct)
    chosen._apply_gpu_defaults()
    assert chosen.fp16 and not chosen.bf16 and chosen.dataloader_num_workers == 5
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    old_card = config(tmp_path)
    old_card._apply_gpu_defaults()
    assert not old_card.bf16 and old_card.dataloader_num_workers == GPU_LOADER_WORKERS


def test_loaded_student_uses_sdpa_attention(bi_encoder, tmp_path):
    """A student loaded from a checkpoint runs PyTorch's fused scaled-dot-product attention, not the eager
    softmax(QK)V."""
    bi_encoder.save_pretrained(tmp_path / "ckpt")
    assert load_student(str(tmp_path / "ckpt")).config._attn_implementation == "sdpa"


def test_saved_student_loads_without_a_missing_pooler_report(tmp_path, scored, tokenizer, bi_encoder, capfd):
    """A student is trained without its pooler head; saved by the trainer or by `save_student`, it loads in
    `AutoModel` and `SentenceTransformer` with no missing weight and no load report, its (unused) pooler zero."""
    from sentence_transformers import SentenceTransformer

    from hf_margin import save_student

    assert bi_encoder.pooler is None
    trainer = MarginDistillTrainer(bi_encoder, config(tmp_path), train_dataset=scored(8), processing_class=tokenizer)
    trainer.save_model(str(tmp_path / "by_trainer"))
    save_student(bi_encoder, tmp_path / "by_function", tokenizer=tokenizer)
    capfd.readouterr()
    for name in ("by_trainer", "by_function"):
        model, info = AutoModel.from_pretrained(tmp_path / name, output_loading_info=True)
        assert not info["missing_keys"]
        assert not info["unexpected_keys"]
        assert model.pooler.dense.weight.abs().sum().item() == 0.0
        SentenceTransformer(str(tmp_path / name), device="cpu")
    printed = capfd.readouterr()
    assert "MISSING" not in printed.out + printed.err and "newly initialized" not in printed.out + printed.err


def test_student_attention_dropout_is_set_where_each_architecture_keeps_it(tokenizer, tmp_path):
    """`load_student(..., attention_dropout=p)`: BERT's attention_probs_dropout_prob or DistilBERT's
    attention_dropout becomes p in the model that trains (its attention modules read it), the hidden dropout
    stays the checkpoint's; None keeps the checkpoint's; a value outside [0, 1) or a config without an
    attention dropout is refused before any weight loads."""
    from transformers import BertModel, DistilBertConfig, DistilBertModel, T5Config

    from hf_margin.models.modeling import attention_dropout_override

    from .conftest import tiny_config

    config = tiny_config(tokenizer.vocab_size)
    config.attention_probs_dropout_prob = config.hidden_dropout_prob = 0.1
    BertModel(config).save_pretrained(tmp_path / "bert")
    bert = load_student(str(tmp_path / "bert"), attention_dropout=0.0)
    assert bert.config.attention_probs_dropout_prob == 0.0 and bert.config.hidden_dropout_prob == 0.1
    assert {m.dropout.p for m in bert.modules() if type(m).__name__ == "BertSelfAttention"} == {0.0}
    assert load_student(str(tmp_path / "bert")).config.attention_probs_dropout_prob == 0.1  # unset: the checkpoint's
    distil = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    DistilBertModel(distil).save_pretrained(tmp_path / "distil")
    assert attention_dropout_override(tmp_path / "distil", 0.05) == {"attention_dropout": 0.05}
    assert load_student(str(tmp_path / "distil"), attention_dropout=0.05).config.attention_dropout == 0.05
    with pytest.raises(ValueError, match=r"must be in \[0, 1\); got 1.0"):
        load_student(str(tmp_path / "bert"), attention_dropout=1.0)
    T5Config(vocab_size=32, d_model=8, d_ff=16, num_layers=1, num_heads=1, d_kv=8).save_pretrained(tmp_path / "t5")
    with pytest.raises(ValueError, match="T5Config has none of the attention dropout settings"):
        attention_dropout_override(tmp_path / "t5", 0.0)

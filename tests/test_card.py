"""The model card: usage names the Hub repo, scoring facts stated, teacher wording true, model-index results."""

from __future__ import annotations

from hf_margin import MarginDistillConfig
from hf_margin.reporting.card import build_model_card


def args(**kwargs) -> MarginDistillConfig:
    return MarginDistillConfig(output_dir="outputs/x", report_to="none", **kwargs)


def test_usage_names_hub_model_id_and_scoring_is_stated():
    card = build_model_card(args(hub_model_id="me/student", max_length=64), {"teacher": "t"}).text
    assert 'SentenceTransformer("me/student")' in card and 'AutoModel.from_pretrained("me/student")' in card
    assert "max_seq_length 64" in card and "cosine similarity" in card and "Normalize" in card


def test_teacher_wording_follows_what_happened():
    """Guards a card that said 'no teacher margins' for an adaptive run whose teacher was simply not named."""
    unnamed = build_model_card(args(), {}).text
    assert "teacher_margins" in unnamed and "reads no teacher margins" not in unnamed
    hinge = build_model_card(args(loss="label_hinge"), {}).text
    assert "reads no teacher margins" in hinge
    scored = build_model_card(args(), {"teacher_note": "none loaded: the data brought its scores."}).text
    assert "none loaded: the data brought its scores." in scored


def test_model_index_from_results_and_from_history():
    info = {"model_index": [{"dataset": "my/eval", "metric": "spearman", "value": 0.5, "task": "sentence-similarity"}]}
    card = build_model_card(args(), info)
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("my/eval", "spearman", 0.5)
    ]
    history = [{"loss": 1.0, "step": 1}, {"eval_sts_spearman": 61.0, "eval_loss": 0.2, "step": 2}]
    card = build_model_card(args(), {"dataset": "mine.jsonl"}, log_history=history)
    assert [(r.dataset_type, r.metric_type) for r in card.data.eval_results] == [("mine.jsonl", "sts_spearman")]
    assert "61.00" in card.text


def test_card_names_the_package_version():
    """The card reads the version from the installed distribution (importing the package root from the card would
    close an import cycle through the trainer): it must be hf_margin.__version__."""
    import hf_margin
    from hf_margin.reporting.card import hf_margin_version

    assert hf_margin_version() == hf_margin.__version__
    assert f"hf-margin {hf_margin.__version__}," in build_model_card(args(), {"teacher": "t"}).text

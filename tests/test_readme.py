"""The README's Python route runs as written (the packaged MiniLM, offline) and writes the same files as the CLI."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_writes_card_metrics_and_curves(tmp_path, monkeypatch):
    """Guards the README's 15-line example: it must run verbatim, and `trainer.save_model()` must leave a model
    that transformers loads plus metrics.json, training_curves.png and README.md, as `hf-margin train` does."""
    block = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    exec(compile(block, "README.md", "exec"), {})
    out = tmp_path / "outputs" / "demo"
    for name in ("model.safetensors", "modules.json", "metrics.json", "training_curves.png", "README.md"):
        assert (out / name).is_file(), name
    from transformers import AutoModel

    assert AutoModel.from_pretrained(out).config.num_hidden_layers == 2


def test_readme_search_example_builds_query_corpus_triplets_and_trains(tmp_path, monkeypatch):
    """The README's query–corpus example runs verbatim after the first one: the teacher ranks the documents for
    each query, ambiguous queries are dropped, and the student trains on the rest."""
    text = README.read_text()
    first = re.search(r"## In Python\n\n```python\n(.*?)```", text, re.S).group(1)
    search = re.search(
        r"query–corpus mode\), and queries and\ndocuments are read apart:\n\n```python\n(.*?)```", text, re.S
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(first, "README.md", "exec"), scope)
    exec(compile(search.group(1), "README.md", "exec"), scope)
    data = scope["data"]
    assert 0 < len(set(data["query"])) <= 64 and all(len(n) == 4 for n in data["negatives"])
    assert set(data["positive"]) <= set(scope["documents"])

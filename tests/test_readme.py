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

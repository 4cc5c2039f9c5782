"""training_curves.png: a short run that logged nothing says why instead of showing an empty frame."""

from __future__ import annotations

import matplotlib.axes

from hf_margin.reporting.plotting import plot_training_curves


def test_nothing_logged_is_explained_on_the_plot(tmp_path, monkeypatch):
    """Guards the README's 20-step examples, whose plot was an empty frame (logging_steps=500 > 20 steps)."""
    texts = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(
        matplotlib.axes.Axes, "text", lambda self, x, y, s, **k: texts.append(s) or original(self, x, y, s, **k)
    )
    history = [{"train_loss": 0.4352, "step": 20, "train_runtime": 3.5}]
    assert plot_training_curves(history, tmp_path / "c.png", logging_steps=500)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert texts and "logging_steps=500" in texts[0] and "0.4352 over 20 steps" in texts[0]


def test_logged_losses_are_plotted_without_a_note(tmp_path, monkeypatch):
    texts = []
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, *a, **k: texts.append(a))
    history = [{"loss": 0.5, "step": 1}, {"loss": 0.4, "step": 2}, {"eval_sts_spearman": 61.0, "step": 2}]
    assert plot_training_curves(history, tmp_path / "c.png", logging_steps=1)
    assert texts == []

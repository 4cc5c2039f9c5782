"""A PNG of the training loss and the evaluation curves, from ``trainer.state.log_history``."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def plot_training_curves(log_history: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> bool:
    """Plot training loss and every ``eval_*`` curve (loss, STS Spearman, margin agreement) against the step.

    Returns False (and logs why) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot written (pip install 'hf-margin[plot]')")
        return False
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    eval_keys = sorted(
        {k for h in log_history for k in h if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))}
        - {"eval_model_preparation_time", "eval_epoch"}
    )
    panels = 1 + len(eval_keys)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), marker=".", label="train loss")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    for ax, key in zip(axes[0][1:], eval_keys):
        points = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if points:
            ax.plot(*zip(*points), marker="o", color="tab:orange")
        ax.set_xlabel("step")
        ax.set_title(key.removeprefix("eval_"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

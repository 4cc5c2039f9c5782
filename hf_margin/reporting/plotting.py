"""A PNG of the training loss and the evaluation curves, from ``trainer.state.log_history``."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def plot_training_curves(
    log_history: list[dict[str, float]], path: str | os.PathLike, title: str = "", logging_steps: float | None = None
) -> bool:
    """Plot train and eval loss, then every other ``eval_*`` curve (STS Spearman, IR, margin agreement), against the
    optimizer step, on a grid of panels with axis labels.

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
        - {"eval_model_preparation_time", "eval_epoch", "eval_loss"}
    )
    panels = 1 + len(eval_keys)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    ax = flat[0]
    if train:
        ax.plot(*zip(*train), marker=".", label="train (logged mean)")
    eval_loss = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if eval_loss:
        ax.plot(*zip(*eval_loss), marker="o", color="tab:orange", label="eval (held-out triplets)")
    ax.set_title("loss")
    ax.set_ylabel("loss")
    if train or eval_loss:
        ax.legend(fontsize=8)
    else:  # a short run logs nothing before its end: say why instead of an empty frame
        final = next((h for h in reversed(log_history) if "train_loss" in h), None)
        note = "no loss logged during training"
        if logging_steps is not None:
            note += f"\n(logging_steps={logging_steps:g}; lower it for a curve)"
        if final is not None:
            note += f"\nmean training loss {final['train_loss']:.4g} over {final.get('step', '?')} steps"
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    for ax, key in zip(flat[1:], eval_keys):
        points = [(h["step"], h[key]) for h in log_history if key in h and "step" in h]
        if points:
            ax.plot(*zip(*points), marker="o", color="tab:orange", label="eval")
            ax.legend(fontsize=8)
        ax.set_title(key.removeprefix("eval_").replace("_", " "))
        ax.set_ylabel(key.removeprefix("eval_").rsplit("_", 1)[-1])
    for ax in flat[:panels]:
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
    for ax in flat[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

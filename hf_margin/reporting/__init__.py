"""Reporting: the model card of a distilled student, with its evaluation table and Hub model-index results
(``card``), and the PNG of its training and evaluation curves (``plotting``; needs matplotlib, the ``plot``
extra). The trainer writes both when it saves.

The main names are re-exported here; modules of the library import from the module that defines a name.
"""

from __future__ import annotations

from hf_margin.reporting.card import build_model_card
from hf_margin.reporting.plotting import plot_training_curves

__all__ = ["build_model_card", "plot_training_curves"]

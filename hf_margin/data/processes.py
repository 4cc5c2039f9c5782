"""The processes of a run, as every cached step and scorer sees them: :func:`process_state`."""

from __future__ import annotations

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """Accelerate's process state, set up the first time any part of hf-margin asks for it.

    A plain ``PartialState()`` joins the processes of ``torchrun`` / ``accelerate launch`` only on an accelerator:
    on a CPU-only machine each process sees itself alone (``num_processes`` 1, each the main one), so each would
    score every row and write the shared cache in turn. Here a machine without an accelerator asks for
    ``cpu=True``, which joins them in one gloo group, as ``TrainingArguments(use_cpu=True)`` does. A state already
    set up (by ``TrainingArguments``, an ``Accelerator`` or an earlier call) is returned as it is.
    """
    if PartialState._shared_state:
        return PartialState()
    return PartialState(cpu=not torch.accelerator.is_available())


__all__ = ["process_state"]

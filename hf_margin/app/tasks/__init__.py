"""Task builders: each turns the recipe's arguments into a :class:`~hf_margin.app.tasks.common.TaskData`
(triplets with teacher margins, the teacher, evaluators, what the card says of the data).

- ``stsb``: the STS Benchmark (shipped copy), gold pairs plus optional corpus mode on its train sentences;
- ``data``: your own file or dataset (any supported format), plus or instead of corpus / query–corpus mode;
- ``retrieval``: a corpus in BEIR layout (the shipped SciFact by default), unlabelled queries ranked by the
  teacher, optional gold pairs, retrieval metrics before / after / teacher.

They share one "mine → score → concatenate" step (:func:`~hf_margin.app.tasks.common.add_teacher_built`).
"""

from __future__ import annotations

from hf_margin.app.arguments import DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.app.tasks.common import TaskData
from hf_margin.app.tasks.own_data import build_user_task
from hf_margin.app.tasks.retrieval import build_retrieval_task
from hf_margin.app.tasks.stsb import build_stsb_task
from hf_margin.training.config import MarginDistillConfig

BUILDERS = {"stsb": build_stsb_task, "data": build_user_task, "retrieval": build_retrieval_task}


def build_task(
    model_args: ModelArguments, data_args: DataArguments, eval_args: EvalArguments, args: MarginDistillConfig
) -> TaskData:
    """The task the recipe names (``task``), built and cached."""
    if data_args.fresh_negatives_per_epoch and args.train_sampling_strategy != "random":
        raise UserError(
            f"--fresh_negatives_per_epoch orders rows itself (a seeded shuffle per epoch): drop "
            f"--train_sampling_strategy {args.train_sampling_strategy}"
        )
    return BUILDERS[data_args.task](model_args, data_args, eval_args, args)


__all__ = ["BUILDERS", "TaskData", "build_task"]

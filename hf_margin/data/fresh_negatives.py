"""Fresh negatives per epoch: each epoch, every row trains on ``num_negatives`` negatives drawn anew from its
cached candidate band, with the band's cached teacher margins, so no teacher runs during training.

The band (``band``: the miner's candidates of ranks ``[skip_top, sample_from)``, without the query, its
positives and duplicates) comes from :func:`~hf_margin.data.mining.mine_hard_negatives` or
:func:`~hf_margin.data.mining.build_corpus_triplets` with ``keep_band=True``; its margins (``band_margins``) from
:func:`~hf_margin.data.margins.attach_band_margins`, in one cached teacher pass. :class:`FreshNegatives` holds the
band as the row's negatives (tokenised once by the trainer) and picks a subset per item.

The pick is a pure function of ``(seed, epoch, row)`` (:func:`draw_negatives`): the same on every process of a
multi-process run, the same in a rerun, different from one epoch to the next. The epoch reaches data-loader worker
processes (persistent ones included, which hold copies of the dataset) through the index: the
:class:`EpochSampler`, which runs in the main process and is told the epoch by the Trainer (``set_epoch``),
yields ``(epoch, row)`` keys.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import Sampler

from hf_margin.data.columns import (
    NEGATIVES,
    POSITIVE,
    QUERY,
    TEACHER_MARGINS,
    DataValidationError,
    tokenize_triplets,
    validate_triplets,
)
from hf_margin.data.margins import BAND, BAND_MARGINS, list_lengths

logger = logging.getLogger(__name__)

# Columns with one entry per negative: a pick keeps the same positions in each (raw text or tokenised).
PER_NEGATIVE_COLUMNS = (
    NEGATIVES,
    TEACHER_MARGINS,
    "negatives_input_ids",
    "negatives_pair_input_ids",
    "negatives_pair_token_type_ids",
)


def draw_negatives(seed: int, epoch: int, row: int, band_size: int, num_negatives: int) -> list[int]:
    """Positions (ascending, distinct) of the ``num_negatives`` candidates row ``row`` trains on in ``epoch``:
    a sample without replacement from ``range(band_size)`` seeded by ``(seed, epoch, row)`` alone (the whole
    band when it holds no more)."""
    if band_size <= num_negatives:
        return list(range(band_size))
    rng = random.Random(f"fresh-negatives/{seed}/{epoch}/{row}")  # str seeds hash with SHA-512: stable everywhere
    return sorted(rng.sample(range(band_size), num_negatives))


class EpochSampler(Sampler):
    """Yield ``(epoch, row)`` for every row: a permutation seeded by ``(seed, epoch)`` (the same on every process,
    as ``BatchSamplerShard`` needs), or the rows in order with ``shuffle=False``.

    ``set_epoch`` (called by the Trainer through Accelerate each epoch) sets the epoch; a completed pass also
    moves it on by one, so a plain loop over a ``DataLoader`` sees epochs 0, 1, 2, ...
    """

    def __init__(self, num_rows: int, *, seed: int = 42, shuffle: bool = True) -> None:
        self.num_rows = num_rows
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_rows, generator=generator).tolist()
        else:
            order = range(self.num_rows)
        for row in order:
            yield epoch, row
        self.epoch = epoch + 1


class FreshNegatives(torch.utils.data.Dataset):
    """Training rows whose negatives are redrawn from their cached band every epoch.

    ``dataset`` holds ``query``, ``positive``, ``band`` (list of texts) and, for a loss that reads the teacher,
    ``band_margins`` (one per candidate; :func:`~hf_margin.data.margins.attach_band_margins`). Item ``(epoch, row)``
    is the row with ``negatives`` ``(n,)`` and ``teacher_margins`` ``(n,)`` (or, once :meth:`tokenized`, the
    tokenised negatives) at the positions :func:`draw_negatives` picks, ``n = min(num_negatives, K)``; an int
    key uses the epoch last given to :meth:`set_epoch` in this process. :class:`~hf_margin.MarginDistillTrainer`
    tokenises the band once and samples with :meth:`sampler`.
    """

    def __init__(self, dataset: Dataset, num_negatives: int = 4, *, seed: int = 42) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1; got {num_negatives}")
        if not isinstance(dataset, Dataset):
            raise DataValidationError(
                f"fresh negatives need a datasets.Dataset with a band per row; got {type(dataset).__name__} (a "
                "stream cannot keep bands)"
            )
        missing = [c for c in (QUERY, POSITIVE, BAND) if c not in dataset.column_names]
        if missing:
            raise DataValidationError(
                f"fresh negatives: missing column(s) {missing} (the data has {dataset.column_names}). Keep each row's "
                "candidates with mine_hard_negatives(..., keep_band=True) and score them with attach_band_margins."
            )
        keep = [QUERY, POSITIVE, BAND] + ([BAND_MARGINS] if BAND_MARGINS in dataset.column_names else [])
        triplets = dataset.select_columns(keep).rename_column(BAND, NEGATIVES)
        if BAND_MARGINS in keep:
            triplets = triplets.rename_column(BAND_MARGINS, TEACHER_MARGINS)
        self._init(triplets, num_negatives, seed)

    def _init(self, triplets: Dataset, num_negatives: int, seed: int) -> None:
        self.triplets = triplets  # the band as each row's negatives: raw text, or tokenised by `tokenized`
        self.num_negatives = num_negatives
        self.seed = seed
        self.epoch = 0
        self._samplers: list[EpochSampler] = []

    @classmethod
    def _from_triplets(cls, triplets: Dataset, num_negatives: int, seed: int) -> FreshNegatives:
        obj = cls.__new__(cls)
        obj._init(triplets, num_negatives, seed)
        return obj

    # ---- what the trainer asks ------------------------------------------------------------------------

    @property
    def column_names(self) -> list[str]:
        return list(self.triplets.column_names)

    @property
    def has_margins(self) -> bool:
        return TEACHER_MARGINS in self.triplets.column_names

    def band_sizes(self) -> np.ndarray:
        """Candidates per row ``(R,)``."""
        column = next(c for c in PER_NEGATIVE_COLUMNS if c in self.triplets.column_names)
        return list_lengths(self.triplets, column)

    def validate(self) -> None:
        """Check every row (texts, band, margins: one finite margin per candidate) before any compute is spent."""
        validate_triplets(self.triplets)

    def tokenized(self, tokenizer, **options: Any) -> FreshNegatives:
        """The same rows with every band candidate tokenised once (``tokenize_triplets(..., **options)``), drawn
        per epoch."""
        return self.with_triplets(tokenize_triplets(self.triplets, tokenizer, **options))

    def with_triplets(self, triplets: Dataset) -> FreshNegatives:
        """The same draws (negatives per row, seed) from ``triplets``: these rows with another form of the same
        band, e.g. tokenised or with rescaled teacher margins."""
        return self._from_triplets(triplets, self.num_negatives, self.seed)

    def describe(self) -> str:
        """One line for the log: negatives per row and the cached candidates they are drawn from."""
        sizes = self.band_sizes()
        if not len(sizes):
            return "fresh negatives per epoch: no rows"
        return (
            f"fresh negatives per epoch: {self.num_negatives} of the cached candidates of each row (per row "
            f"{sizes.mean():.1f} on average, min {sizes.min()}, max {sizes.max()}; {len(sizes)} rows), redrawn "
            f"each epoch, seed {self.seed}"
        )

    # ---- epochs and items -----------------------------------------------------------------------------

    def sampler(self, *, seed: int = 42, shuffle: bool = True) -> EpochSampler:
        """A sampler of ``(epoch, row)`` keys for a ``DataLoader`` (``set_epoch`` here reaches it too)."""
        sampler = EpochSampler(len(self), seed=seed, shuffle=shuffle)
        sampler.set_epoch(self.epoch)
        self._samplers.append(sampler)
        return sampler

    def set_epoch(self, epoch: int) -> None:
        """The epoch of int keys in this process, and of the samplers made by :meth:`sampler`."""
        self.epoch = int(epoch)
        for sampler in self._samplers:
            sampler.set_epoch(epoch)

    def __getstate__(self) -> dict[str, Any]:  # worker processes need no samplers
        return {**self.__dict__, "_samplers": []}

    def __len__(self) -> int:
        return len(self.triplets)

    def _key(self, key: Any) -> tuple[int, int]:
        if isinstance(key, (tuple, list)):
            epoch, row = key
            return int(epoch), int(row)
        return self.epoch, int(key)

    def _pick(self, row: dict[str, Any], epoch: int, index: int) -> dict[str, Any]:
        columns = [c for c in PER_NEGATIVE_COLUMNS if c in row]
        picks = draw_negatives(self.seed, epoch, index, len(row[columns[0]]), self.num_negatives)
        return {**row, **{c: [row[c][k] for k in picks] for c in columns}}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = self._key(key)
        return self._pick(self.triplets[index], epoch, index)

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch of items in one Arrow read (the ``DataLoader`` fetches this way)."""
        pairs = [self._key(k) for k in keys]
        batch = self.triplets[[index for _, index in pairs]]
        rows = [{c: values[i] for c, values in batch.items()} for i in range(len(pairs))]
        return [self._pick(row, epoch, index) for row, (epoch, index) in zip(rows, pairs)]


__all__ = ["EpochSampler", "FreshNegatives", "draw_negatives"]

"""Reproducible, resumable sampling: every random choice is a function of (seed, step, index).

The batch sampler is stateless apart from the step it starts at: the batch of global step
``s`` is slice ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``'s permutation. Each
sample is fetched with a :class:`SampleKey`, and :class:`SeededDataset` seeds the torch RNG
from it before calling the wrapped dataset, so augmentations do not depend on the number of
dataloader workers, on which worker runs a sample, or on where a run was resumed.

A sample that cannot be read (the dataset returns ``None``) is replaced by another drawn from
``(seed, step, position)``, so a batch stays full and a rerun or a resumed run replaces it with
the same sample; the collator counts every unreadable read (:attr:`SampleKey.replaced`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    """What a dataloader asks for: dataset ``index``, drawn in ``epoch`` for global ``step``,
    at ``position`` of that step's global batch of ``batch_size`` samples (``batch_size=0``:
    the batch being collated is the whole step's batch). ``step`` counts from 0: the step
    logged (and checkpointed) as ``step + 1``.

    ``replaced``: set by :class:`SeededDataset` on the key it returns, how many unreadable
    samples were replaced at this position before the returned one was read."""

    index: int
    epoch: int
    step: int
    position: int = 0
    batch_size: int = 0
    replaced: int = 0


def mix_seed(*values: int) -> int:
    """Hash integers into a 63-bit seed (numpy's SeedSequence: well mixed, platform-stable)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ResumableBatchSampler(Sampler[list[SampleKey]]):
    """Yields this process's batches of global steps ``start_step, ..., total_steps - 1``.

    The global batch of a step (``batch_size`` samples) is the same whatever the number of
    processes: it is cut into ``world_size * accum_steps`` equal micro-batches, and rank
    ``r`` gets micro-batches ``a * world_size + r`` for ``a = 0 .. accum_steps - 1``, in that
    order. With one process and no accumulation the micro-batch is the whole batch.

    Args:
        num_samples: dataset length.
        batch_size: samples per optimiser step over all processes; the last incomplete batch
            of an epoch is dropped so every step has the same size (as the I-JEPA reference).
        seed: run seed; epoch ``e`` is shuffled with ``mix_seed(seed, e)``.
        total_steps: where to stop.
        start_step: first step to yield (the resume point).
        rank: this process's rank.
        world_size: number of processes.
        accum_steps: micro-batches per process and step (gradient accumulation).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        total_steps: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        accum_steps: int = 1,
    ) -> None:
        if batch_size > num_samples:
            raise ValueError(
                f"batch_size={batch_size} is larger than the dataset ({num_samples} samples)"
            )
        self.micro_batch_size = micro_batch_size(batch_size, world_size, accum_steps)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.total_steps, self.start_step = total_steps, start_step
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.steps_per_epoch = num_samples // batch_size

    def __len__(self) -> int:
        return max(self.total_steps - self.start_step, 0) * self.accum_steps

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=g).tolist()

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch, perm = -1, []
        for step in range(self.start_step, self.total_steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                perm = self._permutation(epoch)
            batch = perm[(step % self.steps_per_epoch) * self.batch_size :][: self.batch_size]
            m = self.micro_batch_size
            for a in range(self.accum_steps):
                first = (a * self.world_size + self.rank) * m
                yield [
                    SampleKey(i, epoch, step, first + j, self.batch_size)
                    for j, i in enumerate(batch[first : first + m])
                ]


def micro_batch_size(batch_size: int, world_size: int = 1, accum_steps: int = 1) -> int:
    """Samples per forward pass: the global batch split over processes and accumulation."""
    if accum_steps < 1:
        raise ValueError(f"trainer.accum_steps must be >= 1, got {accum_steps}")
    parts = world_size * accum_steps
    if batch_size % parts:
        raise ValueError(
            f"data.batch_size={batch_size} (the global batch) is not divisible by "
            f"{world_size} processes x trainer.accum_steps={accum_steps}"
        )
    return batch_size // parts


REPLACEMENT_TRIES = 8  # unreadable samples replaced per batch position before it is dropped


class SeededDataset(Dataset):
    """Wraps a map-style dataset so sample ``key`` is drawn under a seed derived from it.

    ``__getitem__(key)`` returns ``(sample, key)``; a plain int index is treated as epoch 0.
    When the dataset returns ``None`` (an unreadable file, which the dataset logs), up to
    ``replacement_tries`` other samples are drawn in its place, each index and augmentation a
    function of ``(seed, step, position, try)`` (the same on a rerun, on a resume and in any
    worker); the returned key's ``replaced`` says how many were unreadable. If every try
    fails the sample is ``None`` and the collator drops it. ``replacement_tries=0``: no
    replacement.
    """

    def __init__(
        self, dataset: Dataset, seed: int, replacement_tries: int = REPLACEMENT_TRIES
    ) -> None:
        self.dataset, self.seed = dataset, seed
        self.replacement_tries = replacement_tries

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _load(self, index: int, seed: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __getitem__(self, key: SampleKey | int) -> tuple[Any, SampleKey]:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, 0)
        sample = self._load(key.index, mix_seed(self.seed, key.epoch, key.index))
        if sample is None and self.replacement_tries and len(self) > 1:
            sample, key = self._replace(key)
        return sample, key

    def _replace(self, key: SampleKey) -> tuple[Any, SampleKey]:
        """Draw replacements for the unreadable sample ``key.index`` until one loads."""
        rng = np.random.default_rng(mix_seed(self.seed, key.step, key.position, 0x7265706C))
        sample, index, tries = None, key.index, 0
        while sample is None and tries < self.replacement_tries:
            tries += 1
            unreadable = index
            index = int(rng.integers(len(self) - 1))
            index += index >= key.index  # never the sample being replaced
            log.warning(
                "step %d: sample %d could not be read (the warning above names the file); "
                "position %d of the batch takes sample %d instead",
                key.step + 1,
                unreadable,
                key.position,
                index,
            )
            # its own augmentation: the replacement may also be drawn in this step's batch
            seed = mix_seed(self.seed, key.epoch, index, key.step, key.position, tries)
            sample = self._load(index, seed)
        if sample is None:
            log.warning(
                "step %d: sample %d could not be read either; position %d of the batch stays "
                "empty after %d replacements",
                key.step + 1,
                index,
                key.position,
                tries,
            )
        return sample, key._replace(replaced=tries)

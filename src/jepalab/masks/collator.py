"""Batch collation with mask sampling, run inside dataloader workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from jepalab.data.collate import SampleBatch, batch_layout, collate_samples
from jepalab.data.sampling import SampleKey, mix_seed
from jepalab.masks.multiblock import MaskBatch


class MaskGenerator(Protocol):
    """What a collator needs of a mask sampler (2-D multi-block, 3-D multi-block, ...)."""

    num_mask_tokens: int

    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch: ...


@dataclass
class MaskedBatch(SampleBatch):
    """A :class:`SampleBatch` with the masks of its step.

    ``fraction``: this batch's share of the step's global batch, ``1 / (processes x
    accumulation steps)`` (1 when it is the whole batch): what a loss term computed on the
    batch alone is weighted by in the step's loss (see :class:`~jepalab.methods.base.
    MethodOutput`).
    """

    masks: MaskBatch | None = None
    fraction: float = 1.0


class MaskCollator:
    """Collates keyed samples and samples the batch's masks from ``(seed, step)``.

    The masks of a step are a pure function of the seed and the step, so they are the same
    whichever worker builds the batch and after a resume. They are drawn for the step's whole
    global batch and each sample takes the masks of its position in it, so a sample's masks
    do not depend on how the batch is split over processes and accumulation steps (nor on
    which samples failed to load); the batch records the global batch's number of target
    tokens per mask configuration, which losses normalise by
    (:attr:`MaskBatch.global_target_counts`).

    It is also a plain ``collate_fn`` of a ``DataLoader`` over any dataset (samples: a
    tensor, ``(image, label)`` or a dict, see :func:`~jepalab.data.collate.image_and_label`):
    the batches are then numbered in the order they are collated, from ``start_step``, so
    the masks are reproducible from the seed in one process (``num_workers=0``), though not
    across a resume (the Trainer's keyed samples are).
    """

    def __init__(self, generator: MaskGenerator, seed: int, start_step: int = 0) -> None:
        self.generator, self.seed = generator, seed
        self._next_step = start_step  # for plain (unkeyed) batches

    def __call__(self, items: Sequence[Any]) -> MaskedBatch:
        if not _keyed(items):
            step, self._next_step = self._next_step, self._next_step + 1
            items = [(sample, SampleKey(i, 0, step)) for i, sample in enumerate(items)]
        batch = collate_samples(items)
        rng = np.random.default_rng(mix_seed(self.seed, batch.step, 0x6D61736B))  # "mask"
        positions, global_size = batch_layout(items)
        masks = self.generator(global_size, rng).with_global_counts()
        if positions != list(range(global_size)):
            masks = masks.select_samples(positions)
        return MaskedBatch(
            batch.images, batch.labels, batch.step, batch.skipped, masks, len(items) / global_size
        )


def _keyed(items: Sequence[Any]) -> bool:
    """Whether ``items`` are the Trainer's ``(sample, SampleKey)`` pairs."""
    first = items[0] if items else None
    return isinstance(first, tuple) and len(first) == 2 and isinstance(first[1], SampleKey)

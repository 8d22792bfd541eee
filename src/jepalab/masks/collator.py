"""Batch collation with mask sampling, run inside dataloader workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from jepalab.data.collate import SampleBatch, collate_samples
from jepalab.data.sampling import SampleKey, mix_seed
from jepalab.masks.multiblock import MaskBatch


class MaskGenerator(Protocol):
    """What a collator needs of a mask sampler (2-D multi-block, 3-D multi-block, ...)."""

    num_mask_tokens: int

    def __call__(self, batch_size: int, rng: np.random.Generator) -> MaskBatch: ...


@dataclass
class MaskedBatch(SampleBatch):
    """A :class:`SampleBatch` with the masks of its step."""

    masks: MaskBatch | None = None


class MaskCollator:
    """Collates keyed samples and samples the batch's masks from ``(seed, step)``.

    The masks of a step are a pure function of the seed and the step, so they are the same
    whichever worker builds the batch and after a resume.
    """

    def __init__(self, generator: MaskGenerator, seed: int) -> None:
        self.generator, self.seed = generator, seed

    def __call__(self, items: Sequence[tuple[Any, SampleKey]]) -> MaskedBatch:
        batch = collate_samples(items)
        rng = np.random.default_rng(mix_seed(self.seed, batch.step, 0x6D61736B))  # "mask"
        masks = self.generator(batch.images.shape[0], rng)
        return MaskedBatch(batch.images, batch.labels, batch.step, batch.skipped, masks)

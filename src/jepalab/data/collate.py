"""Turning keyed samples into a batch; corrupt samples are dropped and counted here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jepalab.data.sampling import SampleKey


@dataclass
class SampleBatch:
    """Stacked images and labels of one step.

    Attributes:
        images: ``(B, C, H, W)`` (or ``(B, C, T, H, W)`` for video).
        labels: ``(B,)`` int64, -1 where a dataset has no labels.
        step: global step the batch was drawn for (seeds the masks).
        skipped: samples of this batch that could not be read and were dropped.
    """

    images: Tensor
    labels: Tensor
    step: int
    skipped: int


def readable_samples(items: Sequence[tuple[Any, SampleKey]]) -> tuple[list[Any], int, int]:
    """``(samples that loaded, step, number dropped)`` of a keyed batch; a ``None`` sample is
    an unreadable file, already logged by its dataset. Fails if nothing loaded."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    step = items[0][1].step
    good = [sample for sample, _ in items if sample is not None]
    if not good:
        raise RuntimeError(
            f"every sample of the batch at step {step} failed to load; see the warnings "
            "above for the file names"
        )
    return good, step, len(items) - len(good)


def batch_layout(items: Sequence[tuple[Any, SampleKey]]) -> tuple[list[int], int]:
    """``(positions in the step's global batch of the samples that loaded, global batch
    size)``; a batch of keys without positions (``batch_size=0``) is its own global batch."""
    global_size = items[0][1].batch_size or len(items)
    if items[0][1].batch_size:
        positions = [key.position for sample, key in items if sample is not None]
    else:
        positions = [i for i, (sample, _) in enumerate(items) if sample is not None]
    return positions, global_size


def collate_samples(items: Sequence[tuple[Any, SampleKey]]) -> SampleBatch:
    """Stack ``(image, label)`` samples; a ``None`` sample (unreadable file) is dropped."""
    good, step, skipped = readable_samples(items)
    images = torch.stack([s[0] for s in good])
    labels = torch.tensor([int(s[1]) for s in good], dtype=torch.long)
    return SampleBatch(images, labels, step, skipped)

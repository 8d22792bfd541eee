"""Turning samples into a batch; unreadable samples (``None``) are dropped and counted here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from jepalab.data.sampling import SampleKey
from jepalab.errors import DataError


@dataclass
class SampleBatch:
    """Stacked images and labels of one step.

    Attributes:
        images: ``(B, C, H, W)`` (or ``(B, C, T, H, W)`` for video).
        labels: ``(B,)`` int64, -1 where a dataset has no labels.
        step: global step the batch was drawn for (seeds the masks), counted from 0: the
            logs and checkpoints call it ``step + 1``.
        skipped: samples that could not be read for this batch (dropped, or replaced by
            others: see :class:`~jepalab.data.sampling.SeededDataset`).
    """

    images: Tensor
    labels: Tensor
    step: int
    skipped: int


def readable_samples(items: Sequence[tuple[Any, SampleKey]]) -> tuple[list[Any], int, int]:
    """``(samples that loaded, step, number of unreadable samples)`` of a keyed batch.

    A ``None`` sample is an unreadable file (already logged by its dataset) and is dropped;
    the count also takes in the unreadable samples :class:`~jepalab.data.sampling.
    SeededDataset` replaced (``key.replaced``). Fails if nothing loaded.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    step = items[0][1].step
    good = [sample for sample, _ in items if sample is not None]
    unreadable = len(items) - len(good) + sum(key.replaced for _, key in items)
    if not good:
        raise DataError(
            f"every sample of the batch of step {step + 1} failed to load, {unreadable} "
            "unreadable in all (replacements included); see the warnings above for the file "
            "names"
        )
    return good, step, unreadable


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


def collate_readable(samples: Sequence[Any]) -> Any | None:
    """``default_collate`` of the samples that loaded, for evaluation loaders (no keys, no
    replacement): a ``None`` sample is an unreadable file, already logged by its dataset, and
    is left out. ``None`` when no sample of the batch loaded. The caller counts the unreadable
    ones as the dataset's length minus the samples it got."""
    good = [sample for sample in samples if sample is not None]
    return default_collate(good) if good else None
